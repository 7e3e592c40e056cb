"""XLA flags for the subprocesses tests start.

``tests/conftest.py`` compiles the tests with LLVM at ``-O0``. Machine code at ``-O0`` and at
XLA's default can differ in the last bit (e.g. fused multiply-adds), so a subprocess whose
results are compared bit for bit with the test's own must compile the same way: it gets the
test run's optimisation level plus its own flags, and nothing else from ``XLA_FLAGS``.
"""

import os

#: The flag's name, and what conftest adds to ``XLA_FLAGS`` (unless ``JAXABLATE_TEST_XLA_OPT=1``).
OPT_NAME = "--xla_backend_optimization_level"
OPT_FLAG = f"{OPT_NAME}=0"


def subprocess_xla_flags(*extra: str, opt: bool = True) -> str:
    """This run's optimisation-level flag (if any; none with ``opt=False``, so XLA's default)
    followed by ``extra``."""
    flags = os.environ.get("XLA_FLAGS", "").split()
    ours = [f for f in flags if opt and f.startswith(OPT_NAME)]
    return " ".join([*ours, *extra])
