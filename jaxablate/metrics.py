"""Metrics: functions ``(logits [batch, seq, vocab], tokens [batch, seq]) -> [batch]``.

Evaluation averages a metric over the batch. A :class:`Metric` carries its arrays (e.g. the clean
model's log-probabilities) as pytree data, so re-creating a metric with new arrays of the same
shapes does not recompile an evaluation. Plain functions with the same signature work too.

What a metric reads, it declares, and the evaluator computes nothing else:

- ``Metric.positions``: the positions whose logits it reads (ints, negative ones counting back
  from each prompt's own end, ``"last"``, or a named position of :class:`jaxablate.Prompts`).
  Its function then receives the logits of those positions alone, ``[batch, k, ...]``, each
  example at its own positions, and :func:`jaxablate.evaluate` skips work no read position
  depends on (positions after the last one read, and the last layer's queries, MLP and
  unembedding at every other position).
- ``Metric.columns``: the vocabulary ids whose logits it reads (a logit difference reads two per
  example). Its function then receives logits over those columns alone (``[..., k]``, in the
  order of ``columns``), and the evaluator computes only a ``[d_model, k]`` slice of the
  unembedding. Metrics that need the whole distribution (loss, KL, log-probabilities) leave it
  ``None``.
- ``Metric.pads``: the function skips pad positions, which it receives as token
  :data:`~jaxablate._prompts.PAD` (-1) in ``tokens``. Only such metrics read every position of
  padded :class:`jaxablate.Prompts`; others are refused there rather than read a pad.
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

from jaxablate._checks import is_tracer
from jaxablate._prompts import PAD, Prompts
from jaxablate.models.config import ModelConfig
from jaxablate.models.inputs import check_tokens, take_positions
from jaxablate.models.transformer import Transformer

#: What a metric reads at each example: an int (negative: from the prompt's end), ``"last"``,
#: or a named position of the prompts.
Position = int | str


def _check_position(spec: object, where: str) -> Position:
    if isinstance(spec, str) and spec:
        return spec
    if isinstance(spec, int | np.integer) and not isinstance(spec, bool):
        return int(spec)
    raise ValueError(f"{where}: a position must be an int, 'last' or a name, got {spec!r}")


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["data", "columns"],
    meta_fields=["fn", "name", "positions", "pads", "check"],
)
@dataclass(frozen=True)
class Metric:
    """A metric with a static function and array data.

    Attributes:
        data: Arrays the metric needs (a pytree), passed as ``fn(logits, tokens, data)``.
        fn: The metric's function (hashable; part of the compilation cache key).
        name: Recorded in sweep manifests and reports.
        positions: ``None``: ``fn`` reads the logits of every position. A tuple of
            :data:`Position` specs: ``fn`` reads only these and receives the logits there
            (``[batch, len(positions), ...]``, in this order, each example at its own
            positions); the tokens are always passed whole.
        columns: ``None``: ``fn`` receives logits over the whole vocabulary. An int32 ``[k]``
            array of vocabulary ids: ``fn`` receives logits over these alone (last axis ``k``).
        pads: ``fn`` skips positions whose token is :data:`~jaxablate._prompts.PAD`, so it may
            read every position of padded prompts.
        check: ``check(data, cfg, batch, lengths) -> None`` raising ``ValueError`` when the
            metric's data do not fit a model and batch (answer ids outside the vocabulary,
            per-example arrays of another length; ``lengths``: the prompts' lengths or
            ``None``); run before every evaluation.
    """

    data: Any
    fn: Callable[..., jax.Array] = field()
    name: str = field(default="metric")
    positions: tuple[Position, ...] | None = field(default=None)
    columns: Int[Array, " k"] | None = field(default=None)
    pads: bool = field(default=False)
    check: Callable[..., None] | None = field(default=None)

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise ValueError(
                f"Metric.fn must be callable fn(logits, tokens, data) -> [batch], got {self.fn!r}"
            )
        if self.positions is None:
            return
        p = self.positions
        if not isinstance(p, tuple) or not p:
            raise ValueError(
                f"metric {self.name!r}: positions must be None or a non-empty tuple of ints or "
                f"position names, got {p!r}"
            )
        specs = tuple(_check_position(i, f"metric {self.name!r}") for i in p)
        object.__setattr__(self, "positions", specs)

    def queries(self, seq: int, prompts: Prompts | None = None) -> np.ndarray | None:
        """The positions read: ``None`` (all), ``[k]`` shared by every example, or
        ``[batch, k]`` when examples differ (prompts of different lengths, named positions).

        Raises:
            ValueError: a position outside a sequence (or prompt), or a name the prompts lack.
        """
        if self.positions is None:
            return None
        if prompts is None:
            return _shared_queries(self, seq)
        cols = []
        for spec in self.positions:
            try:
                cols.append(prompts.position(spec))
            except ValueError as err:
                raise ValueError(f"metric {self.name!r}: {err}") from None
        per_example = np.stack(cols, axis=1).astype(np.int64)
        if (per_example == per_example[:1]).all():
            return per_example[0]
        return per_example

    def query_positions(self, seq: int) -> np.ndarray | None:
        """The positions read in sequences of ``seq`` tokens (no prompts), ``[k]``."""
        return self.queries(seq)

    def validate(self, cfg: ModelConfig, batch: int, lengths: np.ndarray | None = None) -> None:
        """Raise ``ValueError`` unless the metric's data fit ``cfg`` and ``batch`` examples
        (of ``lengths`` real tokens, for prompts)."""
        if self.columns is not None:
            _check_ids(f"metric {self.name!r} columns", np.asarray(self.columns), cfg)
        if self.check is not None:
            self.check(self.data, cfg, batch, lengths)

    def __call__(
        self, logits: Float[Array, "batch seq vocab"], tokens: Int[Array, "batch seq"]
    ) -> Float[Array, " batch"]:
        return score(self, logits, tokens, self.queries(logits.shape[1]))

    def at(
        self, logits: Float[Array, "batch n_positions k"], tokens: Int[Array, "batch seq"]
    ) -> Float[Array, " batch"]:
        """The metric from logits already taken at :attr:`positions` and :attr:`columns`."""
        return self.fn(logits, tokens, self.data)


def _shared_queries(metric: Metric, seq: int) -> np.ndarray:
    out = []
    assert metric.positions is not None
    for p in metric.positions:
        if p == "last":
            out.append(seq - 1)
        elif isinstance(p, str):
            raise ValueError(
                f"metric {metric.name!r} reads the named position {p!r}: evaluate it on "
                "ja.Prompts that name it (Prompts.positions), not on a token array"
            )
        elif not -seq <= p < seq:
            raise ValueError(
                f"metric {metric.name!r} reads positions {list(metric.positions)}, but {p} lies "
                f"outside sequences of {seq} tokens"
            )
        else:
            out.append(p % seq)
    return np.asarray(out, np.int64)


def score(
    metric: Metric,
    logits: Float[Array, "batch seq vocab"],
    tokens: Int[Array, "batch seq"],
    queries: np.ndarray | None,
    *,
    taken: bool = False,
) -> Float[Array, " batch"]:
    """The metric as float32 ``[batch]``, from full logits (the slow twin of the evaluator's
    pruned path) or, with ``taken``, from logits already at ``queries`` and ``columns``.

    Raises:
        ValueError: (at trace time) the metric returned another shape.
    """
    if not taken:
        logits = take_positions(logits, queries)
        if metric.columns is not None:
            logits = logits[..., metric.columns]
    out = metric.at(logits, tokens)
    if out.shape != (tokens.shape[0],):
        raise ValueError(
            f"metric {metric.name!r} must return shape [batch]=({tokens.shape[0]},), "
            f"got {out.shape}"
        )
    return out.astype(jnp.float32)


def as_metric(metric: Callable[..., jax.Array]) -> Metric:
    """Wrap a plain ``(logits, tokens) -> [batch]`` function as a :class:`Metric`.

    A callable that also has ``positions`` (a tuple) and ``at(logits_at, tokens)`` (the metric
    from ``logits[:, positions]``) becomes a metric with those positions.
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


def _check_ids(what: str, ids: np.ndarray, cfg: ModelConfig) -> None:
    if ids.size and (ids.min() < 0 or ids.max() >= cfg.vocab_size):
        raise ValueError(
            f"{what} must be token ids in [0, {cfg.vocab_size}) (the model's vocab_size), got "
            f"values in [{ids.min()}, {ids.max()}]"
        )


def _answer_ids(name: str, value: object) -> np.ndarray:
    """An int or a 1-D int array of token ids, checked (no floats, bools or negatives)."""
    if is_tracer(value):
        raise ValueError(f"{name} must be concrete token ids, not traced values")
    arr = np.asarray(value)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"{name} must be an int token id or a 1-D [batch] int array, got {value!r}"
        )
    if arr.ndim > 1 or arr.size == 0:
        raise ValueError(
            f"{name} must be an int or a non-empty 1-D [batch] array, got shape {arr.shape}"
        )
    if arr.min() < 0:
        raise ValueError(f"{name} must be non-negative token ids, got {int(arr.min())}")
    return arr.astype(np.int32)


@dataclass(frozen=True)
class _AnswerCheck:
    """Checks per-example answer data against the batch (and, with ``ids``, the vocabulary)."""

    name: str
    ids: bool

    def __call__(self, data: Any, cfg: ModelConfig, batch: int, lengths: Any = None) -> None:
        for leaf in jax.tree.leaves(data):
            arr = np.asarray(leaf)
            if arr.ndim == 1 and arr.shape[0] != batch:
                raise ValueError(
                    f"metric {self.name!r} holds {arr.shape[0]} per-example answers, but the "
                    f"batch has {batch} examples; give one answer per example (or one int for all)"
                )
            if self.ids:
                _check_ids(f"metric {self.name!r} answers", arr, cfg)


@dataclass(frozen=True)
class _NextTokenCheck:
    """All-position next-token metrics need two real tokens in every prompt."""

    name: str

    def __call__(self, data: Any, cfg: ModelConfig, batch: int, lengths: Any = None) -> None:
        if lengths is not None and int(np.min(lengths)) < 2:
            i = int(np.argmin(lengths))
            raise ValueError(
                f"metric {self.name!r} scores next-token predictions, but prompt {i} has "
                f"{int(lengths[i])} token (need at least 2)"
            )


def _next_token(tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Next-token targets (pads replaced by 0) and which of them are real."""
    targets = tokens[:, 1:]
    valid = targets != PAD
    return jnp.where(valid, targets, 0), valid


def _masked_mean(x: jax.Array, valid: jax.Array) -> jax.Array:
    w = valid.astype(jnp.float32)
    return (x * w).sum(-1) / jnp.maximum(w.sum(-1), 1.0)


def _loss(logits: jax.Array, tokens: jax.Array, data: None) -> jax.Array:
    targets, valid = _next_token(tokens)
    return _masked_mean(token_cross_entropy(logits[:, :-1], targets), valid)


def _accuracy(logits: jax.Array, tokens: jax.Array, data: None) -> jax.Array:
    targets, valid = _next_token(tokens)
    hit = (jnp.argmax(logits[:, :-1], axis=-1) == targets).astype(jnp.float32)
    return _masked_mean(hit, valid)


#: Mean next-token cross-entropy of each example, over its real positions (nats; lower is
#: better). Call it as ``loss(logits, tokens)``.
loss = Metric(data=None, fn=_loss, name="loss", pads=True, check=_NextTokenCheck("loss"))

#: Fraction of each example's real positions whose next token is the argmax prediction (higher
#: is better). Call it as ``accuracy(logits, tokens)``.
accuracy = Metric(
    data=None, fn=_accuracy, name="accuracy", pads=True, check=_NextTokenCheck("accuracy")
)


def _pick(values: jax.Array, index: jax.Array) -> jax.Array:
    """``values[b, index[b]]`` for ``values [batch, k]`` and an index that is a scalar or
    ``[batch]``."""
    index = jnp.broadcast_to(index, values.shape[:1])
    return jnp.take_along_axis(values, index[:, None], axis=1)[:, 0]


def _logit_diff(logits: jax.Array, tokens: jax.Array, data: tuple) -> jax.Array:
    correct, wrong = data  # indices into the metric's columns
    at = logits[:, 0].astype(jnp.float32)  # [batch, columns] at the one position read
    return _pick(at, correct) - _pick(at, wrong)


def _answer_pair(name: str, correct: object, wrong: object) -> tuple[np.ndarray, np.ndarray]:
    """Checked ``correct`` and ``wrong`` ids; per-example arrays must have equal lengths."""
    c = _answer_ids(f"{name} correct", correct)
    w = _answer_ids(f"{name} wrong", wrong)
    if c.ndim == w.ndim == 1 and c.shape != w.shape:
        raise ValueError(
            f"{name} correct and wrong must have the same length (one pair per example), got "
            f"{c.shape[0]} and {w.shape[0]}"
        )
    return c, w


def _columns(*ids: np.ndarray) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """Sorted distinct ids (the columns to compute) and each input as indices into them."""
    cols = np.unique(np.concatenate([np.atleast_1d(i) for i in ids]))
    return jnp.asarray(cols, jnp.int32), tuple(
        jnp.asarray(np.searchsorted(cols, i), jnp.int32) for i in ids
    )


def logit_diff(
    correct: int | Int[Array, " batch"],
    wrong: int | Int[Array, " batch"],
    *,
    position: Position = "last",
) -> Metric:
    """Logit of the correct token minus the wrong one at ``position`` (higher is better).

    Only the answers' logits are computed (:attr:`Metric.columns`).

    Args:
        correct: Correct token id, one for all examples or one per example (``Prompts.correct``).
        wrong: Competing token id, likewise (``Prompts.wrong``).
        position: Which position to read: ``"last"`` (each prompt's own last token; the
            default), an int (negative: counted back from each prompt's end), or a named
            position of the prompts.
    """
    c, w = _answer_pair("logit_diff", correct, wrong)
    cols, (ci, wi) = _columns(c, w)
    return Metric(
        data=(ci, wi),
        fn=_logit_diff,
        name="logit_diff",
        positions=(_check_position(position, "logit_diff"),),
        columns=cols,
        check=_AnswerCheck("logit_diff", ids=False),
    )


def _logprob(logits: jax.Array, tokens: jax.Array, answer: jax.Array) -> jax.Array:
    return _pick(_log_softmax(logits[:, 0]), answer)


def _prob(logits: jax.Array, tokens: jax.Array, answer: jax.Array) -> jax.Array:
    return jnp.exp(_logprob(logits, tokens, answer))


def _argmax_hit(logits: jax.Array, tokens: jax.Array, answer: jax.Array) -> jax.Array:
    top = jnp.argmax(logits[:, 0], axis=-1)
    return (top == jnp.broadcast_to(answer, top.shape)).astype(jnp.float32)


def _pair_hit(logits: jax.Array, tokens: jax.Array, data: tuple) -> jax.Array:
    return (_logit_diff(logits, tokens, data) > 0).astype(jnp.float32)


def _answer_metric(fn: Callable[..., jax.Array], name: str, answer: object, position: object):
    ids = _answer_ids(f"{name} answer", answer)
    return Metric(
        data=jnp.asarray(ids),
        fn=fn,
        name=name,
        positions=(_check_position(position, name),),
        check=_AnswerCheck(name, ids=True),
    )


def logprob(answer: int | Int[Array, " batch"], *, position: Position = "last") -> Metric:
    """Log-probability (nats) of the answer token at ``position`` (higher is better).

    Args:
        answer: Token id, one for all examples or one per example (``Prompts.correct``).
        position: As in :func:`logit_diff`.
    """
    return _answer_metric(_logprob, "logprob", answer, position)


def prob(answer: int | Int[Array, " batch"], *, position: Position = "last") -> Metric:
    """Probability of the answer token at ``position`` (higher is better); see :func:`logprob`."""
    return _answer_metric(_prob, "prob", answer, position)


def answer_accuracy(
    correct: int | Int[Array, " batch"],
    wrong: int | Int[Array, " batch"] | None = None,
    *,
    position: Position = "last",
) -> Metric:
    """1 where the model prefers the correct answer at ``position``, else 0 (higher is better).

    With ``wrong``: the correct token's logit beats the wrong one's (only their logits are
    computed). Without: the correct token is the argmax over the whole vocabulary.
    """
    if wrong is None:
        return _answer_metric(_argmax_hit, "answer_accuracy", correct, position)
    c, w = _answer_pair("answer_accuracy", correct, wrong)
    cols, (ci, wi) = _columns(c, w)
    return Metric(
        data=(ci, wi),
        fn=_pair_hit,
        name="answer_accuracy",
        positions=(_check_position(position, "answer_accuracy"),),
        columns=cols,
        check=_AnswerCheck("answer_accuracy", ids=False),
    )


def _kl(logits: jax.Array, tokens: jax.Array, clean_logp: jax.Array) -> jax.Array:
    if clean_logp.shape != logits.shape:
        raise ValueError(
            f"kl_to_clean was built for logits of shape {clean_logp.shape}, got {logits.shape}; "
            "build it from the same tokens you evaluate"
        )
    logp = _log_softmax(logits)
    kl = (jnp.exp(clean_logp) * (clean_logp - logp)).sum(-1)
    return _masked_mean(kl, tokens != PAD)


def kl_to_clean(model: Transformer, tokens: "Int[Array, 'batch seq'] | Prompts") -> Metric:
    """KL divergence from the clean model's next-token distribution, mean over real positions.

    ``KL(clean || ablated)`` per example, in nats (lower is better; 0 for the clean model).
    Evaluate it on the same ``tokens`` (or :class:`~jaxablate.Prompts`) it was built from.
    """
    if not isinstance(model, Transformer):
        raise ValueError(f"model must be a ja.Transformer, got {type(model).__name__}")
    ids = tokens.tokens if isinstance(tokens, Prompts) else tokens
    checked = check_tokens(model.config, ids)
    graphdef, state = nnx.split(model)
    clean = _clean_logp(graphdef, state, checked)
    return Metric(data=clean, fn=_kl, name="kl_to_clean", pads=True)


@functools.partial(jax.jit, static_argnums=0)
def _clean_logp(graphdef: nnx.GraphDef, state: nnx.State, tokens: jax.Array) -> jax.Array:
    return _log_softmax(nnx.merge(graphdef, state)(tokens))


def per_example(
    metric: Metric,
    logits: Float[Array, "batch seq vocab"],
    tokens: Int[Array, "batch seq"],
) -> Float[Array, " batch"]:
    """``metric(logits, tokens)`` from full logits, as float32 checked to be ``[batch]``.

    Raises:
        ValueError: (at trace time) the metric returned another shape.
    """
    return score(metric, logits, tokens, metric.queries(logits.shape[1]))
