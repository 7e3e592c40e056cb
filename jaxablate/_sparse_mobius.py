"""Sparse Möbius recovery of a large game from a budget of structured samples.

A **game** is any callable ``game(rows: bool [M, n]) -> values [M]`` with an int attribute
``n``: ``rows[k, i]`` is ``True`` when component ``i`` is kept in row ``k`` (the presence game of
``docs/conventions.md``). :class:`jaxablate.Game` wraps :func:`jaxablate.evaluate` this way; any
object with ``n`` and ``__call__`` works the same.

:func:`sparse_mobius` assumes the game is (nearly) a sum of a few low-degree Möbius terms,
``v(S) = sum_{T ⊆ S} m(T)`` with few ``m(T) != 0`` and ``|T| <= max_degree``, and recovers them:

1. **Design.** ``budget`` distinct coalitions, each player kept with probability ``keep``
   (default 1/2: uniform over all ``2^n``); a share ``holdout`` of them is set aside, the rest
   is the training set.
   The game is asked for all of them in one call, through a :class:`jaxablate.games.Budget`,
   so the budget is a hard limit on rows.
2. **Support search** in the Fourier (Walsh) basis ``chi_U(S) = prod_{i in U} x_i``, with
   ``x_i = ([i in S] - keep) / sqrt(keep (1 - keep))`` (``±1`` at 1/2), orthonormal under this
   design. In rounds: least squares on the current support; every
   candidate whose correlation with the residual exceeds ``sqrt(2 ln 2K) * sigma / sqrt(N)``
   (``K`` candidates, ``sigma`` the residual's scale, ``N`` training rows) joins. The candidates
   are every player, every pair, and, for degree ``d >= 3``, each selected ``(d-1)``-set
   extended by one player. A Möbius term ``m(T)`` puts ``m(T) / 2^|T|`` (at 1/2) on every
   Fourier set inside ``T``, so the subsets of a term are found before (or with) the term.
3. **Möbius fit.** Least squares in the presence basis ``[T ⊆ S]`` over every subset of the
   support, then backward elimination: terms whose ``|value| < z * stderr`` leave (the weakest
   half of them per step) and the rest are refit, until every term left is significant. The
   values are these least-squares estimates on the final support (no shrinkage).
4. **Check.** ``R^2`` of the reconstruction on the held-out rows.

Limits: a term whose every Fourier subset of size ``<= 2`` cancels exactly against other
terms is not a candidate at degree 3 (non-generic). Uniform coalitions ablate about half of
the components at once: the terms found describe the game over all coalitions, not only near
the full model. Cost: a few rounds, each ``O(N n^2)`` for the pairs plus ``O(N n)`` per selected
set, and least squares over the support (float64 numpy; BLAS threads matter on a busy machine).
``benchmarks/estimate_sparse.py`` measures budgets, recovery and timings against shapiq's SPEX.
"""

import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Bool, Float

from jaxablate import subsets
from jaxablate._checks import check_key, positive_int
from jaxablate.games import Budget, check_game

__all__ = ["SparseMobius", "sparse_mobius"]

Term = tuple[int, ...]

#: Largest ``n`` for which coalitions are drawn without replacement from all ``2^n`` codes.
_CODES_PLAYERS = 20
#: Rounds of the support search (each adds at least one set, usually many).
_MAX_ROUNDS = 64
#: Relative size (to ``max |v|``) below which a residual or a term is float64 rounding.
_FLOOR = 1e-9
#: Largest keep probability accepted: beyond it the standardised Fourier basis is so skewed
#: (a degree-3 set reaches ``(p / (1 - p))^1.5``) that the thresholds misfire at the budgets
#: measured (``keep = 0.9`` fails at n = 60 even with 1500 rows, where 0.5 needs 600).
MAX_KEEP = 0.8
#: Rounds of independent draws :func:`draw_rows` makes to find distinct coalitions.
_MAX_DRAWS = 32


@dataclass(frozen=True)
class SparseMobius:
    """Sparse Möbius terms recovered by :func:`sparse_mobius`.

    Read ``terms`` as Möbius (Harsanyi) dividends of the presence game, the same numbers
    ``ja.interactions.mobius`` gives for a full table: ``terms[(i, j)]`` is the part of the value
    that needs both ``i`` and ``j`` kept and is not there with either alone, ``terms[()]`` is
    ``v(∅)`` (every component ablated), and ``v(S) = sum_{T ⊆ S} terms[T]`` (see :meth:`predict`).
    Terms not listed are estimated to be zero.

    Attributes:
        terms: ``{players: value}``, players a sorted tuple, ``()`` always present; ordered by
            degree, then players.
        stderr: Least-squares standard error of each value, same keys.
        r2_heldout: ``R^2`` of :meth:`predict` on held-out rows the fit never saw (1 = exact).
        evaluations: Rows passed to the game (training and held-out), at most the budget.
        n: Number of players.
        max_degree: Largest ``|T|`` searched.
        noise_std: Residual standard deviation of the final fit on the training rows.
    """

    terms: dict[Term, float]
    stderr: dict[Term, float]
    r2_heldout: float
    evaluations: int
    n: int
    max_degree: int
    noise_std: float

    def predict(self, rows: Bool[ArrayLike, "n_masks n_players"]) -> Float[np.ndarray, " n_masks"]:
        """The reconstructed game ``sum_{T ⊆ S} terms[T]`` on each row (float64 ``[M]``).

        Raises:
            ValueError: If ``rows`` is not ``[M, n]``.
        """
        rows = _as_rows(rows, self.n)
        keys = list(self.terms)
        return _presence(rows, keys) @ np.array([self.terms[t] for t in keys])

    def shapley(self) -> Float[np.ndarray, " n_players"]:
        """Shapley values of the reconstructed game: ``phi_i = sum_{T ∋ i} terms[T] / |T|``."""
        out = np.zeros(self.n)
        for term, value in self.terms.items():
            for i in term:
                out[i] += value / len(term)
        return out


# ---------------------------------------------------------------------------- design


def _as_rows(rows: ArrayLike, n: int) -> np.ndarray:
    arr = np.asarray(rows)
    if arr.ndim != 2 or arr.shape[1] != n:
        raise ValueError(f"rows must be bool [M, n = {n}], got shape {arr.shape}")
    return arr.astype(bool)


def draw_rows(
    key: jax.Array, n: int, m: int, keep: float = 0.5
) -> Bool[np.ndarray, "n_masks n_players"]:
    """Up to ``m`` distinct coalitions, each player kept with probability ``keep``.

    The key seeds a numpy generator (one small jax call, compiled once), so drawing costs no
    compilation per shape. Uniform draws (``keep = 0.5``) over ``n <= 20`` players are codes
    drawn without replacement; otherwise independent draws lose their repeats, in at most
    :data:`_MAX_DRAWS` rounds (fewer than ``m`` rows come back only when ``m`` is close to the
    number of coalitions likely under ``keep``).

    Args:
        key: A ``jax.random`` key.
        n: Number of players.
        m: Number of rows, at most ``2^n``.
        keep: Probability that a player is kept.
    """
    rng = np.random.default_rng(np.asarray(jax.random.bits(key, (4,), jnp.uint32)))
    if keep == 0.5 and n <= _CODES_PLAYERS:
        return subsets.bits(rng.choice(2**n, m, replace=False), n)
    rows = np.zeros((0, n), dtype=bool)
    for _ in range(_MAX_DRAWS):
        if rows.shape[0] >= m:
            break
        fresh = rng.random((2 * (m - rows.shape[0]) + 8, n)) < keep
        both = np.concatenate([rows, fresh])
        _, first = np.unique(both, axis=0, return_index=True)
        rows = both[np.sort(first)]
    return rows[:m]


def split_rows(total: int, n: int, holdout: float) -> tuple[int, int]:
    """Training and held-out rows out of ``total`` rows (capped at the ``2^n`` coalitions)."""
    if n < 63:
        total = min(total, 2**n)
    test = max(2, math.ceil(holdout * total))
    return total - test, test


def least_rows(n: int, holdout: float) -> int:
    """Fewest rows :func:`sparse_mobius` accepts: ``2 (n + 1)`` training rows and the held-out
    share (at least 2) on top."""
    need = 2 * (n + 1)
    total = need + 2
    while total - max(2, math.ceil(holdout * total)) < need:
        total += 1
    return total


# ---------------------------------------------------------------------------- bases


def _chi(x: np.ndarray, sets: Iterable[Term]) -> np.ndarray:
    """Fourier columns ``prod_{i in U} x_i`` (``x`` the standardised rows), one per set."""
    cols = [np.prod(x[:, list(u)], axis=1) if u else np.ones(x.shape[0]) for u in sets]
    return np.stack(cols, axis=1)


def _presence(rows: np.ndarray, sets: Iterable[Term]) -> np.ndarray:
    """Presence columns ``[T ⊆ S]`` as float64, one per set, ``[M, len]``."""
    m = rows.shape[0]
    cols = [rows[:, list(t)].all(axis=1) if t else np.ones(m, dtype=bool) for t in sets]
    return np.stack(cols, axis=1).astype(np.float64) if cols else np.zeros((m, 0))


def basis_size(n: int, max_degree: int) -> int:
    """Number of non-empty sets of at most ``max_degree`` of ``n`` players."""
    return sum(math.comb(n, d) for d in range(1, max_degree + 1))


def default_z(n: int, max_degree: int) -> float:
    """Universal threshold ``sqrt(2 ln 2K)`` over the ``K`` sets of the degree-limited basis."""
    return math.sqrt(2.0 * math.log(2.0 * max(basis_size(n, max_degree), 1)))


def down_closure(sets: Iterable[Term]) -> list[Term]:
    """Every subset of every set (``()`` included), sorted by size then players."""
    out: set[Term] = {()}
    for s in sets:
        for size in range(1, len(s) + 1):
            out.update(itertools.combinations(s, size))
    return sorted(out, key=lambda t: (len(t), t))


# ---------------------------------------------------------------------------- support search


def _solve(design: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares coefficients and ``(X^T X)^-1`` via the normal equations (float64).

    The designs here are well conditioned (near-orthogonal Fourier columns, or presence columns
    of low degree under uniform sampling), so the normal equations lose nothing that matters
    and are many times faster than an SVD; a singular Gram matrix falls back to ``pinv``.
    """
    gram = design.T @ design
    try:
        inv = np.linalg.inv(gram)
    except np.linalg.LinAlgError:
        inv = np.linalg.pinv(gram)
    return inv @ (design.T @ y), inv


def _n_candidates(n: int, support: list[Term], max_degree: int) -> int:
    """How many sets :func:`_above` scans: players, pairs, and one-player extensions."""
    pairs = n * (n - 1) // 2 if max_degree >= 2 else 0
    return n + pairs + sum(n - len(u) for u in support if 2 <= len(u) < max_degree)


def _above(
    x: np.ndarray, r: np.ndarray, support: list[Term], max_degree: int, cut: float
) -> tuple[list[Term], np.ndarray]:
    """Candidate sets whose correlation ``mean(r chi_U)`` with the residual exceeds ``cut``.

    The candidates are every player, every pair (``max_degree >= 2``) and every selected set of
    size ``2 <= |u| < max_degree`` extended by one player; sets may repeat.
    """
    big_n = x.shape[0]
    sets: list[Term] = []
    corr: list[np.ndarray] = []
    c1 = x.T @ r / big_n
    (hit,) = np.nonzero(np.abs(c1) > cut)
    sets += [(int(i),) for i in hit]
    corr.append(c1[hit])
    if max_degree >= 2:
        c2 = np.triu(x.T @ (x * r[:, None]) / big_n, 1)
        i, j = np.nonzero(np.abs(c2) > cut)
        sets += list(zip(i.tolist(), j.tolist(), strict=True))
        corr.append(c2[i, j])
    for u in support:
        if 2 <= len(u) < max_degree:
            c = x.T @ (r * _chi(x, [u])[:, 0]) / big_n
            c[list(u)] = 0.0
            (hit,) = np.nonzero(np.abs(c) > cut)
            sets += [tuple(sorted((*u, int(k)))) for k in hit]
            corr.append(c[hit])
    return sets, np.concatenate(corr)


def _fourier_support(x: np.ndarray, y: np.ndarray, max_degree: int) -> list[Term]:
    """Sets of the Fourier basis that carry the game (rounds of thresholded correlations)."""
    big_n, n = x.shape
    scale = max(float(np.abs(y).max()), np.finfo(np.float64).tiny)
    support: list[Term] = [()]
    chosen = {()}
    room = big_n // 4  # keep least squares well determined
    for _ in range(_MAX_ROUNDS):
        design = _chi(x, support)
        r = y - design @ _solve(design, y)[0]
        sigma = math.sqrt(float(r @ r) / max(big_n - len(support), 1))
        if sigma <= _FLOOR * scale:  # fitted to rounding: nothing left to find
            break
        k = _n_candidates(n, support, max_degree)
        cut = math.sqrt(2.0 * math.log(2.0 * k)) * sigma / math.sqrt(big_n)
        sets, corr = _above(x, r, support, max_degree, cut)
        new = []
        for i in np.argsort(-np.abs(corr)):
            if len(support) + len(new) >= room:
                break
            if sets[i] not in chosen:
                chosen.add(sets[i])
                new.append(sets[i])
        if not new:
            break
        support += new
    return support


# ---------------------------------------------------------------------------- Möbius fit


def _ols(design: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Least squares: coefficients, their standard errors and the residual std."""
    big_n, p = design.shape
    coef, inv = _solve(design, y)
    r = y - design @ coef
    sigma = math.sqrt(float(r @ r) / max(big_n - p, 1))
    return coef, sigma * np.sqrt(np.clip(np.diag(inv), 0.0, None)), sigma


def fit_terms(
    rows: Bool[np.ndarray, "n_masks n_players"],
    y: Float[np.ndarray, " n_masks"],
    max_degree: int,
    z: float,
    keep: float = 0.5,
) -> tuple[dict[Term, float], dict[Term, float], float]:
    """Sparse Möbius terms of ``y`` on ``rows`` (steps 2 and 3 of the module docstring).

    Args:
        rows: Training coalitions, drawn with each player kept with probability ``keep``.
        y: Their values.
        max_degree: Largest ``|T|`` searched.
        z: Significance a term needs to stay (``|value| >= z * stderr``).
        keep: The keep probability of the draw (standardises the Fourier basis).

    Returns:
        ``terms``, ``stderr`` (both ``{players: value}``, ``()`` included) and the residual std.
    """
    x = (rows - keep) / math.sqrt(keep * (1.0 - keep))
    scale = float(np.abs(y).max())
    terms = down_closure(_fourier_support(x, y, max_degree))
    while True:
        coef, se, sigma = _ols(_presence(rows, terms), y)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            t = np.where(se > 0, np.abs(coef) / se, np.inf)
        small = np.abs(coef) <= _FLOOR * scale
        weak = [k for k in np.argsort(t) if terms[k] and (t[k] < z or small[k])]
        if not weak:
            return (
                {u: float(c) for u, c in zip(terms, coef, strict=True)},
                {u: float(s) for u, s in zip(terms, se, strict=True)},
                sigma,
            )
        drop = {terms[k] for k in weak[: max(1, len(weak) // 2)]}
        terms = [u for u in terms if u not in drop]


def _r2(pred: np.ndarray, y: np.ndarray) -> float:
    ss_res = float(((y - pred) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    scale = max(float(np.abs(y).max()), 1.0) ** 2 * y.size * 1e-24
    if ss_tot <= scale:
        return 1.0 if ss_res <= scale else 0.0
    return 1.0 - ss_res / ss_tot


# ---------------------------------------------------------------------------- public


@dataclass(frozen=True, kw_only=True)
class FitOptions:
    """Checked options of :func:`sparse_mobius` (see there); build with :func:`fit_options`."""

    max_degree: int
    holdout: float
    z: float
    keep: float


def _number_in(name: str, value: object, low: float, high: float, low_closed: bool) -> float:
    """``value`` as a float in ``[low, high]`` (``(low, high]`` unless ``low_closed``)."""
    ok = isinstance(value, float | int) and not isinstance(value, bool)
    if ok:
        x = float(value)  # type: ignore[arg-type]
        ok = (low <= x if low_closed else low < x) and x <= high
    if not ok:
        bounds = f"{'[' if low_closed else '('}{low}, {high}]"
        raise ValueError(f"{name} must be a number in {bounds}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def fit_options(
    n: int, *, max_degree: object, holdout: object, z: object, keep: object
) -> FitOptions:
    """Check the options for a game of ``n`` players; ValueError naming the bad one."""
    degree = positive_int("max_degree", max_degree)
    if degree > n:
        raise ValueError(f"max_degree must be at most n = {n}, got {degree}")
    share = _number_in("holdout", holdout, 0.0, 0.5, low_closed=False)
    if n < 63 and 2**n < least_rows(n, share):
        raise ValueError(
            f"n = {n} players have only 2^{n} coalitions, too few for sparse recovery; "
            "evaluate them all (ja.subsets.all) and use ja.interactions.mobius"
        )
    if z is None:
        z = default_z(n, degree)
    elif isinstance(z, bool) or not isinstance(z, float | int) or not math.isfinite(z) or z <= 0:
        raise ValueError(f"z must be a positive number or None, got {z!r}")
    p = _number_in("keep", keep, 0.5, MAX_KEEP, low_closed=True)
    return FitOptions(max_degree=degree, holdout=share, z=float(z), keep=p)


def sparse_mobius(
    game: Callable[[Any], Any],
    *,
    budget: int,
    key: jax.Array,
    max_degree: int = 3,
    holdout: float = 0.1,
    z: float | None = None,
    keep: float = 0.5,
) -> SparseMobius:
    """Recover the few Möbius terms of a large game from at most ``budget`` evaluations.

    The game is taken to be (nearly) ``v(S) = sum_{T ⊆ S} m(T)`` with few nonzero ``m(T)`` of
    degree ``|T| <= max_degree``; the module docstring describes the method. Measured on
    planted games with 20 terms of degree <= 3 and noise 0.01 (``benchmarks/README.md``):
    every term within 1% and no false term from 1000 evaluations at n = 60, 120 and 200.

    Args:
        game: Callable ``rows: bool [M, n] -> values [M]`` with an int attribute ``n``
            (``True`` = component kept), e.g. :class:`jaxablate.Game`. Asked once.
        budget: Most rows the game is asked for (training and held-out; a hard limit, rows
            a game answers from its cache count too). At most ``2^n`` are used.
        key: A ``jax.random`` key; the same key and game give the same result.
        max_degree: Largest interaction degree ``|T|`` searched.
        holdout: Share of the rows kept out of the fit to measure ``r2_heldout``.
        z: A term is kept when ``|value| >= z * stderr``; default ``sqrt(2 ln 2K)``, ``K`` the
            number of sets of at most ``max_degree`` players (4.7 for n = 60 at degree 3).
        keep: Probability that a player is kept in a sampled coalition, in ``[0.5, 0.8]``.
            0.5 (uniform) sees high-degree terms best and needs the fewest rows; a larger one
            samples nearer the full model, where a game that is not exactly sparse is then
            approximated (and ``r2_heldout`` measured).

    Returns:
        A :class:`SparseMobius`: ``terms`` (``{sorted players: value}``, ``()`` = ``v(∅)``),
        their standard errors, the held-out ``R^2`` and the evaluations spent.

    Raises:
        ValueError: A game without ``__call__`` and a positive int ``n``, or one returning
            anything but ``M`` finite values; ``budget`` not a positive int or below the
            minimum for ``n`` (the message gives it); a bad ``key``, ``max_degree``,
            ``holdout``, ``z`` or ``keep``.
    """
    n = check_game(game)
    opts = fit_options(n, max_degree=max_degree, holdout=holdout, z=z, keep=keep)
    checker = Budget(game, budget, least=least_rows(n, opts.holdout), what="sparse_mobius")
    return recover(checker, check_key(key), checker.budget, opts)


def recover(checker: Budget, key: jax.Array, rows: int, opts: FitOptions) -> SparseMobius:
    """:func:`sparse_mobius` on at most ``rows`` rows asked through ``checker``."""
    n = checker.n
    drawn = draw_rows(key, n, sum(split_rows(rows, n, opts.holdout)), opts.keep)
    train = split_rows(drawn.shape[0], n, opts.holdout)[0]
    if train < 2 * (n + 1):
        raise ValueError(
            f"only {drawn.shape[0]} distinct coalitions of {n} players turned up with "
            f"keep = {opts.keep}, too few to fit; use a keep closer to 0.5"
        )
    values = checker(drawn)
    terms, stderr, sigma = fit_terms(
        drawn[:train], values[:train], opts.max_degree, opts.z, opts.keep
    )
    keys = list(terms)
    pred = _presence(drawn[train:], keys) @ np.array([terms[t] for t in keys])
    return SparseMobius(
        terms=terms,
        stderr=stderr,
        r2_heldout=_r2(pred, values[train:]),
        evaluations=int(drawn.shape[0]),
        n=n,
        max_degree=opts.max_degree,
        noise_std=sigma,
    )
