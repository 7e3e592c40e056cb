"""Exact interaction decomposition of a game given as a table of ``2^n`` values.

Every function here is a pure function of ``values[..., 2^n]``, the **presence game** of an
ablation study: ``values[..., r]`` is the metric with only coalition ``r`` of the ``n`` components
kept, where component ``i`` is in ``r`` iff ``(r >> i) & 1`` (DESIGN.md bit order). Leading axes
are batch axes. Per-coalition results (``mobius``, ``shapley_interaction``, ``k_sii``, ...) come
back in the same bit order, ``[..., 2^n]``.

All transforms are butterflies over the ``[2] * n`` view of the last axis: ``O(n 2^n)`` for
:func:`mobius`, :func:`zeta`, :func:`shapley`, :func:`banzhaf`, :func:`banzhaf_interaction` and
:func:`spectrum`; ``O(n^2 2^n)`` for the Shapley-type indices of all coalitions. They work under
``jax.jit`` and ``jax.vmap``.

Precision: results are float32 by default and float64 when ``jax_enable_x64`` is on; float64
results agree with brute-force definitions to ~1e-12 relative to ``max|v|`` for ``n <= 20``.
Shapley, Banzhaf, SII, BII, k-SII and STII are computed from ``v`` by stable passes (differences
and convex combinations), so their float32 error is a few ``eps * max|v| * n``. :func:`mobius`,
:func:`zeta` and :func:`faith_shapley` go through Möbius coefficients, whose float32 rounding
error can grow like ``eps * max|v| * 2^(n/2)`` on rough games; use x64 for those at large ``n``.

``MAX_PLAYERS = 26`` is the largest ``n`` accepted (a float32 table over 26 players is 256 MiB
and the transforms keep a few such buffers); a larger table raises ``ValueError`` naming the
memory the call would need. Input checks (shape, size limit, ``k``) always run; the NaN/inf
check runs only when the input is concrete: under ``jax.jit`` the values are tracers and the
check is skipped.
"""

import importlib
import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int, Real

from jaxablate import _transforms as tf
from jaxablate._transforms import MAX_PLAYERS

__all__ = [
    "MAX_PLAYERS",
    "SHAPIQ_INDICES",
    "ShapiqGame",
    "banzhaf",
    "banzhaf_interaction",
    "coalition_sizes",
    "faith_shapley",
    "from_shapiq",
    "k_sii",
    "loco",
    "mobius",
    "n_players",
    "pairs",
    "removal_pairs",
    "shapley",
    "shapley_interaction",
    "shapley_taylor",
    "spectrum",
    "to_shapiq",
    "zeta",
]

SHAPIQ_INDICES = ("Moebius", "SII", "BII", "k-SII", "STII", "FSII", "SV", "BV")
"""Index names accepted by :func:`to_shapiq` (shapiq's spelling)."""


def n_players(values: ArrayLike) -> int:
    """Number of players ``n`` of a ``[..., 2^n]`` table (from its shape only).

    Raises:
        ValueError: If the last axis is not a power of two >= 2, or ``n > MAX_PLAYERS``.
    """
    shape = tuple(np.shape(values))
    n = tf.players_of(shape, "values")
    tf.check_n(n, "values", math.prod(shape[:-1]))
    return n


def coalition_sizes(n: int) -> Int[Array, " n_coalitions"]:
    """Size ``|r|`` (number of players) of every coalition ``r`` in ``[0, 2^n)``, as int32.

    Raises:
        ValueError: If ``n`` is negative or larger than ``MAX_PLAYERS``.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n must be an int >= 0; got {n!r}.")
    tf.check_n(int(n), "coalition_sizes")
    return tf.sizes_of(int(n))


# ---------------------------------------------------------------------------- public transforms


def mobius(values: Real[ArrayLike, "... n_coalitions"]) -> Float[Array, "... n_coalitions"]:
    """Möbius transform (Harsanyi dividends): ``m(S) = sum_{T ⊆ S} (-1)^{|S|-|T|} v(T)``.

    ``m(S)`` is the part of ``v`` that needs all of ``S`` and nothing less; ``m(∅) = v(∅)``
    and ``sum_S m(S) = v(N)``. Inverse of :func:`zeta`.

    Args:
        values: Presence game ``[..., 2^n]`` in bit order.

    Returns:
        Möbius coefficients of every coalition, same shape and order.

    Raises:
        ValueError: Last axis not ``2^n``, ``n > MAX_PLAYERS``, or NaN/inf in a concrete input.
    """
    x, _ = tf.as_table(values)
    return tf.table_mobius(x)


def zeta(dividends: Real[ArrayLike, "... n_coalitions"]) -> Float[Array, "... n_coalitions"]:
    """Zeta transform ``v(S) = sum_{T ⊆ S} m(T)``: rebuilds the game from :func:`mobius`.

    Args:
        dividends: Möbius coefficients ``[..., 2^n]`` in bit order.

    Returns:
        The game ``v``, same shape and order.

    Raises:
        ValueError: As :func:`mobius`.
    """
    x, _ = tf.as_table(dividends, "dividends")
    return tf.table_zeta(x)


def shapley(values: Real[ArrayLike, "... n_coalitions"]) -> Float[Array, "... n_players"]:
    """Shapley value of every player; sums to ``v(N) - v(∅)`` (efficiency).

    ``phi_i = sum_{S ⊆ N \\ i} |S|! (n-|S|-1)! / n! (v(S + i) - v(S))``.

    Args:
        values: Presence game ``[..., 2^n]`` in bit order.

    Returns:
        ``[..., n]``, player ``i`` at position ``i``.

    Raises:
        ValueError: As :func:`mobius`.
    """
    x, _ = tf.as_table(values)
    return tf.marginal_values(x, banzhaf=False)


def banzhaf(values: Real[ArrayLike, "... n_coalitions"]) -> Float[Array, "... n_players"]:
    """Banzhaf value: each player's mean marginal contribution over all ``2^(n-1)`` coalitions.

    Args:
        values: Presence game ``[..., 2^n]`` in bit order.

    Returns:
        ``[..., n]``, player ``i`` at position ``i``.

    Raises:
        ValueError: As :func:`mobius`.
    """
    x, _ = tf.as_table(values)
    return tf.marginal_values(x, banzhaf=True)


def loco(values: Real[ArrayLike, "... n_coalitions"]) -> Float[Array, "... n_players"]:
    """Leave-one-component-out effect ``v(N) - v(N \\ {i})`` of every player.

    Positive means the metric drops when ``i`` is ablated from the full model (for a loss-like
    metric, where lower is better, removing a useful component gives a negative value).

    Args:
        values: Presence game ``[..., 2^n]`` in bit order.

    Returns:
        ``[..., n]``.

    Raises:
        ValueError: As :func:`mobius`.
    """
    x, _ = tf.as_table(values)
    return tf.table_loco(x)


def removal_pairs(
    values: Real[ArrayLike, "... n_coalitions"],
) -> Float[Array, "... n_players n_players"]:
    """Leave-two-out interaction ``v(N) - v(N \\ i) - v(N \\ j) + v(N \\ ij)`` of every pair.

    What a pairwise ablation study sees: the pair's effect beyond the two single removals
    (equal to ``sum_{T ⊇ {i, j}} m(T)``). Symmetric, with a **zero diagonal** (see :func:`loco`
    for single removals).

    Args:
        values: Presence game ``[..., 2^n]`` in bit order.

    Returns:
        ``[..., n, n]``.

    Raises:
        ValueError: As :func:`mobius`.
    """
    x, _ = tf.as_table(values)
    return tf.table_removal_pairs(x)


def shapley_interaction(
    values: Real[ArrayLike, "... n_coalitions"],
) -> Float[Array, "... n_coalitions"]:
    """Grabisch's Shapley interaction index (SII) of every coalition.

    ``SII(S) = sum_{T ⊇ S} m(T) / (|T| - |S| + 1)``; singletons are the Shapley values, and the
    empty coalition holds ``sum_T m(T) / (|T| + 1)`` (shapiq's ``SII`` at ``()``). Computed as
    ``∫_0^1 F_t(S) dt`` with exact Gauss-Legendre quadrature over ``n // 2 + 1`` passes.

    Args:
        values: Presence game ``[..., 2^n]`` in bit order.

    Returns:
        ``[..., 2^n]`` in bit order; :func:`pairs` extracts the pairwise matrix.

    Raises:
        ValueError: As :func:`mobius`.
    """
    x, _ = tf.as_table(values)
    return tf.table_sii(x)


def banzhaf_interaction(
    values: Real[ArrayLike, "... n_coalitions"],
) -> Float[Array, "... n_coalitions"]:
    """Banzhaf interaction index (BII) of every coalition.

    ``BII(S) = sum_{T ⊇ S} m(T) / 2^{|T| - |S|}``: the discrete derivative ``Δ_S v`` averaged
    over all coalitions of the other players; ``BII(∅)`` is the mean of ``v``.

    Args:
        values: Presence game ``[..., 2^n]`` in bit order.

    Returns:
        ``[..., 2^n]`` in bit order.

    Raises:
        ValueError: As :func:`mobius`.
    """
    x, _ = tf.as_table(values)
    return tf.table_bii(x)


def k_sii(values: Real[ArrayLike, "... n_coalitions"], k: int) -> Float[Array, "... n_coalitions"]:
    """k-Shapley values (k-SII, Bordt & von Luxburg 2023): SII aggregated to order ``k``.

    ``k-SII(S) = sum_{T ⊇ S, |T| <= k} B_{|T| - |S|} SII(T)`` for ``1 <= |S| <= k`` (``B`` the
    Bernoulli numbers, ``B_1 = -1/2``), as shapiq's ``k-SII``. Entry ``0`` holds ``v(∅)`` and
    entries with ``|S| > k`` are zero, so the non-empty entries sum to ``v(N) - v(∅)`` and the
    whole array to ``v(N)``.

    Args:
        values: Presence game ``[..., 2^n]`` in bit order.
        k: Order, a static Python int with ``1 <= k <= n``.

    Returns:
        ``[..., 2^n]`` in bit order.

    Raises:
        ValueError: As :func:`mobius`, or ``k`` out of range.
    """
    x, n = tf.as_table(values)
    tf.check_k(k, n)
    return tf.table_k_sii(x, int(k), tf.k_sii_table(n, k))


def shapley_taylor(
    values: Real[ArrayLike, "... n_coalitions"], k: int
) -> Float[Array, "... n_coalitions"]:
    """Shapley-Taylor interaction index of order ``k`` (STII, Sundararajan et al. 2020).

    ``STII_k(S) = m(S)`` for ``|S| < k`` (including ``m(∅) = v(∅)``),
    ``sum_{T ⊇ S} m(T) / C(|T|, k)`` for ``|S| = k``, zero for ``|S| > k``. Entries sum to
    ``v(N)``; the non-empty ones to ``v(N) - v(∅)``.

    Args:
        values: Presence game ``[..., 2^n]`` in bit order.
        k: Order, a static Python int with ``1 <= k <= n``.

    Returns:
        ``[..., 2^n]`` in bit order.

    Raises:
        ValueError: As :func:`mobius`, or ``k`` out of range.
    """
    x, n = tf.as_table(values)
    tf.check_k(k, n)
    return tf.table_shapley_taylor(x, int(k), tf.stii_weights(n, k))


def faith_shapley(
    values: Real[ArrayLike, "... n_coalitions"], k: int
) -> Float[Array, "... n_coalitions"]:
    """Faithful Shapley interaction index of order ``k`` (Faith-Shap / FSII, Tsai et al. 2023).

    The best ``k``-additive approximation of ``v`` in the Shapley-kernel-weighted least squares
    sense, with ``v(∅)`` and ``v(N)`` matched exactly. Closed form (their Theorem 19), for
    ``|S| <= k``::

        FSII(S) = m(S) + (-1)^(k-|S|) |S|/(k+|S|) C(k, |S|)
                  * sum_{T ⊋ S, |T| > k} C(|T|-1, k) / C(|T|+k-1, k+|S|) m(T)

    so ``FSII(∅) = v(∅)``, the non-empty entries sum to ``v(N) - v(∅)``, and entries with
    ``|S| > k`` are zero. Computed from Möbius coefficients (see the module note on float32).

    Args:
        values: Presence game ``[..., 2^n]`` in bit order.
        k: Order, a static Python int with ``1 <= k <= n``.

    Returns:
        ``[..., 2^n]`` in bit order.

    Raises:
        ValueError: As :func:`mobius`, or ``k`` out of range.
    """
    x, n = tf.as_table(values)
    tf.check_k(k, n)
    return tf.table_faith_shapley(x, int(k), tf.faith_shapley_table(n, k))


def pairs(
    per_coalition: Real[ArrayLike, "... n_coalitions"],
) -> Float[Array, "... n_players n_players"]:
    """Order-2 entries of a per-coalition array as a symmetric ``[n, n]`` matrix.

    ``out[i, j] = per_coalition[(1 << i) | (1 << j)]`` for ``i != j``; the **diagonal is zero**
    (singletons are not pairs; read them at ``per_coalition[1 << i]``).

    Args:
        per_coalition: ``[..., 2^n]`` in bit order, e.g. from :func:`shapley_interaction`.

    Returns:
        ``[..., n, n]``.

    Raises:
        ValueError: As :func:`mobius`.
    """
    x, _ = tf.as_table(per_coalition, "per_coalition")
    return tf.table_pairs(x)


def spectrum(values: Real[ArrayLike, "... n_coalitions"]) -> Float[Array, "... n_degrees"]:
    """Share of the variance of ``v`` over all ``2^n`` coalitions at each interaction degree.

    With ``v`` a function of ``n`` fair coin flips (each player kept with probability 1/2), its
    Fourier (Walsh-Hadamard) expansion ``v = sum_S f(S) chi_S`` gives
    ``Var v = sum_{S != ∅} f(S)^2``; ``spectrum[d]`` is the part of it from ``|S| = d``. Entry 0
    is 0 (a constant carries no variance) and the entries sum to 1; a constant game, having no
    variance, returns ``[1, 0, ..., 0]``. ``spectrum[1]`` near 1 means the game is nearly
    additive: leave-one-out effects tell the whole story.

    Args:
        values: Presence game ``[..., 2^n]`` in bit order.

    Returns:
        ``[..., n + 1]``.

    Raises:
        ValueError: As :func:`mobius`.
    """
    x, _ = tf.as_table(values)
    return tf.table_spectrum(x)


# ---------------------------------------------------------------------------- shapiq interop


def _shapiq_order(n: int, min_order: int, max_order: int) -> list[tuple[int, ...]]:
    """Coalitions of ``min_order..max_order`` players, by size then lexicographic (as shapiq)."""
    return [
        c
        for size in range(min_order, max_order + 1)
        for c in itertools.combinations(range(n), size)
    ]


def _import_shapiq() -> Any:
    try:
        import shapiq
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "shapiq interop needs the optional extra: pip install jaxablate[shapiq]"
        ) from err
    return shapiq


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
            :func:`k_sii` or :func:`shapley_interaction`.
        index: shapiq's name of the index, one of ``SHAPIQ_INDICES``: ``"Moebius"``,
            ``"SII"``, ``"BII"``, ``"k-SII"``, ``"STII"``, ``"FSII"``, ``"SV"``, ``"BV"``.
            ``"SV"``/``"BV"`` take the output of :func:`shapley_interaction` /
            :func:`banzhaf_interaction` with ``order=1``; their ``()`` entry is set to
            ``baseline_value`` as shapiq does.
        order: Largest coalition size kept (shapiq's ``max_order``), ``1 <= order <= n``.
        baseline_value: ``v(∅)``. Defaults to ``per_coalition[0]``, which is ``v(∅)`` for
            :func:`mobius`, :func:`k_sii`, :func:`shapley_taylor` and :func:`faith_shapley`;
            required for ``"SII"``, ``"BII"``, ``"SV"`` and ``"BV"``, whose entry 0 is not ``v(∅)``.
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
    if index not in SHAPIQ_INDICES:
        raise ValueError(f"index must be one of {SHAPIQ_INDICES}; got {index!r}.")
    if isinstance(order, bool) or not isinstance(order, int | np.integer) or not 1 <= order <= n:
        raise ValueError(f"order must be an int with 1 <= order <= n = {n}; got {order!r}.")
    if index in ("SV", "BV") and order != 1:
        raise ValueError(f"index {index!r} needs order = 1; got order = {order}.")
    if not 0 <= min_order <= order:
        raise ValueError(
            f"min_order must satisfy 0 <= min_order <= order = {order}; got {min_order}."
        )
    if baseline_value is None:
        if index in ("SII", "BII", "SV", "BV"):
            raise ValueError(
                f"index {index!r}: pass baseline_value=v(∅) (entry 0 of a {index} array is not "
                "v(∅))."
            )
        baseline_value = float(host[0])
    shapiq = _import_shapiq()
    if index in ("SV", "BV"):
        host[0] = baseline_value
    coalitions = _shapiq_order(n, int(min_order), int(order))
    codes = np.array([sum(1 << i for i in c) for c in coalitions], dtype=np.int64)
    return shapiq.InteractionValues(
        values=host[codes],
        index=index,
        max_order=int(order),
        min_order=int(min_order),
        n_players=n,
        interaction_lookup={c: j for j, c in enumerate(coalitions)},
        estimated=False,
        baseline_value=float(baseline_value),
    )


def from_shapiq(interaction_values: Any) -> np.ndarray:
    """Reads a ``shapiq.InteractionValues`` into a float64 ``[2^n]`` array in bit order.

    Coalitions it does not hold are 0. Uses ``.dict_values``, not the ``.values`` order.

    Args:
        interaction_values: A ``shapiq.InteractionValues``.

    Returns:
        numpy float64 ``[2^n]`` with ``n = interaction_values.n_players``.
    """
    n = int(interaction_values.n_players)
    tf.check_n(n, "interaction_values", itemsize=8)
    out = np.zeros(2**n, dtype=np.float64)
    for players, value in interaction_values.dict_values.items():
        out[sum(1 << int(i) for i in players)] = value
    return out


class ShapiqGame:
    """A shapiq-compatible game: ablation-study values of coalitions of model components.

    Calling it on a ``bool [m, n]`` coalition matrix (``True`` = component kept) returns the
    metric of each row via :func:`jaxablate.evaluate.evaluate`, so it plugs into shapiq's
    approximators and ``shapiq.ExactComputer(game, n_players=game.n_players)``. Use
    :meth:`from_value_fn` to wrap any ``rows -> values`` function instead.

    Args:
        model: The ``jaxablate.Transformer``.
        comps: The players (``jaxablate.Components``); column ``i`` is ``comps[i]``.
        tokens: ``int [batch, seq]`` inputs.
        metric: ``(logits, tokens) -> [batch]``; loss-like metrics: lower is better.
        ablation: Replacement for removed components.
        chunk_size: Rows per compiled call (default: all rows in one call).

    Attributes:
        n_players: Number of players ``n``.
    """

    def __init__(
        self,
        model: Any,
        comps: Any,
        tokens: Int[ArrayLike, "batch seq"],
        *,
        metric: Callable[..., Any],
        ablation: Any,
        chunk_size: int | None = None,
    ) -> None:
        self.n_players = len(comps)

        def value_fn(rows: np.ndarray) -> np.ndarray:
            # Lazy, and by module path: ``jaxablate.evaluate`` may also name the function.
            evaluate_module = importlib.import_module("jaxablate._evaluate")
            return evaluate_module.evaluate(
                model, comps, rows, tokens, metric=metric, ablation=ablation, chunk_size=chunk_size
            )

        self._value_fn: Callable[[np.ndarray], Any] = value_fn

    @classmethod
    def from_value_fn(
        cls, value_fn: Callable[[np.ndarray], ArrayLike], n_players: int
    ) -> "ShapiqGame":
        """A game from any ``value_fn(rows: bool [m, n]) -> values [m]``."""
        if isinstance(n_players, bool) or not isinstance(n_players, int) or n_players < 1:
            raise ValueError(f"n_players must be an int >= 1; got {n_players!r}.")
        game = cls.__new__(cls)
        game.n_players = n_players
        game._value_fn = value_fn
        return game

    def __call__(self, coalitions: Bool[ArrayLike, "n_masks n_players"]) -> np.ndarray:
        """Values of the coalitions, float64 ``[m]`` (a 1-D coalition gives ``[1]``)."""
        rows = np.asarray(coalitions)
        if rows.ndim == 1:
            rows = rows[None, :]
        if rows.ndim != 2 or rows.shape[1] != self.n_players:
            raise ValueError(
                f"coalitions must be bool [m, n_players = {self.n_players}]; got shape "
                f"{np.shape(coalitions)}."
            )
        out = np.asarray(self._value_fn(rows.astype(bool)), dtype=np.float64)
        if out.shape != (rows.shape[0],):
            raise ValueError(
                f"the value function must return [m] = [{rows.shape[0]}] values; got {out.shape}."
            )
        return out

    def table(self, chunk_rows: int | None = None) -> np.ndarray:
        """Values of all ``2^n`` coalitions in bit order (``2^n`` evaluations), float64.

        Args:
            chunk_rows: Rows per call of the value function (default: all at once).
        """
        tf.check_n(self.n_players, "ShapiqGame", itemsize=8)
        rows = _bit_rows(self.n_players)
        step = chunk_rows or len(rows)
        return np.concatenate([self(rows[i : i + step]) for i in range(0, len(rows), step)])


def _bit_rows(n: int) -> np.ndarray:
    """``bool [2^n, n]`` with ``rows[r, i] = (r >> i) & 1`` (bit order)."""
    return ((np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1).astype(bool)
