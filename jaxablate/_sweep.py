"""Resumable on-disk sweeps: evaluate many subsets chunk by chunk, from one or several processes.

A sweep directory holds::

    out/manifest.json               what is being computed (fingerprints of every input)
    out/rows.npy                    the rows, when explicit rows (not "all") were given
    out/chunks/chunk_00000000.npz   values of rows [start, stop), with a sha256 of the values

Every file is written to a temporary file in the same directory and moved into place with
``os.replace``, so a killed process leaves either a whole chunk or none. Running the same
:func:`sweep` again reads finished chunks (each verified against its checksum; a truncated or
corrupt one is deleted and recomputed) and computes only the rest. A manifest that does not
match the call is refused with a message listing the differing fields; nothing is overwritten.

Several processes (``jax.distributed`` or explicit ``worker=(i, k)``) may work on one directory
on a shared filesystem: worker ``i`` of ``k`` computes the chunks ``c`` with ``c % k == i``.
:func:`sweep` then waits for the other workers' chunks and returns the whole table;
:func:`sweep_chunks` returns as soon as this worker's chunks are written.

A call runs in named steps: resolve and check the inputs, open (or check) the manifest and plan
the chunks (:func:`_plan`), compute this worker's chunks (:func:`_own_chunks`, one
:func:`_compute_chunk` each), wait for the others (:func:`_wait_for_others`) and collect the
table (:func:`_collect`).
"""

import hashlib
import importlib.metadata
import json
import logging
import math
import os
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jax
import numpy as np
from jax.sharding import Mesh
from jaxtyping import Array, Bool, Float, Int

from jaxablate import subsets
from jaxablate._checks import MAX_SWEEP_PLAYERS, one_axis_mesh, positive_int, rows_2d
from jaxablate._evaluate import evaluate
from jaxablate._files import atomic_write, progress_bar
from jaxablate._fingerprint import field_diff, hash_arrays
from jaxablate.components import Components, check_components, check_rows
from jaxablate.metrics import as_metric, loss
from jaxablate.models.inputs import Ablation, check_tokens, zero
from jaxablate.models.io import model_arrays
from jaxablate.models.transformer import Transformer

log = logging.getLogger("jaxablate.sweep")

FORMAT = "jaxablate-sweep"
FORMAT_VERSION = 1
#: Largest on-disk chunk that ``chunk_size="auto"`` picks.
AUTO_CHUNK = 2**14
#: Manifest fields that are recorded but not compared when a sweep resumes.
UNCOMPARED = ("versions", "created")

MANIFEST = "manifest.json"
ROWS_FILE = "rows.npy"
CHUNKS = "chunks"

Rows = Bool[np.ndarray, "n_masks n_players"] | Literal["all"]
OnChunk = Callable[[int, int, int], None]


# ------------------------------------------------------------------------------ fingerprints


def weights_fingerprint(model: Transformer) -> str:
    """sha256 of every parameter of ``model`` (names, dtypes, shapes, bytes)."""
    return hash_arrays(sorted(model_arrays(model).items()))


def _tree_fingerprint(tree: Any) -> str:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return hash_arrays([(jax.tree_util.keystr(path), leaf) for path, leaf in flat])


def _ablation_entry(ablation: Ablation) -> dict[str, Any]:
    arrays = [(name, getattr(ablation, name)) for name in ("z", "attn", "mlp")]
    h = hash_arrays([*arrays, ("prefix_positions", np.asarray(ablation.prefix_positions))])
    return {"kind": ablation.kind, "sha256": h}


def _metric_entry(metric: Callable[..., jax.Array]) -> dict[str, Any]:
    m = as_metric(metric)
    entry: dict[str, Any] = {"name": m.name, "sha256": _tree_fingerprint(m.data)}
    if m.positions is not None:
        entry["positions"] = list(m.positions)
    return entry


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in ("jaxablate", "jax", "jaxlib", "flax", "numpy"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out


# ------------------------------------------------------------------------------ chunk files


def _chunk_path(out: Path, index: int) -> Path:
    return out / CHUNKS / f"chunk_{index:08d}.npz"


def _write_chunk(out: Path, index: int, start: int, stop: int, values: np.ndarray) -> None:
    values = np.ascontiguousarray(values, np.float32)
    digest = hashlib.sha256(values.tobytes()).hexdigest()

    def write(f: Any) -> None:
        np.savez(f, values=values, start=np.int64(start), stop=np.int64(stop), sha256=digest)

    atomic_write(_chunk_path(out, index), write)


def _read_chunk(out: Path, index: int, start: int, stop: int) -> tuple[np.ndarray | None, str]:
    """``(values, "")`` for a valid chunk file, else ``(None, why)``."""
    path = _chunk_path(out, index)
    if not path.exists():
        return None, "missing"
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as data:
            values = np.asarray(data["values"])
            got = (int(data["start"]), int(data["stop"]))
            digest = str(data["sha256"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        return None, f"unreadable ({type(err).__name__}: {err})"
    if got != (start, stop):
        return None, f"holds rows {got}, expected {(start, stop)}"
    if values.dtype != np.float32 or values.shape != (stop - start,):
        return None, f"holds {values.dtype} {values.shape}, expected float32 ({stop - start},)"
    if hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest() != digest:
        return None, "checksum mismatch"
    return values, ""


def _valid_chunk(out: Path, index: int, start: int, stop: int) -> np.ndarray | None:
    """The values of a valid chunk file; a bad one is logged and deleted (``None``)."""
    values, why = _read_chunk(out, index, start, stop)
    if values is None and why != "missing":
        log.warning("sweep %s: chunk %d is bad (%s); recomputing it", out, index, why)
        _chunk_path(out, index).unlink(missing_ok=True)
    return values


def _rows_done(out: Path, ranges: list[tuple[int, int]]) -> dict[int, int]:
    """``{chunk: rows}`` of the chunk files present (not verified)."""
    names = set(os.listdir(out / CHUNKS))
    return {c: b - a for c, (a, b) in enumerate(ranges) if _chunk_path(out, c).name in names}


def _remove_stale_temps(out: Path, index: int, count: int) -> None:
    """Delete temporary chunk files left by a killed run of this worker's chunks."""
    for name in os.listdir(out / CHUNKS):
        if name.startswith(".chunk_") and name.endswith(".tmp"):
            try:
                c = int(name[len(".chunk_") :].split(".")[0])
            except ValueError:
                continue
            if c % count == index:
                (out / CHUNKS / name).unlink(missing_ok=True)


# ------------------------------------------------------------------------------ manifest


def read_manifest(out: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a sweep directory.

    Raises:
        ValueError: ``out`` holds no sweep manifest.
    """
    path = Path(out) / MANIFEST
    if not path.is_file():
        raise ValueError(f"{out} holds no {MANIFEST}: not a sweep directory")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not a jaxablate sweep manifest (format {FORMAT!r})")
    return manifest


def _open_manifest(out: Path, manifest: dict[str, Any], rows: np.ndarray | None) -> None:
    """Create ``out``'s manifest, or check that the existing one matches ``manifest``.

    Raises:
        ValueError: ``out`` holds a manifest of different arguments (one line per field).
    """
    (out / CHUNKS).mkdir(parents=True, exist_ok=True)
    text = json.dumps(manifest, indent=2, sort_keys=True).encode()
    manifest = json.loads(text)  # tuples become lists, as they will read back
    if not (out / MANIFEST).exists():
        if rows is not None:
            atomic_write(out / ROWS_FILE, lambda f: np.save(f, rows))
        if atomic_write(out / MANIFEST, lambda f: f.write(text), exclusive=True):
            return
    diff = field_diff(read_manifest(out), manifest, ignore=UNCOMPARED)
    if diff:
        raise ValueError(
            f"the sweep in {out} was started with different arguments; refusing to mix results.\n  "
            + "\n  ".join(diff)
            + "\nUse another out directory, or delete this one to start over."
        )


def _manifest(
    model: Transformer,
    comps: Components,
    tokens: jax.Array,
    ablation: Ablation,
    metric: Callable[..., jax.Array],
    rows_entry: Any,
    ranges: list[tuple[int, int]],
) -> dict[str, Any]:
    tokens_np = np.asarray(tokens)
    n_rows = ranges[-1][1]
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "components": comps.names,
        "model_config": model.config.to_dict(),
        "weights_sha256": weights_fingerprint(model),
        "tokens_shape": list(tokens_np.shape),
        "tokens_sha256": hash_arrays([("tokens", tokens_np)]),
        "ablation": _ablation_entry(ablation),
        "metric": _metric_entry(metric),
        "rows": rows_entry,
        "n_rows": n_rows,
        "chunk_size": ranges[0][1],
        "n_chunks": len(ranges),
        "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# ------------------------------------------------------------------------------ inputs


def chunk_ranges(n_rows: int, chunk_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` of every on-disk chunk."""
    return [(s, min(s + chunk_size, n_rows)) for s in range(0, n_rows, chunk_size)]


def resolve_worker(worker: tuple[int, int] | None) -> tuple[int, int]:
    """``(index, count)`` of this worker; default ``(jax.process_index(), jax.process_count())``."""
    if worker is None:
        return jax.process_index(), jax.process_count()
    try:
        i, k = (int(x) for x in worker)
    except (TypeError, ValueError):
        raise ValueError(f"worker must be a pair (index, count), got {worker!r}") from None
    if k < 1 or not 0 <= i < k:
        raise ValueError(f"worker must be (index, count) with 0 <= index < count, got {worker!r}")
    return i, k


def _int_or_auto(name: str, value: object) -> int | Literal["auto"]:
    """``value`` if it is ``"auto"`` or a positive int, else ``ValueError`` naming ``name``."""
    if isinstance(value, str) and value == "auto":
        return "auto"
    return positive_int(name, value, " or 'auto'")


def _resolve_rows(rows: object, n: int) -> tuple[np.ndarray | None, int, Any]:
    """``(explicit rows or None, row count, manifest entry)``."""
    if isinstance(rows, str):
        if rows != "all":
            raise ValueError(f"rows must be 'all' or a bool [M, {n}] array, got {rows!r}")
        if n > MAX_SWEEP_PLAYERS:
            raise ValueError(
                f"rows='all' over {n} components is 2^{n} subsets (limit {MAX_SWEEP_PLAYERS}); "
                "sweep a sample (ja.subsets.sample) or fewer components"
            )
        return None, 2**n, "all"
    checked = check_rows(rows, n, binary=True)
    rows_2d(checked, n)
    arr = np.asarray(checked).astype(bool)
    if arr.shape[0] == 0:
        raise ValueError(f"rows must hold at least one row, got shape {arr.shape}")
    entry = {"kind": "explicit", "shape": list(arr.shape), "sha256": hash_arrays([("rows", arr)])}
    return arr, arr.shape[0], entry


def _check_ablation(ablation: object, model: Transformer, tokens: jax.Array) -> Ablation:
    """``ablation`` (zero for ``None``), checked against the model and tokens."""
    ablation = zero() if ablation is None else ablation
    if not isinstance(ablation, Ablation):
        raise ValueError(f"ablation must be a ja.Ablation or None, got {ablation!r}")
    ablation.fit(model.config, batch=tokens.shape[0], seq=tokens.shape[1])  # fail early
    return ablation


def _auto_chunk(n_rows: int, workers: int) -> int:
    """At least ~4 chunks per worker when there are several, at most :data:`AUTO_CHUNK` rows."""
    per_worker = n_rows if workers == 1 else math.ceil(n_rows / (4 * workers))
    return max(1, min(AUTO_CHUNK, per_worker))


def _chunk_size(chunk_size: object, out: Path, n_rows: int, workers: int) -> int:
    """Rows per on-disk chunk: ``"auto"`` reuses an existing manifest's, else picks one."""
    size = _int_or_auto("chunk_size", chunk_size)
    if size == "auto":
        existing = read_manifest(out) if (out / MANIFEST).exists() else None
        if existing is not None and existing.get("n_rows") == n_rows:
            size = int(existing["chunk_size"])
        else:
            size = _auto_chunk(n_rows, workers)
    return min(size, n_rows)


# ------------------------------------------------------------------------------ steps


@dataclass(frozen=True)
class _Plan:
    """A checked sweep: its inputs, its chunks, and how this worker evaluates them."""

    out: Path
    model: Transformer
    comps: Components
    tokens: jax.Array
    explicit: np.ndarray | None  # the rows, or None for "all" (generated per chunk)
    ranges: list[tuple[int, int]]
    metric: Callable[..., jax.Array]
    ablation: Ablation
    eval_chunk: int | Literal["auto"]
    share_prefix: bool
    mesh: Mesh | None
    memory_budget: int | None
    index: int
    count: int
    show_progress: bool
    on_chunk: OnChunk | None


def _plan(
    model: Transformer,
    comps: Components,
    rows: object,
    tokens: object,
    out: str | os.PathLike,
    *,
    metric: Callable[..., jax.Array],
    ablation: Ablation | None,
    chunk_size: object,
    eval_chunk_size: object,
    progress: bool,
    worker: tuple[int, int] | None,
    on_chunk: OnChunk | None,
    share_prefix: bool,
    mesh: Mesh | None,
    memory_budget: int | None,
) -> _Plan:
    """Resolve and check every input, then create or check the manifest and plan the chunks."""
    check_components(model.config, comps)
    tokens = check_tokens(model.config, tokens)
    explicit, n_rows, rows_entry = _resolve_rows(rows, len(comps))
    replacement = _check_ablation(ablation, model, tokens)
    index, count = resolve_worker(worker)
    eval_chunk = _int_or_auto("eval_chunk_size", eval_chunk_size)
    mesh = None if mesh is None else one_axis_mesh(mesh, "masks")
    out = Path(out)
    ranges = chunk_ranges(n_rows, _chunk_size(chunk_size, out, n_rows, count))
    manifest = _manifest(model, comps, tokens, replacement, metric, rows_entry, ranges)
    _open_manifest(out, manifest, explicit)
    return _Plan(
        out=out,
        model=model,
        comps=comps,
        tokens=tokens,
        explicit=explicit,
        ranges=ranges,
        metric=metric,
        ablation=replacement,
        eval_chunk=eval_chunk,
        share_prefix=share_prefix,
        mesh=mesh,
        memory_budget=memory_budget,
        index=index,
        count=count,
        # with jax.distributed, only process 0 draws a bar (each one sees the whole table)
        show_progress=progress and (worker is not None or index == 0),
        on_chunk=on_chunk,
    )


def _compute_chunk(plan: _Plan, c: int) -> np.ndarray:
    """Evaluate chunk ``c``, write its file and report it to ``on_chunk``."""
    start, stop = plan.ranges[c]
    n = len(plan.comps)
    if plan.explicit is None:
        chunk = subsets.bits(np.arange(start, stop), n)
    else:
        chunk = plan.explicit[start:stop]
    eval_chunk = plan.eval_chunk
    if isinstance(eval_chunk, int) and len(plan.ranges) > 1:
        # pad to a multiple of the compiled size so that the last chunk does not recompile
        eval_chunk = min(eval_chunk, plan.ranges[0][1])
        pad = -len(chunk) % eval_chunk
        if pad:
            chunk = np.concatenate([chunk, np.ones((pad, n), bool)])
    values = evaluate(
        plan.model,
        plan.comps,
        chunk,
        plan.tokens,
        metric=plan.metric,
        ablation=plan.ablation,
        chunk_size=eval_chunk,
        share_prefix=plan.share_prefix,
        mesh=plan.mesh,
        memory_budget=plan.memory_budget,
    )
    values = np.asarray(values, np.float32)[: stop - start]
    _write_chunk(plan.out, c, start, stop, values)
    if plan.on_chunk is not None:
        plan.on_chunk(c, start, stop)
    return values


def _bar(plan: _Plan) -> Any:
    """The progress bar of a sweep, started at the rows already on disk."""
    done = sum(_rows_done(plan.out, plan.ranges).values())
    total = plan.ranges[-1][1]
    return progress_bar(
        total=total, initial=done, desc="sweep", unit="subsets", enabled=plan.show_progress
    )


def _advance(bar: Any, plan: _Plan) -> dict[int, int]:
    """Move ``bar`` to the rows on disk now; returns :func:`_rows_done`."""
    done = _rows_done(plan.out, plan.ranges)
    bar.update(max(0, sum(done.values()) - bar.n))
    return done


def _own_chunks(plan: _Plan, bar: Any) -> dict[int, np.ndarray]:
    """This worker's chunks: finished ones read (and verified), the others computed."""
    _remove_stale_temps(plan.out, plan.index, plan.count)
    results: dict[int, np.ndarray] = {}
    todo = []
    for c in range(plan.index, len(plan.ranges), plan.count):
        values = _valid_chunk(plan.out, c, *plan.ranges[c])
        if values is None:
            todo.append(c)
        else:
            results[c] = values
    if results:
        log.info(
            "sweep %s: resuming; %d own chunks done, %d to go", plan.out, len(results), len(todo)
        )
    for c in todo:
        results[c] = _compute_chunk(plan, c)
        _advance(bar, plan)
    return results


def _wait_for_others(
    plan: _Plan,
    results: dict[int, np.ndarray],
    bar: Any,
    poll_interval: float,
    timeout: float | None,
) -> None:
    """Poll the directory until every chunk's file is there.

    Raises:
        TimeoutError: chunks are still missing after ``timeout`` seconds.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    n_chunks = len(plan.ranges)
    while True:
        done = _advance(bar, plan)
        missing = [c for c in range(n_chunks) if c not in results and c not in done]
        if not missing:
            return
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(
                f"sweep {plan.out}: {len(missing)} of {n_chunks} chunks still missing after "
                f"{timeout} s (first: {missing[:5]}); are the other workers running?"
            )
        time.sleep(poll_interval)


def _collect(plan: _Plan, results: dict[int, np.ndarray]) -> np.ndarray:
    """The whole table: this worker's values, the others' chunks read (a bad one recomputed)."""
    table = np.empty(plan.ranges[-1][1], np.float32)
    for c, (start, stop) in enumerate(plan.ranges):
        values = results.get(c)
        if values is None:
            values = _valid_chunk(plan.out, c, start, stop)
        if values is None:
            values = _compute_chunk(plan, c)
        table[start:stop] = values
    return table


# ------------------------------------------------------------------------------ sweep


@dataclass(frozen=True)
class SweepStatus:
    """How far a sweep directory is.

    Attributes:
        n_rows: Rows of the whole sweep.
        rows_done: Rows of the finished chunks.
        n_chunks: On-disk chunks of the whole sweep.
        chunks_done: Finished chunks.
        missing: Indices of the chunks without a file.
        corrupt: Indices of the chunks whose file is bad (only checked with ``verify``).
    """

    n_rows: int
    rows_done: int
    n_chunks: int
    chunks_done: int
    missing: tuple[int, ...]
    corrupt: tuple[int, ...]

    @property
    def complete(self) -> bool:
        """Whether every chunk is done (:func:`load_sweep` can read the table)."""
        return not self.missing and not self.corrupt


def sweep(
    model: Transformer,
    comps: Components,
    rows: Rows,
    tokens: Int[Array, "batch seq"],
    out: str | os.PathLike,
    *,
    metric: Callable[..., jax.Array] = loss,
    ablation: Ablation | None = None,
    chunk_size: int | Literal["auto"] = "auto",
    eval_chunk_size: int | Literal["auto"] = "auto",
    progress: bool = True,
    worker: tuple[int, int] | None = None,
    poll_interval: float = 1.0,
    timeout: float | None = None,
    on_chunk: OnChunk | None = None,
    share_prefix: bool = True,
    mesh: Mesh | None = None,
    memory_budget: int | None = None,
) -> Float[np.ndarray, " n_masks"]:
    """:func:`jaxablate.evaluate` over many rows, written to ``out`` chunk by chunk; resumable.

    The first call writes ``out/manifest.json`` (components, ablation, metric, sha256 of weights,
    tokens and rows, chunk size; versions, not compared), then one checksummed file per chunk.
    A rerun computes only missing or corrupt chunks; other arguments raise ``ValueError``.

    Worker ``i`` of ``k`` (processes of a ``jax.distributed`` job, or explicit ``worker`` pairs)
    computes the chunks ``c % k == i``, then waits for the others' (:func:`sweep_chunks` does not).

    Args:
        model: The model.
        comps: The players; column ``i`` of the rows is ``comps[i]``.
        rows: ``"all"`` (every subset; row ``r`` = bitmask ``r``, generated chunk by chunk) or
            ``bool [M, n]`` rows (saved as ``out/rows.npy``).
        tokens: ``int [batch, seq]`` inputs.
        out: Sweep directory (created if needed).
        metric: ``(logits, tokens) -> [batch]`` (a function or a :class:`jaxablate.metrics.Metric`).
        ablation: Replacement for removed components (default: zero ablation).
        chunk_size: Rows per on-disk chunk. ``"auto"`` reuses an existing manifest's, else picks
            ``min(M, 2^14)`` (smaller with several workers: about four chunks each).
        eval_chunk_size: Rows per compiled call inside a chunk (``chunk_size`` of
            :func:`jaxablate.evaluate`; ``"auto"`` lets it choose).
        progress: A tqdm bar (subsets/s, ETA) when stderr is a terminal.
        worker: ``(index, count)``; default ``(jax.process_index(), jax.process_count())``.
        poll_interval: Seconds between directory polls while waiting for other workers.
        timeout: Longest wait for other workers in seconds (``None``: no limit).
        on_chunk: Called as ``on_chunk(index, start, stop)`` after this process wrote a chunk.
        share_prefix: Forwarded to :func:`jaxablate.evaluate`.
        mesh: Forwarded to :func:`jaxablate.evaluate` (with several processes: local devices).
        memory_budget: Forwarded to :func:`jaxablate.evaluate`.

    Returns:
        float32 ``[M]`` values, index = row (= bitmask for ``"all"``).

    Raises:
        ValueError: invalid arguments, or ``out`` holds a sweep of different arguments.
        TimeoutError: other workers did not finish within ``timeout``.
    """
    plan = _plan(
        model,
        comps,
        rows,
        tokens,
        out,
        metric=metric,
        ablation=ablation,
        chunk_size=chunk_size,
        eval_chunk_size=eval_chunk_size,
        progress=progress,
        worker=worker,
        on_chunk=on_chunk,
        share_prefix=share_prefix,
        mesh=mesh,
        memory_budget=memory_budget,
    )
    with _bar(plan) as bar:
        results = _own_chunks(plan, bar)
        _wait_for_others(plan, results, bar, poll_interval, timeout)
    return _collect(plan, results)


def sweep_chunks(
    model: Transformer,
    comps: Components,
    rows: Rows,
    tokens: Int[Array, "batch seq"],
    out: str | os.PathLike,
    *,
    metric: Callable[..., jax.Array] = loss,
    ablation: Ablation | None = None,
    chunk_size: int | Literal["auto"] = "auto",
    eval_chunk_size: int | Literal["auto"] = "auto",
    progress: bool = True,
    worker: tuple[int, int] | None = None,
    on_chunk: OnChunk | None = None,
    share_prefix: bool = True,
    mesh: Mesh | None = None,
    memory_budget: int | None = None,
) -> SweepStatus:
    """This worker's part of a :func:`sweep`: compute its chunks and return, without waiting.

    For workers launched independently (a job array, one ``worker=(i, k)`` each): every worker
    calls this, and whoever needs the table reads it with :func:`load_sweep` (or calls
    :func:`sweep`, which waits) once :func:`sweep_status` says it is complete. Arguments,
    manifest checks and resumption are those of :func:`sweep`.

    Returns:
        The directory's :class:`SweepStatus` once this worker's chunks are written (files
        present; not verified).

    Raises:
        ValueError: invalid arguments, or ``out`` holds a sweep of different arguments.
    """
    plan = _plan(
        model,
        comps,
        rows,
        tokens,
        out,
        metric=metric,
        ablation=ablation,
        chunk_size=chunk_size,
        eval_chunk_size=eval_chunk_size,
        progress=progress,
        worker=worker,
        on_chunk=on_chunk,
        share_prefix=share_prefix,
        mesh=mesh,
        memory_budget=memory_budget,
    )
    with _bar(plan) as bar:
        _own_chunks(plan, bar)
    return sweep_status(plan.out)


# ------------------------------------------------------------------------------ reading


def sweep_status(out: str | os.PathLike, *, verify: bool = False) -> SweepStatus:
    """How far a sweep directory is.

    Args:
        out: Sweep directory.
        verify: Read and checksum every chunk (else a chunk counts as done when its file exists).

    Raises:
        ValueError: ``out`` is not a sweep directory.
    """
    out = Path(out)
    manifest = read_manifest(out)
    ranges = chunk_ranges(manifest["n_rows"], manifest["chunk_size"])
    missing, corrupt = [], []
    for c, (start, stop) in enumerate(ranges):
        if not verify:
            if not _chunk_path(out, c).exists():
                missing.append(c)
            continue
        values, why = _read_chunk(out, c, start, stop)
        if values is None:
            (missing if why == "missing" else corrupt).append(c)
    bad = set(missing) | set(corrupt)
    return SweepStatus(
        n_rows=manifest["n_rows"],
        rows_done=sum(b - a for c, (a, b) in enumerate(ranges) if c not in bad),
        n_chunks=len(ranges),
        chunks_done=len(ranges) - len(bad),
        missing=tuple(missing),
        corrupt=tuple(corrupt),
    )


def load_sweep(out: str | os.PathLike) -> tuple[Float[np.ndarray, " n_masks"], dict[str, Any]]:
    """The values of a finished sweep and its manifest.

    Returns:
        ``(values, meta)``: float32 ``[M]`` values (index = row; bitmask for ``rows="all"``)
        and the manifest as a dict; for explicit rows, ``meta["rows_array"]`` holds the
        ``bool [M, n]`` rows.

    Raises:
        ValueError: not a sweep directory, or chunks are missing or corrupt (rerun
            :func:`sweep` with the same arguments to finish it). Nothing is modified.
    """
    out = Path(out)
    meta = read_manifest(out)
    ranges = chunk_ranges(meta["n_rows"], meta["chunk_size"])
    table = np.empty(meta["n_rows"], np.float32)
    missing, corrupt = [], []
    for c, (start, stop) in enumerate(ranges):
        values, why = _read_chunk(out, c, start, stop)
        if values is None:
            (missing if why == "missing" else corrupt).append(c)
        else:
            table[start:stop] = values
    if missing or corrupt:
        raise ValueError(
            f"sweep {out} is incomplete: {len(missing)} of {len(ranges)} chunks missing"
            + (f" (first: {missing[:5]})" if missing else "")
            + (f", {len(corrupt)} corrupt {corrupt[:5]}" if corrupt else "")
            + "; rerun ja.sweep with the same arguments to finish it"
        )
    if meta["rows"] != "all":
        meta["rows_array"] = np.load(out / ROWS_FILE, allow_pickle=False)
    return table, meta
