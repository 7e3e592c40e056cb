"""sha256 fingerprints of a computation's inputs, for sweep manifests and recovery checkpoints.

A fingerprint covers everything that changes the numbers (array bytes, dtypes, shapes, names)
and nothing that does not (a pad id, the texts prompts were tokenized from).

Float arrays that the model computes (mean and resample replacements, a clean model's log-probs)
differ in the last bits between machines, so their sha256 alone would refuse to resume a sweep
or a recovery run on another machine. Beside their sha256 they are recorded as a **sketch**
(:func:`sketch`): each leaf's float64 norm and :data:`SKETCH_PROJECTIONS` fixed random
projections. Two sketches agree (:func:`sketches_agree`) when every projection and the norm
match to :data:`SKETCH_RTOL` of the norm (or 4 machine epsilons of the leaf's dtype, if more:
bfloat16's last bit is 2^-8): float32 last-bit differences (about 1e-7 relative) pass by
three orders of magnitude, while a change of relative size ``r`` (``|a - b| / |a|``) moves each
projection by ``r |a|`` times a standard normal, so a change with ``r >= 1e-3`` escapes all of
them with probability below ``0.08^8``, about 1e-9. :func:`reconcile` applies this to a stored
record: a field whose sha256 differs but whose sketch agrees is taken as the stored one.
"""

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
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


def ablation_sketch(ablation: Ablation) -> list[dict[str, Any]]:
    """The :func:`sketch` of an ablation's replacements (compared when their sha256 differs)."""
    return sketch({name: getattr(ablation, name) for name in ("z", "attn", "mlp")})


def metric_sketch(metric: Callable[..., jax.Array]) -> list[dict[str, Any]]:
    """The :func:`sketch` of a metric's data (compared when their sha256 differs)."""
    return sketch(as_metric(metric).data)


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


#: Record fields whose float data are compared up to last-bit differences when their digest
#: differs, each with a ``<field>_sketch`` companion (sweep manifests and recovery checkpoints
#: alike): replacements and metric data that the model computes, and a recovery optimizer's
#: updates on a probe problem, differ in the last bits on another machine.
SKETCHED = ("ablation", "metric", "optimizer")
#: Random projections in a :func:`sketch` of each float leaf.
SKETCH_PROJECTIONS = 8
#: Relative tolerance (of a leaf's norm) within which two sketches agree.
SKETCH_RTOL = 1e-4
_SKETCH_WIDTH = 4096  # a leaf is projected as rows of this many values ...
_SKETCH_ROWS = 256  # ... converted to float64 this many rows at a time


def _float_sketch(arr: np.ndarray) -> tuple[float, list[float]]:
    """The float64 norm of ``arr`` and its projections on ``SKETCH_PROJECTIONS`` fixed random
    directions ``w[i * W + j] = c[i] * u[j]`` (row weights ``c`` and a row pattern ``u`` per
    direction, standard normal, the same on every machine: numpy's PCG64 with fixed seeds).

    A change ``d`` moves a projection by ``sum_i c_i <u, d_i>``, of variance ``|d|^2`` (as for
    a fully random direction), at the cost of one matrix product per block of rows.
    """
    flat, width = arr.reshape(-1), _SKETCH_WIDTH
    u = np.random.default_rng(0).standard_normal((width, SKETCH_PROJECTIONS))
    c = np.random.default_rng([1, flat.size]).standard_normal(-(-flat.size // width))
    proj, squares = np.zeros(SKETCH_PROJECTIONS), 0.0
    step = width * _SKETCH_ROWS
    for start in range(0, flat.size, step):
        x = flat[start : start + step].astype(np.float64)
        rows = -(-x.size // width)
        if x.size < rows * width:  # the last, partial row: zeros do not move the projections
            x = np.concatenate([x, np.zeros(rows * width - x.size)])
        x = x.reshape(rows, width)
        squares += float(np.einsum("ij,ij->", x, x))
        first = start // width
        proj += c[first : first + rows] @ (x @ u)
    return math.sqrt(squares), [float(v) for v in proj]


def sketch(tree: Any, *, rtol: float | None = None) -> list[dict[str, Any]]:
    """Per leaf of ``tree``: its path, dtype and shape, and for a floating leaf its float64
    norm and random projections, for any other leaf its sha256 (compared exactly).

    Args:
        tree: A pytree of arrays.
        rtol: The relative tolerance its float leaves are compared with, recorded in each
            entry (default :data:`SKETCH_RTOL`, not recorded).
    """
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        arr = np.asarray(leaf)
        entry: dict[str, Any] = {
            "path": jax.tree_util.keystr(path),
            "dtype": arr.dtype.str,
            "shape": list(arr.shape),
        }
        if jnp.issubdtype(arr.dtype, jnp.floating):
            entry["eps"] = float(jnp.finfo(arr.dtype).eps)
            if rtol is not None:
                entry["rtol"] = float(rtol)
            entry["norm"], entry["projections"] = _float_sketch(arr)
        else:
            entry["sha256"] = hash_arrays([("leaf", arr)])
        out.append(entry)
    return out


def sketches_agree(a: Any, b: Any) -> bool:
    """Whether two :func:`sketch` records describe the same arrays up to last-bit differences
    (same leaves; exact leaves equal; norms and projections within the recorded tolerance,
    :data:`SKETCH_RTOL` if none, or 4 epsilons of the leaf's dtype, times its norm)."""
    if not isinstance(a, list) or not isinstance(b, list) or len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if not isinstance(x, dict) or not isinstance(y, dict):
            return False
        if any(x.get(k) != y.get(k) for k in ("path", "dtype", "shape", "sha256", "eps", "rtol")):
            return False
        if "norm" not in x and "norm" not in y:
            continue
        try:
            norm = max(abs(float(x["norm"])), abs(float(y["norm"])))
            tol = max(float(x.get("rtol", SKETCH_RTOL)), 4 * float(x["eps"])) * norm
            pairs = [(x["norm"], y["norm"])]
            pairs += list(zip(x["projections"], y["projections"], strict=True))
            if any(abs(float(u) - float(v)) > tol for u, v in pairs):
                return False
        except (KeyError, TypeError, ValueError):
            return False
    return True


def reconcile(
    stored: dict[str, Any], current: dict[str, Any], fields: Sequence[str] = SKETCHED
) -> tuple[dict[str, Any], list[str]]:
    """``current`` as it compares to a ``stored`` record, and the fields equal only up to
    last-bit differences.

    Each field ``f`` of ``fields`` has a companion ``f + "_sketch"`` (see :func:`sketch`).
    A stored record without the companion (written before sketches) compares ``f`` exactly, as
    it was written to be. Otherwise the companions are compared with :func:`sketches_agree`
    (never byte for byte), and ``f`` itself, when it differs only in its digests while the
    sketches agree, is taken as the stored value and named in the returned list.

    Returns:
        ``(current with those fields replaced by the stored ones, names of the fields that
        agree only up to the last bits)``.
    """
    out, near = dict(current), []
    for f in fields:
        key = f"{f}_sketch"
        if key not in stored:
            out.pop(key, None)
            continue
        if key not in current or not sketches_agree(stored[key], current[key]):
            continue
        out[key] = stored[key]
        differs = stored.get(f) != current.get(f)
        if differs and _without_hashes(stored.get(f)) == _without_hashes(current.get(f)):
            out[f] = stored.get(f)
            near.append(f)
    return out, near


def last_bits_warning(near: Sequence[str], against: str) -> str:
    """The warning for the fields :func:`reconcile` found equal to ``against`` (e.g. ``"the
    sweep's"``) only up to their last bits: resuming goes on."""
    fields = " and ".join(f"{f} data" for f in near)
    return (
        f"this call's {fields} differ from {against} in the last bits only (as when recomputed "
        "on another machine or jax version); resuming"
    )


_HEX = frozenset("0123456789abcdef")


def _without_hashes(value: Any) -> Any:
    """A record entry with its digests blanked (a ``"sha256"`` key, or a hex string of 32+
    digits), so that entries differing only in them compare equal."""
    if isinstance(value, dict):
        return {k: _without_hashes(v) for k, v in value.items() if k != "sha256"}
    if isinstance(value, list | tuple):
        return [_without_hashes(v) for v in value]
    if isinstance(value, str) and len(value) >= 32 and all(c in _HEX for c in value):
        return "<digest>"
    return value
