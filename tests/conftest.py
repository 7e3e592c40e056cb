"""Strict JAX for every test: implicit rank promotion is an error.

Tests never write jaxablate's persistent compilation cache to the user's home: it is off here
(and in every subprocess a test starts, which inherits the environment).
"""

import os

import jax
import pytest

os.environ["JAXABLATE_COMPILE_CACHE"] = "0"
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(autouse=True)
def _strict_jax():
    with jax.numpy_rank_promotion("raise"):
        yield
