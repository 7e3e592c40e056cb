"""Butterfly transforms over ``[..., 2^n]`` tables and the exact weights they need.

Private helpers of :mod:`jaxablate.interactions` (also used by its shapiq interop and
:mod:`jaxablate.games`). Every transform here works on the last axis of
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

import functools
import math
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer
from jaxtyping import Array, ArrayLike, Float, Int

from jaxablate._checks import MAX_TABLE_PLAYERS

Pair = Callable[[Array, Array], tuple[Array, Array]]

MAX_PLAYERS = MAX_TABLE_PLAYERS
"""Largest ``n`` accepted (:data:`jaxablate._checks.MAX_TABLE_PLAYERS`): a float32 table over 26
players is 256 MiB, and the transforms keep a few such buffers alive (``WORK_BUFFERS``)."""

WORK_BUFFERS = 4
"""Tables of ``2^n`` values a transform keeps alive at once (for the memory in error messages)."""


# ------------------------------------------------------------------ input validation


def gib(nbytes: float) -> str:
    """``nbytes`` spelled in GiB and in bytes, for error messages."""
    return f"{nbytes / 2**30:.3g} GiB ({int(nbytes):,} bytes)"


def check_n(n: int, what: str, batch: int = 1, itemsize: int = 4) -> None:
    """Raises ``ValueError`` naming the memory needed if ``n > MAX_PLAYERS``.

    Args:
        n: Number of players.
        what: Name of the argument (or caller) for the message.
        batch: Number of tables along the leading axes.
        itemsize: Bytes per value.
    """
    if n > MAX_PLAYERS:
        need = WORK_BUFFERS * batch * 2**n * itemsize
        raise ValueError(
            f"{what} is over n = {n} players, more than MAX_PLAYERS = {MAX_PLAYERS}: this call "
            f"would need about {gib(need)} of working memory ({WORK_BUFFERS} buffers of "
            f"{batch} x 2^{n} values of {itemsize} bytes). Split the players or use fewer."
        )


def players_of(shape: tuple[int, ...], what: str) -> int:
    """``n`` of a ``[..., 2^n]`` shape, else ``ValueError`` naming ``what``."""
    if len(shape) == 0:
        raise ValueError(f"{what} must have a last axis of 2^n coalitions; got a scalar.")
    size = shape[-1]
    if size < 2 or size & (size - 1):
        raise ValueError(
            f"{what} must have a last axis of length 2^n with n >= 1 (2, 4, 8, ...); got shape "
            f"{tuple(shape)} with last axis {size}."
        )
    return size.bit_length() - 1


def float_dtype(dtype: Any, what: str) -> Any:
    """The float dtype a table of ``dtype`` is computed in (at least float32; ints and bools
    give the default float); ``ValueError`` for complex or non-numeric dtypes."""
    if jnp.issubdtype(dtype, jnp.complexfloating) or not (
        jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.bool_)
    ):
        raise ValueError(f"{what} must hold real numbers; got dtype {dtype}.")
    if jnp.issubdtype(dtype, jnp.floating):
        return jax.dtypes.canonicalize_dtype(jnp.promote_types(dtype, jnp.float32))
    return jnp.asarray(0.0).dtype  # default float: float64 under x64, else float32


def as_table(values: ArrayLike, what: str = "values") -> tuple[Array, int]:
    """Validates a ``[..., 2^n]`` table; returns it as a float jax array and ``n``."""
    if not isinstance(values, jax.Array | np.ndarray):
        values = np.asarray(values)
    shape = tuple(values.shape)
    n = players_of(shape, what)
    dtype = float_dtype(values.dtype, what)
    check_n(n, what, math.prod(shape[:-1]), jnp.dtype(dtype).itemsize)
    if not isinstance(values, Tracer) and not all_finite(values):
        bad = np.argwhere(~np.isfinite(np.asarray(values)))
        raise ValueError(
            f"{what} must be finite; got {len(bad)} NaN/inf entries of {math.prod(shape)}, "
            f"first at index {tuple(int(i) for i in bad[0])}."
        )
    return jnp.asarray(values, dtype=dtype), n


def all_finite(values: jax.Array | np.ndarray) -> bool:
    """Whether a concrete array holds no NaN/inf (checked where it lives: host or device)."""
    if isinstance(values, jax.Array):
        return bool(jnp.all(jnp.isfinite(values)))
    if not np.issubdtype(values.dtype, np.inexact):
        return True
    return bool(np.isfinite(values).all())


def check_k(k: int, n: int) -> None:
    """Raises ``ValueError`` unless ``k`` is a Python int with ``1 <= k <= n``."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise ValueError(f"k must be a Python int with 1 <= k <= n = {n}; got {k!r}.")
    if not 1 <= k <= n:
        raise ValueError(f"k must satisfy 1 <= k <= n = {n}; got k = {k}.")


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


def integrate(x: Array, n: int, nodes: np.ndarray, weights: np.ndarray | Array) -> Array:
    """``sum_q weights[q] * derivative_at(x, n, nodes[q])`` with a ``fori_loop`` over nodes.

    One compiled pass body, whatever the number of nodes; memory stays ``O(2^n)``.
    """
    t = jnp.asarray(nodes, dtype=x.dtype)
    w = jnp.asarray(weights, dtype=x.dtype)

    def body(q: int, acc: Array) -> Array:
        return acc + w[q] * derivative_at(x, n, t[q])

    return jax.lax.fori_loop(0, len(nodes), body, jnp.zeros_like(x))


def graded_superset(x: Array, n: int, table: np.ndarray | Array) -> Array:
    """``y(S) = sum_{T ⊇ S} table[|S|, |T|] * x(T)`` for a weight table over the two sizes.

    One superset-sum transform per output size whose row of ``table`` is non-zero (rows that
    are all zero are skipped at run time by ``lax.cond``, so ``table`` can be a traced argument
    and one compiled program serves every order ``k``): ``O(n^2 2^n)`` at most.

    Args:
        x: Table over ``n`` players on its last axis.
        n: Number of players.
        table: ``[n + 1, n + 1]`` weights, row = output size, column = summed size.

    Returns:
        ``y``, same shape as ``x``.
    """
    sizes = sizes_of(n)
    table = jnp.asarray(table, dtype=x.dtype)

    def add_row(s: Array, acc: Array) -> Array:
        y = superset_sum(x * lift(table[s][sizes], x.ndim), n)
        return acc + jnp.where(lift(sizes == s, x.ndim), y, 0)

    def body(s: Array, acc: Array) -> Array:
        return jax.lax.cond(jnp.any(table[s] != 0), add_row, lambda s, acc: acc, s, acc)

    return jax.lax.fori_loop(0, n + 1, body, jnp.zeros_like(x))


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
        b.append(-sum((math.comb(m + 1, j) * b[j] for j in range(m)), Fraction(0)) / (m + 1))
    return b


def stii_weights(n: int, k: int) -> np.ndarray:
    """Node weights for ``STII_k(S) = sum_{T ⊇ S} m(T) / C(|T|, k)`` at ``|S| = k``.

    ``1 / C(k + d, k) = k B(k, d + 1) = k ∫ t^d (1 - t)^(k-1) dt``, so the sum is
    ``k ∫ (1 - t)^(k-1) F_t(S) dt``; the integrand has degree ``n - 1`` in ``t`` and the
    ``n // 2 + 1`` Gauss-Legendre nodes of :func:`gauss_legendre01` integrate it exactly.
    """
    t, w = gauss_legendre01(n)
    return k * w * (1.0 - t) ** (k - 1)


@functools.cache
def k_sii_table(n: int, k: int) -> np.ndarray:
    """``table[s, t] = B_{t - s}`` for ``1 <= s <= t <= k``: k-SII from SII (Bernoulli sums)."""
    b = bernoulli(k)
    table = np.zeros((n + 1, n + 1))
    for s in range(1, k + 1):
        for t in range(s, k + 1):
            table[s, t] = float(b[t - s])
    return table


@functools.cache
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


# ------------------------------------------------------------------ jitted kernels (one per index)


@jax.jit
def table_mobius(x: Array) -> Array:
    """Möbius transform of the last axis (see :func:`mobius`)."""
    return mobius(x, x.shape[-1].bit_length() - 1)


@jax.jit
def table_zeta(x: Array) -> Array:
    """Zeta transform of the last axis (see :func:`zeta`)."""
    return zeta(x, x.shape[-1].bit_length() - 1)


def marginal_weights(n: int, banzhaf: bool) -> np.ndarray:
    """``w(s)`` for ``s`` in ``[-1, n]``, so that ``phi_i = sum_{S ∌ i} w(|S|) (v(S + i) - v(S))``.

    Shapley: ``w(s) = 1 / (n C(n-1, s))``; Banzhaf: ``2^(1-n)``; the two ends (``s = -1`` and
    ``s = n``, no such coalition) are zero, so index ``s + 1`` never needs a bounds check.
    """
    w = np.zeros(n + 2)
    if banzhaf:
        w[1:-1] = 2.0 ** (1 - n)
    else:
        w[1:-1] = [1.0 / (n * math.comb(n - 1, s)) for s in range(n)]
    return w


def _bits(width: int) -> tuple[np.ndarray, np.ndarray]:
    """Popcounts ``[2^width]`` and bits ``[2^width, width]`` (float64) of ``0 .. 2^width - 1``."""
    r = np.arange(2**width)
    bits = ((r[:, None] >> np.arange(width)) & 1).astype(np.float64)
    return bits.sum(axis=1).astype(np.int64), bits


def _half_values(sums: Array, pop_own: np.ndarray, bits_own: np.ndarray, w: np.ndarray) -> Array:
    """Marginal values of the players of one half of the bits from per-size sums over the other.

    ``sums[..., k, o]`` is the sum of ``v`` over coalitions whose own half is ``o`` and whose
    other half has ``k`` players; a coalition of size ``|S| = k + |o|`` counts with weight
    ``w(|S| - 1)`` for the players in it and ``-w(|S|)`` for the players outside it.
    """
    size = np.arange(sums.shape[-2])[:, None] + pop_own[None, :]
    w_in = jnp.asarray(w[size], sums.dtype)  # w(|S| - 1), stored at index |S|
    w_out = jnp.asarray(w[size + 1], sums.dtype)  # w(|S|)
    p_in = jnp.sum(sums * lift(w_in, sums.ndim), axis=-2)
    p_out = jnp.sum(sums * lift(w_out, sums.ndim), axis=-2)
    bits = jnp.asarray(bits_own, sums.dtype)
    return p_in @ bits - p_out @ (1 - bits)


def _size_means(v: Array, onehot_hi: np.ndarray, onehot_lo: np.ndarray) -> Array:
    """Mean of ``v [..., 2^high, 2^low]`` over the coalitions of each size: ``[..., n + 1]``."""
    high, low = onehot_hi.shape[1] - 1, onehot_lo.shape[1] - 1
    hi, lo = jnp.asarray(onehot_hi, v.dtype), jnp.asarray(onehot_lo, v.dtype)
    by_sizes = jnp.einsum("hk,...hl,lj->...kj", hi, v, lo)  # [..., high + 1, low + 1]
    diagonal = np.arange(high + 1)[:, None, None] + np.arange(low + 1)[None, :, None]
    to_size = (diagonal == np.arange(high + low + 1)).astype(np.float64)
    counts = np.array([math.comb(high + low, s) for s in range(high + low + 1)])
    return jnp.einsum("...kj,kjs->...s", by_sizes, jnp.asarray(to_size / counts, v.dtype))


@functools.partial(jax.jit, static_argnames=("banzhaf",))
def marginal_values(x: Array, banzhaf: bool) -> Array:
    """``phi_i = sum_{S ∌ i} w(|S|) (v(S + i) - v(S))`` for every player (see :func:`shapley`).

    ``phi`` is linear in ``v``: ``phi_i = sum_S v(S) g_i(S)`` with ``g_i(S) = w(|S| - 1)`` if
    ``i ∈ S`` and ``-w(|S|)`` otherwise. Split each coalition into its low ``L = n // 2`` bits
    and its high ``n - L`` bits, so the table is a ``[2^(n-L), 2^L]`` matrix ``V``: the low
    players' values need only ``V``'s column sums per size of the high half (one matmul with a
    one-hot ``[2^(n-L), n-L+1]`` matrix), the high players' only its row sums per size of the
    low half. Work ``O(n 2^n)`` as matmuls; memory: the input and one copy, however large ``n``.

    For accuracy in float32 the copy is ``v`` minus its mean over each coalition size (a
    symmetric game, whose values ``sum_s w(s) C(n-1, s) (b(s+1) - b(s))`` are added back
    exactly), so the sums' rounding error scales with what varies within a size, not with
    ``max |v|`` (a loss that grows with the number of ablated components cancels out).
    """
    n = x.shape[-1].bit_length() - 1
    low = n // 2
    w = marginal_weights(n, banzhaf)
    pop_lo, bits_lo = _bits(low)
    pop_hi, bits_hi = _bits(n - low)
    onehot_hi = (pop_hi[:, None] == np.arange(n - low + 1)).astype(np.float64)
    onehot_lo = (pop_lo[:, None] == np.arange(low + 1)).astype(np.float64)
    shape = (*x.shape[:-1], 2 ** (n - low), 2**low)  # [..., high half, low half]
    means = _size_means(x.reshape(shape), onehot_hi, onehot_lo)  # [..., n + 1]
    symmetric = jnp.sum(
        (means[..., 1:] - means[..., :-1])
        * lift(jnp.asarray(w[1:-1] * [math.comb(n - 1, s) for s in range(n)], x.dtype), x.ndim),
        axis=-1,
        keepdims=True,
    )
    v = (x - jnp.take(means, sizes_of(n), axis=-1)).reshape(shape)
    by_hi_size = jnp.einsum("hk,...hl->...kl", jnp.asarray(onehot_hi, x.dtype), v)
    by_lo_size = jnp.swapaxes(v @ jnp.asarray(onehot_lo, x.dtype), -1, -2)
    phi_lo = _half_values(by_hi_size, pop_lo, bits_lo, w)
    phi_hi = _half_values(by_lo_size, pop_hi, bits_hi, w)
    return jnp.concatenate([phi_lo, phi_hi], axis=-1) + symmetric


@jax.jit
def table_sii(x: Array) -> Array:
    """SII of every coalition: ``∫_0^1 F_t dt`` by exact Gauss-Legendre quadrature."""
    n = x.shape[-1].bit_length() - 1
    return integrate(x, n, *gauss_legendre01(n))


@jax.jit
def table_bii(x: Array) -> Array:
    """BII of every coalition: ``F_{1/2}``."""
    return derivative_at(x, x.shape[-1].bit_length() - 1, 0.5)


# The order k is a traced argument and its weights come as arrays: one compilation per shape.


@jax.jit
def table_k_sii(x: Array, k: int | Array, table: np.ndarray | Array) -> Array:
    """k-SII from SII by the Bernoulli sums of :func:`k_sii_table`; entry 0 holds ``v(∅)``."""
    n = x.shape[-1].bit_length() - 1
    sii = integrate(x, n, *gauss_legendre01(n))
    sizes = lift(sizes_of(n), x.ndim)
    sii = jnp.where(sizes <= k, sii, 0)
    return jnp.where(sizes == 0, x, graded_superset(sii, n, table))


@jax.jit
def table_shapley_taylor(x: Array, k: int | Array, weights: np.ndarray | Array) -> Array:
    """STII: Möbius below ``k``, the :func:`stii_weights` integral at ``k``, zero above."""
    n = x.shape[-1].bit_length() - 1
    top = integrate(x, n, gauss_legendre01(n)[0], weights)
    sizes = lift(sizes_of(n), x.ndim)
    return jnp.where(sizes < k, mobius(x, n), jnp.where(sizes == k, top, 0))


@jax.jit
def table_faith_shapley(x: Array, k: int | Array, table: np.ndarray | Array) -> Array:
    """Faith-Shap: Möbius up to ``k`` plus the off-diagonal :func:`faith_shapley_table` sums."""
    n = x.shape[-1].bit_length() - 1
    m = mobius(x, n)
    sizes = lift(sizes_of(n), x.ndim)
    return jnp.where(sizes <= k, m, 0) + graded_superset(m, n, table)


@jax.jit
def table_spectrum(x: Array) -> Array:
    """Share of the Walsh-Hadamard power at each degree (``[1, 0, ...]`` for a constant)."""
    n = x.shape[-1].bit_length() - 1
    power = jnp.square(walsh_hadamard(x, n))
    by_degree = jax.ops.segment_sum(jnp.moveaxis(power, -1, 0), sizes_of(n), n + 1)
    by_degree = jnp.moveaxis(by_degree, 0, -1).at[..., 0].set(0)
    total = jnp.sum(by_degree, axis=-1, keepdims=True)
    constant = lift(jnp.arange(n + 1) == 0, x.ndim).astype(x.dtype)
    return jnp.where(total > 0, by_degree / jnp.where(total > 0, total, 1), constant)


@jax.jit
def table_loco(x: Array) -> Array:
    """``v(N) - v(N \\ i)`` for every player."""
    n = x.shape[-1].bit_length() - 1
    full = 2**n - 1
    without = np.array([full ^ (1 << i) for i in range(n)])
    return x[..., full:] - x[..., without]


@jax.jit
def table_removal_pairs(x: Array) -> Array:
    """``v(N) - v(N \\ i) - v(N \\ j) + v(N \\ ij)``, zero diagonal."""
    n = x.shape[-1].bit_length() - 1
    full = 2**n - 1
    bit = 1 << np.arange(n)
    wi = np.broadcast_to((full ^ bit)[:, None], (n, n))
    wij = full & ~(bit[:, None] | bit[None, :])
    out = x[..., full:][..., None] - x[..., wi] - x[..., wi.T] + x[..., wij]
    return jnp.where(lift(jnp.eye(n, dtype=bool), out.ndim), 0, out)


@jax.jit
def table_pairs(x: Array) -> Array:
    """Order-2 entries as a symmetric ``[n, n]`` matrix, zero diagonal."""
    n = x.shape[-1].bit_length() - 1
    bit = 1 << np.arange(n)
    out = x[..., bit[:, None] | bit[None, :]]
    return jnp.where(lift(jnp.eye(n, dtype=bool), out.ndim), 0, out)
