"""Recompilation checks through one helper (the only place tests read a jitted function's cache)."""

import contextlib
from collections.abc import Callable, Iterator
from typing import Any


def compilations(jitted: Any) -> int:
    """How many programs ``jitted`` (a ``jax.jit`` function) has compiled in this process."""
    size: Callable[[], int] = jitted._cache_size
    return int(size())


@contextlib.contextmanager
def no_new_compilations(*jitted: Any) -> Iterator[None]:
    """Fail if any of the jitted functions compiles a new program inside the block."""
    before = [compilations(f) for f in jitted]
    yield
    after = [compilations(f) for f in jitted]
    for f, b, a in zip(jitted, before, after, strict=True):
        assert a == b, f"{getattr(f, '__name__', f)} compiled {a - b} new program(s)"
