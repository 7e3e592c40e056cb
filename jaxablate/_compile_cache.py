"""JAX's persistent compilation cache, switched on for jaxablate's users (opt-out).

A fresh process (a restarted notebook kernel, a new CLI call) would otherwise compile every
program again: the model's initialiser, the evaluation chunks and the probe's two inner
widths. With the cache on, the second process loads them from disk.

The cache lives in ``$XDG_CACHE_HOME/jaxablate/xla`` (``~/.cache/jaxablate/xla`` when
``XDG_CACHE_HOME`` is unset). The environment variable ``JAXABLATE_COMPILE_CACHE`` chooses:
``0`` / ``false`` / ``off`` / ``no`` switch it off, ``1`` / ``true`` / ``on`` / ``yes`` (or unset,
or empty) keep the default directory, and any other value is the directory to use. A cache
directory set through JAX itself (``jax.config.update("jax_compilation_cache_dir", ...)`` or
``JAX_COMPILATION_CACHE_DIR``) is never overridden, and neither are its thresholds.

The cache is trusted code: do not point it at a directory others can write to (see
:func:`jax.experimental.compilation_cache.compilation_cache.set_cache_dir`).
"""

import importlib.util
import os
from pathlib import Path

import jax

#: The environment variable that switches the cache off or moves it.
ENV_VAR = "JAXABLATE_COMPILE_CACHE"
#: Programs that compile faster than this (seconds) are not written (JAX's default is 1 s, which
#: leaves most CPU programs out).
MIN_COMPILE_SECONDS = 0.0
#: Size the cache may grow to before the least recently used programs are evicted.
MAX_CACHE_BYTES = 2 * 2**30

_OFF = {"0", "false", "off", "no"}
_DEFAULT = {"", "1", "true", "on", "yes"}


def cache_dir() -> Path | None:
    """The directory jaxablate's cache uses, or ``None`` when ``JAXABLATE_COMPILE_CACHE`` says off.

    Reads only the environment; JAX's own setting is left to :func:`enable`.
    """
    value = os.environ.get(ENV_VAR, "").strip()
    if value.lower() in _OFF:
        return None
    if value.lower() not in _DEFAULT:
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jaxablate" / "xla"


def config_flag(name: str) -> object:
    """A jax config flag's value (flags with a context manager are attributes; ``read`` refuses
    them)."""
    return getattr(jax.config, name)


def enable() -> str | None:
    """Switch on JAX's persistent compilation cache in the user's cache directory, once.

    Cheap and idempotent (entry points call it on every call): it does nothing when a cache
    directory is already set (by this function before, by the user, or by
    ``JAX_COMPILATION_CACHE_DIR``) or when ``JAXABLATE_COMPILE_CACHE`` switches it off. Otherwise
    it sets ``jax_compilation_cache_dir``, lowers ``jax_persistent_cache_min_compile_time_secs``
    to :data:`MIN_COMPILE_SECONDS` so CPU programs are cached too, and bounds the cache at
    :data:`MAX_CACHE_BYTES` (least recently used programs go first) when no bound is set. A
    directory that cannot be created leaves the cache off.

    Returns:
        The cache directory in use (``None``: no persistent cache).
    """
    current = config_flag("jax_compilation_cache_dir")
    if current:
        return str(current)
    directory = cache_dir()
    if directory is None:
        return None
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # an unwritable cache directory: compile as before, without warnings
    jax.config.update("jax_compilation_cache_dir", str(directory))
    if config_flag("jax_persistent_cache_min_compile_time_secs") == 1.0:  # JAX's default
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    unbounded = config_flag("jax_compilation_cache_max_size") == -1  # JAX's default
    if unbounded and importlib.util.find_spec("filelock") is not None:  # eviction needs it
        jax.config.update("jax_compilation_cache_max_size", MAX_CACHE_BYTES)
    return str(directory)
