"""Rows of subsets (coalitions) in the bit order of docs/conventions.md.

Every function returns ``bool [M, n]``: row ``k`` lists which of the ``n`` components are kept.
For :func:`all`, row ``r`` is the coalition whose bitmask is ``r`` (component ``i`` kept iff
``(r >> i) & 1``), so a result table ``values[r]`` is indexed by bitmask.
"""

import builtins
import math

import jax
import numpy as np
from jaxtyping import ArrayLike, Bool, Int

from jaxablate._checks import MAX_ROWS_PLAYERS, check_key, finite_number, positive_int
from jaxablate.components import check_rows

#: Largest ``n`` for which :func:`all` materialises ``2^n`` rows (an alias of
#: :data:`jaxablate._checks.MAX_ROWS_PLAYERS`).
MAX_ALL = MAX_ROWS_PLAYERS

_N = "n (number of components)"
#: Most components a bitmask holds (an int64 code; the sign bit stays clear).
MAX_CODE_BITS = 62


def _check_n_bits(n: object) -> int:
    n = positive_int(_N, n)
    if n > MAX_CODE_BITS:
        raise ValueError(f"{_N} must be at most {MAX_CODE_BITS} (bitmasks are int64), got {n}")
    return n


def bits(
    codes: Int[ArrayLike, " n_masks"] | range, n: int
) -> Bool[np.ndarray, "n_masks n_players"]:
    """Rows of the coalitions with bitmasks ``codes``: ``rows[k, i] = (codes[k] >> i) & 1``.

    Args:
        codes: Bitmasks (an array, a list or a ``range``), e.g. ``range(start, stop)`` to stream
            a slice of :func:`all` without materialising the rest.
        n: Number of components (columns).
    """
    n = _check_n_bits(n)
    if isinstance(codes, range):
        arr = np.arange(codes.start, codes.stop, codes.step, dtype=np.int64)
    else:
        arr = np.asarray(codes)
        if arr.size == 0:  # [] is float64 to numpy: no codes, no rows
            arr = arr.astype(np.int64)
        if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"codes must be ints (bitmasks), got dtype {arr.dtype}")
        if arr.ndim != 1:
            raise ValueError(f"codes must be 1-D [n_masks], got shape {arr.shape}")
        arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= 2**n):
        bad = int(arr.min()) if arr.min() < 0 else int(arr.max())
        raise ValueError(f"codes must lie in [0, 2^{n}) = [0, {2**n}), got {bad}")
    return ((arr[:, None] >> np.arange(n, dtype=np.int64)) & 1).astype(bool)


def codes(rows: Bool[np.ndarray, "n_masks n_players"]) -> np.ndarray:
    """Bitmask of each row (inverse of :func:`bits`).

    Raises:
        ValueError: ``rows`` not 2-D, not bool or 0/1, or more than 62 columns wide.
    """
    arr = np.asarray(rows)
    if arr.ndim != 2:
        raise ValueError(f"rows must be 2-D [n_masks, n], got shape {arr.shape}")
    checked = np.asarray(check_rows(arr, arr.shape[1], binary=True))
    if arr.shape[1] > MAX_CODE_BITS:
        raise ValueError(
            f"rows must have at most {MAX_CODE_BITS} columns (bitmasks are int64), got "
            f"{arr.shape[1]}"
        )
    return (checked.astype(np.int64) << np.arange(arr.shape[1], dtype=np.int64)).sum(-1)


def all(n: int) -> Bool[np.ndarray, "n_masks n_players"]:
    """All ``2^n`` subsets; row ``r`` is the coalition with bitmask ``r``.

    Raises:
        ValueError: ``n > MAX_ALL``; the message gives the memory the rows would take.
    """
    n = positive_int(_N, n)
    if n > MAX_ALL:
        need = (2**n) * n
        raise ValueError(
            f"subsets.all({n}) would materialise 2^{n} rows x {n} columns = {need / 2**30:.1f} GiB "
            f"(limit n <= MAX_ALL = {MAX_ALL}); evaluate a sample, k-subsets, or stream chunks "
            "with subsets.bits(range(start, stop), n)"
        )
    return bits(np.arange(2**n), n)


def loco(n: int) -> Bool[np.ndarray, "n_masks n_players"]:
    """Leave-one-component-out rows: the full set, then each component removed alone."""
    n = positive_int(_N, n)
    rows = np.ones((n + 1, n), dtype=bool)
    rows[np.arange(1, n + 1), np.arange(n)] = False
    return rows


def k_subsets(n: int, k: int) -> Bool[np.ndarray, "n_masks n_players"]:
    """All subsets of exactly ``k`` kept components, in increasing bitmask order."""
    n = positive_int(_N, n)
    if not isinstance(k, int | np.integer) or isinstance(k, bool) or not 0 <= k <= n:
        raise ValueError(f"k must be an int in [0, {n}], got {k!r}")
    count = math.comb(n, int(k))
    if count * n > 2**MAX_ALL * MAX_ALL:
        raise ValueError(
            f"k_subsets({n}, {k}) has {count} rows, too many to materialise (limit: the "
            f"2^{MAX_ALL} x {MAX_ALL} bools of subsets.all(MAX_ALL = {MAX_ALL}))"
        )
    # Gosper's hack enumerates k-bit masks in increasing order without visiting other masks.
    out = np.empty(count, dtype=np.int64)
    if k == 0:
        out[0] = 0
        return bits(out, n)
    code = (1 << int(k)) - 1
    for i in builtins.range(count):
        out[i] = code
        low = code & -code
        ripple = code + low
        code = (((ripple ^ code) >> 2) // low) | ripple
    return bits(out, n)


def sample(key: jax.Array, n: int, m: int, p: float = 0.5) -> Bool[np.ndarray, "n_masks n_players"]:
    """``m`` random subsets, each component kept independently with probability ``p``.

    Args:
        key: A ``jax.random`` key.
        n: Number of components.
        m: Number of rows.
        p: Keep probability (0.5 draws uniformly over all subsets).
    """
    key = check_key(key)
    n = positive_int(_N, n)
    m = positive_int("m (number of rows)", m)
    p = finite_number("p", p, low=0.0, high=1.0, what="a number in [0, 1]")
    return np.asarray(jax.random.bernoulli(key, p, (m, n)))
