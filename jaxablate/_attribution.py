"""Attribution patching: first-order estimates of every leave-one-out effect in one backward pass.

A masked component's output is ``m * c + (1 - m) * r``, so the derivative of the metric ``M``
with respect to its mask at ``m = 1`` is ``<dM/d(output), c - r>``: gradient times (activation
minus replacement), summed over examples, positions and features. Removing component ``i``
moves ``m_i`` from 1 to 0, so to first order

    ``M(all kept) - M(i removed) ≈ dM/dm_i`` at all masks 1,

which is the estimate returned: the LOCO effect in the sign convention of
:func:`jaxablate.interactions.loco` (``v(N) - v(N \\ {i})``; see ``docs/conventions.md``). For a
loss-like metric a useful component has a negative effect. With zero ablation this is the mask
gradient of Michel et al. 2019 ("Are sixteen heads really better than one?"), whose head
importance is its absolute value; with mean or resample ablation it is attribution patching
(Nanda 2023; Syed et al. 2023).
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float, Int

from jaxablate._batch import QueryKey, batch_of, queries_of
from jaxablate._prompts import Prompts
from jaxablate.components import Components, check_components, check_model
from jaxablate.metrics import Metric, as_metric, loss, score
from jaxablate.models.inputs import Ablation, check_ablation
from jaxablate.models.transformer import Transformer

__all__ = ["attribution"]


@functools.partial(jax.jit, static_argnames=("graphdef", "comps", "queries"))
def _mask_grad(
    state: nnx.State,
    tokens: tuple[Int[Array, "batch seq"], Int[Array, "batch seq"]],
    replacement: Ablation,
    metric: Metric,
    *,
    graphdef: nnx.GraphDef,
    comps: Components,
    queries: QueryKey,
) -> tuple[Float[Array, ""], Float[Array, " n_players"]]:
    """Metric (batch mean) and its gradient w.r.t. the component masks, at all masks 1."""
    model = nnx.merge(graphdef, state)
    ids, metric_ids = tokens

    def value(rows: jax.Array) -> jax.Array:
        logits = model.forward(ids, comps.masks_unchecked(rows), replacement)
        return score(metric, logits, metric_ids, queries_of(queries)).mean()

    return jax.value_and_grad(value)(jnp.ones((len(comps),), jnp.float32))


def attribution(
    model: Transformer,
    comps: Components,
    tokens: Int[Array, "batch seq"] | Prompts,
    *,
    metric: Callable[..., jax.Array] = loss,
    ablation: Ablation | None = None,
) -> Float[np.ndarray, " n_players"]:
    """First-order estimate of each component's LOCO effect ``M(all) - M(all but i)``.

    One forward and one backward pass (a jitted ``jax.value_and_grad`` over the masks at all
    ones). The estimate is exact when the metric is linear in the mask; it says nothing for
    metrics that are stationary at the clean model: ``kl_to_clean`` has zero gradient there, so
    its attribution is 0 for every component (use ``loss`` or ``logit_diff`` instead).

    Args:
        model: The model.
        comps: The components; entry ``i`` of the result is ``comps[i]``.
        tokens: ``int [batch, seq]`` inputs, or :class:`~jaxablate.Prompts`.
        metric: ``(logits, tokens) -> [batch]``, averaged over the batch (default ``loss``).
        ablation: Replacement for removed components (default zero ablation).

    Returns:
        float32 numpy ``[n]``: ``dM/dm_i`` at all masks 1, which approximates
        ``jaxablate.interactions.loco(values)`` (same sign convention).

    Raises:
        ValueError: components, tokens or ablation that do not fit the model.
    """
    check_model(model)
    check_components(model.config, comps, where="attribution")
    metric_obj = as_metric(metric)
    batch = batch_of(model.config, tokens, metric_obj)
    replacement = check_ablation(ablation).fit(
        model.config, batch=batch.shape[0], seq=batch.shape[1]
    )
    graphdef, state = nnx.split(model)
    _, grad = _mask_grad(
        state,
        (batch.tokens, batch.metric_tokens),
        replacement,
        metric_obj,
        graphdef=graphdef,
        comps=comps,
        queries=batch.query_key,
    )
    return np.asarray(grad, np.float32)
