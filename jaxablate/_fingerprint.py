"""sha256 fingerprints of a computation's inputs, for sweep manifests and recovery checkpoints.

A fingerprint covers everything that changes the numbers (array bytes, dtypes, shapes, names)
and nothing that does not (a pad id, the texts prompts were tokenized from).
"""

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from jaxablate._prompts import Prompts
from jaxablate.metrics import as_metric
from jaxablate.models.inputs import Ablation
from jaxablate.models.io import model_arrays
from jaxablate.models.transformer import Transformer


def hash_arrays(items: Sequence[tuple[str, Any]]) -> str:
    """sha256 over names, dtypes, shapes and bytes of ``(name, array or None)`` pairs."""
    h = hashlib.sha256()
    for name, value in items:
        h.update(name.encode() + b"\0")
        if value is None:
            h.update(b"None\0")
            continue
        arr = np.ascontiguousarray(np.asarray(value))
        h.update(f"{arr.dtype.str}{arr.shape}\0".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def hash_record(record: dict[str, Any], *, ignore: Sequence[str] = ()) -> str:
    """sha256 of a JSON record's fields (less ``ignore``), independent of their order."""
    kept = {k: v for k, v in record.items() if k not in ignore}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()


def weights_fingerprint(model: Transformer) -> str:
    """sha256 of every parameter of ``model`` (names, dtypes, shapes, bytes)."""
    return hash_arrays(sorted(model_arrays(model).items()))


def tree_fingerprint(tree: Any) -> str:
    """sha256 of a pytree's leaves and their paths."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return hash_arrays([(jax.tree_util.keystr(path), leaf) for path, leaf in flat])


def ablation_entry(ablation: Ablation) -> dict[str, Any]:
    """``{"kind", "sha256"}`` of an ablation's replacements."""
    arrays = [(name, getattr(ablation, name)) for name in ("z", "attn", "mlp")]
    h = hash_arrays([*arrays, ("prefix_positions", np.asarray(ablation.prefix_positions))])
    return {"kind": ablation.kind, "sha256": h}


def metric_entry(metric: Callable[..., jax.Array]) -> dict[str, Any]:
    """``{"name", "sha256"[, "positions"]}`` of a metric (its data and the positions it reads)."""
    m = as_metric(metric)
    entry: dict[str, Any] = {"name": m.name, "sha256": tree_fingerprint(m.data)}
    if m.positions is not None:
        entry["positions"] = list(m.positions)
    return entry


def _prompts_hash(prompts: Prompts) -> str:
    items: list[tuple[str, Any]] = [
        ("tokens", prompts.tokens),
        ("lengths", prompts.lengths),
        ("correct", prompts.correct),
        ("wrong", prompts.wrong),
    ]
    items += [(f"positions/{name}", prompts.positions[name]) for name in sorted(prompts.positions)]
    corrupted = prompts.corrupted
    items.append(("corrupted", None if corrupted is None else _prompts_hash(corrupted)))
    return hash_arrays(items)


def tokens_entry(tokens: Any) -> dict[str, Any]:
    """``{"kind", "shape", "sha256"}`` of the inputs: an int array, or a :class:`Prompts`
    (its tokens, lengths, answers, named positions and corrupted prompts)."""
    if isinstance(tokens, Prompts):
        shape = list(tokens.tokens.shape)
        return {"kind": "prompts", "shape": shape, "sha256": _prompts_hash(tokens)}
    arr = np.asarray(tokens)
    return {"kind": "array", "shape": list(arr.shape), "sha256": hash_arrays([("tokens", arr)])}


def _describe(value: Any, width: int = 120) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= width else text[: width - 3] + "..."


def field_diff(
    stored: dict[str, Any],
    current: dict[str, Any],
    *,
    ignore: Sequence[str] = (),
    stored_as: str = "on disk",
    current_as: str = "this call",
) -> list[str]:
    """One line per field that differs between a stored record and the current call's.

    Args:
        stored: What a manifest or checkpoint on disk records.
        current: What this call would record.
        ignore: Fields recorded but never compared (versions, timestamps).
        stored_as: How the stored side is named in the lines.
        current_as: How the current side is named.

    Returns:
        ``"field: <stored> (on disk) vs <current> (this call)"`` for each differing field, in
        sorted order; empty when the two agree.
    """
    keys = sorted((set(stored) | set(current)) - set(ignore))
    return [
        f"{k}: {_describe(stored.get(k))} ({stored_as}) vs {_describe(current.get(k))} "
        f"({current_as})"
        for k in keys
        if stored.get(k) != current.get(k)
    ]
