"""The inputs of :func:`jaxablate.sweep`: checked and resolved before a manifest is opened,
and the chunk sizes and evaluation plan that the manifest records (functions of the shapes
alone, never of timing or of the worker and device counts; see :mod:`jaxablate._sweep`).
"""

import math
from typing import Any, Literal

import jax
import numpy as np

from jaxablate import _chunking
from jaxablate._checks import MAX_SWEEP_PLAYERS, positive_int, rows_2d
from jaxablate._fingerprint import hash_arrays
from jaxablate._prompts import Prompts
from jaxablate.components import check_rows
from jaxablate.models.inputs import Ablation, check_tokens, zero
from jaxablate.models.transformer import Transformer

#: Largest on-disk chunk that ``chunk_size="auto"`` picks.
AUTO_CHUNK = 2**14
#: Smallest on-disk chunk that ``chunk_size="auto"`` picks (unless the sweep is smaller).
MIN_AUTO_CHUNK = 256
#: Chunks that ``chunk_size="auto"`` aims at between those bounds (work to split and resume).
AUTO_CHUNKS = 64


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


def _check_tokens(model: Transformer, tokens: object) -> tuple[Any, tuple[int, int]]:
    """``(tokens as evaluate takes them, (batch, seq))``; a :class:`Prompts` passes through."""
    if isinstance(tokens, Prompts):
        check_tokens(model.config, tokens.tokens)
        return tokens, (tokens.batch, tokens.seq)
    checked = check_tokens(model.config, tokens)
    return checked, (int(checked.shape[0]), int(checked.shape[1]))


def _check_ablation(ablation: object, model: Transformer, shape: tuple[int, int]) -> Ablation:
    """``ablation`` (zero for ``None``), checked against the model and the tokens' shape."""
    ablation = zero() if ablation is None else ablation
    if not isinstance(ablation, Ablation):
        raise ValueError(f"ablation must be a ja.Ablation or None, got {ablation!r}")
    ablation.fit(model.config, batch=shape[0], seq=shape[1])  # fail early
    return ablation


def _auto_chunk(n_rows: int) -> int:
    """Rows per on-disk chunk for ``chunk_size="auto"``: a function of the row count alone.

    About :data:`AUTO_CHUNKS` chunks (a power of two rows each), between
    :data:`MIN_AUTO_CHUNK` and :data:`AUTO_CHUNK` rows; one chunk for a small sweep.
    """
    target = 1 << max(0, math.ceil(n_rows / AUTO_CHUNKS) - 1).bit_length()
    return min(n_rows, max(MIN_AUTO_CHUNK, min(AUTO_CHUNK, target)))


def _chunk_size(size: int | Literal["auto"], n_rows: int, existing: dict[str, Any] | None) -> int:
    """Rows per on-disk chunk: ``"auto"`` takes an existing manifest's, else :func:`_auto_chunk`."""
    if size == "auto":
        if existing is not None and existing.get("n_rows") == n_rows:
            return int(existing["chunk_size"])
        return _auto_chunk(n_rows)
    return min(size, n_rows)


def _eval_plan(
    group: int | Literal["auto"],
    existing: dict[str, Any] | None,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """The manifest's ``plan``: rows per device per compiled call, inner vmap width, sharing.

    ``"auto"`` takes an existing manifest's plan, else :func:`jaxablate._chunking.device_plan`;
    an int sets the rows per device (the inner width then follows the cache rule).
    """
    share = bool(settings["share_prefix"])
    if group == "auto" and existing is not None and isinstance(existing.get("plan"), dict):
        return {**existing["plan"], "share_prefix": share}
    cfg, shape, chunk = settings["cfg"], settings["shape"], settings["chunk"]
    if group == "auto":
        plan = _chunking.device_plan(cfg, shape, chunk, budget=settings["budget"])
    else:
        size = min(group, chunk)
        plan = _chunking.Plan(size, _chunking.inner_width(cfg, shape, size))
    return {"rows_per_device": plan.chunk, "inner": plan.inner, "share_prefix": share}
