"""Estimators of pairwise interactions behind :func:`jaxablate.estimate.pairs`.

The Shapley interaction index of every pair from the paired design of
:mod:`jaxablate._sampling` (plain centred estimator and its cross-fitted regression
adjustment), and the exact leave-two-out excess. See :mod:`jaxablate.estimate` for the
methods and their measured accuracy.
"""

import math

import numpy as np

from jaxablate import _pairs, subsets
from jaxablate._sampling import Paired, ask, ask_distinct, units
from jaxablate.games import Budget, Estimate


def _log_p(n: int, s: np.ndarray) -> np.ndarray:
    """``log(s! (n - 2 - s)! / (n - 1)!)``, the SII weight of a coalition of ``s`` others
    (``-inf`` outside ``0 <= s <= n - 2``)."""
    s = np.asarray(s, np.float64)
    ok = (s >= 0) & (s <= n - 2)
    sc = np.clip(s, 0, n - 2)
    out = np.array(
        [math.lgamma(a + 1) + math.lgamma(n - 1 - a) - math.lgamma(n) for a in sc.ravel()]
    ).reshape(sc.shape)
    return np.where(ok, out, -np.inf)


def _sii_coefficients(n: int) -> np.ndarray:
    """``[units, 3]``: ``h C(n, t) s_a p(t - a)`` for ``a = 0, 1, 2`` players of the pair in
    ``T`` (sign ``s_a = +, -, +``, ``h = 1/2`` for ``2 t = n``, else 1)."""
    t, _ = units(n)
    log_c = np.array([math.lgamma(n + 1) - math.lgamma(s + 1) - math.lgamma(n - s + 1) for s in t])
    h = np.where(2 * t == n, 0.5, 1.0)
    a = np.arange(3)
    e = np.exp(log_c[:, None] + _log_p(n, t[:, None] - a[None, :]))
    return h[:, None] * e * np.array([1.0, -1.0, 1.0])


def _sii_weights(n: int, coef: np.ndarray) -> np.ndarray:
    """Sampling weight of every unit: ``sqrt(E[coefficient^2])`` over pairs and coalitions."""
    t, _ = units(n)
    pa = np.stack(
        [(n - t) * (n - t - 1), 2 * t * (n - t), t * (t - 1)], axis=1
    ) / (n * (n - 1.0))  # fmt: skip
    return np.sqrt((pa * coef**2).sum(1))


def _pair_sums(x: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """``sum_k coef[k, a_ij(k)]`` for every pair ``i, j``, with ``a_ij(k)`` the number of
    ``i, j`` in row ``x[k]`` (``coef [K, 3]``); zero diagonal."""
    x = x.astype(np.float64)
    u = 1.0 - x
    out = (u * coef[:, :1]).T @ u + (x * coef[:, 2:]).T @ x
    mixed = (x * coef[:, 1:2]).T @ u
    out = out + mixed + mixed.T
    np.fill_diagonal(out, 0.0)
    return out


def _centred(y: np.ndarray, unit: np.ndarray, t: np.ndarray, n: int) -> np.ndarray:
    """``y`` less the leave-one-out mean of ``y`` over the other draws of its unit.

    Unbiased: for ``2 <= t <= n - 2`` the SII coefficients of the coalitions of one size sum
    to zero, so a constant per unit (independent of the draw itself) changes no expectation,
    while it removes the size-to-size level of ``y`` from every pair's variance. Draws alone in
    their unit, or in the unit of sizes ``1, n - 1``, stay as they are.

    Args:
        y: ``y(T)`` of every draw ``[K]``.
        unit: Unit of every draw ``[K]``.
        t: Smaller size of every unit.
        n: Players.
    """
    sums = np.bincount(unit, weights=y, minlength=len(t))
    count = np.bincount(unit, minlength=len(t))
    loo = (sums[unit] - y) / np.maximum(count[unit] - 1, 1)
    ok = (count[unit] >= 2) & (t[unit] >= 2) & (n - t[unit] >= 2)
    return y - np.where(ok, loo, 0.0)


def _enumerated_sii(n: int, coef: np.ndarray, exact: list, ys: list) -> np.ndarray:
    """The exact SII share of the enumerated units, ``y`` of each unit's rows in ``ys``."""
    total = np.zeros((n, n))
    for (s, first), y in zip(exact, ys, strict=True):
        unit_coef = coef[s - 1] / math.comb(n, s)  # h s_a p(t - a): no sampling factor
        total += _pair_sums(first, y[:, None] * unit_coef[None, :])
    return total


def _sampled_sii(design: Paired, coef: np.ndarray, pick: np.ndarray, y: np.ndarray):
    """``(mean, stderr)`` of the importance-weighted SII terms of the draws ``pick`` (indices
    into ``design.draws``) with values ``y`` (centred per unit among themselves)."""
    n, k = design.n, len(pick)
    if not k:
        return np.zeros((n, n)), np.zeros((n, n))
    unit = design.unit[pick]
    y = _centred(y, unit, design.t, n)
    draw = (y / design.prob[unit])[:, None] * coef[unit]
    mean = _pair_sums(design.draws[pick], draw) / k
    if k < 2:
        return mean, np.zeros((n, n))
    second = _pair_sums(design.draws[pick], draw**2) / k
    return mean, np.sqrt(np.clip(second - mean**2, 0, None) / (k - 1))


def _sii_design(checker: Budget, rng: np.random.Generator):
    """``(design, coef, exact y per enumerated unit, y of the draws)`` of the paired SII
    design, its rows asked of the game."""
    n = checker.n
    coef = _sii_coefficients(n)
    design = Paired(rng, n, _sii_weights(n, coef), checker.left)
    v0, vn, exact, vf, vs = design.split(ask_distinct(checker, design.rows()))
    ys = [fv + sv - v0 - vn for _, _, fv, sv in exact]
    return design, coef, ys, vf + vs - v0 - vn


def sii_pairs(checker: Budget, rng: np.random.Generator) -> Estimate:
    design, coef, ys, y = _sii_design(checker, rng)
    total = _enumerated_sii(design.n, coef, design.exact, ys)
    mean, stderr = _sampled_sii(design, coef, np.arange(len(y)), y)
    return Estimate(total + mean, stderr, checker.used)


#: Folds of the cross-fitted regression adjustment of ``pairs(index="sii")`` (2, 10 and 20
#: measured no better; see ``benchmarks/README.md``).
SII_FOLDS = 5


def _sii_folds(design: Paired, ys: list, y: np.ndarray, folds: int):
    """Ridge paths ``[R, P + U]`` of the surrogate fitted without each fold's draws (on the
    enumerated rows and the other folds), and the penalty with the least held-out squared
    residual over all folds."""
    fold = np.arange(len(y)) % folds
    t, picks = design.t, [np.flatnonzero(fold == f) for f in range(folds)]
    if design.exact:
        rows = np.concatenate([first for _, first in design.exact])
        unit = np.concatenate([np.full(len(first), s - 1) for s, first in design.exact])
        gram, moment = _pairs.normal_equations(rows, unit, t, np.concatenate(ys))
    else:
        gram, moment = _pairs.normal_equations(design.draws[:0], design.unit[:0], t, y[:0])
    parts = [
        _pairs.normal_equations(design.draws[p], design.unit[p], t, y[p]) for p in picks
    ]  # fmt: skip
    paths, held = [], np.zeros(len(_pairs.RIDGES))
    for f, pick in enumerate(picks):
        others = [parts[g] for g in range(folds) if g != f]
        path = _pairs.ridge_paths(
            gram + sum(g for g, _ in others), moment + sum(m for _, m in others)
        )
        fitted = _pairs.predict(design.draws[pick], design.unit[pick], t, path.T)
        held += ((y[pick, None] - fitted) ** 2).sum(0)
        paths.append(path)
    return paths, picks, int(np.argmin(held))


def sii_regression(checker: Budget, rng: np.random.Generator) -> Estimate:
    """Regression-adjusted SII (see :func:`pairs`): per fold, the surrogate's pair
    coefficients plus the centred estimate of the SII of the residual on the held-out draws."""
    design, coef, ys, y = _sii_design(checker, rng)
    n, k = design.n, len(y)
    folds = max(1, min(SII_FOLDS, k // 2))  # one fold: fitted on the enumerated rows alone
    paths, picks, best = _sii_folds(design, ys, y, folds)
    total, var = np.zeros((n, n)), np.zeros((n, n))
    for path, pick in zip(paths, picks, strict=True):
        beta = path[best]
        residual = [
            y_unit - _pairs.predict(first, np.full(len(first), s - 1), design.t, beta)
            for (s, first), y_unit in zip(design.exact, ys, strict=True)
        ]
        y_pick = y[pick] - _pairs.predict(design.draws[pick], design.unit[pick], design.t, beta)
        mean, stderr = _sampled_sii(design, coef, pick, y_pick)
        share = len(pick) / k if k else 1.0
        fixed = _pairs.to_matrix(beta, n) + _enumerated_sii(n, coef, design.exact, residual)
        total += share * (fixed + mean)
        var += share**2 * stderr**2
    return Estimate(total, np.sqrt(var), checker.used)


def removal_pairs(checker: Budget) -> Estimate:
    n = checker.n
    iu, ju = np.triu_indices(n, k=1)
    two = np.ones((len(iu), n), bool)
    two[np.arange(len(iu)), iu] = False
    two[np.arange(len(iu)), ju] = False
    values = ask(checker, np.concatenate([subsets.loco(n), two]))
    full, one = values[0], values[1 : n + 1]
    out = np.zeros((n, n))
    out[iu, ju] = full - one[iu] - one[ju] + values[n + 1 :]
    out = out + out.T
    return Estimate(out, np.zeros((n, n)), checker.used)
