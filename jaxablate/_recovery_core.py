"""The compiled core of :func:`jaxablate.recovery.recover`: K runs' training steps (``jax.vmap``
over runs inside a ``jax.lax.fori_loop`` over steps), their initial state and their evaluation.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jaxtyping import Array, Float, Int

from jaxablate.metrics import Metric, loss, per_example
from jaxablate.models.inputs import Ablation, Masks
from jaxablate.models.transformer import Transformer

# ------------------------------------------------------------------------------ compiled core
_ONE_HOT_MAX_VOCAB = 4096  # embed by one-hot matmul up to this vocabulary (see Transformer.embed)


def _logits(
    graphdef: nnx.GraphDef, train: Any, frozen: Any, tokens: jax.Array, masks: Masks,
    replacement: Ablation,
) -> Float[Array, "batch seq vocab"]:  # fmt: skip
    """Masked logits of one run (``replacement`` fitted already)."""
    model: Transformer = nnx.merge(graphdef, train, frozen)
    one_hot = model.config.vocab_size <= _ONE_HOT_MAX_VOCAB
    return model.forward(tokens, masks, replacement, one_hot_embed=one_hot)


@functools.partial(
    jax.jit,
    static_argnames=("graphdef", "tx", "batch_size"),
    donate_argnames=("train", "opt_state"),
)
def _train_steps(
    train: Any,
    opt_state: Any,
    frozen: Any,
    masks: Masks,
    allowed: Any,
    replacement: Ablation,
    tokens: Int[Array, "n_train seq"],
    key: jax.Array,
    start: Int[Array, ""],
    stop: Int[Array, ""],
    *,
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    batch_size: int,
) -> tuple[Any, Any]:
    """Steps ``start .. stop - 1`` of all K runs; step ``t`` samples with ``fold_in(key, t)``.

    Args:
        train: Trainable parameters, each leaf with a leading K axis (donated).
        opt_state: The K optimizer states (donated).
        frozen: The parameters no run trains (shared).
        masks: ``[K, ...]`` mask values of the runs.
        allowed: Like ``train``: True where a parameter may move.
        replacement: Fitted replacement, shared by every example.
        tokens: Sequences to draw minibatches from.
        key: Sampling key.
        start: First step.
        stop: One past the last step.
        graphdef: The model's graph definition.
        tx: The optimizer.
        batch_size: Sequences per step.

    Returns:
        ``(train, opt_state)`` after the steps.
    """

    def objective(tr: Any, m: Masks, batch: jax.Array) -> jax.Array:
        return loss(_logits(graphdef, tr, frozen, batch, m, replacement), batch).mean()

    def one(tr: Any, state: Any, m: Masks, ok: Any, batch: jax.Array) -> tuple[Any, Any]:
        grads = jax.grad(objective)(tr, m, batch)
        grads = jax.tree.map(lambda g, a: jnp.where(a, g, jnp.zeros_like(g)), grads, ok)
        updates, state = tx.update(grads, state, tr)
        tr = jax.tree.map(lambda p, u, a: jnp.where(a, (p + u).astype(p.dtype), p), tr, updates, ok)
        return tr, state

    def body(t: jax.Array, carry: tuple[Any, Any]) -> tuple[Any, Any]:
        idx = jax.random.randint(jax.random.fold_in(key, t), (batch_size,), 0, tokens.shape[0])
        batch = tokens[idx]
        return jax.vmap(one, in_axes=(0, 0, 0, 0, None))(*carry, masks, allowed, batch)

    return jax.lax.fori_loop(start, stop, body, (train, opt_state))


@functools.partial(jax.jit, static_argnames=("n_runs", "tx"))
def _init_runs(train: Any, *, n_runs: int, tx: optax.GradientTransformation) -> tuple[Any, Any]:
    """K copies of the trainable parameters and K fresh optimizer states."""
    train_k = jax.tree.map(lambda x: jnp.broadcast_to(x, (n_runs, *x.shape)), train)
    return train_k, jax.vmap(tx.init)(train_k)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _eval_runs(
    train: Any,
    frozen: Any,
    masks: Masks,
    replacement: Ablation,
    tokens: Int[Array, "batch seq"],
    metric: Metric,
    *,
    graphdef: nnx.GraphDef,
) -> Float[Array, " n_runs"]:
    """The mean ``metric`` of every run on ``tokens``."""

    def one(tr: Any, m: Masks) -> jax.Array:
        logits = _logits(graphdef, tr, frozen, tokens, m, replacement)
        return per_example(metric, logits, tokens).mean()

    return jax.vmap(one)(train, masks)
