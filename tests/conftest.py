"""Strict JAX for every test: implicit rank promotion is an error.

Tests never write jaxablate's persistent compilation cache to the user's home: it is off here
(and in every subprocess a test starts, which inherits the environment).

Tests run tiny models, so most of their time is XLA compiling programs, and most of that is
LLVM optimising the kernels. The tests (and their subprocesses) ask LLVM for no optimisation
(``--xla_backend_optimization_level=0``, set before JAX starts its backend): the same HLO
programs (no fast-math either way; the last bit can differ, so subprocesses compared bit for
bit get the same flag through ``tests/_xla.py``), compiled in about half the time.
Measured on four heavy test files with two workers: 379 -> 305 s, while the one long training
run among them took 47 -> 92 s. ``JAXABLATE_TEST_XLA_OPT=1`` keeps XLA's default instead.
Benchmarks, the demo in CI's fresh venv and users get the default.
"""

import os

import jax
import pytest

from tests._xla import OPT_FLAG, OPT_NAME

os.environ["JAXABLATE_COMPILE_CACHE"] = "0"
if os.environ.get("JAXABLATE_TEST_XLA_OPT") != "1":
    _flags = os.environ.get("XLA_FLAGS", "")
    if OPT_NAME not in _flags:
        os.environ["XLA_FLAGS"] = f"{_flags} {OPT_FLAG}".strip()
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(autouse=True)
def _strict_jax():
    with jax.numpy_rank_promotion("raise"):
        yield
