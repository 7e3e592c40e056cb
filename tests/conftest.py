"""Strict JAX for every test: implicit rank promotion is an error.

Tests never write jaxablate's persistent compilation cache to the user's home. One test run
shares a temporary cache instead: the process that loads this file first (pytest itself, or the
xdist controller) makes the directory and names it in ``JAXABLATE_TEST_XLA_CACHE``; the xdist
workers and every subprocess a test starts inherit the environment, so a program compiled by
one of them is loaded from disk by the others (the same executable: no number changes). The
directory is removed when the run ends. ``JAXABLATE_TEST_XLA_CACHE=0`` switches the cache off.
"""

import os
import shutil
import tempfile

import jax
import pytest

SHARED_CACHE_VAR = "JAXABLATE_TEST_XLA_CACHE"
_CREATED = SHARED_CACHE_VAR not in os.environ
if _CREATED:
    os.environ[SHARED_CACHE_VAR] = tempfile.mkdtemp(prefix="jaxablate-test-xla-")
os.environ["JAXABLATE_COMPILE_CACHE"] = os.environ[SHARED_CACHE_VAR]
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(autouse=True)
def _strict_jax():
    with jax.numpy_rank_promotion("raise"):
        yield


def pytest_unconfigure(config: pytest.Config) -> None:
    """The process that made the run's shared compilation cache removes it."""
    if _CREATED:
        shutil.rmtree(os.environ[SHARED_CACHE_VAR], ignore_errors=True)
