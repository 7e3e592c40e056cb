"""Which parameters a recovery run trains, which ones its removed components own (and so never
move), and how much memory K runs need: the bookkeeping of :func:`jaxablate.recovery.recover`.

Ownership (see the :mod:`jaxablate.recovery` docstring for the rules) is per run: a head owns its
query slices and output-projection rows, a fully removed key/value group its key/value slices, a
removed block its layer's weights and norms.
"""

import fnmatch
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxablate.components import Components
from jaxablate.models.transformer import Transformer

DEFAULT_OPTIMIZER = optax.adamw(1e-3)  # one object, so that default calls share compilations


# ------------------------------------------------------------------------------ parameters
def _leaf_name(path: tuple[Any, ...]) -> str:
    parts = [getattr(p, "key", getattr(p, "name", p)) for p in path]
    if parts and parts[-1] == "value":
        parts = parts[:-1]
    return ".".join(str(p) for p in parts)


def trainable_filter(trainable: Any) -> Any:
    """The nnx filter of trainable parameters.

    Args:
        trainable: ``None`` (every parameter); a name pattern or a list of them (``fnmatch``
            globs over dotted names like ``"mlp.W_in"``; a pattern also selects everything
            under it, so ``"mlp"`` means ``mlp.*``); or any nnx filter (``nnx.PathContains``,
            a ``(path, value) -> bool`` callable, ...), intersected with ``nnx.Param``.
    """
    if trainable is None:
        return nnx.Param
    if isinstance(trainable, str) or (
        isinstance(trainable, list | tuple)
        and trainable
        and all(isinstance(t, str) for t in trainable)
    ):
        patterns = [trainable] if isinstance(trainable, str) else list(trainable)

        def by_name(path: tuple[Any, ...], value: Any) -> bool:
            name = ".".join(str(p) for p in path)
            return any(fnmatch.fnmatchcase(name, p) or name.startswith(p + ".") for p in patterns)

        return nnx.All(nnx.Param, by_name)
    return nnx.All(nnx.Param, trainable)


_QUERY_PARAMS = ("attn.W_Q", "attn.b_Q", "attn.W_O")
_KV_PARAMS = ("attn.W_K", "attn.W_V", "attn.b_K", "attn.b_V")
_ATTN_LAYER_PARAMS = ("ln1.w", "ln1.b", "attn.q_norm.w", "attn.k_norm.w")
_MLP_PARAMS = (
    "mlp.W_in", "mlp.b_in", "mlp.W_gate", "mlp.b_gate", "mlp.W_out", "mlp.b_out",
    "ln2.w", "ln2.b", "ln2_post.w", "ln2_post.b",
)  # fmt: skip


def _owned(comps: Components, row: np.ndarray, cfg: Any) -> dict[str, list[tuple[int, ...]]]:
    """Parameter slices owned by the components that ``row`` removes (the rules: the
    :mod:`jaxablate.recovery` docstring)."""
    out: dict[str, list[tuple[int, ...]]] = {}

    def add(names: Sequence[str], index: tuple[int, ...]) -> None:
        for name in names:
            out.setdefault(name, []).append(index)

    group = cfg.n_heads // cfg.kv_heads  # query heads sharing one key/value head
    removed_heads: dict[int, set[int]] = {}
    for c, kept in zip(comps, row, strict=True):
        if kept:
            continue
        if c.kind == "head" and c.head is not None:
            add(_QUERY_PARAMS, (c.layer, c.head))
            removed_heads.setdefault(c.layer, set()).add(c.head)
        elif c.kind == "attn":
            names = (*_QUERY_PARAMS, *_KV_PARAMS, *_ATTN_LAYER_PARAMS)
            add([*names, "attn.b_O", "ln1_post.w", "ln1_post.b"], (c.layer,))
        elif c.kind == "mlp":
            add(_MLP_PARAMS, (c.layer,))
    for layer, hs in removed_heads.items():
        for kv in range(cfg.kv_heads):
            if all(kv * group + h in hs for h in range(group)):
                add(_KV_PARAMS, (layer, kv))
        if len(hs) == cfg.n_heads:
            add(_ATTN_LAYER_PARAMS, (layer,))
    return out


def update_masks(
    comps: Components, rows: np.ndarray, names: Sequence[str], shapes: Sequence[tuple[int, ...]]
) -> list[np.ndarray]:
    """Per-run update masks ``bool [K, *shape]`` of the named trainable leaves (True = may move)."""
    K = rows.shape[0]
    masks = [np.ones((K, *shape), bool) for shape in shapes]
    position = {name: i for i, name in enumerate(names)}
    for k in range(K):
        for name, indices in _owned(comps, rows[k].astype(bool), comps.config).items():
            if name in position:
                for index in indices:
                    masks[position[name]][(k, *index)] = False
    return masks


# ------------------------------------------------------------------------------ memory
def _memory_parts(
    model: Transformer,
    *,
    batch_size: int,
    seq: int,
    eval_batch: int,
    eval_seq: int,
    trainable: Any,
    optimizer: optax.GradientTransformation | None,
) -> tuple[int, int]:
    """``(bytes per run, bytes shared once)`` of :func:`memory_estimate`."""
    cfg = model.config
    tx = DEFAULT_OPTIMIZER if optimizer is None else optimizer
    _, train, frozen = nnx.split(model, trainable_filter(trainable), ...)
    item = jnp.dtype(cfg.dtype).itemsize
    train_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(train))
    frozen_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(frozen))
    opt = jax.eval_shape(tx.init, train)
    opt_bytes = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(opt))
    D, H, E, F, V, L = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp, cfg.vocab_size, cfg.n_layers
    mlp = 0 if cfg.attn_only else 2 * F + 2 * D
    per_token = L * (6 * D + 4 * H * E + 2 * H * seq + mlp) + 3 * V
    train_act = batch_size * seq * per_token * max(item, 4)
    eval_per_token = 2 * V + 4 * D + 2 * H * eval_seq + (0 if cfg.attn_only else F)
    eval_act = eval_batch * eval_seq * eval_per_token * 4
    per_run = 4 * train_bytes + 2 * opt_bytes + max(train_act, eval_act)
    return int(per_run), int(train_bytes + frozen_bytes)


def memory_estimate(
    model: Transformer,
    *,
    n_runs: int,
    batch_size: int,
    seq: int,
    eval_batch: int,
    eval_seq: int,
    trainable: Any = None,
    optimizer: optax.GradientTransformation | None = None,
) -> int:
    """Estimated peak bytes of :func:`recover` with ``n_runs`` configurations.

    Per run: the trainable parameters, their gradients and updates and the optimizer state,
    twice over for the parameters and state (input and output of a compiled call), plus the
    larger of the training activations (forward and backward of ``batch_size x seq`` tokens:
    about ``6 d_model + 4 n_heads d_head + 2 n_heads seq + 2 d_mlp + 2 d_model`` values per
    token and layer plus ``3 vocab`` per token for the logits) and the evaluation activations
    (``eval_batch x eval_seq`` tokens, about ``2 vocab + 4 d_model + 2 n_heads eval_seq + d_mlp``
    per token). Shared once: all parameters. The estimate is linear in ``n_runs``.

    Args:
        model: The model :func:`recover` fine-tunes.
        n_runs: Number of configurations trained together.
        batch_size: Training sequences per step.
        seq: Length of the training sequences.
        eval_batch: Number of evaluation sequences.
        eval_seq: Length of the evaluation sequences.
        trainable: As in :func:`recover`.
        optimizer: As in :func:`recover` (default ``optax.adamw(1e-3)``).

    Returns:
        The estimate in bytes.
    """
    per_run, shared = _memory_parts(
        model, batch_size=batch_size, seq=seq, eval_batch=eval_batch, eval_seq=eval_seq,
        trainable=trainable, optimizer=optimizer,
    )  # fmt: skip
    return int(n_runs * per_run + shared)
