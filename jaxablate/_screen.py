"""Screen, then exhaust: rank the components of a large game, then study the top ``k`` exactly.

Beyond ~20 components no exact study fits, but the behaviour is often carried by a few of
them. :func:`screen` spends part of a budget on :func:`jaxablate.estimate.sparse_mobius` to rank
every component, then evaluates **all** ``2^k`` coalitions of the top ``k`` with the other
components held fixed (all kept, or all ablated), so that every function of
:mod:`jaxablate.interactions` applies exactly to that ``2^k`` table. It reports how much of the
behaviour the ``k`` carry, both as estimated (share of the recovered Möbius terms) and as
measured (share of the effect of ablating everything).

The same recipe by hand, with another ranking (e.g. :func:`jaxablate.estimate.shapley`)::

    top = np.sort(np.argsort(-np.abs(est.values))[:k])
    rows = np.ones((2**k, game.n), bool)        # the rest kept (np.zeros: the rest ablated)
    rows[:, top] = ja.subsets.all(k)
    table = game(rows)                          # presence game of the k, bit i = top[i]
    ja.interactions.mobius(table), ja.interactions.shapley(table), ...
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float

from jaxablate import interactions, subsets
from jaxablate._checks import MAX_ROWS_PLAYERS, check_key, one_of, positive_int
from jaxablate._sparse_mobius import SparseMobius, fit_options, least_rows, recover
from jaxablate.games import Budget, check_game

__all__ = ["RESTS", "Screen", "fixed_rows", "screen"]

#: What :func:`screen` does with the components outside the top ``k``.
RESTS = ("kept", "ablated")


@dataclass(frozen=True, eq=False)
class Screen:
    """The result of :func:`screen`: a ranking of all players and the exact study of the top k.

    Attributes:
        players: The top ``k`` players in increasing order; bit ``i`` of :attr:`table`'s index
            is ``players[i]`` (so ``comps.names[players[i]]`` names it).
        scores: Screening score of every player ``[n]``: ``sum_{T ∋ i} |m(T)| / |T|`` over the
            recovered terms (each term's size shared among its members; unlike the Shapley
            value it does not cancel redundant against synergistic terms). The top ``k`` scores
            win; ties (players in no term score 0) go to the lower index.
        rest: ``"kept"`` or ``"ablated"``: what the other players were in every row.
        table: Presence game of the ``k`` players, ``[2^k]`` in bit order, the rest fixed.
        mobius: ``ja.interactions.mobius(table)`` in float64, same order.
        estimate: The screening fit (:class:`jaxablate.estimate.SparseMobius`).
        mass_share: Estimated share of the behaviour the ``k`` carry: the sum of ``|m(T)|``
            over the recovered terms the table can show (rest ablated: ``T ⊆ top``; rest kept:
            ``T`` meets ``top``) over the sum over all non-empty terms (1 = all of it).
        effect_share: Measured share: ``(table[-1] - table[0]) / (v(N) - v(∅))``, the effect
            of ablating the ``k`` (rest kept) or of adding them alone (rest ablated) over the
            effect of ablating everything; NaN when ``v(N) = v(∅)``. Signed: may exceed 1.
        evaluations: Rows asked of the game in all (screening, table and one end).
    """

    players: tuple[int, ...]
    scores: Float[np.ndarray, " n_players"]
    rest: str
    table: Float[np.ndarray, " n_coalitions"]
    mobius: Float[np.ndarray, " n_coalitions"]
    estimate: SparseMobius
    mass_share: float
    effect_share: float
    evaluations: int


def scores_of(estimate: SparseMobius) -> Float[np.ndarray, " n_players"]:
    """``sum_{T ∋ i} |m(T)| / |T|`` over the terms of ``estimate``, for every player ``i``."""
    out = np.zeros(estimate.n)
    for term, value in estimate.terms.items():
        for i in term:
            out[i] += abs(value) / len(term)
    return out


def fixed_rows(n: int, players: tuple[int, ...], rest: str) -> np.ndarray:
    """All ``2^k`` coalitions of ``players`` (bit ``i`` = ``players[i]``) as rows over ``n``
    players, the others all kept (``rest="kept"``) or all ablated: ``bool [2^k, n]``."""
    k = len(players)
    rows = np.full((2**k, n), rest == "kept")
    rows[:, list(players)] = subsets.all(k)
    return rows


def _mass_share(estimate: SparseMobius, players: tuple[int, ...], rest: str) -> float:
    top = set(players)
    inside = total = 0.0
    for term, value in estimate.terms.items():
        if not term:
            continue
        total += abs(value)
        members = set(term)
        if (members <= top) if rest == "ablated" else bool(members & top):
            inside += abs(value)
    return inside / total if total > 0 else 1.0


def _check_k(k: object, n: int) -> int:
    k = positive_int("k", k)
    if k > min(n, MAX_ROWS_PLAYERS):
        raise ValueError(
            f"k must be at most min(n, MAX_ROWS_PLAYERS) = {min(n, MAX_ROWS_PLAYERS)} "
            f"(the exact study evaluates 2^k rows), got k = {k}"
        )
    return k


def screen(
    game: Callable[[Any], Any],
    *,
    k: int,
    budget: int,
    key: jax.Array,
    rest: Literal["kept", "ablated"] = "kept",
    max_degree: int = 3,
    holdout: float = 0.1,
    z: float | None = None,
    keep: float = 0.5,
) -> Screen:
    """Rank every player by a sparse Möbius fit, then run the exact study over the top ``k``.

    Of the budget, ``2^k + 1`` rows go to the exact study (the table and the one end of the
    game it lacks: ``v(∅)`` with the rest kept, ``v(N)`` with the rest ablated) and the rest to
    :func:`jaxablate.estimate.sparse_mobius`. The workflow for more than ~20 components.

    Args:
        game: Callable ``rows: bool [M, n] -> values [M]`` with an int attribute ``n``
            (``True`` = component kept), e.g. :class:`jaxablate.Game`.
        k: Players in the exact study, at most ``min(n, 24)``.
        budget: Most rows the game is asked for in all (a hard limit).
        key: A ``jax.random`` key; the same key and game give the same result.
        rest: ``"kept"``: the others stay in every row of the table (what the ``k`` do inside
            the full model); ``"ablated"``: the others are ablated (what the ``k`` do alone).
        max_degree: Largest degree the screening fit searches.
        holdout: As for :func:`jaxablate.estimate.sparse_mobius`.
        z: As for :func:`jaxablate.estimate.sparse_mobius`.
        keep: As for :func:`jaxablate.estimate.sparse_mobius`; closer to 1 ranks by the
            behaviour near the full model.

    Returns:
        A :class:`Screen`; ``ja.interactions.*`` apply to its ``table``.

    Raises:
        ValueError: A bad game, key, ``k``, ``rest``, ``max_degree``, ``holdout``, ``z`` or
            ``keep``, or a budget below what the fit and the ``2^k + 1`` rows need (the
            message gives it).
    """
    n = check_game(game)
    k = _check_k(k, n)
    rest = one_of("rest", rest, RESTS)  # type: ignore[assignment]
    opts = fit_options(n, max_degree=max_degree, holdout=holdout, z=z, keep=keep)
    exact = 2**k + 1
    least = least_rows(n, opts.holdout) + exact
    checker = Budget(game, budget, least=least, what=f"screen(k={k})")
    estimate = recover(checker, check_key(key), checker.left - exact, opts)
    scores = scores_of(estimate)
    players = tuple(sorted(int(i) for i in np.argsort(-scores, kind="stable")[:k]))
    end = np.full((1, n), rest != "kept")
    values = checker(np.concatenate([fixed_rows(n, players, rest), end]))
    table, other = values[:-1], float(values[-1])
    with jax.enable_x64(True):
        mobius = np.asarray(interactions.mobius(jnp.asarray(table)), np.float64)
    total = table[-1] - other if rest == "kept" else other - table[0]
    covered = table[-1] - table[0]
    return Screen(
        players=players,
        scores=scores,
        rest=rest,
        table=table,
        mobius=mobius,
        estimate=estimate,
        mass_share=_mass_share(estimate, players, rest),
        effect_share=float(covered / total) if total != 0 else float("nan"),
        evaluations=checker.used,
    )
