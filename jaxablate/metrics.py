"""Metrics: functions ``(logits [batch, seq, vocab], tokens [batch, seq]) -> [batch]``.

Evaluation averages a metric over the batch. A :class:`Metric` carries its arrays (e.g. the clean
model's log-probabilities) as pytree data, so re-creating a metric with new arrays of the same
shapes does not recompile an evaluation. Plain functions with the same signature work too.
"""

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float, Int


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=["data"], meta_fields=["fn", "name"]
)
@dataclass(frozen=True)
class Metric:
    """A metric with a static function and array data.

    Attributes:
        data: Arrays the metric needs (a pytree), passed as ``fn(logits, tokens, data)``.
        fn: The metric's function (hashable; part of the compilation cache key).
        name: Recorded in sweep manifests and reports.
    """

    data: Any
    fn: Callable[..., jax.Array] = field()
    name: str = field(default="metric")

    def __call__(
        self, logits: Float[Array, "batch seq vocab"], tokens: Int[Array, "batch seq"]
    ) -> Float[Array, " batch"]:
        return self.fn(logits, tokens, self.data)


def as_metric(metric: Callable[..., jax.Array]) -> Metric:
    """Wrap a plain ``(logits, tokens) -> [batch]`` function as a :class:`Metric`."""
    if isinstance(metric, Metric):
        return metric
    if not callable(metric):
        raise ValueError(f"metric must be callable (logits, tokens) -> [batch], got {metric!r}")
    return Metric(data=None, fn=_Plain(metric), name=getattr(metric, "__name__", repr(metric)))


@dataclass(frozen=True)
class _Plain:
    f: Callable[..., jax.Array]

    def __call__(self, logits: jax.Array, tokens: jax.Array, data: None) -> jax.Array:
        return self.f(logits, tokens)


def metric_name(metric: Callable[..., jax.Array]) -> str:
    """The name a metric is recorded under."""
    return as_metric(metric).name


def _log_softmax(logits: jax.Array) -> jax.Array:
    return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)


def loss(
    logits: Float[Array, "batch seq vocab"], tokens: Int[Array, "batch seq"]
) -> Float[Array, " batch"]:
    """Mean next-token cross-entropy of each example (nats; lower is better)."""
    logp = _log_softmax(logits[:, :-1])
    target = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
    return -target.mean(-1)


def accuracy(
    logits: Float[Array, "batch seq vocab"], tokens: Int[Array, "batch seq"]
) -> Float[Array, " batch"]:
    """Fraction of positions whose next token is the argmax prediction (higher is better)."""
    hit = jnp.argmax(logits[:, :-1], axis=-1) == tokens[:, 1:]
    return hit.astype(jnp.float32).mean(-1)


def _logit_diff(logits: jax.Array, tokens: jax.Array, data: tuple) -> jax.Array:
    correct, wrong, position = data
    last = logits[:, position].astype(jnp.float32)  # [batch, vocab]
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
    return Metric(data=(correct_arr, wrong_arr, position), fn=_logit_diff, name="logit_diff")


def _kl(logits: jax.Array, tokens: jax.Array, clean_logp: jax.Array) -> jax.Array:
    if clean_logp.shape != logits.shape:
        raise ValueError(
            f"kl_to_clean was built for logits of shape {clean_logp.shape}, got {logits.shape}; "
            "build it from the same tokens you evaluate"
        )
    logp = _log_softmax(logits)
    kl = (jnp.exp(clean_logp) * (clean_logp - logp)).sum(-1)
    return kl.mean(-1)


def kl_to_clean(model: nnx.Module, tokens: Int[Array, "batch seq"]) -> Metric:
    """KL divergence from the clean model's next-token distribution, mean over positions.

    ``KL(clean || ablated)`` per example, in nats (lower is better; 0 for the clean model).
    Evaluate it on the same ``tokens`` it was built from.
    """
    from jaxablate.models.transformer import check_tokens

    tokens = check_tokens(model.config, tokens)
    graphdef, state = nnx.split(model)
    clean = _clean_logp(graphdef, state, tokens)
    return Metric(data=clean, fn=_kl, name="kl_to_clean")


@functools.partial(jax.jit, static_argnums=0)
def _clean_logp(graphdef: nnx.GraphDef, state: nnx.State, tokens: jax.Array) -> jax.Array:
    return _log_softmax(nnx.merge(graphdef, state)(tokens))


def per_example(
    metric: Metric, logits: Float[Array, "batch seq vocab"], tokens: Int[Array, "batch seq"]
) -> Float[Array, " batch"]:
    """``metric(logits, tokens)`` as float32, checked to hold one value per example.

    Raises:
        ValueError: (at trace time) the metric returned another shape.
    """
    out = metric(logits, tokens)
    if out.shape != (tokens.shape[0],):
        raise ValueError(
            f"metric {metric.name!r} must return shape [batch]=({tokens.shape[0]},), "
            f"got {out.shape}"
        )
    return out.astype(jnp.float32)
