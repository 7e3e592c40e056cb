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
"""

import functools
import hashlib
import importlib.metadata
import inspect
import json
import logging
import math
import os
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import jax
import numpy as np
from jaxtyping import Array, Bool, Int

from jaxablate import subsets
from jaxablate._evaluate import evaluate
from jaxablate._fingerprint import hash_arrays
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
#: Rows per compiled call when :func:`jaxablate.evaluate` cannot choose (no ``"auto"`` support).
FALLBACK_EVAL_CHUNK = 256
#: Largest ``n`` for ``rows="all"`` (the returned table holds ``2^n`` float32 values).
MAX_ALL_PLAYERS = 30
#: Manifest fields that are recorded but not compared when a sweep resumes.
UNCOMPARED = ("versions", "created")

MANIFEST = "manifest.json"
ROWS_FILE = "rows.npy"
CHUNKS = "chunks"


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
    entry = {"name": m.name, "sha256": _tree_fingerprint(m.data)}
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


# ------------------------------------------------------------------------------ atomic files


def _atomic_write(path: Path, write: Callable[[Any], None], *, exclusive: bool = False) -> bool:
    """Write ``path`` via a temporary file in the same directory and an atomic rename.

    With ``exclusive``, an existing ``path`` is left alone and ``False`` is returned.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; other users may share the sweep
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            try:
                os.link(tmp, path)  # atomic create-if-absent
                return True
            except FileExistsError:
                return False
            except OSError:  # filesystems without hard links
                if path.exists():
                    return False
        os.replace(tmp, path)
        return True
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@functools.cache
def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _chunk_path(out: Path, index: int) -> Path:
    return out / CHUNKS / f"chunk_{index:08d}.npz"


def _write_chunk(out: Path, index: int, start: int, stop: int, values: np.ndarray) -> None:
    values = np.ascontiguousarray(values, np.float32)
    digest = hashlib.sha256(values.tobytes()).hexdigest()

    def write(f: Any) -> None:
        np.savez(f, values=values, start=np.int64(start), stop=np.int64(stop), sha256=digest)

    _atomic_write(_chunk_path(out, index), write)


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


# ------------------------------------------------------------------------------ manifest


def _describe(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


def _manifest_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted((set(old) | set(new)) - set(UNCOMPARED))
    return [
        f"{k}: {_describe(old.get(k))} (on disk) vs {_describe(new.get(k))} (this call)"
        for k in keys
        if old.get(k) != new.get(k)
    ]


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


def _open_manifest(out: Path, manifest: dict[str, Any], rows: np.ndarray | None) -> dict:
    """Create ``out``'s manifest, or check that the existing one matches ``manifest``."""
    (out / CHUNKS).mkdir(parents=True, exist_ok=True)
    text = json.dumps(manifest, indent=2, sort_keys=True).encode()
    manifest = json.loads(text)  # tuples become lists, as they will read back
    if not (out / MANIFEST).exists():
        if rows is not None:
            _atomic_write(out / ROWS_FILE, lambda f: np.save(f, rows))
        if _atomic_write(out / MANIFEST, lambda f: f.write(text), exclusive=True):
            return manifest
    old = read_manifest(out)
    diff = _manifest_diff(old, manifest)
    if diff:
        raise ValueError(
            f"the sweep in {out} was started with different arguments; refusing to mix results.\n  "
            + "\n  ".join(diff)
            + "\nUse another out directory, or delete this one to start over."
        )
    return old


# ------------------------------------------------------------------------------ helpers


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


def _evaluate_supports(name: str) -> bool:
    return name in inspect.signature(evaluate).parameters


def _eval_kwargs(eval_chunk_size: int | str, **maybe: Any) -> dict[str, Any]:
    """Keyword arguments for :func:`evaluate`, forwarding only what it accepts."""
    auto_ok = _evaluate_supports("memory_budget")
    if eval_chunk_size == "auto":
        kwargs: dict[str, Any] = {"chunk_size": "auto" if auto_ok else FALLBACK_EVAL_CHUNK}
    elif (
        isinstance(eval_chunk_size, int | np.integer)
        and not isinstance(eval_chunk_size, bool)
        and eval_chunk_size >= 1
    ):
        kwargs = {"chunk_size": int(eval_chunk_size)}
    else:
        raise ValueError(
            f"eval_chunk_size must be a positive int or 'auto', got {eval_chunk_size!r}"
        )
    for name, (value, default) in maybe.items():
        if _evaluate_supports(name):
            kwargs[name] = value
        elif value is not default:
            raise ValueError(f"this jaxablate.evaluate does not accept {name}=")
    return kwargs


def _progress_bar(total: int, initial: int, progress: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit="subsets",
        unit_scale=total >= 10**5,
        desc="sweep",
        dynamic_ncols=True,
        disable=not progress or not sys.stderr.isatty(),
    )


def _resolve_rows(rows: Any, n: int) -> tuple[np.ndarray | None, int, Any]:
    """``(explicit rows or None, row count, manifest entry)``."""
    if isinstance(rows, str):
        if rows != "all":
            raise ValueError(f"rows must be 'all' or a bool [M, {n}] array, got {rows!r}")
        if n > MAX_ALL_PLAYERS:
            raise ValueError(
                f"rows='all' over {n} components is 2^{n} subsets (limit {MAX_ALL_PLAYERS}); "
                "sweep a sample (ja.subsets.sample) or fewer components"
            )
        return None, 2**n, "all"
    arr = check_rows(rows, n, binary=True)
    if arr.ndim != 2:
        raise ValueError(f"rows must be 2-D [n_masks, {n}], got shape {arr.shape}")
    arr = np.asarray(arr).astype(bool)
    entry = {"kind": "explicit", "shape": list(arr.shape), "sha256": hash_arrays([("rows", arr)])}
    return arr, arr.shape[0], entry


def _auto_chunk(n_rows: int, workers: int) -> int:
    """At least ~4 chunks per worker when there are several, at most :data:`AUTO_CHUNK` rows."""
    per_worker = n_rows if workers == 1 else math.ceil(n_rows / (4 * workers))
    return max(1, min(AUTO_CHUNK, per_worker))


def _manifest(
    model: Transformer,
    comps: Components,
    tokens: jax.Array,
    ablation: Ablation,
    metric: Callable[..., jax.Array],
    rows_entry: Any,
    n_rows: int,
    chunk_size: int,
) -> dict[str, Any]:
    tokens_np = np.asarray(tokens)
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
        "chunk_size": chunk_size,
        "n_chunks": math.ceil(n_rows / chunk_size),
        "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# ------------------------------------------------------------------------------ sweep


def sweep(
    model: Transformer,
    comps: Components,
    rows: Bool[np.ndarray, "n_masks n_players"] | Literal["all"],
    tokens: Int[Array, "batch seq"],
    out: str | os.PathLike,
    *,
    metric: Callable[..., jax.Array] = loss,
    ablation: Ablation | None = None,
    chunk_size: int | Literal["auto"] = "auto",
    eval_chunk_size: int | Literal["auto"] = "auto",
    progress: bool = True,
    worker: tuple[int, int] | None = None,
    wait: bool = True,
    poll_interval: float = 1.0,
    timeout: float | None = None,
    on_chunk: Callable[[int, int, int], None] | None = None,
    share_prefix: bool = True,
    mesh: Any = None,
    memory_budget: int | None = None,
) -> np.ndarray | None:
    """:func:`jaxablate.evaluate` over many rows, written to ``out`` chunk by chunk; resumable.

    The first call writes ``out/manifest.json`` (component names, ablation kind and fingerprint,
    metric name and fingerprint, fingerprints of the weights and tokens, the rows, row count,
    chunk size, versions) and then one file per chunk. Calling again with the same arguments
    reads the finished chunks (verified by checksum) and computes only the missing ones. A call
    whose arguments differ from the manifest raises ``ValueError`` listing the differences.
    Library versions are recorded but not compared, so a sweep may be finished after upgrading.
    A metric is identified by its name and data (a different function under the same name is
    not detected); the weights, tokens, ablation arrays and rows by sha256.

    With several workers (processes of one ``jax.distributed`` job, or explicit ``worker``
    pairs), worker ``i`` of ``k`` computes the chunks ``c`` with ``c % k == i``; then, with
    ``wait=True``, it polls the directory until the other workers' chunks are there too.

    Args:
        model: The model.
        comps: The players; column ``i`` of the rows is ``comps[i]``.
        rows: ``"all"`` for every subset in bit order (row ``r`` = bitmask ``r``, generated
            chunk by chunk, never all at once), or ``bool [M, n]`` rows (saved as
            ``out/rows.npy``).
        tokens: ``int [batch, seq]`` inputs.
        out: Sweep directory (created if needed).
        metric: ``(logits, tokens) -> [batch]`` (a plain function or a
            :class:`jaxablate.metrics.Metric`).
        ablation: Replacement for removed components (default: zero ablation).
        chunk_size: Rows per on-disk chunk. ``"auto"`` reuses the chunk size of an existing
            manifest, else picks ``min(M, 2^14)`` (smaller with several workers, so that each
            gets about four chunks). An int must match an existing manifest.
        eval_chunk_size: Rows per compiled call inside a chunk (``chunk_size`` of
            :func:`jaxablate.evaluate`); ``"auto"`` lets ``evaluate`` choose.
        progress: Show a tqdm bar (subsets/s, ETA) on a terminal; silent when ``False`` or
            when stderr is not a TTY.
        worker: ``(index, count)``; default ``(jax.process_index(), jax.process_count())``.
        wait: After its own chunks, wait for the other workers' chunks and return the table.
            With ``False``, return ``None`` if other workers' chunks are still missing.
        poll_interval: Seconds between directory polls while waiting.
        timeout: Longest wait for other workers in seconds (``None``: no limit); past it,
            ``TimeoutError`` names the missing chunks.
        on_chunk: Called as ``on_chunk(index, start, stop)`` after this process computed and
            wrote a chunk (for progress hooks and tests).
        share_prefix: Forwarded to :func:`jaxablate.evaluate` where it accepts it.
        mesh: Forwarded to :func:`jaxablate.evaluate`; under several processes it must hold
            only this process's devices (each process evaluates its own chunks).
        memory_budget: Forwarded to :func:`jaxablate.evaluate`.

    Returns:
        float32 ``[M]`` values, index = row (= bitmask for ``"all"``); ``None`` only when
        ``wait=False`` and other workers have not finished.

    Raises:
        ValueError: invalid arguments, or ``out`` holds a sweep of different arguments.
        TimeoutError: other workers did not finish within ``timeout``.
    """
    check_components(model.config, comps)
    tokens = check_tokens(model.config, tokens)
    n = len(comps)
    explicit, n_rows, rows_entry = _resolve_rows(rows, n)
    ablation = zero() if ablation is None else ablation
    if not isinstance(ablation, Ablation):
        raise ValueError(f"ablation must be a ja.Ablation or None, got {ablation!r}")
    ablation.fit(model.config, batch=tokens.shape[0], seq=tokens.shape[1])  # fail early
    index, count = resolve_worker(worker)
    eval_kwargs = _eval_kwargs(
        eval_chunk_size,
        share_prefix=(share_prefix, True),
        mesh=(mesh, None),
        memory_budget=(memory_budget, None),
    )
    out = Path(out)
    existing = read_manifest(out) if (out / MANIFEST).exists() else None
    if chunk_size == "auto":
        if existing is not None and existing.get("n_rows") == n_rows:
            chunk_size = int(existing["chunk_size"])
        else:
            chunk_size = _auto_chunk(n_rows, count)
    elif (
        not isinstance(chunk_size, int | np.integer)
        or isinstance(chunk_size, bool)
        or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive int or 'auto', got {chunk_size!r}")
    chunk_size = int(min(chunk_size, n_rows))
    ranges = chunk_ranges(n_rows, chunk_size)
    manifest = _manifest(model, comps, tokens, ablation, metric, rows_entry, n_rows, chunk_size)
    _open_manifest(out, manifest, explicit)

    def compute(c: int) -> np.ndarray:
        start, stop = ranges[c]
        chunk = (
            subsets.bits(np.arange(start, stop), n) if explicit is None else explicit[start:stop]
        )
        ecs = eval_kwargs["chunk_size"]
        if isinstance(ecs, int) and len(ranges) > 1:
            # pad to a multiple of the compiled size so that the last chunk does not recompile
            ecs = min(ecs, chunk_size)
            pad = -len(chunk) % ecs
            chunk = np.concatenate([chunk, np.ones((pad, n), bool)]) if pad else chunk
            kwargs = {**eval_kwargs, "chunk_size": ecs}
        else:
            kwargs = eval_kwargs
        values = evaluate(model, comps, chunk, tokens, metric=metric, ablation=ablation, **kwargs)
        values = np.asarray(values, np.float32)[: stop - start]
        _write_chunk(out, c, start, stop, values)
        if on_chunk is not None:
            on_chunk(c, start, stop)
        return values

    _remove_stale_temps(out, index, count)
    results: dict[int, np.ndarray] = {}
    todo = []
    for c in range(index, len(ranges), count):
        values, why = _read_chunk(out, c, *ranges[c])
        if values is not None:
            results[c] = values
        elif why != "missing":
            log.warning("sweep %s: chunk %d is bad (%s); recomputing it", out, c, why)
            _chunk_path(out, c).unlink(missing_ok=True)
            todo.append(c)
        else:
            todo.append(c)
    if results:
        log.info("sweep %s: resuming; %d own chunks done, %d to go", out, len(results), len(todo))
    # with jax.distributed, only process 0 draws a bar (each one sees the whole table)
    show = progress and (worker is not None or index == 0)
    with _progress_bar(n_rows, sum(_rows_done(out, ranges).values()), show) as bar:
        for c in todo:
            results[c] = compute(c)
            bar.update(max(0, sum(_rows_done(out, ranges).values()) - bar.n))
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            done = _rows_done(out, ranges)
            missing = [c for c in range(len(ranges)) if c not in results and c not in done]
            bar.update(max(0, sum(done.values()) - bar.n))
            if not missing:
                break
            if not wait:
                return None
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"sweep {out}: {len(missing)} of {len(ranges)} chunks still missing after "
                    f"{timeout} s (first: {missing[:5]}); are the other workers running?"
                )
            time.sleep(poll_interval)
    table = np.empty(n_rows, np.float32)
    for c, (start, stop) in enumerate(ranges):
        values = results.get(c)
        if values is None:
            values, why = _read_chunk(out, c, start, stop)
            if values is None:
                log.warning("sweep %s: chunk %d is bad (%s); recomputing it", out, c, why)
                _chunk_path(out, c).unlink(missing_ok=True)
                values = compute(c)
        table[start:stop] = values
    return table


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


# ------------------------------------------------------------------------------ reading


def sweep_status(out: str | os.PathLike, *, verify: bool = False) -> dict[str, Any]:
    """How far a sweep directory is.

    Args:
        out: Sweep directory.
        verify: Read and checksum every chunk (else a chunk counts as done when its file exists).

    Returns:
        ``{"n_rows", "rows_done", "n_chunks", "chunks_done", "missing" (chunk indices),
        "corrupt" (chunk indices, only checked with verify), "complete"}``.
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
    return {
        "n_rows": manifest["n_rows"],
        "rows_done": sum(b - a for c, (a, b) in enumerate(ranges) if c not in bad),
        "n_chunks": len(ranges),
        "chunks_done": len(ranges) - len(bad),
        "missing": missing,
        "corrupt": corrupt,
        "complete": not bad,
    }


def load_sweep(out: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
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
