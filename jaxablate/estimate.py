"""Estimates of Shapley values, Banzhaf values and pairwise interactions of large games.

Beyond ~24 components no exact study fits; these estimators sample a **game** (any callable
``rows: bool [M, n] -> values [M]`` with an int attribute ``n``, e.g. :class:`jaxablate.Game`)
under a hard budget of evaluations and return an :class:`Estimate` (values, standard errors,
evaluations used). They are pure functions of the game and an explicit ``jax.random`` key: the
same key gives the same rows and the same estimate.

Budget accounting: ``budget`` bounds the **distinct** rows an estimator asks the game for.
Each distinct row is asked once, whatever the game's cache holds, so an estimate never depends
on what a game has seen before. Sampling estimators make i.i.d. draws (coalition pairs,
permutation pairs) until one more draw would need more distinct rows than the budget allows; a
row drawn again costs nothing (as in shapiq) and every draw, repeats included, enters the
estimate. :attr:`Estimate.evaluations` is the number of distinct rows asked (at most
``budget``; a few rows may stay unspent). All rows go to the game at once, in calls of at most
:data:`ROUND_ROWS` rows. A budget of ``2^n`` or more returns the exact values (``stderr``
zero) from the whole table (``n <= 24``).

Methods (defaults chosen by measurement, see ``benchmarks/README.md``):

- :func:`shapley` ``"kernel"``: paired kernel regression (KernelSHAP with antithetic pairs
  ``S, N \\ S``), the coalition sizes whose expected share of the budget covers them
  enumerated exactly ("border trick"), the other sizes sampled; constrained least squares with
  efficiency ``sum(phi) = v(N) - v(∅)``; standard errors from the sandwich (delta-method)
  formula over the sampled pairs. ``"permutation"``: antithetic permutation sampling, each
  permutation paired with its reverse; ``2 (n - 1)`` rows per pair (``v(∅)``, ``v(N)`` asked
  for once), standard errors from the spread over the pairs.
- :func:`banzhaf` ``"regression"``: paired least squares on uniform coalitions (Kernel
  Banzhaf; exact for games with interactions of order <= 2), sandwich standard errors.
  ``"msr"``: maximum-sample reuse, ``mean(v | i ∈ S) - mean(v | i ∉ S)`` over uniform
  coalitions, two-sample standard errors. Both draw distinct coalitions (pairs) without
  replacement, with the finite-population correction in ``stderr``.
- :func:`pairs` ``"sii"``: Shapley interaction index of every pair. Up to
  :data:`SII_MAX_PAIRS` pairs (``n <= 63``), **regression-adjusted**: a 2-additive surrogate
  (one coefficient per pair, whose SII it is, plus an intercept per size) is fitted by ridge
  least squares to ``y`` (below) on the enumerated rows and all but one of
  :data:`SII_FOLDS` folds of the draws, the penalty chosen by the held-out squared residual;
  the estimator below then estimates the SII of the residual on the held-out fold, and the
  folds are averaged (cross-fitting: unbiased, standard errors from the spread within each
  fold). Beyond that, the plain estimator: an importance-weighted
  sum of ``y(T) = v(T) + v(N \\ T) - v(∅) - v(N)`` over paired samples (every sample serves
  every pair; the SII weights of ``T`` and ``N \\ T`` are equal), sizes drawn by the root mean
  square of their weights, border sizes enumerated as for ``"kernel"``, and ``y`` centred per
  size by the leave-one-out mean of its size (unbiased, see
  :func:`jaxablate._pair_estimates._centred`); standard errors from the spread over the
  draws. ``"removal"``: the leave-two-out excess
  ``v(N) - v(N \\ i) - v(N \\ j) + v(N \\ ij)`` of :func:`jaxablate.interactions.removal_pairs`,
  computed exactly from its ``1 + n + n (n - 1) / 2`` rows.

All maths run in float64 numpy on the host; the game's evaluations are the expensive part.
"""

import math
from typing import Literal

import jax
import numpy as np

from jaxablate import interactions, subsets
from jaxablate._checks import one_of
from jaxablate._pair_estimates import SII_FOLDS as SII_FOLDS
from jaxablate._pair_estimates import removal_pairs, sii_pairs, sii_regression
from jaxablate._sampling import ROUND_ROWS as ROUND_ROWS
from jaxablate._sampling import (
    Paired,
    ask_distinct,
    checked,
    ends,
    exact_estimate,
    fill,
    units,
)
from jaxablate._screen import Screen as Screen
from jaxablate._screen import screen as screen
from jaxablate._sparse_mobius import SparseMobius as SparseMobius
from jaxablate._sparse_mobius import sparse_mobius as sparse_mobius
from jaxablate.games import Budget, Estimate, Game, check_game

__all__ = [
    "BANZHAF_METHODS",
    "PAIR_INDICES",
    "ROUND_ROWS",
    "SHAPLEY_METHODS",
    "Estimate",
    "Game",
    "Screen",
    "SparseMobius",
    "banzhaf",
    "format_table",
    "pairs",
    "screen",
    "shapley",
    "sparse_mobius",
    "summary_rows",
]

SHAPLEY_METHODS = ("kernel", "permutation")
BANZHAF_METHODS = ("regression", "msr")
PAIR_INDICES = ("sii", "removal")
#: Most pairs ``n (n - 1) / 2`` for which ``pairs(index="sii")`` fits the 2-additive surrogate
#: (``n <= 63``; its host maths take a few seconds there); more players use the plain
#: centred estimator.
SII_MAX_PAIRS = 1953


# ------------------------------------------------------------------------------ Shapley


def _kernel_mass(n: int) -> np.ndarray:
    """Shapley-kernel mass of every unit (both its sizes): ``(n - 1) / (t (n - t))`` per size.

    Inner sizes are sampled in proportion to it (measured against sampling every size alike,
    as leverage-score sampling does, and against a proportional schedule of sizes: both were
    no better on the benchmark games; see ``benchmarks/README.md``)."""
    t, _ = units(n)
    return (n - 1) / (t * (n - t)) * np.where(2 * t == n, 1.0, 2.0)


def _constrained_lstsq(
    z: np.ndarray, w: np.ndarray, y: np.ndarray, total: float
) -> tuple[np.ndarray, np.ndarray]:
    """``argmin sum w (y - z phi)^2`` subject to ``sum(phi) = total``, and the matrix ``P``
    that maps a perturbation of the normal equations to one of ``phi`` (for the sandwich)."""
    n = z.shape[1]
    zw = z * w[:, None]
    kkt = np.zeros((n + 1, n + 1))
    kkt[:n, :n] = zw.T @ z
    kkt[:n, n] = kkt[n, :n] = 1.0
    inv = np.linalg.pinv(kkt)
    sol = inv @ np.concatenate([zw.T @ y, [total]])
    return sol[:n], inv[:n, :n]


def _kernel_shapley(checker: Budget, rng: np.random.Generator) -> Estimate:
    n = checker.n
    mass = _kernel_mass(n)
    design = Paired(rng, n, mass, checker.left)
    v0, vn, exact, vf, vs = design.split(ask_distinct(checker, design.rows()))
    zs, ws, ys = [], [], []
    for s, first, fv, sv in exact:
        mu = (n - 1) / (math.comb(n, s) * s * (n - s))
        zs += [first] if 2 * s == n else [first, ~first]
        ys += [fv] if 2 * s == n else [fv, sv]
        ws.append(np.full(len(first) * (1 if 2 * s == n else 2), mu))
    k = design.draws.shape[0]
    draw_w = mass[design.unit] / (2 * design.prob[design.unit] * max(k, 1))
    z = np.concatenate([*zs, design.draws, ~design.draws]).astype(np.float64)
    w = np.concatenate([*ws, draw_w, draw_w])
    y = np.concatenate([*ys, vf, vs]) - v0
    phi, proj = _constrained_lstsq(z, w, y, vn - v0)
    stderr = np.zeros(n)
    if k >= 2:
        r = y[-2 * k :] - z[-2 * k :] @ phi
        d, c = design.draws, ~design.draws
        h = (d * r[:k, None] + c * r[k:, None]) * (draw_w * k)[:, None]
        ph = (h - h.mean(0)) @ proj
        stderr = np.sqrt((ph**2).sum(0) / (k - 1) / k)
    return Estimate(phi, stderr, checker.used)


def _permutation_shapley(checker: Budget, rng: np.random.Generator) -> Estimate:
    n = checker.n

    def draw(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        position = np.argsort(rng.random((count, n)), axis=1).argsort(axis=1)
        prefix = position[:, None, :] < np.arange(1, n)[None, :, None]  # [P, n - 1, n]
        return np.concatenate([prefix, ~prefix], axis=1), position

    both, position = fill(rng, ends(n), draw, 2 * (n - 1), checker.left)
    count = both.shape[0]
    flat = np.concatenate([both[:, : n - 1], both[:, n - 1 :]], axis=0).reshape(-1, n)
    values = ask_distinct(checker, np.concatenate([ends(n), flat]))
    v0, vn = values[0], values[1]
    inner = values[2:].reshape(2, count, n - 1)
    col = np.ones((count, 1))
    f = np.concatenate([v0 * col, inner[0], vn * col], axis=1)  # f[:, k] = v(prefix k)
    g = np.concatenate([vn * col, inner[1], v0 * col], axis=1)  # g[:, k] = v(N \ prefix k)
    forward = np.take_along_axis(f, position + 1, 1) - np.take_along_axis(f, position, 1)
    backward = np.take_along_axis(g, position, 1) - np.take_along_axis(g, position + 1, 1)
    pair = (forward + backward) / 2
    return Estimate(pair.mean(0), pair.std(0, ddof=1) / np.sqrt(count), checker.used)


def shapley(
    game: object,
    *,
    budget: int,
    key: jax.Array,
    method: Literal["kernel", "permutation"] = "kernel",
) -> Estimate:
    """Shapley values of a game, estimated from at most ``budget`` evaluations.

    Args:
        game: A callable ``rows: bool [M, n] -> values [M]`` with an int attribute ``n``
            (e.g. :class:`jaxablate.Game`).
        budget: Most rows to evaluate (hard limit; cached rows count too). ``"kernel"``
            needs at least ``2 n + 2``, ``"permutation"`` at least ``4 n - 2``.
        key: A ``jax.random`` key; the same key gives the same estimate.
        method: ``"kernel"`` (paired kernel regression, the default) or ``"permutation"``
            (antithetic permutation sampling); see the module docstring.

    Returns:
        :class:`Estimate` with ``values`` and ``stderr`` of shape ``[n]``; the values sum to
        ``v(N) - v(∅)``.

    Raises:
        ValueError: A bad game, key, method, or a budget too small for the method.
    """
    method = one_of("method", method, SHAPLEY_METHODS)  # type: ignore[assignment]
    n = check_game(game)
    least = 2 * n + 2 if method == "kernel" else max(2, 4 * n - 2)
    checker, rng = checked(game, budget, key, least, f"shapley(method={method!r})")
    exact = exact_estimate(checker, interactions.shapley)
    if exact is not None:
        return exact
    if method == "kernel":
        return _kernel_shapley(checker, rng)
    return _permutation_shapley(checker, rng)


# ------------------------------------------------------------------------------ Banzhaf


#: Largest ``n`` whose coalitions are drawn without replacement by their int64 bitmask.
MAX_CODE_PLAYERS = 62


def _distinct_codes(rng: np.random.Generator, population: int, count: int) -> np.ndarray:
    """``count`` distinct uniform draws from ``[0, population)``, in the order drawn."""
    if 2 * count >= population:
        return rng.permutation(population)[:count]
    seen = np.zeros(0, np.int64)
    while len(seen) < count:
        pool = np.concatenate([seen, rng.integers(0, population, 2 * (count - len(seen)) + 8)])
        _, first = np.unique(pool, return_index=True)
        seen = pool[np.sort(first)][:count]  # first occurrences keep the order drawn
    return seen


def _uniform_rows(rng: np.random.Generator, n: int, count: int, paired: bool):
    """``(rows [K, n], fpc)``: uniform coalitions drawn without replacement (``paired``: one
    member of each pair ``S, N \\ S``, pairs distinct), ``K = min(count, population)``, and the
    finite-population correction ``1 - K / population`` of the variance. Beyond
    :data:`MAX_CODE_PLAYERS` players they are i.i.d. (repeats are then vanishingly rare)."""
    if n > MAX_CODE_PLAYERS:
        return rng.random((count, n)) < 0.5, 1.0
    population = 2 ** (n - 1 if paired else n)
    codes = _distinct_codes(rng, population, min(count, population))
    return subsets.bits(codes, n), 1.0 - len(codes) / population


def _regression_banzhaf(checker: Budget, rng: np.random.Generator) -> Estimate:
    n = checker.n
    draws, fpc = _uniform_rows(rng, n, checker.left // 2, paired=True)
    k = draws.shape[0]
    values = ask_distinct(checker, np.concatenate([draws, ~draws]))
    d = values[:k] - values[k:]
    z = 2.0 * draws - 1.0
    gram_inv = np.linalg.pinv(z.T @ z)
    beta = gram_inv @ (z.T @ d)
    r = d - z @ beta
    meat = (z * (r**2)[:, None]).T @ z
    cov = gram_inv @ meat @ gram_inv * (k / max(k - n, 1)) * fpc
    return Estimate(beta, np.sqrt(np.clip(np.diag(cov), 0, None)), checker.used)


def _msr_banzhaf(checker: Budget, rng: np.random.Generator) -> Estimate:
    rows, fpc = _uniform_rows(rng, checker.n, checker.left, paired=False)
    v = ask_distinct(checker, rows)
    inside = rows.astype(np.float64)
    stats = []
    for mask in (inside, 1.0 - inside):
        count = mask.sum(0)
        mean = (mask.T @ v) / np.maximum(count, 1)
        sq = (mask.T @ v**2) - count * mean**2
        var = np.where(count >= 2, sq / np.maximum(count - 1, 1), np.inf)
        stats.append((np.where(count >= 1, mean, np.nan), var / np.maximum(count, 1)))
    (m1, e1), (m0, e0) = stats
    return Estimate(m1 - m0, np.sqrt((e1 + e0) * fpc), checker.used)


def banzhaf(
    game: object,
    *,
    budget: int,
    key: jax.Array,
    method: Literal["regression", "msr"] = "regression",
) -> Estimate:
    """Banzhaf values of a game, estimated from at most ``budget`` evaluations.

    Args:
        game: A callable ``rows: bool [M, n] -> values [M]`` with an int attribute ``n``.
        budget: Most rows to evaluate (hard limit; cached rows count too). ``"regression"``
            needs at least ``2 n + 4``, ``"msr"`` at least 8.
        key: A ``jax.random`` key; the same key gives the same estimate.
        method: ``"regression"`` (paired least squares, the default) or ``"msr"``
            (maximum-sample reuse); see the module docstring. Under ``"msr"`` a player seen in
            fewer than two coalitions on one side gets an infinite ``stderr``.

    Returns:
        :class:`Estimate` with ``values`` and ``stderr`` of shape ``[n]``.

    Raises:
        ValueError: A bad game, key, method, or a budget too small for the method.
    """
    method = one_of("method", method, BANZHAF_METHODS)  # type: ignore[assignment]
    n = check_game(game)
    least = 2 * n + 4 if method == "regression" else 8
    checker, rng = checked(game, budget, key, least, f"banzhaf(method={method!r})")
    exact = exact_estimate(checker, interactions.banzhaf)
    if exact is not None:
        return exact
    if method == "regression":
        return _regression_banzhaf(checker, rng)
    return _msr_banzhaf(checker, rng)


def pairs(
    game: object,
    *,
    budget: int,
    key: jax.Array,
    index: Literal["sii", "removal"] = "sii",
) -> Estimate:
    """Pairwise interactions of every pair of players, with standard errors.

    Args:
        game: A callable ``rows: bool [M, n] -> values [M]`` with an int attribute ``n``
            (``n >= 2``).
        budget: Most rows to evaluate (hard limit; cached rows count too). ``"sii"`` needs at
            least ``2 n + 6``; ``"removal"`` exactly ``1 + n + n (n - 1) / 2`` (it uses no more).
        key: A ``jax.random`` key; the same key gives the same estimate (``"removal"`` draws
            nothing).
        index: ``"sii"``: Shapley interaction index of order 2 (as
            ``interactions.pairs(interactions.shapley_interaction(v))``); ``"removal"``: the
            leave-two-out excess of :func:`jaxablate.interactions.removal_pairs`, exact.
            ``"sii"`` is regression-adjusted (see the module docstring) while
            ``n (n - 1) / 2 <= SII_MAX_PAIRS`` (``n <= 63``), at any budget: measured at
            0.33-0.66x the RMSE of shapiq's best SII approximator (KernelSHAPIQ) and
            0.24-0.85x that of the plain centred estimator at budgets from 0.5 to 30 times
            the number of pairs (exact on a 2-additive game); beyond it, whose fit would
            cost ``O(n^6)``, the plain centred estimator (``O(budget x n^2)``).

    Returns:
        :class:`Estimate` with symmetric ``values`` and ``stderr`` of shape ``[n, n]`` and a
        zero diagonal.

    Raises:
        ValueError: A bad game, key, index, ``n < 2``, or a budget too small.
    """
    index = one_of("index", index, PAIR_INDICES)  # type: ignore[assignment]
    n = check_game(game)
    if n < 2:
        raise ValueError(f"pairs needs a game of at least 2 players, got n = {n}")
    least = 2 * n + 6 if index == "sii" else 1 + n + n * (n - 1) // 2
    checker, rng = checked(game, budget, key, least, f"pairs(index={index!r})")
    if index == "removal":
        return removal_pairs(checker)
    exact = exact_estimate(
        checker, lambda v: interactions.pairs(interactions.shapley_interaction(v))
    )
    if exact is not None:
        return exact
    if n * (n - 1) // 2 <= SII_MAX_PAIRS:
        return sii_regression(checker, rng)
    return sii_pairs(checker, rng)


# ------------------------------------------------------------------------------ tables


def summary_rows(
    estimate: Estimate, names: list[str], top: int | None = None
) -> tuple[list[str], list[list[object]]]:
    """Headers and rows of a table of an estimate, largest ``|value|`` first.

    Per-player estimates give ``component, value, stderr, 95% interval``; pairwise ones
    (``[n, n]``) give one row per pair ``i < j`` named ``"A x B"``.

    Args:
        estimate: From :func:`shapley`, :func:`banzhaf` or :func:`pairs`.
        names: Component names (``comps.names``), ``n`` of them.
        top: Rows to keep (default: all).

    Raises:
        ValueError: ``names`` does not match the estimate.
    """
    values = estimate.values
    n = values.shape[0]
    if len(names) != n or values.ndim not in (1, 2):
        raise ValueError(f"names must list the estimate's {n} players, got {len(names)}")
    if values.ndim == 1:
        labels, flat, err = list(names), values, estimate.stderr
    else:
        iu, ju = np.triu_indices(n, k=1)
        labels = [f"{names[i]} x {names[j]}" for i, j in zip(iu, ju, strict=True)]
        flat, err = values[iu, ju], estimate.stderr[iu, ju]
    order = np.argsort(-np.abs(flat), kind="stable")[:top]
    head = ["component" if values.ndim == 1 else "pair", "estimate", "stderr", "95% interval"]
    rows: list[list[object]] = [
        [labels[k], float(flat[k]), float(err[k]), f"[{flat[k] - 2 * err[k]:+.4g}, "
         f"{flat[k] + 2 * err[k]:+.4g}]"]
        for k in order
    ]  # fmt: skip
    return head, rows


def format_table(estimate: Estimate, names: list[str], top: int | None = 10) -> str:
    """A plain-text table of :func:`summary_rows` (for the terminal), with the budget used."""
    head, rows = summary_rows(estimate, names, top)
    width = max([len(head[0]), *(len(str(r[0])) for r in rows)]) + 2
    lines = [f"{head[0]:<{width}}{head[1]:>13}{head[2]:>12}  {head[3]}"]
    for label, value, err, interval in rows:
        lines.append(f"{label!s:<{width}}{value:>+13.6f}{err:>12.6f}  {interval}")
    lines.append(f"({estimate.evaluations} evaluations)")
    return "\n".join(lines)
