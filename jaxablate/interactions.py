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

Input checks (shape, size limit, ``k``) always run; the NaN/inf check runs only when the input is
concrete: under ``jax.jit`` the values are tracers and the check is skipped.
"""

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int, Real

from jaxablate import _transforms as tf

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

MAX_PLAYERS = 26
"""Largest ``n`` accepted: a float32 table over 26 players is 256 MiB, and the transforms keep a
few such buffers alive (``_WORK_BUFFERS``)."""

_WORK_BUFFERS = 4

SHAPIQ_INDICES = ("Moebius", "SII", "BII", "k-SII", "STII", "FSII", "SV", "BV")
"""Index names accepted by :func:`to_shapiq` (shapiq's spelling)."""


# ---------------------------------------------------------------------------- input validation


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.3g} GiB ({int(nbytes):,} bytes)"


def _check_n(n: int, what: str, batch: int = 1, itemsize: int = 4) -> None:
    if n > MAX_PLAYERS:
        need = _WORK_BUFFERS * batch * 2**n * itemsize
        raise ValueError(
            f"{what} is over n = {n} players, more than MAX_PLAYERS = {MAX_PLAYERS}: this call "
            f"would need about {_gib(need)} of working memory ({_WORK_BUFFERS} buffers of "
            f"{batch} x 2^{n} values of {itemsize} bytes). Split the players or use fewer."
        )


def _players_of(shape: tuple[int, ...], what: str) -> int:
    if len(shape) == 0:
        raise ValueError(f"{what} must have a last axis of 2^n coalitions; got a scalar.")
    size = shape[-1]
    if size < 2 or size & (size - 1):
        raise ValueError(
            f"{what} must have a last axis of length 2^n with n >= 1 (2, 4, 8, ...); got shape "
            f"{tuple(shape)} with last axis {size}."
        )
    return size.bit_length() - 1


def _float_dtype(dtype: Any, what: str) -> Any:
    if jnp.issubdtype(dtype, jnp.complexfloating) or not (
        jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.bool_)
    ):
        raise ValueError(f"{what} must hold real numbers; got dtype {dtype}.")
    if jnp.issubdtype(dtype, jnp.floating):
        return jnp.promote_types(dtype, jnp.float32)
    return jnp.asarray(0.0).dtype  # default float: float64 under x64, else float32


def _as_table(values: ArrayLike, what: str = "values") -> tuple[Array, int]:
    """Validates a ``[..., 2^n]`` table; returns it as a float jax array and ``n``."""
    if not isinstance(values, jax.Array | np.ndarray):
        values = np.asarray(values)
    shape = tuple(values.shape)
    n = _players_of(shape, what)
    dtype = _float_dtype(values.dtype, what)
    _check_n(n, what, math.prod(shape[:-1]), jnp.dtype(dtype).itemsize)
    if not isinstance(values, jax.core.Tracer):
        finite = np.isfinite(np.asarray(values, dtype=np.float64))
        if not finite.all():
            bad = np.argwhere(~finite)
            raise ValueError(
                f"{what} must be finite; got {len(bad)} NaN/inf entries of {finite.size}, first "
                f"at index {tuple(int(i) for i in bad[0])}."
            )
    return jnp.asarray(values, dtype=dtype), n


def _check_k(k: int, n: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise ValueError(f"k must be a Python int with 1 <= k <= n = {n}; got {k!r}.")
    if not 1 <= k <= n:
        raise ValueError(f"k must satisfy 1 <= k <= n = {n}; got k = {k}.")


def n_players(values: ArrayLike) -> int:
    """Number of players ``n`` of a ``[..., 2^n]`` table (from its shape only).

    Raises:
        ValueError: If the last axis is not a power of two >= 2, or ``n > MAX_PLAYERS``.
    """
    shape = tuple(np.shape(values))
    n = _players_of(shape, "values")
    _check_n(n, "values", math.prod(shape[:-1]))
    return n


def coalition_sizes(n: int) -> Int[Array, " n_coalitions"]:
    """Size ``|r|`` (number of players) of every coalition ``r`` in ``[0, 2^n)``, as int32.

    Raises:
        ValueError: If ``n`` is negative or larger than ``MAX_PLAYERS``.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n must be an int >= 0; got {n!r}.")
    _check_n(int(n), "coalition_sizes")
    return tf.sizes_of(int(n))


# ---------------------------------------------------------------------------- jitted kernels


@jax.jit
def _mobius(x: Array) -> Array:
    return tf.mobius(x, x.shape[-1].bit_length() - 1)


@jax.jit
def _zeta(x: Array) -> Array:
    return tf.zeta(x, x.shape[-1].bit_length() - 1)


@functools.partial(jax.jit, static_argnames=("banzhaf",))
def _marginal_values(x: Array, banzhaf: bool) -> Array:
    """``phi_i = sum_{S ∌ i} w(|S|) (v(S + i) - v(S))`` for every player, one pass each."""
    n = x.shape[-1].bit_length() - 1
    lead = x.shape[:-1]
    if banzhaf:
        w = np.full(n, 2.0 ** (1 - n))
    else:
        w = np.array([1.0 / (n * math.comb(n - 1, s)) for s in range(n)])
    sizes = tf.sizes_of(n)
    out = []
    for i in range(n):
        y = x.reshape(*lead, 2 ** (n - 1 - i), 2, 2**i)
        without_i = sizes.reshape(2 ** (n - 1 - i), 2, 2**i)[:, 0, :]
        wi = jnp.asarray(w, dtype=x.dtype)[without_i]
        out.append(jnp.sum((y[..., 1, :] - y[..., 0, :]) * tf.lift(wi, x.ndim), axis=(-2, -1)))
    return jnp.stack(out, axis=-1)


@jax.jit
def _sii(x: Array) -> Array:
    n = x.shape[-1].bit_length() - 1
    return tf.integrate(x, n, *tf.gauss_legendre01(n))


@jax.jit
def _bii(x: Array) -> Array:
    return tf.derivative_at(x, x.shape[-1].bit_length() - 1, 0.5)


@functools.partial(jax.jit, static_argnames=("k",))
def _k_sii(x: Array, k: int) -> Array:
    n = x.shape[-1].bit_length() - 1
    sii = tf.integrate(x, n, *tf.gauss_legendre01(n))
    sizes = tf.lift(tf.sizes_of(n), x.ndim)
    sii = jnp.where(sizes <= k, sii, 0)
    out = tf.graded_superset(sii, n, tf.k_sii_table(n, k))
    return jnp.where(sizes == 0, x, out)


@functools.partial(jax.jit, static_argnames=("k",))
def _shapley_taylor(x: Array, k: int) -> Array:
    n = x.shape[-1].bit_length() - 1
    # For |S| = k: sum_{T ⊇ S} m(T) / C(|T|, k) = k ∫ (1 - t)^(k-1) F_t(S) dt (a Beta integral);
    # the integrand has degree n - 1 in t, so Gauss-Legendre with n // 2 + 1 nodes is exact.
    t, w = tf.gauss_legendre01(n)
    top = tf.integrate(x, n, t, k * w * (1.0 - t) ** (k - 1))
    sizes = tf.lift(tf.sizes_of(n), x.ndim)
    low = tf.mobius(x, n) if k > 1 else x
    return jnp.where(sizes < k, low, jnp.where(sizes == k, top, 0))


@functools.partial(jax.jit, static_argnames=("k",))
def _faith_shapley(x: Array, k: int) -> Array:
    n = x.shape[-1].bit_length() - 1
    m = tf.mobius(x, n)
    sizes = tf.lift(tf.sizes_of(n), x.ndim)
    return jnp.where(sizes <= k, m, 0) + tf.graded_superset(m, n, tf.faith_shapley_table(n, k))


@jax.jit
def _spectrum(x: Array) -> Array:
    n = x.shape[-1].bit_length() - 1
    power = jnp.square(tf.walsh_hadamard(x, n))
    by_degree = jax.ops.segment_sum(jnp.moveaxis(power, -1, 0), tf.sizes_of(n), n + 1)
    by_degree = jnp.moveaxis(by_degree, 0, -1).at[..., 0].set(0)
    total = jnp.sum(by_degree, axis=-1, keepdims=True)
    constant = tf.lift(jnp.arange(n + 1) == 0, x.ndim).astype(x.dtype)
    return jnp.where(total > 0, by_degree / jnp.where(total > 0, total, 1), constant)


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
    x, _ = _as_table(values)
    return _mobius(x)


def zeta(dividends: Real[ArrayLike, "... n_coalitions"]) -> Float[Array, "... n_coalitions"]:
    """Zeta transform ``v(S) = sum_{T ⊆ S} m(T)``: rebuilds the game from :func:`mobius`.

    Args:
        dividends: Möbius coefficients ``[..., 2^n]`` in bit order.

    Returns:
        The game ``v``, same shape and order.

    Raises:
        ValueError: As :func:`mobius`.
    """
    x, _ = _as_table(dividends, "dividends")
    return _zeta(x)


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
    x, _ = _as_table(values)
    return _marginal_values(x, banzhaf=False)


def banzhaf(values: Real[ArrayLike, "... n_coalitions"]) -> Float[Array, "... n_players"]:
    """Banzhaf value: each player's mean marginal contribution over all ``2^(n-1)`` coalitions.

    Args:
        values: Presence game ``[..., 2^n]`` in bit order.

    Returns:
        ``[..., n]``, player ``i`` at position ``i``.

    Raises:
        ValueError: As :func:`mobius`.
    """
    x, _ = _as_table(values)
    return _marginal_values(x, banzhaf=True)


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
    x, n = _as_table(values)
    full = 2**n - 1
    without = np.array([full ^ (1 << i) for i in range(n)])
    return x[..., full:] - x[..., without]


def removal_pairs(values: Real[ArrayLike, "... n_coalitions"]) -> Float[Array, "... n_players n_players"]:
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
    x, n = _as_table(values)
    full = 2**n - 1
    bit = 1 << np.arange(n)
    wi = np.broadcast_to((full ^ bit)[:, None], (n, n))
    wij = full & ~(bit[:, None] | bit[None, :])
    out = x[..., full:][..., None] - x[..., wi] - x[..., wi.T] + x[..., wij]
    return jnp.where(tf.lift(jnp.eye(n, dtype=bool), out.ndim), 0, out)


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
    x, _ = _as_table(values)
    return _sii(x)


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
    x, _ = _as_table(values)
    return _bii(x)


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
    x, n = _as_table(values)
    _check_k(k, n)
    return _k_sii(x, int(k))


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
    x, n = _as_table(values)
    _check_k(k, n)
    return _shapley_taylor(x, int(k))


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
    x, n = _as_table(values)
    _check_k(k, n)
    return _faith_shapley(x, int(k))


def pairs(per_coalition: Real[ArrayLike, "... n_coalitions"]) -> Float[Array, "... n_players n_players"]:
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
    x, n = _as_table(per_coalition, "per_coalition")
    bit = 1 << np.arange(n)
    out = x[..., bit[:, None] | bit[None, :]]
    return jnp.where(tf.lift(jnp.eye(n, dtype=bool), out.ndim), 0, out)


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
    x, _ = _as_table(values)
    return _spectrum(x)
