"""Interop with shapiq: per-coalition arrays to and from ``shapiq.InteractionValues``.

shapiq is an optional extra (``pip install jaxablate[shapiq]``), imported only when a function
here is called. Public through :mod:`jaxablate.interactions` (``to_shapiq``, ``from_shapiq``,
``SHAPIQ_INDICES``). Coalitions are mapped explicitly: shapiq's tuple of players ``(i, j, ...)``
is the bitmask ``2^i + 2^j + ...`` of the project's bit order. Pure numpy: nothing here drives a
model.
"""

import itertools
from typing import Any

import numpy as np
from jaxtyping import ArrayLike, Float, Real

from jaxablate import _transforms as tf
from jaxablate._checks import non_negative_int

__all__ = ["SHAPIQ_INDICES", "from_shapiq", "to_shapiq"]

SHAPIQ_INDICES = ("Moebius", "SII", "BII", "k-SII", "STII", "FSII", "SV", "BV")
"""Index names accepted by :func:`to_shapiq` (shapiq's spelling)."""

_NO_BASELINE = ("SII", "BII", "SV", "BV")  # indices whose entry 0 is not v(∅)


def _shapiq_order(n: int, min_order: int, max_order: int) -> list[tuple[int, ...]]:
    """Coalitions of ``min_order..max_order`` players, by size then lexicographic (as shapiq)."""
    return [
        c
        for size in range(min_order, max_order + 1)
        for c in itertools.combinations(range(n), size)
    ]


def _import_shapiq() -> Any:
    """The ``shapiq`` module, or ``ImportError`` naming the extra that installs it."""
    try:
        import shapiq
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "shapiq interop needs the optional extra: pip install jaxablate[shapiq]"
        ) from err
    return shapiq


def _check_orders(index: str, order: object, min_order: object, n: int) -> tuple[int, int]:
    """Validated ``(order, min_order)`` for ``index`` over ``n`` players."""
    if index not in SHAPIQ_INDICES:
        raise ValueError(f"index must be one of {SHAPIQ_INDICES}; got {index!r}.")
    if isinstance(order, bool) or not isinstance(order, int | np.integer) or not 1 <= order <= n:
        raise ValueError(f"order must be an int with 1 <= order <= n = {n}; got {order!r}.")
    if index in ("SV", "BV") and order != 1:
        raise ValueError(f"index {index!r} needs order = 1; got order = {order}.")
    low = non_negative_int("min_order", min_order)
    if low > order:
        raise ValueError(f"min_order must satisfy 0 <= min_order <= order = {order}; got {low}.")
    return int(order), low


def to_shapiq(
    per_coalition: Real[ArrayLike, " n_coalitions"],
    index: str,
    order: int,
    *,
    baseline_value: float | None = None,
    min_order: int = 0,
) -> Any:
    """Wraps a per-coalition array as a ``shapiq.InteractionValues`` (needs the shapiq extra).

    Keeps the coalitions with ``min_order <= |S| <= order``. Read the result with
    ``.dict_values`` (tuple of players -> value) or ``iv[(i, j)]``; :func:`from_shapiq` goes back.

    Args:
        per_coalition: One ``[2^n]`` array in bit order (no batch axes), e.g. from
            :func:`~jaxablate.interactions.k_sii` or
            :func:`~jaxablate.interactions.shapley_interaction`.
        index: shapiq's name of the index, one of ``SHAPIQ_INDICES``: ``"Moebius"``,
            ``"SII"``, ``"BII"``, ``"k-SII"``, ``"STII"``, ``"FSII"``, ``"SV"``, ``"BV"``.
            ``"SV"``/``"BV"`` take the output of ``shapley_interaction`` /
            ``banzhaf_interaction`` with ``order=1``; their ``()`` entry is set to
            ``baseline_value`` as shapiq does.
        order: Largest coalition size kept (shapiq's ``max_order``), ``1 <= order <= n``.
        baseline_value: ``v(∅)``. Defaults to ``per_coalition[0]``, which is ``v(∅)`` for
            ``mobius``, ``k_sii``, ``shapley_taylor`` and ``faith_shapley``; required for
            ``"SII"``, ``"BII"``, ``"SV"`` and ``"BV"``, whose entry 0 is not ``v(∅)``.
        min_order: Smallest coalition size kept, ``0 <= min_order <= order``.

    Returns:
        ``shapiq.InteractionValues`` with ``estimated=False``.

    Raises:
        ImportError: If shapiq is not installed.
        ValueError: Bad shape, index, orders, a missing ``baseline_value``, or NaN/inf.
    """
    host = np.array(per_coalition, dtype=np.float64)  # float64 even when x64 is off
    _, n = tf.as_table(host, "per_coalition")
    if host.ndim != 1:
        raise ValueError(
            f"per_coalition must be one table [2^n] without batch axes; got shape {host.shape}."
        )
    order, min_order = _check_orders(index, order, min_order, n)
    if baseline_value is None:
        if index in _NO_BASELINE:
            raise ValueError(
                f"index {index!r}: pass baseline_value=v(∅) (entry 0 of a {index} array is not "
                "v(∅))."
            )
        baseline_value = float(host[0])
    shapiq = _import_shapiq()
    if index in ("SV", "BV"):
        host[0] = baseline_value
    coalitions = _shapiq_order(n, min_order, order)
    codes = np.array([sum(1 << i for i in c) for c in coalitions], dtype=np.int64)
    return shapiq.InteractionValues(
        values=host[codes],
        index=index,
        max_order=order,
        min_order=min_order,
        n_players=n,
        interaction_lookup={c: j for j, c in enumerate(coalitions)},
        estimated=False,
        baseline_value=float(baseline_value),
    )


def from_shapiq(interaction_values: Any) -> Float[np.ndarray, " n_coalitions"]:
    """Reads a ``shapiq.InteractionValues`` into a float64 ``[2^n]`` array in bit order.

    Coalitions it does not hold are 0. Uses ``.dict_values``, not the ``.values`` order.

    Args:
        interaction_values: A ``shapiq.InteractionValues``.

    Returns:
        numpy float64 ``[2^n]`` with ``n = interaction_values.n_players``.

    Raises:
        ValueError: If ``n_players`` is over ``MAX_PLAYERS``.
    """
    n = int(interaction_values.n_players)
    tf.check_n(n, "interaction_values", itemsize=8)
    out = np.zeros(2**n, dtype=np.float64)
    for players, value in interaction_values.dict_values.items():
        out[sum(1 << int(i) for i in players)] = value
    return out
