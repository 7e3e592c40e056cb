"""Replacements taken from the clean model's activations: mean and resample ablation.

(Zero ablation needs no model: :func:`jaxablate.models.inputs.zero`. The public face of all
builders is :mod:`jaxablate.ablation`.)
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Int

from jaxablate._checks import check_bool, positive_int
from jaxablate._prompts import Prompts
from jaxablate.components import check_model
from jaxablate.models.inputs import Ablation, check_tokens
from jaxablate.models.transformer import Transformer


@functools.partial(jax.jit, static_argnums=0)
def _activations(graphdef: nnx.GraphDef, state: nnx.State, tokens: jax.Array):
    return nnx.merge(graphdef, state).activations(tokens)


def _reference_tokens(
    model: Transformer, tokens: object, what: str
) -> tuple[jax.Array, np.ndarray | None]:
    """Checked ids and, for :class:`Prompts`, which positions are real (``[batch, seq]``)."""
    check_model(model)
    ids = tokens.tokens if isinstance(tokens, Prompts) else tokens
    try:
        checked = check_tokens(model.config, ids)
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from None
    return checked, (tokens.valid if isinstance(tokens, Prompts) else None)


def _weighted_sums(acts: tuple[jax.Array, ...], weight: np.ndarray, axes: tuple[int, ...]):
    """float64 sums of each ``[layer, b, s, ...]`` activation over ``axes``, weighting each
    position by ``weight [b, s]`` (0 at pads)."""
    out = []
    for a in acts:
        a64 = np.asarray(a, np.float64)
        w = weight.reshape(1, *weight.shape, *(1,) * (a64.ndim - 3))
        out.append((a64 * w).sum(axis=axes, keepdims=True))
    return out


def mean(
    model: Transformer,
    ref_tokens: Int[Array, "batch seq"] | Prompts,
    *,
    per_position: bool = False,
    batch_size: int = 64,
) -> Ablation:
    """Replace removed components by their mean output over a reference set (mean ablation).

    Args:
        model: The clean model whose activations are averaged.
        ref_tokens: Reference sequences, or :class:`~jaxablate.Prompts` (only real positions
            are averaged; pads never count).
        per_position: Average over examples only, keeping one mean per position (usable for
            tokens no longer than ``ref_tokens``; with prompts, position ``t`` averages the
            prompts longer than ``t``); else also over positions.
        batch_size: Reference sequences per forward pass (bounds memory).

    Returns:
        An :class:`Ablation` of kind ``"mean"``.
    """
    tokens, valid = _reference_tokens(model, ref_tokens, "mean ablation reference tokens")
    batch_size = positive_int("batch_size", batch_size)
    per_position = check_bool("per_position", per_position)
    weight = np.ones(tokens.shape, np.float64) if valid is None else valid.astype(np.float64)
    graphdef, state = nnx.split(model)
    axes = (1,) if per_position else (1, 2)
    sums: list[np.ndarray] = []
    for start in range(0, tokens.shape[0], batch_size):
        acts = _activations(graphdef, state, tokens[start : start + batch_size])
        part = _weighted_sums(acts, weight[start : start + batch_size], axes)
        sums = part if not sums else [s + p for s, p in zip(sums, part, strict=True)]
    count = weight.sum(axis=0) if per_position else weight.sum()
    count = np.reshape(count, (1, 1, -1) if per_position else (1, 1, 1))
    dtype = jnp.dtype(model.config.dtype)
    z, attn, mlp = (
        jnp.asarray(s / np.maximum(count, 1).reshape(count.shape + (1,) * (s.ndim - 3)), dtype)
        for s in sums
    )
    if model.config.attn_only:
        mlp = None
    return Ablation(z=z, attn=attn, mlp=mlp, kind="mean", prefix_positions=per_position)


def resample(model: Transformer, source_tokens: Int[Array, "batch seq"] | Prompts) -> Ablation:
    """Replace each removed component by its clean activation on a paired source input.

    Example ``i`` of the evaluated tokens takes the activations of ``source_tokens[i]`` at the
    same positions (resample / interchange ablation; with ``prompts.corrupted`` as the source,
    activation patching from the counterfactual prompts), so ``source_tokens`` must have the
    evaluated tokens' shape. Shuffle or draw the sources yourself to choose the pairing.
    """
    tokens, _ = _reference_tokens(model, source_tokens, "resample ablation source tokens")
    graphdef, state = nnx.split(model)
    acts = _activations(graphdef, state, tokens)
    mlp = None if model.config.attn_only else acts.mlp
    return Ablation(z=acts.z, attn=acts.attn, mlp=mlp, kind="resample")
