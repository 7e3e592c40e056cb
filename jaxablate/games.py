"""Cooperative games whose players are model components, for shapiq's approximators.

A :class:`ShapiqGame` maps a ``bool [m, n]`` coalition matrix (``True`` = component kept) to the
metric of each row, evaluated by :func:`jaxablate.evaluate`; it plugs into shapiq's
approximators and ``shapiq.ExactComputer``. The pure decompositions of the resulting ``2^n``
table live in :mod:`jaxablate.interactions`, which re-exports this class. shapiq itself is not
needed to build or call a game.
"""

from collections.abc import Callable
from typing import Literal

import jax
import numpy as np
from jaxtyping import ArrayLike, Bool, Float, Int

from jaxablate import _transforms as tf
from jaxablate import subsets
from jaxablate._checks import MAX_ROWS_PLAYERS, positive_int
from jaxablate._evaluate import evaluate
from jaxablate.components import Components, check_components
from jaxablate.models.inputs import Ablation, check_tokens
from jaxablate.models.transformer import Transformer

__all__ = ["ShapiqGame"]

ValueFn = Callable[[Bool[np.ndarray, "n_masks n_players"]], ArrayLike]


class ShapiqGame:
    """A shapiq-compatible game: ablation-study values of coalitions of model components.

    Calling it on a ``bool [m, n]`` coalition matrix (``True`` = component kept) returns the
    metric of each row via :func:`jaxablate.evaluate`, so it plugs into shapiq's approximators
    and ``shapiq.ExactComputer(game, n_players=game.n_players)``. Use :meth:`from_value_fn` to
    wrap any ``rows -> values`` function instead.

    Args:
        model: The ``jaxablate.Transformer``.
        comps: The players (``jaxablate.Components``); column ``i`` is ``comps[i]``.
        tokens: ``int [batch, seq]`` inputs.
        metric: ``(logits, tokens) -> [batch]``; loss-like metrics: lower is better.
        ablation: Replacement for removed components (``None``: zero ablation).
        chunk_size: Rows per compiled call (default: all rows in one call if they fit); see
            :func:`jaxablate.evaluate`.

    Raises:
        ValueError: If ``comps`` does not fit the model or ``tokens`` is not valid input.

    Attributes:
        n_players: Number of players ``n``.
    """

    def __init__(
        self,
        model: Transformer,
        comps: Components,
        tokens: Int[ArrayLike, "batch seq"],
        *,
        metric: Callable[..., jax.Array],
        ablation: Ablation | None,
        chunk_size: int | Literal["auto"] | None = None,
    ) -> None:
        check_components(model.config, comps)
        checked = check_tokens(model.config, tokens)
        self.n_players = len(comps)

        def value_fn(rows: Bool[np.ndarray, "n_masks n_players"]) -> np.ndarray:
            return evaluate(
                model, comps, rows, checked, metric=metric, ablation=ablation, chunk_size=chunk_size
            )

        self._value_fn: ValueFn = value_fn

    @classmethod
    def from_value_fn(cls, value_fn: ValueFn, n_players: int) -> "ShapiqGame":
        """A game from any ``value_fn(rows: bool [m, n]) -> values [m]``.

        Args:
            value_fn: Values of a ``bool [m, n_players]`` coalition matrix, ``[m]``.
            n_players: Number of players ``n``.

        Raises:
            ValueError: If ``n_players`` is not a positive int.
        """
        n_players = positive_int("n_players", n_players)
        game = cls.__new__(cls)
        game.n_players = n_players
        game._value_fn = value_fn
        return game

    def __call__(
        self, coalitions: Bool[ArrayLike, "n_masks n_players"]
    ) -> Float[np.ndarray, " n_masks"]:
        """Values of the coalitions, float64 ``[m]`` (a 1-D coalition gives ``[1]``).

        Raises:
            ValueError: If ``coalitions`` is not ``[m, n_players]`` or the value function does
                not return ``m`` values.
        """
        rows = np.asarray(coalitions)
        if rows.ndim == 1:
            rows = rows[None, :]
        if rows.ndim != 2 or rows.shape[1] != self.n_players:
            raise ValueError(
                f"coalitions must be bool [m, n_players = {self.n_players}]; got shape "
                f"{np.shape(coalitions)}."
            )
        out = np.asarray(self._value_fn(rows.astype(bool)), dtype=np.float64)
        if out.shape != (rows.shape[0],):
            raise ValueError(
                f"the value function must return [m] = [{rows.shape[0]}] values; got {out.shape}."
            )
        return out

    def table(self, chunk_rows: int | None = None) -> Float[np.ndarray, " n_coalitions"]:
        """Values of all ``2^n`` coalitions in bit order (``2^n`` evaluations), float64.

        The rows are made chunk by chunk (``subsets.bits``), never all at once beyond
        ``2^MAX_ROWS_PLAYERS`` of them; the table itself is limited to ``MAX_PLAYERS`` players.

        Args:
            chunk_rows: Rows per call of the value function (default: all at once, at most
                ``2^MAX_ROWS_PLAYERS``).

        Raises:
            ValueError: If ``n_players > MAX_PLAYERS`` or ``chunk_rows`` is not a positive int.
        """
        n = self.n_players
        tf.check_n(n, "ShapiqGame", itemsize=8)
        total = 2**n
        step = 2 ** min(n, MAX_ROWS_PLAYERS)
        if chunk_rows is not None:
            step = positive_int("chunk_rows", chunk_rows)
        parts = [
            self(subsets.bits(range(start, min(start + step, total)), n))
            for start in range(0, total, step)
        ]
        return np.concatenate(parts)
