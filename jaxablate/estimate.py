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
  size by the leave-one-out mean of its size (unbiased, see :func:`_centred`); standard errors
  from the spread over the draws. ``"removal"``: the leave-two-out excess
  ``v(N) - v(N \\ i) - v(N \\ j) + v(N \\ ij)`` of :func:`jaxablate.interactions.removal_pairs`,
  computed exactly from its ``1 + n + n (n - 1) / 2`` rows.

All maths run in float64 numpy on the host; the game's evaluations are the expensive part.
"""

import itertools
import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxablate import _pairs, interactions, subsets
from jaxablate._checks import MAX_ROWS_PLAYERS, check_key, one_of
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

#: Most rows per call of the game (an estimator asks for its rows in calls of this size).
ROUND_ROWS = 2**14
SHAPLEY_METHODS = ("kernel", "permutation")
BANZHAF_METHODS = ("regression", "msr")
PAIR_INDICES = ("sii", "removal")


# ------------------------------------------------------------------------------ helpers


def _rng(key: object) -> np.random.Generator:
    """A numpy generator seeded from a checked ``jax.random`` key (reproducible)."""
    checked = check_key(key)
    bits = np.asarray(jax.random.bits(checked, (4,), jnp.uint32))
    return np.random.default_rng([int(b) for b in bits])


def _ask(budget: Budget, rows: np.ndarray) -> np.ndarray:
    """Values of ``rows``, asked in calls of at most :data:`ROUND_ROWS` rows."""
    parts = [budget(rows[s : s + ROUND_ROWS]) for s in range(0, rows.shape[0], ROUND_ROWS)]
    return np.concatenate(parts) if parts else np.zeros(0)


def _keys(rows: np.ndarray) -> np.ndarray:
    """``uint64 [M, words]``: the rows' bits packed, one key per row (for ``np.unique``)."""
    packed = np.packbits(rows, axis=1)
    packed = np.pad(packed, ((0, 0), (0, -packed.shape[1] % 8)))
    return np.ascontiguousarray(packed).view(np.uint64)


def _ask_distinct(budget: Budget, rows: np.ndarray) -> np.ndarray:
    """Values of ``rows``, asking the game for each distinct row once (in first-seen order)."""
    _, first, inverse = np.unique(
        _keys(rows), axis=0, return_index=True, return_inverse=True
    )  # fmt: skip
    order = np.argsort(first)
    values = np.empty(len(first))
    values[order] = _ask(budget, rows[first[order]])
    return values[inverse.ravel()]


#: Most draws an estimator makes per distinct row of its budget (duplicates are free, as
#: in shapiq; this bounds the work when a budget nearly exhausts what can be sampled).
MAX_DRAWS_PER_ROW = 64


def _fill(rng: np.random.Generator, fixed: np.ndarray, draw, per_draw: int, left: int):
    """The most i.i.d. draws whose rows, together with ``fixed``, hold at most ``left``
    distinct rows.

    Args:
        rng: The generator.
        fixed: ``[F, n]`` rows every estimate needs.
        draw: ``draw(rng, count) -> (rows [count, per_draw, n], meta [count])``.
        per_draw: Rows per draw.
        left: Distinct rows allowed, ``fixed`` included.

    Returns:
        ``(rows [D, r, n], meta [D])``, the first ``D`` draws in the order drawn.
    """
    n_fixed = len(np.unique(_keys(fixed), axis=0)) if len(fixed) else 0
    guess = max(1, (left - n_fixed) // per_draw)
    rows, meta = draw(rng, guess)
    cap = MAX_DRAWS_PER_ROW * max(left, 1)
    while True:
        flat = np.concatenate([fixed, rows.reshape(-1, rows.shape[-1])])
        _, first = np.unique(_keys(flat), axis=0, return_index=True)
        new = np.zeros(len(flat), bool)
        new[first] = True
        per = new[len(fixed) :].reshape(len(rows), per_draw).sum(1)
        count = int(np.searchsorted(np.cumsum(per), left - n_fixed, side="right"))
        if count < len(rows) or len(rows) >= cap:
            return rows[:count], meta[:count]
        more, more_meta = draw(rng, min(max(guess, len(rows)), cap - len(rows)))
        rows, meta = np.concatenate([rows, more]), np.concatenate([meta, more_meta])


def _k_rows(n: int, t: int) -> np.ndarray:
    """All coalitions of size ``t`` (``1 <= t``), ``bool [C(n, t), n]``, for any ``n``."""
    index = np.array(list(itertools.combinations(range(n), t)), np.int64).reshape(-1, t)
    rows = np.zeros((len(index), n), bool)
    np.put_along_axis(rows, index, True, axis=1)
    return rows


def _ends(n: int) -> np.ndarray:
    """The rows of the empty and the full coalition, ``[2, n]``."""
    return np.array([np.zeros(n, bool), np.ones(n, bool)])


def _random_subsets(rng: np.random.Generator, n: int, sizes: np.ndarray) -> np.ndarray:
    """One uniform random coalition of each size in ``sizes``: ``bool [len(sizes), n]``."""
    position = np.argsort(rng.random((sizes.shape[0], n)), axis=1).argsort(axis=1)
    return position < sizes[:, None]


def _checked(game: object, budget: object, key: object, least: int, what: str):
    """``(Budget, rng)`` after checking the game, budget (at least ``least``, or the ``2^n``
    rows of the whole table when that is fewer) and key."""
    n = check_game(game)
    if n <= MAX_ROWS_PLAYERS:
        least = min(least, 2**n)
    checker = Budget(game, budget, least=least, what=what)
    return checker, _rng(key)


def _exact(checker: Budget, exact_fn) -> Estimate | None:
    """The exact estimate from the whole table when the budget covers ``2^n`` rows
    (``n <= 24``), else ``None``."""
    n = checker.n
    if n > MAX_ROWS_PLAYERS or checker.budget < 2**n:
        return None
    table = _ask(checker, subsets.all(n))
    with jax.enable_x64(True):
        values = np.asarray(exact_fn(jnp.asarray(table)), np.float64)
    return Estimate(values, np.zeros_like(values), checker.used)


# ------------------------------------------------------------------------------ paired designs


def _units(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Size pairs ``{t, n - t}`` for ``t = 1 .. n // 2``, outermost first: ``t`` and the rows
    each takes to enumerate (float: they overflow int64 for large ``n``)."""
    t = np.arange(1, n // 2 + 1)
    rows = np.array([float(math.comb(n, int(s))) * (1 if 2 * s == n else 2) for s in t])
    return t, rows


def _borders(weight: np.ndarray, rows: np.ndarray, left: int, reserve: int = 4) -> int:
    """How many outer units to enumerate: while a unit's share of the remaining rows (by
    ``weight``) covers all its rows, it is enumerated and the rest re-shared; at least
    ``reserve`` rows stay for sampling while any unit is left to sample."""
    total, k = float(weight.sum()), 0
    while k < len(weight) and left * weight[k] / total >= rows[k]:
        last = k == len(weight) - 1
        if not last and left - rows[k] < reserve:
            break
        left -= int(rows[k])
        total -= float(weight[k])
        k += 1
    return k


class _Paired:
    """A paired design: ``v(∅)``, ``v(N)``, the outer size pairs enumerated, and i.i.d. draws
    of pairs ``(T, N \\ T)`` from the inner ones (unit ``u`` with probability ``prob[u]``,
    ``T`` uniform of size ``t[u]``), as many as fit ``left`` distinct rows in all.

    Attributes:
        t: Smaller size of every unit.
        exact: ``(t, rows of size t)`` of each enumerated unit.
        unit: Unit of each draw ``[K]``; ``draws`` its coalitions ``[K, n]``.
        prob: Probability of each unit per draw (zero for enumerated units).
    """

    def __init__(self, rng: np.random.Generator, n: int, weight: np.ndarray, left: int):
        self.n = n
        self.t, rows = _units(n)
        n_exact = _borders(weight, rows, left - 2)  # v(∅), v(N) come first
        self.exact = [(int(s), _k_rows(n, int(s))) for s in self.t[:n_exact]]
        self.prob = np.where(np.arange(len(self.t)) >= n_exact, weight, 0.0)
        self.unit = np.zeros(0, np.int64)
        self.draws = np.zeros((0, n), bool)
        if n_exact < len(self.t):
            self.prob = self.prob / self.prob.sum()
            self.draws, self.unit = self._sample(rng, left)

    def _sample(self, rng: np.random.Generator, left: int) -> tuple[np.ndarray, np.ndarray]:
        def draw(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
            unit = rng.choice(len(self.t), size=count, p=self.prob)
            first = _random_subsets(rng, self.n, self.t[unit])
            return np.stack([first, ~first], axis=1), unit

        pairs, unit = _fill(rng, self.fixed_rows(), draw, 2, left)
        return pairs[:, 0], unit

    def fixed_rows(self) -> np.ndarray:
        """The ends and the enumerated units with their complements (for ``2 t = n`` these
        are the same rows again, asked once)."""
        parts = [_ends(self.n)]
        for _, first in self.exact:
            parts += [first, ~first]
        return np.concatenate(parts)

    def rows(self) -> np.ndarray:
        """Every row of the design: fixed rows, draws, their complements (with repeats)."""
        return np.concatenate([self.fixed_rows(), self.draws, ~self.draws])

    def split(self, values: np.ndarray):
        """``(v0, vN, [(t, rows, v(rows), v(complements))], v(draws), v(complements))``."""
        v0, vn, at = values[0], values[1], 2
        exact = []
        for s, first in self.exact:
            fv, sv = values[at : at + len(first)], values[at + len(first) : at + 2 * len(first)]
            at += 2 * len(first)
            exact.append((s, first, fv, sv))
        k = self.draws.shape[0]
        return v0, vn, exact, values[at : at + k], values[at + k : at + 2 * k]


# ------------------------------------------------------------------------------ Shapley


def _kernel_mass(n: int) -> np.ndarray:
    """Shapley-kernel mass of every unit (both its sizes): ``(n - 1) / (t (n - t))`` per size.

    Inner sizes are sampled in proportion to it (measured against sampling every size alike,
    as leverage-score sampling does, and against a proportional schedule of sizes: both were
    no better on the benchmark games; see ``benchmarks/README.md``)."""
    t, _ = _units(n)
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
    design = _Paired(rng, n, mass, checker.left)
    v0, vn, exact, vf, vs = design.split(_ask_distinct(checker, design.rows()))
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

    both, position = _fill(rng, _ends(n), draw, 2 * (n - 1), checker.left)
    count = both.shape[0]
    flat = np.concatenate([both[:, : n - 1], both[:, n - 1 :]], axis=0).reshape(-1, n)
    values = _ask_distinct(checker, np.concatenate([_ends(n), flat]))
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
    checker, rng = _checked(game, budget, key, least, f"shapley(method={method!r})")
    exact = _exact(checker, interactions.shapley)
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
    values = _ask_distinct(checker, np.concatenate([draws, ~draws]))
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
    v = _ask_distinct(checker, rows)
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
    checker, rng = _checked(game, budget, key, least, f"banzhaf(method={method!r})")
    exact = _exact(checker, interactions.banzhaf)
    if exact is not None:
        return exact
    if method == "regression":
        return _regression_banzhaf(checker, rng)
    return _msr_banzhaf(checker, rng)


# ------------------------------------------------------------------------------ pairs


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
    t, _ = _units(n)
    log_c = np.array([math.lgamma(n + 1) - math.lgamma(s + 1) - math.lgamma(n - s + 1) for s in t])
    h = np.where(2 * t == n, 0.5, 1.0)
    a = np.arange(3)
    e = np.exp(log_c[:, None] + _log_p(n, t[:, None] - a[None, :]))
    return h[:, None] * e * np.array([1.0, -1.0, 1.0])


def _sii_weights(n: int, coef: np.ndarray) -> np.ndarray:
    """Sampling weight of every unit: ``sqrt(E[coefficient^2])`` over pairs and coalitions."""
    t, _ = _units(n)
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


def _sampled_sii(design: _Paired, coef: np.ndarray, pick: np.ndarray, y: np.ndarray):
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
    design = _Paired(rng, n, _sii_weights(n, coef), checker.left)
    v0, vn, exact, vf, vs = design.split(_ask_distinct(checker, design.rows()))
    ys = [fv + sv - v0 - vn for _, _, fv, sv in exact]
    return design, coef, ys, vf + vs - v0 - vn


def _sii_pairs(checker: Budget, rng: np.random.Generator) -> Estimate:
    design, coef, ys, y = _sii_design(checker, rng)
    total = _enumerated_sii(design.n, coef, design.exact, ys)
    mean, stderr = _sampled_sii(design, coef, np.arange(len(y)), y)
    return Estimate(total + mean, stderr, checker.used)


#: Folds of the cross-fitted regression adjustment of ``pairs(index="sii")`` (2, 10 and 20
#: measured no better; see ``benchmarks/README.md``).
SII_FOLDS = 5
#: Most pairs ``n (n - 1) / 2`` for which ``pairs(index="sii")`` fits the 2-additive surrogate
#: (``n <= 63``; its host maths take a few seconds there); more players use the plain
#: centred estimator.
SII_MAX_PAIRS = 1953


def _sii_folds(design: _Paired, ys: list, y: np.ndarray, folds: int):
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


def _sii_regression(checker: Budget, rng: np.random.Generator) -> Estimate:
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


def _removal_pairs(checker: Budget) -> Estimate:
    n = checker.n
    iu, ju = np.triu_indices(n, k=1)
    two = np.ones((len(iu), n), bool)
    two[np.arange(len(iu)), iu] = False
    two[np.arange(len(iu)), ju] = False
    values = _ask(checker, np.concatenate([subsets.loco(n), two]))
    full, one = values[0], values[1 : n + 1]
    out = np.zeros((n, n))
    out[iu, ju] = full - one[iu] - one[ju] + values[n + 1 :]
    out = out + out.T
    return Estimate(out, np.zeros((n, n)), checker.used)


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
    checker, rng = _checked(game, budget, key, least, f"pairs(index={index!r})")
    if index == "removal":
        return _removal_pairs(checker)
    exact = _exact(checker, lambda v: interactions.pairs(interactions.shapley_interaction(v)))
    if exact is not None:
        return exact
    if n * (n - 1) // 2 <= SII_MAX_PAIRS:
        return _sii_regression(checker, rng)
    return _sii_pairs(checker, rng)


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
