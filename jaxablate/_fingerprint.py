"""sha256 fingerprints of arrays, for sweep manifests and recovery checkpoints."""

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np


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
