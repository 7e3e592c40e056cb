"""Chunk sizes for :func:`jaxablate.evaluate`: bounded by memory, chosen for speed.

The bound comes from an estimate of the activations one row keeps alive (see
:func:`bytes_per_row`); within it, chunks are as large as fit, balanced over the rows, and on a
CPU ``chunk_size="auto"`` also times the rows vmapped together inside a chunk (the inner width:
working sets that fit the cache run faster per row).

A timed choice depends on the load of the machine, and float results depend (in the last bits)
on the vmap width, so sweeps never time: :func:`device_plan` is a pure function of the shapes,
the memory budget and the kind of device, and a sweep records it in its manifest.
"""

import os
import time
from dataclasses import dataclass
from typing import Any, Protocol

import jax
import numpy as np

from jaxablate._checks import positive_int
from jaxablate.models.config import ModelConfig

#: Upper bound of the default memory budget, in bytes.
MAX_DEFAULT_BUDGET = 8 * 2**30

#: Working set (bytes) of the rows a CPU vmaps together: rows are vmapped in batches of about
#: this size. Measured (2-core AMD, 2026-12): on a GPT-2-small-shaped model with a last-position
#: logit difference (0.4 MB a row) 16, 64 and 128 rows gave 517, 636 and 689 subsets/s; on the
#: 4-layer d256 benchmark model (0.3 MB a row) 1781, 1786 and 1478. 32 MiB (64 rows for both)
#: is within 8% of the best of both; 8 MiB (16 rows) was 25% behind on GPT-2.
CPU_CACHE_BYTES = 32 * 2**20
#: Most rows per device group that :func:`device_plan` gives a CPU (more share little more
#: prefix work, and a CPU gains nothing from wider calls).
CPU_DEVICE_ROWS = 256


@dataclass(frozen=True)
class Plan:
    """How an evaluation runs its rows: the value :func:`choose` returns.

    Attributes:
        chunk: Rows per compiled call (a multiple of the device groups).
        inner: Rows vmapped together inside a chunk (a ``lax.map`` loop runs the rest);
            ``None``: the cache rule of :func:`inner_width`.
    """

    chunk: int
    inner: int | None = None


class Runner(Protocol):
    """What the probe needs of the evaluator's runner."""

    groups: int

    def prepare(self, rows: np.ndarray, plan: Plan) -> Any: ...

    def run_chunk(self, prep: Any, index: int) -> jax.Array: ...


#: The positions a metric reads, as the evaluator holds them (``None``: every position; ``[k]``
#: shared by all examples, or ``[batch, k]``; nested tuples or an array).
Queries = tuple[int, ...] | tuple[tuple[int, ...], ...] | np.ndarray | None

#: Plans found by the timed probe, by what they depend on (model graph, components, token shape,
#: prefix sharing, metric positions, device groups), so later calls in a process skip the probe.
_probed: dict[tuple[object, ...], Plan] = {}


def forget_probed_plans() -> int:
    """Forget the plans the probe remembered (the next ``"auto"`` call probes again).

    Returns:
        How many plans were forgotten.
    """
    count = len(_probed)
    _probed.clear()
    return count


def inner_width(
    cfg: ModelConfig,
    token_shape: tuple[int, ...],
    group: int,
    *,
    queries: Queries = None,
    columns: int | None = None,
) -> int:
    """Rows vmapped together inside a compiled chunk (the rest is a ``lax.map`` loop).

    Accelerators take the whole group at once; a CPU takes as many rows as fit
    :data:`CPU_CACHE_BYTES` (a power of two, at least one): wider batches make larger matmuls,
    but far larger ones stream their activations through memory and run slower per row. A
    row's working set is that of its last stage (:func:`row_bytes`, ``last_stage=True``): the
    one every row runs, and the only one when the masked components lie in one layer.
    """
    if jax.default_backend() != "cpu":
        return group
    per_row = row_bytes(cfg, *token_shape, queries=queries, columns=columns, last_stage=True)
    fit = max(1, CPU_CACHE_BYTES // per_row)
    return int(min(group, 1 << (fit.bit_length() - 1)))


def bytes_per_row(
    cfg: ModelConfig,
    batch: int,
    seq: int,
    *,
    queries: Queries = None,
    columns: int | None = None,
) -> int:
    """Estimated peak bytes of activations per mask row in one compiled chunk.

    Counts float32 copies of the residual stream and block outputs (~8 x d_model), the MLP
    hidden layer (2 x d_mlp, 3 x for gated MLPs), attention scores and pattern (2 x heads x
    positions), keys and values repeated to the query heads under grouped-query attention
    (2 x heads x d_head), per token the model runs, and the logits with their log-softmax
    (3 x the vocabulary columns computed) per position read.

    Args:
        cfg: The model's config.
        batch: Examples per row.
        seq: Tokens per example.
        queries: The positions the metric reads (``[k]`` or ``[batch, k]``, as
            :meth:`jaxablate.metrics.Metric.queries`; ``None``: every position). The model then
            runs on the positions up to the last one read, and logits exist at ``k`` positions.
        columns: The vocabulary columns the metric reads (``None``: the whole vocabulary).
    """
    return row_bytes(cfg, batch, seq, queries=queries, columns=columns, last_stage=False)


def row_bytes(
    cfg: ModelConfig,
    batch: int,
    seq: int,
    *,
    queries: Queries,
    columns: int | None,
    last_stage: bool,
) -> int:
    """:func:`bytes_per_row`'s estimate; with ``last_stage``, that of a row's last stage alone.

    Under a metric that reads a few positions the last layer runs at those alone, so a row whose
    masked components all lie in the last layer keeps activations of ``k`` positions only (the
    residual stream entering it is shared by all rows).
    """
    length = seq if queries is None else int(np.max(queries)) + 1
    reads = length if queries is None else int(np.shape(queries)[-1])
    width = cfg.vocab_size if columns is None else int(columns)
    mlp = (3 if cfg.gated_mlp else 2) * cfg.d_mlp
    repeated_kv = 0 if cfg.kv_heads == cfg.n_heads else 2 * cfg.n_heads * cfg.d_head
    per_token = 8 * cfg.d_model + mlp + 2 * cfg.n_heads * length + repeated_kv
    tokens = reads if last_stage else length
    return 4 * batch * (tokens * per_token + reads * 3 * width)


def default_budget() -> int:
    """Half the first device's free memory on an accelerator, else a quarter of host RAM
    (capped at :data:`MAX_DEFAULT_BUDGET`).

    Free memory is ``bytes_limit - bytes_in_use`` of ``Device.memory_stats()`` at the time of
    the call, so the model's weights, a cached prefix or another program's buffers already on
    the device are not planned over; the other half is left for XLA's temporaries and
    fragmentation. A nearly full device still gets a sixteenth of its memory (halved), so
    the plan is small rather than refused.
    """
    device = jax.local_devices()[0]
    stats = None
    if device.platform != "cpu":
        try:
            stats = device.memory_stats()
        except Exception:
            stats = None
    if stats and stats.get("bytes_limit"):
        free = int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
        return max(free, int(stats["bytes_limit"]) // 16) // 2
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 8 * 2**30
    return min(ram // 4, MAX_DEFAULT_BUDGET)


def check_budget(budget: object) -> int:
    """``budget`` as a positive number of bytes (:func:`default_budget` for ``None``)."""
    if budget is None:
        return default_budget()
    if isinstance(budget, bool) or not isinstance(budget, int | np.integer) or budget <= 0:
        raise ValueError(f"memory_budget must be a positive number of bytes, got {budget!r}")
    return int(budget)


def device_plan(
    cfg: ModelConfig, token_shape: tuple[int, int], n_rows: int, *, budget: int | None
) -> Plan:
    """A plan per device that depends on shapes and memory alone (never on timing).

    ``chunk`` is the rows one device evaluates per compiled call (one prefix tree): all
    ``n_rows`` if they fit ``budget`` (bytes for one device's rows), at most
    :data:`CPU_DEVICE_ROWS` on a CPU, split evenly; ``inner`` is :func:`inner_width`'s.
    A call on ``d`` devices then takes ``d * chunk`` rows, and every device runs the same
    shapes whatever ``d`` is, so the values do not depend on the device count.

    Raises:
        ValueError: a bad budget, or one too small for a single row.
    """
    budget = check_budget(budget)
    per_row = bytes_per_row(cfg, *token_shape)
    if budget < per_row:
        raise ValueError(
            f"memory_budget={budget} bytes fits no row ({per_row} bytes per row for tokens of "
            f"shape {token_shape}); raise the budget or evaluate fewer tokens at once"
        )
    limit = CPU_DEVICE_ROWS if jax.default_backend() == "cpu" else n_rows
    chunk = balanced(n_rows, min(n_rows, budget // per_row, limit), 1)
    return Plan(chunk, inner_width(cfg, token_shape, chunk))


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def choose(
    runner: Runner,
    rows: np.ndarray,
    cfg: ModelConfig,
    token_shape: tuple[int, int],
    *,
    chunk_size: int | str | None,
    budget: int | None,
    probe_key: tuple[object, ...],
) -> Plan:
    """The plan of an evaluation: chunk size (a multiple of the device groups) and inner width.

    Args:
        runner: The compiled evaluator (timed by the ``"auto"`` probe).
        rows: The rows to evaluate.
        cfg: The model's config.
        token_shape: ``(batch, seq)``.
        chunk_size: ``None``, ``"auto"`` or a positive int (see :func:`jaxablate.evaluate`).
        budget: Bytes a chunk's activations may take (``None``: :func:`default_budget`).
        probe_key: What an ``"auto"`` plan depends on besides the rows; plans are remembered
            under it for later calls.

    Raises:
        ValueError: a bad ``chunk_size`` or ``memory_budget``, or a budget too small for even
            one row per device.
    """
    groups = runner.groups
    n_rows = rows.shape[0]
    budget = check_budget(budget)
    queries, columns = getattr(runner, "reads", (None, None))  # what the metric reads
    per_row = bytes_per_row(cfg, *token_shape, queries=queries, columns=columns)
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
        return Plan(balanced(n_rows, min(full, cap), groups))
    if chunk_size == "auto":
        probed = _probe(runner, rows, cfg, token_shape, min(full, cap), probe_key)
        return Plan(balanced(n_rows, probed.chunk, groups), probed.inner)
    chunk = positive_int("chunk_size", chunk_size, ", 'auto' or None")
    return Plan(min(_round_up(chunk, groups), full))


def balanced(n_rows: int, chunk: int, groups: int) -> int:
    """The smallest chunk (a multiple of ``groups``, at most ``chunk``) that needs no more
    chunks than ``chunk`` does: 256 rows in chunks of at most 136 take two chunks of 128, not
    two of 136 with 16 rows of padding."""
    n_chunks = -(-n_rows // chunk)
    return min(chunk, _round_up(-(-n_rows // n_chunks), groups))


def _time_per_row(runner: Runner, rows: np.ndarray, plan: Plan) -> float:
    prep = runner.prepare(rows[: plan.chunk], plan)
    jax.block_until_ready(runner.run_chunk(prep, 0))  # compile
    start = time.perf_counter()
    jax.block_until_ready(runner.run_chunk(prep, 0))
    return (time.perf_counter() - start) / plan.chunk


def _probe(
    runner: Runner,
    rows: np.ndarray,
    cfg: ModelConfig,
    token_shape: tuple[int, int],
    limit: int,
    key: tuple[object, ...],
) -> Plan:
    """The largest chunk that fits, balanced over the rows (a rule: no chunk size is timed),
    and on a CPU the inner width, timed (see :func:`_probe_inner`). Remembered under ``key``.

    Timing chunk sizes compiled one program per candidate (up to 7) and took 4.1x a steady
    call on the latency benchmark model; the largest chunk was fastest per row wherever it
    was measured once the inner width is tuned, so only the inner width is timed now
    (``benchmarks/README.md``, *latency*).
    """
    if key in _probed:
        found = _probed[key]
        return Plan(min(found.chunk, limit), found.inner)
    chunk = balanced(rows.shape[0], limit, runner.groups)
    _probed[key] = Plan(chunk, _probe_inner(runner, rows, cfg, token_shape, chunk))
    return _probed[key]


def _probe_inner(
    runner: Runner, rows: np.ndarray, cfg: ModelConfig, token_shape: tuple[int, int], chunk: int
) -> int | None:
    """On a CPU, the cache rule's inner width against four times it, each timed per row on a
    small chunk of four times the rule's rows per group (two small programs; the evaluation's
    own chunk compiles once, after).

    Returns ``None`` (the rule) on accelerators, when one row's activations alone overflow
    :data:`CPU_CACHE_BYTES` (the rule's single row is the fastest there), or when the chunk has
    no room for the wider option.
    """
    queries, columns = getattr(runner, "reads", (None, None))
    per_row = bytes_per_row(cfg, *token_shape, queries=queries, columns=columns)
    if jax.default_backend() != "cpu" or per_row >= CPU_CACHE_BYTES:
        return None
    group = chunk // runner.groups
    heuristic = inner_width(cfg, token_shape, group, queries=queries, columns=columns)
    wide = 4 * heuristic
    if wide > group:
        return None
    timings = {
        option: _time_per_row(runner, rows, Plan(wide * runner.groups, option))
        for option in (heuristic, wide)
    }
    return None if timings[heuristic] <= timings[wide] else wide
