"""The files of a sweep directory: manifest, rows and chunks, written and checked.

A sweep directory holds::

    out/manifest.json               what is being computed (fingerprints of every input) and how
                                    (the evaluation plan)
    out/rows.npy                    the rows, when explicit rows (not "all") were given
    out/chunks/chunk_00000000.npz   values of rows [start, stop), the fingerprint of the manifest
                                    they belong to, and a sha256 of both
    out/chunks/chunk_00000000.claim while a process computes that chunk: who (host, process id)

Every file is written to a temporary file in the same directory and moved into place, so a
killed process, Ctrl-C or a full disk leaves whole files or none. A chunk is used only when its
checksum, its rows and its manifest fingerprint check out (a chunk of another sweep, left after
``manifest.json`` was deleted, is not); an unreadable manifest or rows file is refused with a
message naming it. The computing side is :mod:`jaxablate._sweep`.
"""

import hashlib
import importlib.metadata
import json
import logging
import os
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jaxtyping import Float

from jaxablate import _files as files
from jaxablate._fingerprint import (
    field_diff,
    hash_arrays,
    hash_record,
    last_bits_warning,
    reconcile,
)

log = logging.getLogger("jaxablate.sweep")

FORMAT = "jaxablate-sweep"
#: 2: chunks record their manifest's fingerprint, the manifest the evaluation plan.
FORMAT_VERSION = 2
#: Manifest fields that are recorded but not compared when a sweep resumes.
UNCOMPARED = ("versions", "created")

#: Fields every manifest of this format version holds.
REQUIRED = frozenset({"components", "rows", "n_rows", "chunk_size", "n_chunks", "plan"})

MANIFEST = "manifest.json"
ROWS_FILE = "rows.npy"
CHUNKS = "chunks"


def versions() -> dict[str, str]:
    """What a manifest records about the process that started the sweep (not compared)."""
    out = {"python": sys.version.split()[0], "backend": jax.default_backend()}
    for name in ("jaxablate", "jax", "jaxlib", "flax", "numpy"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out


def chunk_ranges(n_rows: int, chunk_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` of every on-disk chunk."""
    return [(s, min(s + chunk_size, n_rows)) for s in range(0, n_rows, chunk_size)]


# ------------------------------------------------------------------------------ chunk files


def chunk_path(out: Path, index: int) -> Path:
    """The file of chunk ``index``."""
    return out / CHUNKS / f"chunk_{index:08d}.npz"


def claim_path(out: Path, index: int) -> Path:
    """The claim file of chunk ``index`` (present while a process computes it)."""
    return out / CHUNKS / f"chunk_{index:08d}.claim"


def _digest(values: np.ndarray, start: int, stop: int, study: str) -> str:
    header = f"{start}:{stop}:{study}:".encode()
    return hashlib.sha256(header + np.ascontiguousarray(values).tobytes()).hexdigest()


def read_chunk(
    out: Path, index: int, start: int, stop: int, study: str
) -> tuple[np.ndarray | None, str]:
    """``(values, "")`` for a valid chunk file of the sweep ``study``, else ``(None, why)``."""
    try:
        with open(chunk_path(out, index), "rb") as f, np.load(f, allow_pickle=False) as data:
            if "study" not in data.files:
                return None, "records no manifest fingerprint (written by an older jaxablate)"
            values = np.asarray(data["values"])
            got = (int(data["start"]), int(data["stop"]))
            found, digest = str(data["study"]), str(data["sha256"])
    except FileNotFoundError:
        return None, "missing"
    except IsADirectoryError:
        return None, "a directory"
    except (OSError, ValueError, KeyError, EOFError, SyntaxError, zipfile.BadZipFile) as err:
        return None, f"unreadable ({type(err).__name__}: {err})"
    if found != study:
        return None, f"belongs to another sweep (manifest fingerprint {found[:12]}...)"
    if got != (start, stop):
        return None, f"holds rows {got}, expected {(start, stop)}"
    if values.dtype != np.float32 or values.shape != (stop - start,):
        return None, f"holds {values.dtype} {values.shape}, expected float32 ({stop - start},)"
    if _digest(values, start, stop, study) != digest:
        return None, "checksum mismatch"
    return values, ""


def write_chunk(
    out: Path, index: int, start: int, stop: int, values: np.ndarray, study: str
) -> np.ndarray:
    """Write a chunk file (unless a valid one appeared meanwhile); the values now on disk."""
    values = np.ascontiguousarray(values, np.float32)
    digest = _digest(values, start, stop, study)

    def write(f: Any) -> None:
        np.savez(f, values=values, start=start, stop=stop, study=study, sha256=digest)

    path = chunk_path(out, index)
    if files.atomic_write(path, write, exclusive=True):
        return values
    theirs, _ = read_chunk(out, index, start, stop, study)
    if theirs is not None:
        return theirs
    files.atomic_write(path, write)
    return values


# ------------------------------------------------------------------------------ manifest


def read_manifest(out: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a sweep directory.

    Raises:
        ValueError: ``out`` holds no sweep manifest, or one that is unreadable or of another
            format version (the message names the file and what to do).
    """
    if not isinstance(out, str | os.PathLike) or not os.fspath(out):
        raise ValueError(f"out must be a directory path (str or os.PathLike), got {out!r}")
    path = Path(out) / MANIFEST
    if not path.is_file():
        raise ValueError(f"{out} holds no {MANIFEST}: not a sweep directory")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(
            f"{path} is unreadable ({type(err).__name__}: {err}). Delete it and rerun ja.sweep "
            "with the same arguments: the finished chunks record which sweep they belong to and "
            "are kept"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not a jaxablate sweep manifest (format {FORMAT!r})")
    version = manifest.get("format_version")
    if version == FORMAT_VERSION and not REQUIRED <= set(manifest):
        raise ValueError(
            f"{path} lacks the fields {sorted(REQUIRED - set(manifest))}: it was edited or "
            "damaged. Delete it and rerun ja.sweep with the same arguments: the finished chunks "
            "record which sweep they belong to and are kept"
        )
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path} is a sweep of format version {version}; this jaxablate reads and writes "
            f"version {FORMAT_VERSION} (chunks tied to their manifest, a recorded evaluation "
            "plan), so it can neither check nor resume it. Use another out directory, delete "
            "this one to start over, or read it with the jaxablate version that wrote it"
        )
    return manifest


def study_fingerprint(manifest: dict[str, Any]) -> str:
    """The fingerprint every chunk of a sweep records: its manifest's compared fields."""
    return hash_record(manifest, ignore=UNCOMPARED)


def _normalized(manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(manifest, sort_keys=True))


def _refuse(out: Path, diff: list[str]) -> ValueError:
    return ValueError(
        f"the sweep in {out} was started with different arguments; refusing to mix results.\n  "
        + "\n  ".join(diff)
        + "\nUse another out directory, or delete this one to start over (chunk_size and "
        "eval_chunk_size 'auto' take what the directory records)."
    )


def _warn_versions(out: Path, stored: dict[str, Any], current: dict[str, Any]) -> None:
    keys = ("jax", "jaxlib", "backend")
    before, now = stored.get("versions", {}), current["versions"]
    if any(before.get(k) != now[k] for k in keys):
        log.warning(
            "sweep %s was started with %s; this process runs %s: its chunks may differ from "
            "the earlier ones in the last bits",
            out,
            {k: before.get(k) for k in keys},
            {k: now[k] for k in keys},
        )


def _rows_file_problem(out: Path, entry: dict[str, Any]) -> tuple[np.ndarray | None, str]:
    """``(rows, "")`` when ``rows.npy`` matches the manifest's rows entry, else ``(None, why)``."""
    try:
        rows = np.load(out / ROWS_FILE, allow_pickle=False)
    except FileNotFoundError:
        return None, "is missing"
    except (OSError, ValueError, EOFError, SyntaxError) as err:
        return None, f"is unreadable ({type(err).__name__}: {err})"
    if hash_arrays([("rows", rows)]) != entry["sha256"]:
        return None, f"does not match the manifest's rows ({rows.dtype} {list(rows.shape)})"
    return rows, ""


def open_manifest(
    out: Path, build: Callable[[dict[str, Any] | None], dict[str, Any]], rows: np.ndarray | None
) -> dict[str, Any]:
    """Create ``out``'s manifest ``build(None)``, or check the existing one ``m`` against
    ``build(m)`` (which takes what ``"auto"`` arguments leave open from ``m``).

    Returns:
        The manifest on disk.

    Raises:
        ValueError: ``out`` holds a manifest of different arguments (one line per field).
    """
    (out / CHUNKS).mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        existing = read_manifest(out) if (out / MANIFEST).exists() else None
        manifest = _normalized(build(existing))
        if existing is None:
            if rows is not None:
                files.atomic_write(out / ROWS_FILE, lambda f: np.save(f, rows))
            text = json.dumps(manifest, indent=2, sort_keys=True)
            if files.atomic_write_text(out / MANIFEST, text, exclusive=True):
                return manifest
            continue  # another process created it first: check against theirs
        current, near = reconcile(existing, manifest)
        diff = field_diff(existing, current, ignore=UNCOMPARED)
        if diff:
            raise _refuse(out, diff)
        if near:
            log.warning(
                "sweep %s: %s, and new chunks may differ from the finished ones in the last bits",
                out,
                last_bits_warning(near, "the sweep's"),
            )
        _warn_versions(out, existing, manifest)
        if rows is not None:
            _, why = _rows_file_problem(out, existing["rows"])
            if why:
                log.warning("sweep %s: %s %s; writing it again", out, ROWS_FILE, why)
                files.atomic_write(out / ROWS_FILE, lambda f: np.save(f, rows))
        return existing
    raise RuntimeError(f"{out / MANIFEST} keeps changing; is another program rewriting it?")


@dataclass(frozen=True)
class SweepStatus:
    """How far a sweep directory is.

    Attributes:
        n_rows: Rows of the whole sweep.
        rows_done: Rows of the finished chunks.
        n_chunks: On-disk chunks of the whole sweep.
        chunk_size: Rows per on-disk chunk (the last one may hold fewer).
        chunks_done: Finished chunks.
        missing: Indices of the chunks without a file.
        corrupt: Indices of the chunks whose file is bad (only checked with ``verify``).
    """

    n_rows: int
    rows_done: int
    n_chunks: int
    chunk_size: int
    chunks_done: int
    missing: tuple[int, ...]
    corrupt: tuple[int, ...]

    @property
    def complete(self) -> bool:
        """Whether every chunk is done (:func:`load_sweep` can read the table)."""
        return not self.missing and not self.corrupt


# ------------------------------------------------------------------------------ reading


def _check_chunks(
    out: Path, manifest: dict[str, Any], verify: bool
) -> tuple[list[int], list[int], dict[int, np.ndarray]]:
    """``(missing, corrupt, values of the valid chunks)``; without ``verify`` only presence."""
    ranges = chunk_ranges(manifest["n_rows"], manifest["chunk_size"])
    study = study_fingerprint(manifest)
    names = set(os.listdir(out / CHUNKS)) if (out / CHUNKS).is_dir() else set()
    missing, corrupt, found = [], [], {}
    for c, (start, stop) in enumerate(ranges):
        if not verify:
            if chunk_path(out, c).name not in names:
                missing.append(c)
            continue
        values, why = read_chunk(out, c, start, stop, study)
        if values is None:
            (missing if why == "missing" else corrupt).append(c)
        else:
            found[c] = values
    return missing, corrupt, found


def sweep_status(out: str | os.PathLike, *, verify: bool = False) -> SweepStatus:
    """How far a sweep directory is.

    Args:
        out: Sweep directory.
        verify: Read and check every chunk (checksum, rows, the manifest it belongs to); else a
            chunk counts as done when its file exists.

    Raises:
        ValueError: ``out`` is not a sweep directory, or its manifest is unreadable.
    """
    manifest = read_manifest(out)
    out = Path(out)
    ranges = chunk_ranges(manifest["n_rows"], manifest["chunk_size"])
    missing, corrupt, _ = _check_chunks(out, manifest, verify)
    bad = set(missing) | set(corrupt)
    return SweepStatus(
        n_rows=manifest["n_rows"],
        rows_done=sum(b - a for c, (a, b) in enumerate(ranges) if c not in bad),
        n_chunks=len(ranges),
        chunk_size=int(manifest["chunk_size"]),
        chunks_done=len(ranges) - len(bad),
        missing=tuple(missing),
        corrupt=tuple(corrupt),
    )


def load_sweep(out: str | os.PathLike) -> tuple[Float[np.ndarray, " n_masks"], dict[str, Any]]:
    """The values of a finished sweep and its manifest.

    Every chunk is checked (checksum, rows, the manifest it belongs to), and so are explicit
    rows in ``rows.npy`` (against the manifest's sha256).

    Returns:
        ``(values, meta)``: float32 ``[M]`` values (index = row; bitmask for ``rows="all"``)
        and the manifest as a dict; for explicit rows, ``meta["rows_array"]`` holds the
        ``bool [M, n]`` rows.

    Raises:
        ValueError: not a sweep directory, an unreadable manifest or rows file, or chunks
            missing or corrupt (rerun :func:`sweep` with the same arguments to finish or repair
            it). Nothing is modified.
    """
    meta = read_manifest(out)
    out = Path(out)
    missing, corrupt, found = _check_chunks(out, meta, verify=True)
    n_chunks = len(chunk_ranges(meta["n_rows"], meta["chunk_size"]))
    if missing or corrupt:
        raise ValueError(
            f"sweep {out} is incomplete: {len(missing)} of {n_chunks} chunks missing"
            + (f" (first: {missing[:5]})" if missing else "")
            + (f", {len(corrupt)} corrupt {corrupt[:5]}" if corrupt else "")
            + "; rerun ja.sweep with the same arguments to finish it"
        )
    table = np.concatenate([found[c] for c in range(n_chunks)])
    if meta["rows"] != "all":
        rows, why = _rows_file_problem(out, meta["rows"])
        if rows is None:
            raise ValueError(
                f"{out / ROWS_FILE} {why}: the rows of this sweep are unknown. Rerun ja.sweep "
                "with the same arguments to write it again (the values are kept)"
            )
        meta["rows_array"] = rows
    return table, meta
