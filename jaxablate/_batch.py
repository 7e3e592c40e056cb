"""The inputs of one evaluation: model tokens, the tokens a metric sees, and what it reads.

Every API that takes ``tokens`` also takes :class:`~jaxablate.Prompts`; :func:`batch_of` turns
either into a :class:`Batch`, so the evaluator, training loops and games share one rule for
padding: the model runs on the padded ids (right padding is exact for causal models), metrics
see pads as :data:`~jaxablate._prompts.PAD`, and a metric that would read a pad is refused.
"""

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Int

from jaxablate._prompts import Prompts
from jaxablate.metrics import Metric
from jaxablate.models.config import ModelConfig
from jaxablate.models.inputs import check_tokens

#: Static, hashable form of the positions a metric reads: ``None``, ``(p, ...)`` shared by every
#: example, or one tuple per example.
QueryKey = tuple[int, ...] | tuple[tuple[int, ...], ...] | None


@dataclass(frozen=True)
class Batch:
    """Checked inputs of one evaluation.

    Attributes:
        tokens: int32 ``[batch, seq]`` model input.
        metric_tokens: int32 ``[batch, seq]`` as the metric receives them (pads as ``PAD``).
        lengths: Real tokens per example (``None`` for a plain token array: all real).
        queries: The metric's read positions, ``[k]`` or ``[batch, k]`` (``None``: all).
        prompts: The prompts, when given.
    """

    tokens: Int[Array, "batch seq"]
    metric_tokens: Int[Array, "batch seq"]
    lengths: np.ndarray | None
    queries: np.ndarray | None
    prompts: Prompts | None

    @property
    def shape(self) -> tuple[int, int]:
        """``(batch, seq)``."""
        return int(self.tokens.shape[0]), int(self.tokens.shape[1])

    @property
    def query_key(self) -> QueryKey:
        """:attr:`queries` as nested tuples (a static jit argument)."""
        q = self.queries
        if q is None:
            return None
        if q.ndim == 1:
            return tuple(int(i) for i in q)
        return tuple(tuple(int(i) for i in row) for row in q)


def queries_of(key: QueryKey) -> np.ndarray | None:
    """The array behind a :data:`QueryKey`."""
    return None if key is None else np.asarray(key, np.int64)


def model_tokens(cfg: ModelConfig, tokens: object) -> jax.Array:
    """The model's input ids from a token array or :class:`Prompts`, checked against ``cfg``."""
    ids = tokens.tokens if isinstance(tokens, Prompts) else tokens
    return check_tokens(cfg, ids)


def batch_of(cfg: ModelConfig, tokens: object, metric: Metric) -> Batch:
    """Check ``tokens`` (an int array or :class:`Prompts`) and what ``metric`` reads of them.

    Raises:
        ValueError: bad tokens; a metric reading a position past a prompt's end, a name the
            prompts lack, or every position of padded prompts without skipping pads
            (:attr:`Metric.pads`); metric data that do not fit the model or the batch.
    """
    ids = model_tokens(cfg, tokens)
    batch, seq = int(ids.shape[0]), int(ids.shape[1])
    prompts = tokens if isinstance(tokens, Prompts) else None
    lengths = None if prompts is None else prompts.lengths
    queries = metric.queries(seq, prompts)
    if prompts is not None and prompts.ragged and queries is None and not metric.pads:
        raise ValueError(
            f"metric {metric.name!r} reads every position, and these prompts are padded "
            f"(lengths {int(prompts.lengths.min())}..{seq}); use a metric that reads given "
            "positions (e.g. ja.metrics.logit_diff(..., position='last')) or skips pads "
            "(Metric.pads), or prompts of equal length"
        )
    metric.validate(cfg, batch, lengths)
    metric_ids = ids if prompts is None else jnp.asarray(prompts.metric_tokens())
    return Batch(ids, metric_ids, lengths, queries, prompts)
