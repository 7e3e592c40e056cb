"""Synthetic games with known values, for the estimator tests and ``benchmarks/estimate.py``.

An AND/OR game is ``v(S) = sum_i a_i [i in S] + sum_T w_T g_T(S)``, with ``g_T = AND`` (all of
``T`` kept) or ``OR`` (any of ``T`` kept): redundancy (OR) and codependence (AND), the two
kinds of interaction an ablation study meets. Its values are known in closed form, for any
``n`` (independent of :mod:`jaxablate.interactions`):

- Shapley: each member of ``T`` gets ``w_T / |T|`` (AND and OR alike).
- Banzhaf: each member of ``T`` gets ``w_T / 2^(|T| - 1)`` (AND and OR alike).
- SII of a pair inside ``T``: ``w_T / (|T| - 1)`` for AND, ``-w_T / (|T| - 1)`` for OR.
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AndOrGame:
    """``v(S) = offset + sum_i main_i [i in S] + sum_k weight_k g_k(S)`` (see the module).

    Attributes:
        n: Players.
        main: Additive effects ``[n]``.
        terms: Members of each interaction term.
        weights: Weight of each term.
        kinds: ``"and"`` or ``"or"`` per term.
        offset: ``v(∅)``.
    """

    n: int
    main: np.ndarray
    terms: tuple[tuple[int, ...], ...]
    weights: tuple[float, ...]
    kinds: tuple[str, ...]
    offset: float = 0.0

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        rows = np.atleast_2d(np.asarray(rows, bool))
        out = self.offset + rows @ self.main
        for members, w, kind in zip(self.terms, self.weights, self.kinds, strict=True):
            sub = rows[:, list(members)]
            out = out + w * (sub.all(1) if kind == "and" else sub.any(1))
        return out

    def shapley(self) -> np.ndarray:
        out = self.main.astype(np.float64).copy()
        for members, w in zip(self.terms, self.weights, strict=True):
            out[list(members)] += w / len(members)
        return out

    def banzhaf(self) -> np.ndarray:
        out = self.main.astype(np.float64).copy()
        for members, w in zip(self.terms, self.weights, strict=True):
            out[list(members)] += w / 2 ** (len(members) - 1)
        return out

    def sii_pairs(self) -> np.ndarray:
        out = np.zeros((self.n, self.n))
        for members, w, kind in zip(self.terms, self.weights, self.kinds, strict=True):
            idx = np.array(members)
            sign = 1.0 if kind == "and" else -1.0
            out[np.ix_(idx, idx)] += sign * w / (len(members) - 1)
        np.fill_diagonal(out, 0.0)
        return out


def and_or_game(
    n: int,
    seed: int,
    *,
    n_terms: int | None = None,
    max_order: int = 5,
    main_scale: float = 1.0,
    term_scale: float = 3.0,
) -> AndOrGame:
    """A random AND/OR game: ``n_terms`` (default ``n``) terms of order 2..``max_order`` over
    random members, half AND and half OR, weights ``N(0, term_scale^2)``; main effects
    ``N(0, main_scale^2)``."""
    rng = np.random.default_rng(seed)
    n_terms = n if n_terms is None else n_terms
    terms, weights, kinds = [], [], []
    for k in range(n_terms):
        order = int(rng.integers(2, min(max_order, n) + 1))
        terms.append(tuple(int(i) for i in rng.choice(n, size=order, replace=False)))
        weights.append(float(rng.normal() * term_scale))
        kinds.append("and" if k % 2 == 0 else "or")
    return AndOrGame(
        n=n,
        main=rng.normal(size=n) * main_scale,
        terms=tuple(terms),
        weights=tuple(weights),
        kinds=tuple(kinds),
        offset=float(rng.normal()),
    )


class TableGame:
    """A game given by its full table ``values[2^n]`` (bit order): ``rows -> values[codes]``."""

    def __init__(self, values: np.ndarray):
        self.values = np.asarray(values, np.float64)
        self.n = int(np.log2(self.values.shape[0]))
        self._weights = 1 << np.arange(self.n, dtype=np.int64)

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        rows = np.atleast_2d(np.asarray(rows, bool))
        return self.values[rows.astype(np.int64) @ self._weights]
