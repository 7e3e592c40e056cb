"""Sampling helpers shared by the estimators of :mod:`jaxablate.estimate`.

Row bookkeeping (asking a game for each distinct row once, in calls of at most
:data:`ROUND_ROWS` rows), i.i.d. draws that fill a budget of distinct rows, and the paired
design (``v(∅)``, ``v(N)``, border sizes enumerated, pairs ``(T, N \\ T)`` drawn from the
inner ones) that the kernel Shapley and SII estimators share. All maths in float64 numpy.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxablate import subsets
from jaxablate._checks import MAX_ROWS_PLAYERS, check_key
from jaxablate.games import Budget, Estimate, check_game

#: Most rows per call of the game (an estimator asks for its rows in calls of this size).
ROUND_ROWS = 2**14


def rng_of(key: object) -> np.random.Generator:
    """A numpy generator seeded from a checked ``jax.random`` key (reproducible)."""
    checked = check_key(key)
    bits = np.asarray(jax.random.bits(checked, (4,), jnp.uint32))
    return np.random.default_rng([int(b) for b in bits])


def ask(budget: Budget, rows: np.ndarray) -> np.ndarray:
    """Values of ``rows``, asked in calls of at most :data:`ROUND_ROWS` rows."""
    parts = [budget(rows[s : s + ROUND_ROWS]) for s in range(0, rows.shape[0], ROUND_ROWS)]
    return np.concatenate(parts) if parts else np.zeros(0)


def row_keys(rows: np.ndarray) -> np.ndarray:
    """``uint64 [M, words]``: the rows' bits packed, one key per row (for ``np.unique``)."""
    packed = np.packbits(rows, axis=1)
    packed = np.pad(packed, ((0, 0), (0, -packed.shape[1] % 8)))
    return np.ascontiguousarray(packed).view(np.uint64)


def ask_distinct(budget: Budget, rows: np.ndarray) -> np.ndarray:
    """Values of ``rows``, asking the game for each distinct row once (in first-seen order)."""
    _, first, inverse = np.unique(
        row_keys(rows), axis=0, return_index=True, return_inverse=True
    )  # fmt: skip
    order = np.argsort(first)
    values = np.empty(len(first))
    values[order] = ask(budget, rows[first[order]])
    return values[inverse.ravel()]


#: Most draws an estimator makes per distinct row of its budget (duplicates are free, as
#: in shapiq; this bounds the work when a budget nearly exhausts what can be sampled).
MAX_DRAWS_PER_ROW = 64


def fill(rng: np.random.Generator, fixed: np.ndarray, draw, per_draw: int, left: int):
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
    n_fixed = len(np.unique(row_keys(fixed), axis=0)) if len(fixed) else 0
    guess = max(1, (left - n_fixed) // per_draw)
    rows, meta = draw(rng, guess)
    cap = MAX_DRAWS_PER_ROW * max(left, 1)
    while True:
        flat = np.concatenate([fixed, rows.reshape(-1, rows.shape[-1])])
        _, first = np.unique(row_keys(flat), axis=0, return_index=True)
        new = np.zeros(len(flat), bool)
        new[first] = True
        per = new[len(fixed) :].reshape(len(rows), per_draw).sum(1)
        count = int(np.searchsorted(np.cumsum(per), left - n_fixed, side="right"))
        if count < len(rows) or len(rows) >= cap:
            return rows[:count], meta[:count]
        more, more_meta = draw(rng, min(max(guess, len(rows)), cap - len(rows)))
        rows, meta = np.concatenate([rows, more]), np.concatenate([meta, more_meta])


def k_rows(n: int, t: int) -> np.ndarray:
    """All coalitions of size ``t`` (``1 <= t``), ``bool [C(n, t), n]``, for any ``n``."""
    index = np.array(list(itertools.combinations(range(n), t)), np.int64).reshape(-1, t)
    rows = np.zeros((len(index), n), bool)
    np.put_along_axis(rows, index, True, axis=1)
    return rows


def ends(n: int) -> np.ndarray:
    """The rows of the empty and the full coalition, ``[2, n]``."""
    return np.array([np.zeros(n, bool), np.ones(n, bool)])


def random_subsets(rng: np.random.Generator, n: int, sizes: np.ndarray) -> np.ndarray:
    """One uniform random coalition of each size in ``sizes``: ``bool [len(sizes), n]``."""
    position = np.argsort(rng.random((sizes.shape[0], n)), axis=1).argsort(axis=1)
    return position < sizes[:, None]


def checked(game: object, budget: object, key: object, least: int, what: str):
    """``(Budget, rng)`` after checking the game, budget (at least ``least``, or the ``2^n``
    rows of the whole table when that is fewer) and key."""
    n = check_game(game)
    if n <= MAX_ROWS_PLAYERS:
        least = min(least, 2**n)
    checker = Budget(game, budget, least=least, what=what)
    return checker, rng_of(key)


def exact_estimate(checker: Budget, exact_fn) -> Estimate | None:
    """The exact estimate from the whole table when the budget covers ``2^n`` rows
    (``n <= 24``), else ``None``."""
    n = checker.n
    if n > MAX_ROWS_PLAYERS or checker.budget < 2**n:
        return None
    table = ask(checker, subsets.all(n))
    with jax.enable_x64(True):
        values = np.asarray(exact_fn(jnp.asarray(table)), np.float64)
    return Estimate(values, np.zeros_like(values), checker.used)


# ------------------------------------------------------------------------------ paired designs


def units(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Size pairs ``{t, n - t}`` for ``t = 1 .. n // 2``, outermost first: ``t`` and the rows
    each takes to enumerate (float: they overflow int64 for large ``n``)."""
    t = np.arange(1, n // 2 + 1)
    rows = np.array([float(math.comb(n, int(s))) * (1 if 2 * s == n else 2) for s in t])
    return t, rows


def borders(weight: np.ndarray, rows: np.ndarray, left: int, reserve: int = 4) -> int:
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


class Paired:
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
        self.t, rows = units(n)
        n_exact = borders(weight, rows, left - 2)  # v(∅), v(N) come first
        self.exact = [(int(s), k_rows(n, int(s))) for s in self.t[:n_exact]]
        self.prob = np.where(np.arange(len(self.t)) >= n_exact, weight, 0.0)
        self.unit = np.zeros(0, np.int64)
        self.draws = np.zeros((0, n), bool)
        if n_exact < len(self.t):
            self.prob = self.prob / self.prob.sum()
            self.draws, self.unit = self._sample(rng, left)

    def _sample(self, rng: np.random.Generator, left: int) -> tuple[np.ndarray, np.ndarray]:
        def draw(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
            unit = rng.choice(len(self.t), size=count, p=self.prob)
            first = random_subsets(rng, self.n, self.t[unit])
            return np.stack([first, ~first], axis=1), unit

        pairs, unit = fill(rng, self.fixed_rows(), draw, 2, left)
        return pairs[:, 0], unit

    def fixed_rows(self) -> np.ndarray:
        """The ends and the enumerated units with their complements (for ``2 t = n`` these
        are the same rows again, asked once)."""
        parts = [ends(self.n)]
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
