"""Evaluate a metric for many mask rows at once: one compiled, vmapped program per chunk."""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Bool, Float, Int

from jaxablate.ablation import Ablation, zero
from jaxablate.components import Components, Masks, check_rows
from jaxablate.metrics import Metric, as_metric, loss
from jaxablate.models.transformer import Transformer, check_tokens


def masked_forward(
    model: Transformer,
    comps: Components,
    tokens: Int[Array, "batch seq"],
    masks: Masks,
    replacement: Ablation,
) -> Float[Array, "batch seq vocab"]:
    """Logits with ``masks`` (no mask axis); layers before the first masked one run unmasked.

    ``replacement`` must already be fitted to ``tokens`` (:meth:`Ablation.fit`).
    """
    resid = model.embed(tokens)
    for layer in range(model.config.n_layers):
        resid = model.block(layer, resid, masks, replacement)
    return model.unembed(resid)


@functools.partial(jax.jit, static_argnames=("graphdef", "comps"))
def _eval_chunk(
    state: nnx.State,
    tokens: jax.Array,
    rows: jax.Array,
    replacement: Ablation,
    metric: Metric,
    *,
    graphdef: nnx.GraphDef,
    comps: Components,
) -> Float[Array, "n_masks batch"]:
    model = nnx.merge(graphdef, state)
    masks = comps.masks_unchecked(rows)

    def one(m: Masks) -> jax.Array:
        out = metric(masked_forward(model, comps, tokens, m, replacement), tokens)
        if out.shape != (tokens.shape[0],):
            raise ValueError(
                f"metric {metric.name!r} must return shape [batch]=({tokens.shape[0]},), "
                f"got {out.shape}"
            )
        return out.astype(jnp.float32)

    return jax.vmap(one)(masks)


def check_components(model: Transformer, comps: Components) -> None:
    """Raise unless ``comps`` were built for ``model``'s config."""
    if not isinstance(comps, Components):
        raise ValueError(f"comps must be ja.Components (ja.heads / ja.blocks), got {comps!r}")
    if comps.config != model.config:
        raise ValueError("comps were built for a different ModelConfig than the model's")


def evaluate(
    model: Transformer,
    comps: Components,
    rows: Bool[np.ndarray, "n_masks n_players"],
    tokens: Int[Array, "batch seq"],
    *,
    metric: Callable[..., jax.Array] = loss,
    ablation: Ablation | None = None,
    chunk_size: int | None = None,
    return_per_example: bool = False,
) -> np.ndarray:
    """The metric of the model with each row's components kept and the rest ablated.

    Each chunk of rows is one jitted program (``jax.vmap`` over the rows); the last chunk is
    padded to the chunk size so that nothing recompiles, and the padding is dropped.

    Args:
        model: The model (its weights are not changed).
        comps: The players; column ``i`` of ``rows`` is ``comps[i]``.
        rows: ``bool [M, n]`` (or 0/1 numbers): which components are kept in each row.
        tokens: ``int [batch, seq]`` inputs.
        metric: ``(logits, tokens) -> [batch]``, e.g. :func:`jaxablate.metrics.loss`.
        ablation: Replacement for removed components (default: zero ablation).
        chunk_size: Rows per compiled call (default: all rows in one call).
        return_per_example: Return ``[M, batch]`` instead of the batch mean ``[M]``.

    Returns:
        float32 numpy array ``[M]`` (or ``[M, batch]``).
    """
    check_components(model, comps)
    tokens = check_tokens(model.config, tokens)
    rows_arr = check_rows(rows, len(comps), binary=True)
    if rows_arr.ndim != 2:
        raise ValueError(f"rows must be 2-D [n_masks, {len(comps)}], got shape {rows_arr.shape}")
    n_rows = rows_arr.shape[0]
    if chunk_size is None:
        chunk_size = n_rows
    if not isinstance(chunk_size, int | np.integer) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    chunk_size = min(int(chunk_size), n_rows)
    replacement = (zero() if ablation is None else ablation).fit(
        model.config, batch=tokens.shape[0], seq=tokens.shape[1]
    )
    metric = as_metric(metric)
    graphdef, state = nnx.split(model)
    outputs = []
    for start in range(0, n_rows, chunk_size):
        chunk = rows_arr[start : start + chunk_size]
        n_real = chunk.shape[0]
        if n_real < chunk_size:
            chunk = np.concatenate(
                [chunk, np.ones((chunk_size - n_real, chunk.shape[1]), np.float32)]
            )
        out = _eval_chunk(
            state, tokens, jnp.asarray(chunk), replacement, metric, graphdef=graphdef, comps=comps
        )
        outputs.append(np.asarray(out)[:n_real])
    per_example = np.concatenate(outputs, axis=0)
    return per_example if return_per_example else per_example.mean(axis=1)
