"""Butterfly transforms over ``[..., 2^n]`` tables and the exact weights they need.

Private helpers of :mod:`jaxablate.interactions`. Every transform here works on the last axis of
an array read as ``[2] * n`` in the project's bit order (coalition ``r`` holds player ``i`` iff
``(r >> i) & 1``), so player ``i`` is the middle axis of the reshape
``[..., 2^(n-1-i), 2, 2^i]``. A transform applies the same 2x2 map ``(a, b) -> (a', b')`` to every
pair of entries that differ only in player ``i``, for each player in turn: ``n`` passes of
``O(2^n)`` work each, never a loop over subsets.

The central one is :func:`derivative_at`: the per-axis map ``(a, b) -> ((1 - t) a + t b, b - a)``
turns a game ``v`` into ``F_t(S) = sum_{T ⊇ S} t^{|T| - |S|} m(T)`` (``m`` the Möbius transform),
the discrete derivative of ``v``'s multilinear extension at the point ``t`` for every player
outside ``S``. ``t = 0`` gives the Möbius transform, ``t = 1/2`` the Banzhaf interaction index,
and integrating over ``t`` gives Shapley-type indices. Working from ``v`` directly avoids the
cancellation of large Möbius coefficients in float32.
"""

import math
from collections.abc import Callable
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

Pair = Callable[[Array, Array], tuple[Array, Array]]


def lift(w: Array, ndim: int) -> Array:
    """Prepends unit axes to ``w`` so it has ``ndim`` axes (explicit rank promotion)."""
    return w.reshape((1,) * (ndim - w.ndim) + w.shape)


def sizes_of(n: int) -> Int[Array, " n_coalitions"]:
    """Coalition sizes ``popcount(r)`` for ``r`` in ``[0, 2^n)``, computed on device."""
    return jax.lax.population_count(jnp.arange(2**n, dtype=jnp.int32))


def butterfly(x: Float[Array, "... n_coalitions"], n: int, pair: Pair) -> Array:
    """Applies ``pair(a, b) -> (a', b')`` along every player axis of ``x``.

    Args:
        x: Table over ``n`` players on its last axis.
        n: Number of players, ``x.shape[-1] == 2^n``.
        pair: Map of the entries without (``a``) and with (``b``) the player.

    Returns:
        The transformed table, same shape as ``x``.
    """
    lead = x.shape[:-1]
    for i in range(n):
        y = x.reshape(*lead, 2 ** (n - 1 - i), 2, 2**i)
        a, b = pair(y[..., 0, :], y[..., 1, :])
        x = jnp.stack([a, b], axis=-2).reshape(*lead, 2**n)
    return x


def mobius(x: Array, n: int) -> Array:
    """``m(S) = sum_{T ⊆ S} (-1)^{|S| - |T|} v(T)``."""
    return butterfly(x, n, lambda a, b: (a, b - a))


def zeta(x: Array, n: int) -> Array:
    """``v(S) = sum_{T ⊆ S} m(T)`` (inverse of :func:`mobius`)."""
    return butterfly(x, n, lambda a, b: (a, a + b))


def superset_sum(x: Array, n: int) -> Array:
    """``y(S) = sum_{T ⊇ S} x(T)``."""
    return butterfly(x, n, lambda a, b: (a + b, b))


def derivative_at(x: Array, n: int, t: Array | float) -> Array:
    """``F_t(S) = sum_{T ⊇ S} t^{|T| - |S|} m(T)`` computed from the game ``x`` directly."""
    return butterfly(x, n, lambda a, b: ((1 - t) * a + t * b, b - a))


def walsh_hadamard(x: Array, n: int) -> Array:
    """Fourier coefficients under the uniform distribution: ``E_T[v(T) (-1)^{|S ∩ T|}]``."""
    return butterfly(x, n, lambda a, b: ((a + b) * 0.5, (a - b) * 0.5))


def integrate(x: Array, n: int, nodes: np.ndarray, weights: np.ndarray) -> Array:
    """``sum_q weights[q] * derivative_at(x, n, nodes[q])`` with a ``fori_loop`` over nodes.

    One compiled pass body, whatever the number of nodes; memory stays ``O(2^n)``.
    """
    t = jnp.asarray(nodes, dtype=x.dtype)
    w = jnp.asarray(weights, dtype=x.dtype)

    def body(q: int, acc: Array) -> Array:
        return acc + w[q] * derivative_at(x, n, t[q])

    return jax.lax.fori_loop(0, len(nodes), body, jnp.zeros_like(x))


def graded_superset(x: Array, n: int, table: np.ndarray) -> Array:
    """``y(S) = sum_{T ⊇ S} table[|S|, |T|] * x(T)`` for a weight table over the two sizes.

    One superset-sum transform per output size with a non-zero row of ``table``: at most
    ``(n + 1)`` transforms, ``O(n^2 2^n)`` in all.

    Args:
        x: Table over ``n`` players on its last axis.
        n: Number of players.
        table: ``[n + 1, n + 1]`` float64 weights, row = output size, column = summed size.

    Returns:
        ``y``, same shape as ``x``.
    """
    rows = [s for s in range(n + 1) if np.any(table[s] != 0)]
    if not rows:
        return jnp.zeros_like(x)
    sizes = sizes_of(n)
    row_of = jnp.asarray(rows, dtype=jnp.int32)
    tbl = jnp.asarray(table[rows], dtype=x.dtype)

    def body(j: int, acc: Array) -> Array:
        w = tbl[j][sizes]
        y = superset_sum(x * lift(w, x.ndim), n)
        return acc + jnp.where(lift(sizes == row_of[j], x.ndim), y, 0)

    return jax.lax.fori_loop(0, len(rows), body, jnp.zeros_like(x))


# ------------------------------------------------------------------ exact weights (float64 numpy)


def gauss_legendre01(degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights on ``[0, 1]`` integrating polynomials of ``degree`` exactly."""
    q = degree // 2 + 1
    x, w = np.polynomial.legendre.leggauss(q)
    return (x + 1.0) / 2.0, w / 2.0


def bernoulli(k: int) -> list[Fraction]:
    """Bernoulli numbers ``B_0..B_k`` with ``B_1 = -1/2`` (as ``scipy.special.bernoulli``)."""
    b = [Fraction(1)]
    for m in range(1, k + 1):
        b.append(-sum(math.comb(m + 1, j) * b[j] for j in range(m)) / (m + 1))
    return b


def k_sii_table(n: int, k: int) -> np.ndarray:
    """``table[s, t] = B_{t - s}`` for ``1 <= s <= t <= k``: k-SII from SII (Bernoulli sums)."""
    b = bernoulli(k)
    table = np.zeros((n + 1, n + 1))
    for s in range(1, k + 1):
        for t in range(s, k + 1):
            table[s, t] = float(b[t - s])
    return table


def faith_shapley_table(n: int, k: int) -> np.ndarray:
    """Off-diagonal Möbius weights of Faith-Shap (Tsai, Yeh & Ravikumar 2023, JMLR, Thm. 19).

    ``FSII_k(S) = m(S) + (-1)^{k-|S|} |S|/(k+|S|) C(k, |S|)
    sum_{T ⊋ S, |T| > k} C(|T|-1, k) / C(|T|+k-1, k+|S|) m(T)`` for ``|S| <= k``.
    """
    table = np.zeros((n + 1, n + 1))
    for s in range(1, k + 1):
        c = Fraction((-1) ** (k - s) * s * math.comb(k, s), k + s)
        for t in range(k + 1, n + 1):
            table[s, t] = float(c * Fraction(math.comb(t - 1, k), math.comb(t + k - 1, k + s)))
    return table
