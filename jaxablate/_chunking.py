"""Chunk sizes for :func:`jaxablate.evaluate`: bounded by memory, chosen for speed.

The bound comes from an estimate of the activations one row keeps alive (see
:func:`bytes_per_row`); within it, ``chunk_size="auto"`` times a few sizes on the real rows and
keeps the fastest per row (on a CPU, chunks that fit the cache win; on a GPU, large ones do).
"""

import os
import time

import jax
import numpy as np

from jaxablate.models.config import ModelConfig

#: Upper bound of the default memory budget, in bytes.
MAX_DEFAULT_BUDGET = 8 * 2**30
#: Candidate chunk sizes (per device group) for the timed probe.
PROBE_SIZES = (4, 16, 64, 256, 1024, 4096, 16384)

#: Working set (bytes) a CPU keeps in cache: rows are vmapped in batches of about this size.
CPU_CACHE_BYTES = 8 * 2**20

_chosen: dict[tuple, int] = {}


def inner_width(cfg: ModelConfig, token_shape: tuple[int, ...], group: int) -> int:
    """Rows vmapped together inside a compiled chunk (the rest is a ``lax.map`` loop).

    Accelerators take the whole group at once; a CPU takes as many rows as fit
    :data:`CPU_CACHE_BYTES` (a power of two, at least one), since larger batches of activations
    fall out of cache and run slower per row.
    """
    if jax.default_backend() != "cpu":
        return group
    fit = max(1, CPU_CACHE_BYTES // bytes_per_row(cfg, *token_shape))
    return int(min(group, 1 << (fit.bit_length() - 1)))


def bytes_per_row(cfg: ModelConfig, batch: int, seq: int) -> int:
    """Estimated peak bytes of activations per mask row in one compiled chunk.

    Counts float32 copies of the residual stream and block outputs (~8 x d_model), the MLP
    hidden layer (2 x d_mlp), attention scores and pattern (2 x heads x seq) and the logits with
    their log-softmax (3 x vocab), per token.
    """
    per_token = 8 * cfg.d_model + 2 * cfg.d_mlp + 2 * cfg.n_heads * seq + 3 * cfg.vocab_size
    return 4 * batch * seq * per_token


def default_budget() -> int:
    """Half the first device's memory on an accelerator, else a quarter of host RAM (capped)."""
    device = jax.local_devices()[0]
    stats = None
    if device.platform != "cpu":
        try:
            stats = device.memory_stats()
        except Exception:
            stats = None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]) // 2
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 8 * 2**30
    return min(ram // 4, MAX_DEFAULT_BUDGET)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def choose(
    runner,
    rows: np.ndarray,
    cfg: ModelConfig,
    token_shape: tuple[int, int],
    *,
    chunk_size: int | str | None,
    budget: int | None,
) -> int:
    """The chunk size (rows per compiled call, a multiple of the device groups).

    Raises:
        ValueError: a bad ``chunk_size`` or ``memory_budget``, or a budget too small for even
            one row per device.
    """
    groups = runner.groups
    n_rows = rows.shape[0]
    if budget is None:
        budget = default_budget()
    elif not isinstance(budget, int | np.integer) or budget <= 0:
        raise ValueError(f"memory_budget must be a positive number of bytes, got {budget!r}")
    per_row = bytes_per_row(cfg, *token_shape)
    cap = int(budget) // per_row
    if cap < groups:
        raise ValueError(
            f"memory_budget={budget} bytes fits {cap} rows but {groups} device(s) need at least "
            f"one row each ({per_row} bytes per row for tokens of shape {token_shape}); "
            "raise the budget or evaluate fewer tokens at once"
        )
    cap = cap // groups * groups
    full = _round_up(n_rows, groups)
    if chunk_size is None:
        return balanced(n_rows, min(full, cap), groups)
    if chunk_size == "auto":
        return balanced(n_rows, _probe(runner, rows, token_shape, min(full, cap)), groups)
    if (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, int | np.integer)
        or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive int, 'auto' or None, got {chunk_size!r}")
    return min(_round_up(int(chunk_size), groups), full)


def balanced(n_rows: int, chunk: int, groups: int) -> int:
    """The smallest chunk (a multiple of ``groups``, at most ``chunk``) that needs no more
    chunks than ``chunk`` does: 256 rows in chunks of at most 136 take two chunks of 128, not
    two of 136 with 16 rows of padding."""
    n_chunks = -(-n_rows // chunk)
    return min(chunk, _round_up(-(-n_rows // n_chunks), groups))


def _time_per_row(runner, rows: np.ndarray, size: int) -> float:
    prep = runner.prepare(rows[:size], size)
    jax.block_until_ready(runner.run_chunk(prep, 0))  # compile
    start = time.perf_counter()
    jax.block_until_ready(runner.run_chunk(prep, 0))
    return (time.perf_counter() - start) / size


def _probe(runner, rows: np.ndarray, token_shape: tuple[int, int], limit: int) -> int:
    """Time a few chunk sizes on the first rows and keep the fastest per row.

    On a CPU, the rows vmapped together inside a chunk (see :func:`inner_width`) are then tuned
    too: a quarter and four times the cache heuristic are timed against it. The choice is kept
    on ``runner.inner`` and remembered with the chunk size for later calls.
    """
    groups = runner.groups
    candidates = sorted({s * groups for s in PROBE_SIZES if s * groups < limit} | {limit})
    key = (
        runner.graphdef,
        runner.comps,
        token_shape,
        runner.share_prefix,
        runner.positions,
        groups,
    )
    if key in _chosen:
        chunk, runner.inner = _chosen[key]
        return min(chunk, limit)
    best, best_time = candidates[0], float("inf")
    for size in candidates if len(candidates) > 1 else []:
        per_row = _time_per_row(runner, rows, size)
        if per_row < best_time:
            best, best_time = size, per_row
        elif per_row > 1.25 * best_time:
            break  # larger chunks only get slower from here
    if len(candidates) == 1:
        best = limit
    inner = None
    group = best // groups
    heuristic = inner_width(runner.cfg, token_shape, group)
    if jax.default_backend() == "cpu":
        options = sorted({max(1, heuristic // 4), heuristic, min(group, heuristic * 4)})
        timings = {}
        for option in options if len(options) > 1 else []:
            runner.inner = option
            timings[option] = _time_per_row(runner, rows, best)
        inner = min(timings, key=timings.get) if timings else None
    runner.inner = inner
    _chosen[key] = (best, inner)
    return best
