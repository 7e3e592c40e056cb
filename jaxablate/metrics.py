"""Metrics: functions ``(logits [batch, seq, vocab], tokens [batch, seq]) -> [batch]``.

Evaluation averages a metric over the batch. A :class:`Metric` carries its arrays (e.g. the clean
model's log-probabilities) as pytree data, so re-creating a metric with new arrays of the same
shapes does not recompile an evaluation. Plain functions with the same signature work too.

A metric that reads the logits of a few positions only (a logit difference at the last token, a
loss over one span) says so with ``Metric.positions``: its function then receives the logits of
those positions alone, and :func:`jaxablate.evaluate` skips work no read position depends on
(positions after the last one read, and the last layer's queries, MLP and unembedding at every
other position).
"""

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float, Int

from jaxablate.models.inputs import check_tokens
from jaxablate.models.transformer import Transformer


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=["data"], meta_fields=["fn", "name", "positions"]
)
@dataclass(frozen=True)
class Metric:
    """A metric with a static function and array data.

    Attributes:
        data: Arrays the metric needs (a pytree), passed as ``fn(logits, tokens, data)``.
        fn: The metric's function (hashable; part of the compilation cache key).
        name: Recorded in sweep manifests and reports.
        positions: ``None``: ``fn`` reads the logits of every position. A tuple of positions
            (negative ones count from the end): ``fn`` reads only these and receives
            ``logits[:, positions]`` (``[batch, len(positions), vocab]``, in this order); the
            tokens are always passed whole.
    """

    data: Any
    fn: Callable[..., jax.Array] = field()
    name: str = field(default="metric")
    positions: tuple[int, ...] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.positions is None:
            return
        p = self.positions
        if (
            not isinstance(p, tuple)
            or not p
            or not all(isinstance(i, int | np.integer) and not isinstance(i, bool) for i in p)
        ):
            raise ValueError(
                f"metric {self.name!r}: positions must be None or a non-empty tuple of ints, "
                f"got {p!r}"
            )
        object.__setattr__(self, "positions", tuple(int(i) for i in p))

    def query_positions(self, seq: int) -> np.ndarray | None:
        """The positions read, as indices in ``[0, seq)``; ``None`` when all are read.

        Raises:
            ValueError: a position outside ``[-seq, seq)``.
        """
        if self.positions is None:
            return None
        bad = [p for p in self.positions if not -seq <= p < seq]
        if bad:
            raise ValueError(
                f"metric {self.name!r} reads positions {list(self.positions)}, but {bad} lie "
                f"outside sequences of {seq} tokens"
            )
        return np.asarray([p % seq for p in self.positions], np.int64)

    def __call__(
        self, logits: Float[Array, "batch seq vocab"], tokens: Int[Array, "batch seq"]
    ) -> Float[Array, " batch"]:
        queries = self.query_positions(logits.shape[1])
        if queries is not None:
            logits = logits[:, queries]
        return self.fn(logits, tokens, self.data)

    def at(
        self, logits: Float[Array, "batch n_positions vocab"], tokens: Int[Array, "batch seq"]
    ) -> Float[Array, " batch"]:
        """The metric from the logits of :attr:`positions` alone (``logits[:, positions]``)."""
        if self.positions is None:
            raise ValueError(f"metric {self.name!r} reads every position; call it on all logits")
        return self.fn(logits, tokens, self.data)


def as_metric(metric: Callable[..., jax.Array]) -> Metric:
    """Wrap a plain ``(logits, tokens) -> [batch]`` function as a :class:`Metric`.

    A callable that also has ``positions`` (a tuple of ints) and ``at(logits_at, tokens)`` (the
    metric from ``logits[:, positions]``) becomes a metric with those positions.
    """
    if isinstance(metric, Metric):
        return metric
    if not callable(metric):
        raise ValueError(f"metric must be callable (logits, tokens) -> [batch], got {metric!r}")
    name = getattr(metric, "__name__", repr(metric))
    positions = getattr(metric, "positions", None)
    if positions is not None and callable(getattr(metric, "at", None)):
        return Metric(data=None, fn=_At(metric), name=name, positions=tuple(positions))
    return Metric(data=None, fn=_Plain(metric), name=name)


@dataclass(frozen=True)
class _Plain:
    f: Callable[..., jax.Array]

    def __call__(self, logits: jax.Array, tokens: jax.Array, data: None) -> jax.Array:
        return self.f(logits, tokens)


@dataclass(frozen=True)
class _At:
    f: Any

    def __call__(self, logits: jax.Array, tokens: jax.Array, data: None) -> jax.Array:
        return self.f.at(logits, tokens)


def metric_name(metric: Callable[..., jax.Array]) -> str:
    """The name a metric is recorded under."""
    return as_metric(metric).name


def _log_softmax(logits: jax.Array) -> jax.Array:
    return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)


def token_cross_entropy(
    logits: Float[Array, "batch n vocab"], targets: Int[Array, "batch n"]
) -> Float[Array, "batch n"]:
    """Cross-entropy (nats, float32) of each target token under the logits at its position."""
    logp = _log_softmax(logits)
    return -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


def loss(
    logits: Float[Array, "batch seq vocab"], tokens: Int[Array, "batch seq"]
) -> Float[Array, " batch"]:
    """Mean next-token cross-entropy of each example (nats; lower is better)."""
    return token_cross_entropy(logits[:, :-1], tokens[:, 1:]).mean(-1)


def accuracy(
    logits: Float[Array, "batch seq vocab"], tokens: Int[Array, "batch seq"]
) -> Float[Array, " batch"]:
    """Fraction of positions whose next token is the argmax prediction (higher is better)."""
    hit = jnp.argmax(logits[:, :-1], axis=-1) == tokens[:, 1:]
    return hit.astype(jnp.float32).mean(-1)


def _logit_diff(logits: jax.Array, tokens: jax.Array, data: tuple) -> jax.Array:
    correct, wrong = data
    last = logits[:, 0].astype(jnp.float32)  # [batch, vocab]: logits at the one position read
    batch = jnp.arange(last.shape[0])
    return last[batch, correct] - last[batch, wrong]


def logit_diff(
    correct: int | Int[Array, " batch"],
    wrong: int | Int[Array, " batch"],
    *,
    position: int = -1,
) -> Metric:
    """Logit of the correct token minus the wrong one at ``position`` (higher is better).

    Args:
        correct: Correct token id, one for all examples or one per example.
        wrong: Competing token id, likewise.
        position: Which position's logits to read (default: the last).
    """
    correct_arr = jnp.asarray(correct, jnp.int32)
    wrong_arr = jnp.asarray(wrong, jnp.int32)
    for name, arr in (("correct", correct_arr), ("wrong", wrong_arr)):
        if arr.ndim > 1:
            raise ValueError(f"logit_diff {name} must be an int or 1-D [batch], got {arr.shape}")
    return Metric(
        data=(correct_arr, wrong_arr), fn=_logit_diff, name="logit_diff", positions=(position,)
    )


def _kl(logits: jax.Array, tokens: jax.Array, clean_logp: jax.Array) -> jax.Array:
    if clean_logp.shape != logits.shape:
        raise ValueError(
            f"kl_to_clean was built for logits of shape {clean_logp.shape}, got {logits.shape}; "
            "build it from the same tokens you evaluate"
        )
    logp = _log_softmax(logits)
    kl = (jnp.exp(clean_logp) * (clean_logp - logp)).sum(-1)
    return kl.mean(-1)


def kl_to_clean(model: Transformer, tokens: Int[Array, "batch seq"]) -> Metric:
    """KL divergence from the clean model's next-token distribution, mean over positions.

    ``KL(clean || ablated)`` per example, in nats (lower is better; 0 for the clean model).
    Evaluate it on the same ``tokens`` it was built from.
    """
    tokens = check_tokens(model.config, tokens)
    graphdef, state = nnx.split(model)
    clean = _clean_logp(graphdef, state, tokens)
    return Metric(data=clean, fn=_kl, name="kl_to_clean")


@functools.partial(jax.jit, static_argnums=0)
def _clean_logp(graphdef: nnx.GraphDef, state: nnx.State, tokens: jax.Array) -> jax.Array:
    return _log_softmax(nnx.merge(graphdef, state)(tokens))


def per_example(
    metric: Metric,
    logits: Float[Array, "batch seq vocab"],
    tokens: Int[Array, "batch seq"],
    *,
    at_positions: bool = False,
) -> Float[Array, " batch"]:
    """``metric(logits, tokens)`` as float32, checked to hold one value per example.

    With ``at_positions``, ``logits`` hold only the metric's :attr:`Metric.positions`
    (:meth:`Metric.at`).

    Raises:
        ValueError: (at trace time) the metric returned another shape.
    """
    out = metric.at(logits, tokens) if at_positions else metric(logits, tokens)
    if out.shape != (tokens.shape[0],):
        raise ValueError(
            f"metric {metric.name!r} must return shape [batch]=({tokens.shape[0]},), "
            f"got {out.shape}"
        )
    return out.astype(jnp.float32)
