"""XLA flags for the subprocesses tests start.

``tests/conftest.py`` compiles the tests with LLVM at ``-O0``. Machine code at ``-O0`` and at
XLA's default can differ in the last bit (e.g. fused multiply-adds), so a subprocess whose
results are compared bit for bit with the test's own must compile the same way: it gets the
test run's optimisation level plus its own flags, and nothing else from ``XLA_FLAGS``.
"""

import os

#: What conftest adds to ``XLA_FLAGS`` (unless ``JAXABLATE_TEST_XLA_OPT=1``).
OPT_FLAG = "--xla_backend_optimization_level=0"


def subprocess_xla_flags(*extra: str) -> str:
    """This run's optimisation-level flag (if any) followed by ``extra``."""
    ours = [f for f in os.environ.get("XLA_FLAGS", "").split() if f.startswith(OPT_FLAG[:32])]
    return " ".join([*ours, *extra])
