"""Cooperative games whose players are model components, and estimates of their values.

A game is any callable ``rows: bool [M, n] -> values [M]`` with an int attribute ``n``
(``True`` = component kept, the presence game of ``docs/conventions.md``). :class:`Game` is the
one built on a model: every call goes through :func:`jaxablate.evaluate` in one batched,
compiled evaluation, it counts the rows it evaluates, caches the rows it has seen and can write
every evaluation through a resumable sweep directory (:func:`jaxablate.sweep`). It also plugs
into shapiq's approximators and ``shapiq.ExactComputer`` (``ShapiqGame`` is its former name).

Estimators (:mod:`jaxablate.estimate`) take any game and return an :class:`Estimate`; they ask
for rows through a :class:`Budget`, which enforces the hard limit on evaluations. The pure
decompositions of a full ``2^n`` table live in :mod:`jaxablate.interactions`.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jax
import numpy as np
from jaxtyping import ArrayLike, Bool, Float, Int

from jaxablate import _chunking, subsets
from jaxablate import _transforms as tf
from jaxablate._batch import batch_of
from jaxablate._checks import MAX_ROWS_PLAYERS, positive_int
from jaxablate._evaluate import evaluate
from jaxablate._prompts import Prompts
from jaxablate._sweep import sweep
from jaxablate._sweep_store import MANIFEST, chunk_ranges, sweep_status
from jaxablate.components import Components, check_components, check_model
from jaxablate.metrics import as_metric, loss
from jaxablate.models.inputs import Ablation
from jaxablate.models.transformer import Transformer

__all__ = ["Budget", "Estimate", "Game", "ShapiqGame", "check_game"]

ValueFn = Callable[[Bool[np.ndarray, "n_masks n_players"]], ArrayLike]
GameLike = Callable[[Bool[np.ndarray, "n_masks n_players"]], ArrayLike]

#: Largest number of rows per compiled call a :class:`Game` picks by itself (memory permitting).
GAME_CHUNK = 1024


def _row_keys(rows: np.ndarray) -> list[bytes]:
    """One hashable key per row (its bits packed)."""
    packed = np.packbits(rows, axis=1)
    return [r.tobytes() for r in packed]


def _pad_to_chunk(rows: np.ndarray, chunk: int, groups: int) -> np.ndarray:
    """``rows`` padded (repeating the last) to a multiple of ``chunk``, or for fewer rows to the
    next power of two (at least ``groups``), so that rounds of any size reuse a few programs."""
    m = rows.shape[0]
    if m >= chunk:
        target = -(-m // chunk) * chunk
    else:
        target = min(chunk, max(groups, 1 << (m - 1).bit_length()))
    if target == m:
        return rows
    return np.concatenate([rows, np.repeat(rows[-1:], target - m, axis=0)])


def _rows_on_disk(call_dir: Path, real_rows: int) -> int:
    """How many of the first ``real_rows`` rows of a game call's sweep are already finished
    on disk (0 for a new call; the sweep itself checks the manifest and every chunk)."""
    if not (call_dir / MANIFEST).exists():
        return 0
    status = sweep_status(call_dir)
    bad = set(status.missing) | set(status.corrupt)
    ranges = chunk_ranges(status.n_rows, status.chunk_size)
    return sum(max(0, min(b, real_rows) - a) for c, (a, b) in enumerate(ranges) if c not in bad)


def _default_chunk(model: Transformer, shape: tuple[int, int]) -> int:
    """Rows per compiled call: at most :data:`GAME_CHUNK`, within evaluate's memory budget."""
    groups = len(jax.local_devices())
    per_row = _chunking.bytes_per_row(model.config, *shape)
    cap = max(groups, _chunking.default_budget() // per_row // groups * groups)
    return int(min(cap, -(-GAME_CHUNK // groups) * groups))


class Game:
    """The ablation-study game of a model: values of coalitions of components, batched.

    Calling it on a ``bool [M, n]`` coalition matrix (``True`` = component kept) returns the
    metric of each row. The rows it has not seen before go to the model in **one** call of
    :func:`jaxablate.evaluate` (padded to a multiple of the compiled chunk, or to a power of two
    below it, so rounds of different sizes reuse a few compiled programs; padding is not
    counted). Counters: :attr:`evaluations` distinct rows evaluated, :attr:`hits` rows served
    from the cache, :attr:`calls` calls that evaluated anything, :attr:`resumed` rows of those
    evaluations read back from ``out`` instead of run.

    With ``out``, call ``k`` of the game that evaluates anything is a resumable
    :func:`jaxablate.sweep` over explicit rows in ``out/call_{k:06d}``: rerunning the same
    (seeded) estimate after a kill reads the finished calls and chunks back from disk and
    evaluates only the rest. A rerun with other rows, model, tokens, metric or ablation is
    refused by the sweep's manifest check.

    Use :meth:`from_value_fn` to wrap any ``rows -> values`` function (a synthetic game).

    Args:
        model: The ``jaxablate.Transformer``.
        comps: The players (``jaxablate.Components``); column ``i`` is ``comps[i]``.
        tokens: ``int [batch, seq]`` inputs, or :class:`jaxablate.Prompts`.
        metric: ``(logits, tokens) -> [batch]``; loss-like metrics: lower is better.
        ablation: Replacement for removed components (``None``: zero ablation).
        chunk_size: Rows per compiled call (default: up to :data:`GAME_CHUNK` within the
            memory budget of :func:`jaxablate.evaluate`; ``"auto"`` and ``None`` both pick it
            this way, once, so that every call reuses it).
        out: Directory to write every evaluation through (created if needed); ``None``: memory
            only.
        cache: Remember the value of every row evaluated, and evaluate a row repeated within a
            call once.

    Raises:
        ValueError: If ``comps`` does not fit the model or ``tokens`` is not valid input.

    Attributes:
        n: Number of players.
        evaluations: Distinct rows evaluated so far (model forward passes per example).
        hits: Rows answered from the cache (or repeated within a call).
        calls: Calls that evaluated at least one row.
        resumed: Rows of :attr:`evaluations` read back from finished chunks under ``out`` (a
            rerun after a kill) rather than run on the model.
        chunk: Rows per compiled call (``None`` for a game from :meth:`from_value_fn`).
    """

    def __init__(
        self,
        model: Transformer,
        comps: Components,
        tokens: Int[ArrayLike, "batch seq"] | Prompts,
        *,
        metric: Callable[..., jax.Array] = loss,
        ablation: Ablation | None = None,
        chunk_size: int | Literal["auto"] | None = None,
        out: str | os.PathLike | None = None,
        cache: bool = True,
    ) -> None:
        check_model(model)
        check_components(model.config, comps)
        batch = batch_of(model.config, tokens, as_metric(metric))  # fail early, not per call
        checked = tokens if isinstance(tokens, Prompts) else batch.tokens
        if chunk_size is None or chunk_size == "auto":
            chunk = _default_chunk(model, batch.shape)
        else:
            chunk = positive_int("chunk_size", chunk_size, ", 'auto' or None")
        self._model, self._comps, self._tokens = model, comps, checked
        self._metric, self._ablation = metric, ablation
        self._out = None if out is None else Path(out)
        self._chunk = chunk
        self._setup(self._evaluate_model, len(comps), cache)
        self.chunk: int | None = chunk

    def _evaluate_model(self, rows: Bool[np.ndarray, "n_masks n_players"]) -> np.ndarray:
        """One batched evaluation of ``rows`` (padded, see the class docstring)."""
        padded = _pad_to_chunk(rows, self._chunk, len(jax.local_devices()))
        args = (self._model, self._comps, padded, self._tokens)
        if self._out is None:
            values = evaluate(
                *args, metric=self._metric, ablation=self._ablation, chunk_size=self._chunk
            )
        else:
            call_dir = self._out / f"call_{self.calls:06d}"
            self.resumed += _rows_on_disk(call_dir, rows.shape[0])
            values = sweep(
                *args,
                call_dir,
                metric=self._metric,
                ablation=self._ablation,
                chunk_size=self._chunk,
                eval_chunk_size=self._chunk,
                progress=False,
            )
        return np.asarray(values)[: rows.shape[0]]

    def _setup(self, value_fn: ValueFn, n: int, cache: bool) -> None:
        self.n = n
        self._value_fn: ValueFn = value_fn
        self._cache: dict[bytes, float] | None = {} if cache else None
        self.evaluations = 0
        self.hits = 0
        self.calls = 0
        self.resumed = 0
        self.chunk = None

    @classmethod
    def from_value_fn(cls, value_fn: ValueFn, n_players: int, *, cache: bool = True) -> "Game":
        """A game from any ``value_fn(rows: bool [m, n]) -> values [m]`` (counted and cached).

        Args:
            value_fn: Values of a ``bool [m, n_players]`` coalition matrix, ``[m]``.
            n_players: Number of players ``n``.
            cache: As for :class:`Game`.

        Raises:
            ValueError: If ``n_players`` is not a positive int.
        """
        n_players = positive_int("n_players", n_players)
        game = cls.__new__(cls)
        game._setup(value_fn, n_players, cache)
        return game

    @property
    def n_players(self) -> int:
        """Number of players (shapiq's name for :attr:`n`)."""
        return self.n

    def __call__(
        self, coalitions: Bool[ArrayLike, "n_masks n_players"]
    ) -> Float[np.ndarray, " n_masks"]:
        """Values of the coalitions, float64 ``[m]`` (a 1-D coalition gives ``[1]``).

        Raises:
            ValueError: If ``coalitions`` is not ``[m, n]`` or the value function does not
                return ``m`` values.
        """
        rows = np.asarray(coalitions)
        if rows.ndim == 1:
            rows = rows[None, :]
        if rows.ndim != 2 or rows.shape[1] != self.n:
            raise ValueError(
                f"coalitions must be bool [m, n_players = {self.n}]; got shape "
                f"{np.shape(coalitions)}."
            )
        rows = rows.astype(bool)
        if self._cache is None:
            return self._evaluate(rows)
        keys = _row_keys(rows)
        todo: dict[bytes, int] = {}
        for i, k in enumerate(keys):
            if k not in self._cache and k not in todo:
                todo[k] = i
        if todo:
            fresh = self._evaluate(rows[list(todo.values())])
            self._cache.update(zip(todo, fresh.tolist(), strict=True))
        self.hits += rows.shape[0] - len(todo)
        return np.array([self._cache[k] for k in keys], dtype=np.float64)

    def _evaluate(self, rows: np.ndarray) -> np.ndarray:
        out = np.asarray(self._value_fn(rows), dtype=np.float64)
        if out.shape != (rows.shape[0],):
            raise ValueError(
                f"the value function must return [m] = [{rows.shape[0]}] values; got {out.shape}."
            )
        self.evaluations += rows.shape[0]
        self.calls += 1
        return out

    def table(self, chunk_rows: int | None = None) -> Float[np.ndarray, " n_coalitions"]:
        """Values of all ``2^n`` coalitions in bit order (``2^n`` evaluations), float64.

        The rows are made chunk by chunk (``subsets.bits``), never all at once beyond
        ``2^MAX_ROWS_PLAYERS`` of them; the table itself is limited to ``MAX_PLAYERS`` players.

        Args:
            chunk_rows: Rows per call of the game (default: all at once, at most
                ``2^MAX_ROWS_PLAYERS``).

        Raises:
            ValueError: If ``n > MAX_PLAYERS`` or ``chunk_rows`` is not a positive int.
        """
        n = self.n
        tf.check_n(n, "Game", itemsize=8)
        total = 2**n
        step = 2 ** min(n, MAX_ROWS_PLAYERS)
        if chunk_rows is not None:
            step = positive_int("chunk_rows", chunk_rows)
        parts = [
            self(subsets.bits(range(start, min(start + step, total)), n))
            for start in range(0, total, step)
        ]
        return np.concatenate(parts)


#: The former name of :class:`Game` (shapiq's approximators take either).
ShapiqGame = Game


# ------------------------------------------------------------------------------ estimates


@dataclass(frozen=True)
class Estimate:
    """An estimate of per-player (or per-pair) quantities of a game, with standard errors.

    Attributes:
        values: The estimates, ``[n]`` for values of players, ``[n, n]`` for pairs.
        stderr: Their standard errors (same shape); ``values ± 2 * stderr`` is an approximate
            95% interval. Zero where a quantity was computed exactly.
        evaluations: Distinct rows the estimator asked of the game (at most its budget). Rows
            the game answered from its cache count too, so the result never depends on a cache.
    """

    values: Float[np.ndarray, "..."]
    stderr: Float[np.ndarray, "..."]
    evaluations: int

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float64)
        stderr = np.asarray(self.stderr, dtype=np.float64)
        if values.shape != stderr.shape:
            raise ValueError(
                f"Estimate: values {values.shape} and stderr {stderr.shape} must have one shape"
            )
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "stderr", stderr)
        object.__setattr__(self, "evaluations", int(self.evaluations))


def check_game(game: object) -> int:
    """The number of players of ``game``: a callable with a positive int attribute ``n``.

    Raises:
        ValueError: ``game`` is not callable or has no positive int ``n``.
    """
    n = getattr(game, "n", None)
    if not callable(game) or isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(
            "game must be a callable rows: bool [M, n] -> values [M] with a positive int "
            f"attribute n (e.g. ja.Game, or ja.Game.from_value_fn(f, n)), got {game!r}"
        )
    return int(n)


class Budget:
    """The rows an estimator may still ask of a game: a hard limit, counted per row.

    Every call passes the rows to the game at once and checks what comes back. A row counts
    each time it is asked for, also when the game answers it from its cache (estimators ask
    for each distinct row once).

    Args:
        game: Any game (see :func:`check_game`).
        budget: Most rows the estimator may ask for in all.
        least: Fewest rows the estimator needs; a smaller budget raises ``ValueError``.
        what: The estimator's name, for messages.

    Raises:
        ValueError: A bad game, or ``budget`` not a positive int or below ``least``.

    Attributes:
        n: Number of players.
        budget: The limit.
        used: Rows asked for so far.
    """

    def __init__(self, game: object, budget: object, least: int = 1, what: str = "estimate"):
        self.n = check_game(game)
        self.budget = positive_int("budget", budget)
        if self.budget < least:
            raise ValueError(
                f"{what} needs a budget of at least {least} evaluations for n = {self.n} "
                f"players, got budget={self.budget}"
            )
        self._game: GameLike = game  # type: ignore[assignment]
        self.used = 0

    @property
    def left(self) -> int:
        """Rows still allowed."""
        return self.budget - self.used

    def __call__(
        self, rows: Bool[np.ndarray, "n_masks n_players"]
    ) -> Float[np.ndarray, " n_masks"]:
        """Values of ``rows`` (float64 ``[M]``).

        Raises:
            RuntimeError: The rows would exceed the budget (an estimator's bug).
            ValueError: The game returned something other than ``M`` finite values.
        """
        rows = np.asarray(rows, dtype=bool)
        m = rows.shape[0]
        if m > self.left:
            raise RuntimeError(f"{m} more rows would exceed the budget of {self.budget} rows")
        self.used += m
        out = np.asarray(self._game(rows), dtype=np.float64)
        if out.shape != (m,):
            raise ValueError(f"the game must return [M] = [{m}] values; got shape {out.shape}")
        if not np.isfinite(out).all():
            raise ValueError(f"the game returned {np.count_nonzero(~np.isfinite(out))} NaN/inf")
        return out
