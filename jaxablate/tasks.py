"""Toy tasks with a known mechanism: batch generators and their metrics.

A :class:`Task` draws token batches from an explicit ``jax.random`` key and scores logits with a
metric in the :mod:`jaxablate.metrics` convention ``(logits [batch, seq, vocab], tokens
[batch, seq]) -> [batch]``. The metrics are small frozen dataclasses, so two tasks built with the
same settings have equal (and equally hashed) metrics and share compiled evaluations.

- :func:`induction`: ``[BOS, s, s, ...]`` with a random segment ``s`` of distinct tokens and
  random length. The repeats are predictable only by an induction circuit (a previous-token head
  feeding an induction head); the first copy is not predictable at all.
- :func:`modular_addition`: ``[a, b, =, (a + b) mod p]``; the answer is read at the ``=``
  position (Nanda et al. 2023 reverse-engineered the Fourier mechanism small models learn).
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, Key

from jaxablate._checks import check_key, positive_int
from jaxablate.metrics import token_cross_entropy

BOS = 0
"""Token id of the beginning-of-sequence marker of the induction task."""


@dataclass(frozen=True)
class _PositionMetric:
    """A metric over prediction positions ``[start, stop)``; position ``p`` predicts ``p + 1``.

    Attributes:
        start: First prediction position.
        stop: One past the last prediction position.
        label: Name used in reports.
    """

    start: int
    stop: int
    label: str = "metric"

    @property
    def __name__(self) -> str:  # read by jaxablate.metrics.as_metric for the metric's name
        return self.label

    @property
    def positions(self) -> tuple[int, ...]:
        """The positions whose logits the metric reads (see :class:`jaxablate.Metric`)."""
        return tuple(range(self.start, self.stop))

    def __call__(
        self, logits: Float[Array, "batch seq vocab"], tokens: Int[Array, "batch seq"]
    ) -> Float[Array, " batch"]:
        self._check(logits, tokens)
        return self.at(logits[:, self.start : self.stop], tokens)

    def at(
        self, logits_at: Float[Array, "batch span vocab"], tokens: Int[Array, "batch seq"]
    ) -> Float[Array, " batch"]:
        """The metric from the logits of :attr:`positions` alone."""
        raise NotImplementedError

    def _check(self, logits: jax.Array, tokens: jax.Array) -> None:
        if logits.shape[1] < self.stop or tokens.shape[1] < self.stop + 1:
            raise ValueError(
                f"{self.label} reads positions up to {self.stop}, got logits of shape "
                f"{logits.shape} and tokens of shape {tokens.shape}"
            )

    def _targets(self, logits_at: jax.Array, tokens: jax.Array) -> jax.Array:
        span = self.stop - self.start
        if logits_at.shape[1] != span or tokens.shape[1] < self.stop + 1:
            raise ValueError(
                f"{self.label} needs the logits of its {span} positions and tokens of at least "
                f"{self.stop + 1} positions, got logits of shape {logits_at.shape} and tokens of "
                f"shape {tokens.shape}"
            )
        return tokens[:, self.start + 1 : self.stop + 1]


@dataclass(frozen=True)
class PositionLoss(_PositionMetric):
    """Mean next-token cross-entropy over prediction positions ``[start, stop)`` (nats).

    Lower is better.
    """

    label: str = "loss"

    def at(
        self, logits_at: Float[Array, "batch span vocab"], tokens: Int[Array, "batch seq"]
    ) -> Float[Array, " batch"]:
        """The metric from the logits of :attr:`positions` alone."""
        return token_cross_entropy(logits_at, self._targets(logits_at, tokens)).mean(-1)


@dataclass(frozen=True)
class PositionAccuracy(_PositionMetric):
    """Fraction of prediction positions ``[start, stop)`` whose argmax is the next token.

    Higher is better.
    """

    label: str = "accuracy"

    def at(
        self, logits_at: Float[Array, "batch span vocab"], tokens: Int[Array, "batch seq"]
    ) -> Float[Array, " batch"]:
        """The metric from the logits of :attr:`positions` alone."""
        hit = jnp.argmax(logits_at, axis=-1) == self._targets(logits_at, tokens)
        return hit.astype(jnp.float32).mean(-1)


@dataclass(frozen=True)
class Task:
    """A toy task: how to draw inputs, and how to score a model on them.

    Attributes:
        name: Short name, e.g. ``"induction"``.
        description: One sentence for reports.
        vocab_size: Token ids lie in ``[0, vocab_size)``.
        seq_len: Length of every sequence.
        sampler: ``(key, batch_size) -> int32 [batch, seq_len]``; use :meth:`batch`.
        metric: The task's headline metric ``(logits, tokens) -> [batch]``.
        metric_label: How to read the metric, e.g. "loss on the repeated half (nats, lower is
            better)".
        lower_is_better: Whether lower values of :attr:`metric` are better.
        extra_metrics: Further named metrics (e.g. the first-half loss, accuracy).
    """

    name: str
    description: str
    vocab_size: int
    seq_len: int
    sampler: Callable[[jax.Array, int], jax.Array] = field(repr=False)
    metric: Callable[..., jax.Array]
    metric_label: str
    lower_is_better: bool = True
    extra_metrics: Mapping[str, Callable[..., jax.Array]] = field(default_factory=dict)

    def batch(self, key: Key[Array, ""], batch_size: int) -> Int[Array, "batch seq"]:
        """Draw ``batch_size`` sequences from ``key`` (same key, same batch).

        Args:
            key: One ``jax.random`` key (``jax.random.key(0)`` or ``jax.random.PRNGKey(0)``).
            batch_size: Number of sequences, a positive int.

        Returns:
            ``int32 [batch_size, seq_len]`` tokens.

        Raises:
            ValueError: ``key`` is not a single key, or ``batch_size`` not a positive int.
        """
        return self.sampler(check_key(key), positive_int("batch_size", batch_size))

    @property
    def metrics(self) -> dict[str, Callable[..., jax.Array]]:
        """The headline metric (under ``"metric"``) and the extra ones, by name."""
        return {"metric": self.metric, **self.extra_metrics}


# ---------------------------------------------------------------------------- induction


def _seen_before(tokens: Int[Array, "batch seq"]) -> jax.Array:
    """``bool [batch, seq - 1]``: the token at prediction position ``p`` occurred before ``p``."""
    seq = tokens.shape[1]
    earlier = np.tril(np.ones((seq, seq), dtype=bool), k=-1)  # [p, q]: q < p
    same = tokens[:, :, None] == tokens[:, None, :]
    return (same & earlier[None]).any(-1)[:, :-1]


def _masked_ce(
    logits: Float[Array, "batch seq vocab"], tokens: Int[Array, "batch seq"], where: jax.Array
) -> Float[Array, " batch"]:
    ce = token_cross_entropy(logits[:, :-1], tokens[:, 1:])
    w = where.astype(jnp.float32)
    return (ce * w).sum(-1) / jnp.maximum(w.sum(-1), 1.0)


@dataclass(frozen=True)
class RepeatLoss:
    """Next-token cross-entropy at positions whose token occurred earlier (nats, lower better).

    With segments of distinct tokens, these are exactly the predictions an induction head can
    make: the next token is the one that followed the earlier occurrence.

    Attributes:
        repeated: ``True``: positions whose current token was seen before (the repeated part);
            ``False``: the others (first occurrences; their next token is not predictable).
        label: Name used in reports.
    """

    repeated: bool = True
    label: str = "repeat_loss"

    @property
    def __name__(self) -> str:
        return self.label

    def __call__(
        self, logits: Float[Array, "batch seq vocab"], tokens: Int[Array, "batch seq"]
    ) -> Float[Array, " batch"]:
        seen = _seen_before(tokens)
        return _masked_ce(logits, tokens, seen if self.repeated else ~seen)


@dataclass(frozen=True)
class RepeatAccuracy:
    """Top-1 accuracy at the positions :class:`RepeatLoss` scores (higher is better)."""

    label: str = "repeat_accuracy"

    @property
    def __name__(self) -> str:
        return self.label

    def __call__(
        self, logits: Float[Array, "batch seq vocab"], tokens: Int[Array, "batch seq"]
    ) -> Float[Array, " batch"]:
        w = _seen_before(tokens).astype(jnp.float32)
        hit = (jnp.argmax(logits[:, :-1], axis=-1) == tokens[:, 1:]).astype(jnp.float32)
        return (hit * w).sum(-1) / jnp.maximum(w.sum(-1), 1.0)


@dataclass(frozen=True)
class _InductionSampler:
    vocab_size: int
    min_segment: int
    max_segment: int

    def __call__(self, key: jax.Array, batch_size: int) -> jax.Array:
        k_perm, k_len = jax.random.split(key)
        # distinct tokens per segment (a random permutation's prefix), so induction is unambiguous
        noise = jax.random.uniform(k_perm, (batch_size, self.vocab_size - 1))
        seg = jnp.argsort(noise, axis=-1)[:, : self.max_segment] + 1
        length = jax.random.randint(k_len, (batch_size, 1), self.min_segment, self.max_segment + 1)
        idx = jnp.arange(2 * self.max_segment)[None, :] % length
        body = jnp.take_along_axis(seg, idx, axis=1).astype(jnp.int32)
        bos = jnp.full((batch_size, 1), BOS, jnp.int32)
        return jnp.concatenate([bos, body], axis=1)


def induction(*, vocab_size: int = 48, min_segment: int = 6, max_segment: int = 12) -> Task:
    """Repeated random segments: ``[BOS, s, s, s, ...]`` cut to ``2 * max_segment + 1`` tokens.

    Each sequence draws a segment ``s`` of distinct tokens (ids ``1..vocab_size-1``) whose length
    is uniform in ``[min_segment, max_segment]``, and repeats it until the sequence is full.
    Because the length varies, the distance back to the earlier copy varies: a fixed positional
    offset cannot solve it, an induction circuit can.

    Headline metric (:class:`RepeatLoss`): loss at the positions whose token occurred before
    (the repeated part). ``extra_metrics["first_half_loss"]`` is the loss at the other positions
    (first occurrences: near ``log(vocab_size - 1)`` for any model, those tokens are random),
    ``extra_metrics["repeat_accuracy"]`` the top-1 accuracy on the repeated part.

    Args:
        vocab_size: Number of token ids, including ``BOS = 0``.
        min_segment: Shortest segment.
        max_segment: Longest segment; sequences have ``2 * max_segment + 1`` tokens.
    """
    if not isinstance(min_segment, int) or min_segment < 2:
        raise ValueError(f"min_segment must be an int >= 2, got {min_segment!r}")
    if not isinstance(max_segment, int) or max_segment < min_segment:
        raise ValueError(
            f"max_segment must be an int >= min_segment = {min_segment}, got {max_segment!r}"
        )
    if not isinstance(vocab_size, int) or vocab_size < max_segment + 1:
        raise ValueError(
            f"vocab_size must be an int >= max_segment + 1 = {max_segment + 1} (distinct tokens "
            f"plus BOS), got {vocab_size!r}"
        )
    return Task(
        name="induction",
        description=(
            f"BOS + a random segment of {min_segment}-{max_segment} distinct tokens (vocab "
            f"{vocab_size}) repeated to {2 * max_segment + 1} tokens; the repeats are "
            "predictable only by induction."
        ),
        vocab_size=vocab_size,
        seq_len=2 * max_segment + 1,
        sampler=_InductionSampler(vocab_size, min_segment, max_segment),
        metric=RepeatLoss(True, "repeat_loss"),
        metric_label="loss on repeated tokens (nats, lower is better)",
        lower_is_better=True,
        extra_metrics={
            "first_half_loss": RepeatLoss(False, "first_half_loss"),
            "repeat_accuracy": RepeatAccuracy(),
        },
    )


# ---------------------------------------------------------------------------- modular addition


@dataclass(frozen=True)
class _ModAddSampler:
    p: int

    def __call__(self, key: jax.Array, batch_size: int) -> jax.Array:
        ab = jax.random.randint(key, (batch_size, 2), 0, self.p, dtype=jnp.int32)
        eq = jnp.full((batch_size, 1), self.p, jnp.int32)
        c = (ab[:, :1] + ab[:, 1:]) % self.p
        return jnp.concatenate([ab, eq, c], axis=1)


def modular_addition(*, p: int = 23) -> Task:
    """``[a, b, =, (a + b) mod p]`` with ``a, b`` uniform in ``[0, p)``; ``=`` is token ``p``.

    Headline metric: cross-entropy of the answer, predicted at the ``=`` position.
    ``extra_metrics["accuracy"]`` is its top-1 accuracy.

    Args:
        p: The modulus (vocabulary ``p + 1``).
    """
    if not isinstance(p, int) or p < 2:
        raise ValueError(f"p must be an int >= 2, got {p!r}")
    return Task(
        name="modular_addition",
        description=f"a + b mod {p}: tokens [a, b, =, answer]; the answer is read at '='.",
        vocab_size=p + 1,
        seq_len=4,
        sampler=_ModAddSampler(p),
        metric=PositionLoss(2, 3, "answer_loss"),
        metric_label="loss of the answer (nats, lower is better)",
        lower_is_better=True,
        extra_metrics={"accuracy": PositionAccuracy(2, 3, "accuracy")},
    )


TASKS: dict[str, Callable[..., Task]] = {
    "induction": induction,
    "modular_addition": modular_addition,
}
"""Task factories by name (the names stored in a shipped model's ``metrics.json``)."""
