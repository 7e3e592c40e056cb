"""sha256 fingerprints of arrays, for sweep manifests and recovery checkpoints."""

import hashlib
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
