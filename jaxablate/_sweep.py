"""Resumable on-disk sweeps: evaluate many subsets chunk by chunk, from one or several processes.

The directory's files (manifest, rows, checksummed chunks tied to their manifest) are
:mod:`jaxablate._sweep_store`'s. Running the same :func:`sweep` again reads the finished chunks
and computes only the rest; a manifest that does not match the call is refused with a message
listing the differing fields. A killed process, Ctrl-C or a full disk (``OSError``) leaves whole
files or none, and every finished chunk.

**Determinism.** The values are bit-identical however a sweep is run on one machine: resumed
after a kill at any point, split over workers, on one device or several, loaded or idle. Float
results depend (in the last bits) on the vmap width, so none of what decides the widths depends
on timing or on the worker and device counts: ``chunk_size="auto"`` is a function of the row
count; the evaluation plan (rows per device per compiled call and their inner vmap width,
:func:`jaxablate._chunking.device_plan`) one of the shapes, the memory budget and the kind of
device. Both are recorded in the manifest and reused by every later call and every worker. A
call on ``d`` devices evaluates ``d`` row groups at once, each with the same shapes. (A resume
under another jax version or on another kind of device may differ in the last bits; the
manifest records who started the sweep, and a warning says so. Replacements and metric data that
such a machine recomputes differ in their last bits too: the manifest records them as sketches
beside their sha256, and data equal up to the last bits resume the sweep with a warning, see
:func:`jaxablate._fingerprint.reconcile`.)

**Several processes** may work on one directory (on a shared filesystem). Each claims a chunk
(:func:`jaxablate._files.claim`, an atomically created claim file) before computing it, so no
chunk is computed twice; a claim whose process is gone is taken over. Explicit workers
(``jax.distributed`` or ``worker=(i, k)``) split the chunks: worker ``i`` of ``k`` computes the
chunks ``c`` with ``c % k == i``. :func:`sweep` then waits for the other workers' chunks, logs
what it waits for, and gives up after ``timeout`` seconds in which no running process works on
them; :func:`sweep_chunks` returns as soon as this worker's chunks are written. Values are
always returned as they are on disk.

A call runs in named steps: resolve and check the inputs, open (or check) the manifest
(:func:`_plan`), compute this worker's chunks (:func:`_own_chunks`, one :func:`_obtain` each),
wait for the others (:func:`_wait_for_others`) and collect the table (:func:`_collect`).
"""

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jax
import numpy as np
from jax.sharding import Mesh
from jaxtyping import Array, Bool, Float, Int

from jaxablate import _chunking, _evaluate, subsets
from jaxablate import _files as files
from jaxablate import _sweep_store as store
from jaxablate._checks import finite_number, local_mesh, one_axis_mesh
from jaxablate._fingerprint import (
    ablation_entry,
    ablation_sketch,
    metric_entry,
    metric_sketch,
    tokens_entry,
    weights_fingerprint,
)
from jaxablate._prompts import Prompts
from jaxablate._sweep_inputs import (
    _check_ablation,
    _check_tokens,
    _chunk_size,
    _eval_plan,
    _int_or_auto,
    _resolve_rows,
    resolve_worker,
)
from jaxablate._sweep_store import (
    SweepStatus,
    chunk_ranges,
    load_sweep,
    read_manifest,
    sweep_status,
)
from jaxablate.components import Components, check_components, check_model
from jaxablate.metrics import loss
from jaxablate.models.inputs import Ablation
from jaxablate.models.transformer import Transformer

log = logging.getLogger("jaxablate.sweep")

#: Seconds of waiting for other workers without progress before a warning says so.
STALL_WARNING_SECONDS = 30.0

Rows = Bool[np.ndarray, "n_masks n_players"] | Literal["all"]
OnChunk = Callable[[int, int, int], None]

__all__ = [
    "SweepStatus",
    "chunk_ranges",
    "load_sweep",
    "read_manifest",
    "sweep",
    "sweep_chunks",
    "sweep_status",
]


# ------------------------------------------------------------------------------ steps


@dataclass(frozen=True)
class _Plan:
    """Everything one sweep call needs once its inputs are checked: what the chunks are and how
    this worker evaluates them."""

    out: Path
    model: Transformer
    comps: Components
    tokens: Any  # checked tokens, or a Prompts
    explicit: np.ndarray | None  # the rows, or None for "all" (generated per chunk)
    ranges: list[tuple[int, int]]
    metric: Callable[..., jax.Array]
    ablation: Ablation
    eval_plan: _chunking.Plan  # rows per compiled call (all devices) and inner width
    share_prefix: bool
    mesh: Mesh
    study: str  # the manifest's fingerprint, recorded in every chunk
    index: int
    count: int
    poll_interval: float
    show_progress: bool
    on_chunk: OnChunk | None


def _manifest(
    model: Transformer,
    comps: Components,
    tokens: Any,
    ablation: Ablation,
    metric: Callable[..., jax.Array],
    rows_entry: Any,
    n_rows: int,
) -> Callable[[int, dict[str, Any]], dict[str, Any]]:
    """``(chunk_size, plan) -> manifest`` of a call (the inputs hashed once)."""
    fixed = {
        "format": store.FORMAT,
        "format_version": store.FORMAT_VERSION,
        "components": comps.names,
        "model_config": model.config.to_dict(),
        "weights_sha256": weights_fingerprint(model),
        "tokens": tokens_entry(tokens),
        "ablation": ablation_entry(ablation),
        "ablation_sketch": ablation_sketch(ablation),
        "metric": metric_entry(metric),
        "metric_sketch": metric_sketch(metric),
        "rows": rows_entry,
        "n_rows": n_rows,
        "versions": store.versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }

    def manifest(chunk: int, plan: dict[str, Any]) -> dict[str, Any]:
        n_chunks = len(chunk_ranges(n_rows, chunk))
        return {**fixed, "chunk_size": chunk, "n_chunks": n_chunks, "plan": plan}

    return manifest


def _check_out(out: object) -> Path:
    """``out`` as a path, refused when it is not a path or names an existing file."""
    if not isinstance(out, str | os.PathLike) or not os.fspath(out):
        raise ValueError(f"out must be a directory path (str or os.PathLike), got {out!r}")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"out is not a directory: {path} is a file; give a sweep directory")
    return path


def _plan(
    model: Transformer,
    comps: Components,
    rows: object,
    tokens: object,
    out: str | os.PathLike,
    *,
    metric: Callable[..., jax.Array],
    ablation: Ablation | None,
    options: dict[str, Any],
) -> _Plan:
    """Resolve and check every input, then create or check the manifest and plan the chunks."""
    check_model(model)
    out = _check_out(out)
    check_components(model.config, comps)
    tokens, shape = _check_tokens(model, tokens)
    explicit, n_rows, rows_entry = _resolve_rows(rows, len(comps))
    replacement = _check_ablation(ablation, model, shape)
    index, count = resolve_worker(options["worker"])
    chunk_size = _int_or_auto("chunk_size", options["chunk_size"])
    group = _int_or_auto("eval_chunk_size", options["eval_chunk_size"])
    mesh = options["mesh"]
    mesh = local_mesh("masks") if mesh is None else one_axis_mesh(mesh, "masks")
    if options["memory_budget"] is not None:
        _chunking.check_budget(options["memory_budget"])
    if options.get("timeout") is not None:  # sweep's wait for other workers
        finite_number("timeout", options["timeout"], low=0.0, what="None or seconds >= 0")
    options["poll_interval"] = finite_number(
        "poll_interval", options["poll_interval"], what="a finite number of seconds > 0"
    )
    if options["poll_interval"] <= 0:
        raise ValueError(
            f"poll_interval must be a finite number of seconds > 0, got {options['poll_interval']}"
        )
    record = _manifest(model, comps, tokens, replacement, metric, rows_entry, n_rows)

    def build(existing: dict[str, Any] | None) -> dict[str, Any]:
        chunk = _chunk_size(chunk_size, n_rows, existing)
        settings = dict(
            cfg=model.config, shape=shape, chunk=chunk, budget=options["memory_budget"],
            share_prefix=options["share_prefix"],
        )  # fmt: skip
        return record(chunk, _eval_plan(group, existing, settings))

    out = Path(out)
    manifest = store.open_manifest(out, build, explicit)
    for directory in (out, out / store.CHUNKS):
        files.remove_stale_temps(directory)
    files.remove_stale_claims(out / store.CHUNKS)
    plan = manifest["plan"]
    devices = int(mesh.devices.size)
    return _Plan(
        out=out, model=model, comps=comps, tokens=tokens, explicit=explicit,
        ranges=chunk_ranges(n_rows, manifest["chunk_size"]), metric=metric, ablation=replacement,
        eval_plan=_chunking.Plan(plan["rows_per_device"] * devices, plan["inner"]),
        share_prefix=plan["share_prefix"], mesh=mesh, study=store.study_fingerprint(manifest),
        index=index, count=count, poll_interval=options["poll_interval"],
        # with jax.distributed, only process 0 draws a bar (each one sees the whole table)
        show_progress=options["progress"] and (options["worker"] is not None or index == 0),
        on_chunk=options["on_chunk"],
    )  # fmt: skip


def _compute_chunk(plan: _Plan, c: int) -> np.ndarray:
    """Evaluate chunk ``c`` with the recorded plan, write its file and report it to
    ``on_chunk``; returns the values on disk."""
    start, stop = plan.ranges[c]
    if plan.explicit is None:
        chunk = subsets.bits(np.arange(start, stop), len(plan.comps))
    else:
        chunk = plan.explicit[start:stop]
    evaluation = _evaluate.run(
        plan.model,
        plan.comps,
        chunk,
        plan.tokens,
        metric=plan.metric,
        ablation=plan.ablation,
        share_prefix=plan.share_prefix,
        mesh=plan.mesh,
        plan=plan.eval_plan,
    )
    values = np.asarray(evaluation.per_example.mean(axis=1), np.float32)
    values = store.write_chunk(plan.out, c, start, stop, values, plan.study)
    if plan.on_chunk is not None:
        plan.on_chunk(c, start, stop)
    return values


def _read(plan: _Plan, c: int) -> tuple[np.ndarray | None, str]:
    return store.read_chunk(plan.out, c, *plan.ranges[c], plan.study)


def _obtain(plan: _Plan, c: int) -> np.ndarray | None:
    """Chunk ``c``'s values: read when valid, else computed under a claim; ``None`` while
    another running process holds the claim (computing it)."""
    values, _ = _read(plan, c)
    if values is not None:
        return values
    held = files.claim(store.claim_path(plan.out, c))
    if held is None:
        return None
    with held:
        values, why = _read(plan, c)  # finished while we claimed it?
        if values is not None:
            return values
        if why != "missing":
            path = store.chunk_path(plan.out, c)
            if why == "a directory":
                raise ValueError(
                    f"{path} is a directory where chunk {c} of the sweep belongs; remove it "
                    "and rerun"
                )
            log.warning("sweep %s: %s is bad (%s); recomputing it", plan.out, path.name, why)
            path.unlink(missing_ok=True)
        return _compute_chunk(plan, c)


@dataclass
class _Progress:
    """The progress bar and the chunks it counts."""

    bar: Any
    plan: _Plan
    counted: set[int] = field(default_factory=set)

    def add(self, chunks: Any) -> None:
        new = set(chunks) - self.counted
        self.counted |= new
        self.bar.update(sum(self.plan.ranges[c][1] - self.plan.ranges[c][0] for c in new))


def _on_disk(plan: _Plan, names: set[str] | None = None) -> set[int]:
    """The chunks whose files are present (not verified) among ``names`` (default: listed)."""
    names = set(os.listdir(plan.out / store.CHUNKS)) if names is None else names
    return {c for c in range(len(plan.ranges)) if store.chunk_path(plan.out, c).name in names}


def _progress(plan: _Plan) -> _Progress:
    """The progress bar of a sweep, started at the rows already on disk."""
    done = _on_disk(plan)
    rows = sum(b - a for c, (a, b) in enumerate(plan.ranges) if c in done)
    bar = files.progress_bar(
        total=plan.ranges[-1][1], initial=rows, desc="sweep", unit="subsets",
        enabled=plan.show_progress,
    )  # fmt: skip
    return _Progress(bar, plan, done)


def _own_chunks(plan: _Plan, progress: _Progress) -> dict[int, np.ndarray]:
    """This worker's chunks: finished ones read (and verified), the others computed, or waited
    for while another running process computes them."""
    pending = list(range(plan.index, len(plan.ranges), plan.count))
    results: dict[int, np.ndarray] = {}
    for c in pending:
        values, _ = _read(plan, c)
        if values is not None:
            results[c] = values
    pending = [c for c in pending if c not in results]
    if results:
        log.info(
            "sweep %s: resuming; %d own chunks done, %d to go", plan.out, len(results), len(pending)
        )
    while pending:
        waiting = []
        for c in pending:
            values = _obtain(plan, c)
            if values is None:
                waiting.append(c)
            else:
                results[c] = values
                progress.add([c])
        if waiting:
            log.debug("sweep %s: chunks %s are claimed by other processes", plan.out, waiting)
            time.sleep(plan.poll_interval)
        pending = waiting
    return results


def _waiting_for(plan: _Plan, missing: list[int], names: set[str]) -> tuple[list[int], str]:
    """``(chunks a running process computes, what is awaited)`` among ``missing`` (``names``:
    the files of the chunks directory)."""
    live, gone, unclaimed = [], [], []
    for c in missing:
        path = store.claim_path(plan.out, c)
        found = files.owner(path) if path.name in names else None
        if found is None:
            unclaimed.append(c)
        elif found.state == "live":
            live.append(c)
        else:
            gone.append((c, found.describe()))
    parts = [f"{len(missing)} of {len(plan.ranges)} chunks"]
    if live:
        parts.append(f"{len(live)} being computed (first: {live[:5]})")
    if unclaimed:
        workers = sorted({c % plan.count for c in unclaimed})
        parts.append(
            f"{len(unclaimed)} not started by any process (first: {unclaimed[:5]}; chunks of "
            f"worker(s) {workers[:8]} of {plan.count})"
        )
    if gone:
        parts.append(f"{len(gone)} claimed by processes that stopped (first: {gone[:3]})")
    return live, "; ".join(parts)


def _wait_for_others(
    plan: _Plan, results: dict[int, np.ndarray], progress: _Progress, timeout: float | None
) -> None:
    """Poll the directory until every chunk's file is there; report what is awaited.

    Raises:
        TimeoutError: for ``timeout`` seconds no missing chunk was finished or computed by a
            running process.
    """
    stalled_since = time.monotonic()
    warned_at = stalled_since
    n_missing = None
    while True:
        names = set(os.listdir(plan.out / store.CHUNKS))
        done = _on_disk(plan, names)
        progress.add(done)
        missing = [c for c in range(len(plan.ranges)) if c not in results and c not in done]
        if not missing:
            return
        live, what = _waiting_for(plan, missing, names)
        now = time.monotonic()
        if n_missing is None:
            log.info(
                "sweep %s (worker %d/%d): waiting for %s", plan.out, plan.index, plan.count, what
            )
        if live or (n_missing is not None and len(missing) < n_missing):
            stalled_since = warned_at = now
        n_missing = len(missing)
        stalled = now - stalled_since
        if timeout is not None and stalled > timeout:
            raise TimeoutError(
                f"sweep {plan.out} (worker {plan.index}/{plan.count}): gave up after {timeout} s "
                f"without progress, waiting for {what}. This worker's chunks are on disk: start "
                "the missing workers, then call again (or use ja.sweep_chunks, which does not "
                "wait)"
            )
        if stalled > STALL_WARNING_SECONDS and now - warned_at > STALL_WARNING_SECONDS:
            left = "no limit" if timeout is None else f"giving up in {timeout - stalled:.0f} s"
            log.warning(
                "sweep %s: no progress for %.0f s (%s); waiting for %s",
                plan.out,
                stalled,
                left,
                what,
            )
            warned_at = now
        time.sleep(plan.poll_interval)


def _collect(plan: _Plan, results: dict[int, np.ndarray]) -> np.ndarray:
    """The whole table as on disk: this worker's values, the others' chunks read (a bad one
    recomputed)."""
    table = np.empty(plan.ranges[-1][1], np.float32)
    for c, (start, stop) in enumerate(plan.ranges):
        values = results.get(c)
        while values is None:
            values = _obtain(plan, c)
            if values is None:
                time.sleep(plan.poll_interval)
        table[start:stop] = values
    return table


# ------------------------------------------------------------------------------ sweep


def sweep(
    model: Transformer,
    comps: Components,
    rows: Rows,
    tokens: Int[Array, "batch seq"] | Prompts,
    out: str | os.PathLike,
    *,
    metric: Callable[..., jax.Array] = loss,
    ablation: Ablation | None = None,
    chunk_size: int | Literal["auto"] = "auto",
    eval_chunk_size: int | Literal["auto"] = "auto",
    progress: bool = True,
    worker: tuple[int, int] | None = None,
    poll_interval: float = 1.0,
    timeout: float | None = 600.0,
    on_chunk: OnChunk | None = None,
    share_prefix: bool = True,
    mesh: Mesh | None = None,
    memory_budget: int | None = None,
) -> Float[np.ndarray, " n_masks"]:
    """:func:`jaxablate.evaluate` over many rows, written to ``out`` chunk by chunk; resumable.

    The first call writes ``out/manifest.json`` (components, ablation, metric, sha256 of weights,
    tokens and rows, chunk size, evaluation plan; versions, not compared), then one checksummed
    file per chunk. A rerun computes only missing or corrupt chunks; other arguments raise
    ``ValueError``. Concurrent processes share the chunks (each claims one before computing it).
    The values do not depend on kills, workers, devices or machine load: the chunks and the
    evaluation plan depend on shapes and memory alone and are recorded (module docstring;
    ``docs/conventions.md``, "Sweeps are deterministic"). Worker ``i`` of ``k`` computes the
    chunks ``c % k == i``, then waits for the others' (:func:`sweep_chunks` does not).

    Args:
        model: The model.
        comps: The players; column ``i`` of the rows is ``comps[i]``.
        rows: ``"all"`` (every subset; row ``r`` = bitmask ``r``, generated chunk by chunk) or
            ``bool [M, n]`` rows (saved as ``out/rows.npy``).
        tokens: ``int [batch, seq]`` inputs, or :class:`jaxablate.Prompts` (their tokens,
            lengths, answers and named positions are fingerprinted).
        out: Sweep directory (created if needed).
        metric: ``(logits, tokens) -> [batch]`` (a function or a :class:`jaxablate.metrics.Metric`).
        ablation: Replacement for removed components (default: zero ablation).
        chunk_size: Rows per on-disk chunk. ``"auto"`` reuses an existing manifest's, else picks
            about 64 chunks of a power of two rows, between 256 and ``2^14`` rows (one chunk for
            a sweep of at most 256 rows); never dependent on the worker count.
        eval_chunk_size: Rows each device evaluates per compiled call (one prefix tree; a call
            on ``d`` devices takes ``d`` times as many). ``"auto"`` reuses an existing
            manifest's plan, else takes every row of a chunk that fits ``memory_budget`` (at
            most 256 on a CPU). Recorded; another int than the recorded one is refused.
        progress: A tqdm bar (subsets/s, ETA) when stderr is a terminal.
        worker: ``(index, count)``; default ``(jax.process_index(), jax.process_count())``.
        poll_interval: Seconds between directory polls while waiting for other processes.
        timeout: Longest wait (seconds) for other workers' chunks while no running process
            computes any of them; ``None``: no limit. After 30 s a warning says what is awaited.
        on_chunk: Called as ``on_chunk(index, start, stop)`` after this process wrote a chunk.
        share_prefix: Forwarded to :func:`jaxablate.evaluate` (and recorded).
        mesh: Forwarded to :func:`jaxablate.evaluate` (with several processes: local devices).
        memory_budget: Bytes one device's rows of a compiled call may take, for the ``"auto"``
            plan (default as in :func:`jaxablate.evaluate`); a recorded plan is reused as is.

    Returns:
        float32 ``[M]`` values, index = row (= bitmask for ``"all"``), as on disk.

    Raises:
        ValueError: invalid arguments, ``out`` holds a sweep of other arguments, or a file
            that cannot be used (the message names it).
        TimeoutError: no process computed other workers' chunks for ``timeout`` seconds.
        OSError: a file could not be written (a full disk): finished chunks stay on disk and
            a rerun resumes. Ctrl-C (``KeyboardInterrupt``) leaves the directory the same way.
    """
    options = dict(
        chunk_size=chunk_size, eval_chunk_size=eval_chunk_size, progress=progress, worker=worker,
        poll_interval=poll_interval, on_chunk=on_chunk, share_prefix=share_prefix, mesh=mesh,
        memory_budget=memory_budget, timeout=timeout,
    )  # fmt: skip
    plan = _plan(model, comps, rows, tokens, out, metric=metric, ablation=ablation, options=options)
    progress_ = _progress(plan)
    with progress_.bar:
        results = _own_chunks(plan, progress_)
        _wait_for_others(plan, results, progress_, timeout)
    return _collect(plan, results)


def sweep_chunks(
    model: Transformer,
    comps: Components,
    rows: Rows,
    tokens: Int[Array, "batch seq"] | Prompts,
    out: str | os.PathLike,
    *,
    metric: Callable[..., jax.Array] = loss,
    ablation: Ablation | None = None,
    chunk_size: int | Literal["auto"] = "auto",
    eval_chunk_size: int | Literal["auto"] = "auto",
    progress: bool = True,
    worker: tuple[int, int] | None = None,
    poll_interval: float = 1.0,
    on_chunk: OnChunk | None = None,
    share_prefix: bool = True,
    mesh: Mesh | None = None,
    memory_budget: int | None = None,
) -> SweepStatus:
    """This worker's part of a :func:`sweep`: compute its chunks and return, without waiting
    for other workers (only for other processes that compute this worker's chunks).

    For workers launched independently (a job array, one ``worker=(i, k)`` each): every worker
    calls this, and whoever needs the table reads it with :func:`load_sweep` (or calls
    :func:`sweep`, which waits) once :func:`sweep_status` says it is complete. Arguments,
    manifest checks and resumption are those of :func:`sweep`.

    Returns:
        The directory's :class:`SweepStatus` once this worker's chunks are written (files
        present; not verified).

    Raises:
        ValueError: invalid arguments, or ``out`` holds a sweep of different arguments.
        OSError: a file could not be written (as in :func:`sweep`).
    """
    options = dict(
        chunk_size=chunk_size, eval_chunk_size=eval_chunk_size, progress=progress, worker=worker,
        poll_interval=poll_interval, on_chunk=on_chunk, share_prefix=share_prefix, mesh=mesh,
        memory_budget=memory_budget,
    )  # fmt: skip
    plan = _plan(model, comps, rows, tokens, out, metric=metric, ablation=ablation, options=options)
    progress_ = _progress(plan)
    with progress_.bar:
        _own_chunks(plan, progress_)
    return sweep_status(plan.out)
