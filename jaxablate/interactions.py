"""Exact interaction decomposition of a game given as a table of ``2^n`` values.

Every function here is a pure function of ``values[..., 2^n]``, the **presence game** of an
ablation study: ``values[..., r]`` is the metric with only coalition ``r`` of the ``n`` components
kept, where component ``i`` is in ``r`` iff ``(r >> i) & 1`` (the bit order of
``docs/conventions.md``). Leading axes are batch axes. Per-coalition results (``mobius``,
``shapley_interaction``, ``k_sii``, ...) come back in the same bit order, ``[..., 2^n]``.

The transforms are butterflies over the ``[2] * n`` view of the last axis (Shapley and Banzhaf
values: matmuls over a ``[2^(n - n//2), 2^(n//2)]`` view): ``O(n 2^n)`` for :func:`mobius`,
:func:`zeta`, :func:`shapley`, :func:`banzhaf`, :func:`banzhaf_interaction` and
:func:`spectrum`; ``O(n^2 2^n)`` for the Shapley-type indices of all coalitions. They work under
``jax.jit`` and ``jax.vmap``.

Precision: results are float32 by default and float64 when ``jax_enable_x64`` is on; float64
results agree with brute-force definitions to ~1e-12 relative to ``max|v|`` for ``n <= 20``.
SII, BII, k-SII and STII are computed from ``v`` by stable passes (differences and convex
combinations), Shapley and Banzhaf values by sums of ``v`` minus its mean over each coalition
size (two matmuls, and the input and one copy of the table in memory), so their float32 error
is a few ``eps * max|v| * n``. :func:`mobius`,
:func:`zeta` and :func:`faith_shapley` go through Möbius coefficients, whose float32 rounding
error can grow like ``eps * max|v| * 2^(n/2)`` on rough games; use x64 for those at large ``n``.

``MAX_PLAYERS = 26`` is the largest ``n`` accepted (a float32 table over 26 players is 256 MiB
and the transforms keep a few such buffers); a larger table raises ``ValueError`` naming the
memory the call would need. Input checks (shape, size limit, ``k``) always run; the NaN/inf
check runs only when the input is concrete: under ``jax.jit`` the values are tracers and the
check is skipped.

The transforms here need no model; this module also re-exports the shapiq interop
(:func:`to_shapiq`, :func:`from_shapiq`, ``SHAPIQ_INDICES``, from :mod:`jaxablate._shapiq`) and
the model-driven :class:`ShapiqGame` (from :mod:`jaxablate.games`, beside the evaluator).
"""

import math

import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, Real

from jaxablate import _transforms as tf
from jaxablate._checks import non_negative_int
from jaxablate._shapiq import SHAPIQ_INDICES, from_shapiq, to_shapiq
from jaxablate._transforms import MAX_PLAYERS
from jaxablate.games import ShapiqGame

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
    n = non_negative_int("n", n)
    tf.check_n(n, "coalition_sizes")
    return tf.sizes_of(n)


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
