"""Optimal ablation: learned constant replacements (Li & Janson 2024, "Optimal ablation for
interpretability").

A removed component's output is replaced by the constant that minimises the loss when it is
removed, instead of zero or its mean. Constants are learned with optax, the model's weights
frozen, from random subsets of removed components plus every single removal at each step, and
start at the component's mean output (mean ablation) so they can only improve on it: for every
component the constant returned is the one (along the training trajectory, including the start)
with the lowest loss when that component alone is removed.
"""

import functools
import numbers
from collections.abc import Callable
from typing import cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jaxtyping import Array, Bool, Float, Int

from jaxablate._checks import check_key, check_optimizer, non_negative_int, positive_int
from jaxablate._replacements import mean as mean_ablation
from jaxablate.components import Components, check_components, check_model
from jaxablate.metrics import Metric, as_metric, loss, per_example
from jaxablate.models.config import ModelConfig
from jaxablate.models.inputs import Ablation, check_tokens
from jaxablate.models.transformer import Transformer

__all__ = ["DEFAULT_OPTIMIZER", "optimal_ablation"]

#: Default optimizer of :func:`optimal_ablation` (one object, so calls share the compiled program).
DEFAULT_OPTIMIZER = optax.adam(0.01)

#: The trained constants: ``z [layer, head, d_head]``, ``attn`` and ``mlp [layer, d_model]``.
Params = dict[str, Float[Array, "..."]]

#: Which parameter array holds the constants of each component kind.
_PARAM = {"head": "z", "attn": "attn", "mlp": "mlp"}


def _index(comps: Components) -> dict[str, tuple[np.ndarray, ...]]:
    """Static positions of each component's constant: ``kind -> (columns, layers[, heads])``."""
    out = {}
    for kind in _PARAM:
        cols = np.array([i for i, c in enumerate(comps) if c.kind == kind], dtype=np.int64)
        layers = np.array([comps[int(i)].layer for i in cols], dtype=np.int64)
        if kind == "head":
            heads = np.array([comps[int(i)].head for i in cols], dtype=np.int64)
            out[kind] = (cols, layers, heads)
        else:
            out[kind] = (cols, layers)
    return out


def _replacement(params: Params) -> Ablation:
    """The constants as an :class:`Ablation`, broadcast over examples and positions."""
    return Ablation(
        z=params["z"][:, None, None],
        attn=params["attn"][:, None, None],
        mlp=params["mlp"][:, None, None],
        kind="optimal",
    )


def _keep_best(
    best: Params, current: Params, improved: Bool[Array, " n_players"], comps: Components
) -> Params:
    """``best`` with the constants of the components flagged in ``improved`` from ``current``."""
    out = dict(best)
    for kind, (cols, *where) in _index(comps).items():
        if cols.size == 0:
            continue
        name, at = _PARAM[kind], tuple(where)
        take = improved[cols][:, None]
        out[name] = best[name].at[at].set(jnp.where(take, current[name][at], best[name][at]))
    return out


@functools.partial(
    jax.jit,
    static_argnames=("graphdef", "comps", "optimizer", "random_subsets", "single_removals"),
)
def _train(
    state: nnx.State,
    tokens: Int[Array, "batch seq"],
    metric: Metric,
    params0: Params,
    keys: jax.Array,
    removal_prob: Float[Array, ""],
    *,
    graphdef: nnx.GraphDef,
    comps: Components,
    optimizer: optax.GradientTransformation,
    random_subsets: int,
    single_removals: bool,
) -> tuple[Params, Float[Array, " n_players"], Float[Array, " steps"]]:
    """Training scan; returns the best constants, their single-removal losses, loss history."""
    model = nnx.merge(graphdef, state)
    n = len(comps)
    singles = 1.0 - jnp.eye(n, dtype=jnp.float32)

    def values(params: Params, rows: jax.Array) -> jax.Array:
        replacement = _replacement(params)

        def one(row: jax.Array) -> jax.Array:
            logits = model.forward(tokens, comps.masks_unchecked(row), replacement)
            return per_example(metric, logits, tokens).mean()

        return jax.vmap(one)(rows)

    def objective(params: Params, rows: jax.Array) -> tuple[jax.Array, jax.Array]:
        v = values(params, rows)
        return v.mean(), v[:n]

    grad_fn = jax.value_and_grad(objective, has_aux=True)

    def keep_best(best: Params, best_loss: jax.Array, params: Params, single: jax.Array):
        improved = single < best_loss
        return _keep_best(best, params, improved, comps), jnp.where(improved, single, best_loss)

    def body(carry, key):
        params, opt_state, best, best_loss = carry
        rows = jax.random.bernoulli(key, 1.0 - removal_prob, (random_subsets, n))
        rows = rows.astype(jnp.float32)
        if single_removals:
            rows = jnp.concatenate([singles, rows], axis=0)
        (total, single), grad = grad_fn(params, rows)
        if single_removals:
            best, best_loss = keep_best(best, best_loss, params, single)
        updates, opt_state = optimizer.update(grad, opt_state, params)
        params = cast(Params, optax.apply_updates(params, updates))
        return (params, opt_state, best, best_loss), total

    start = values(params0, singles)
    init = (params0, optimizer.init(params0), params0, start)
    (params, _, best, best_loss), history = jax.lax.scan(body, init, keys)
    best, best_loss = keep_best(best, best_loss, params, values(params, singles))
    return best, best_loss, history


def _check_sampling(random_subsets: object, removal_prob: object, single_removals: object) -> int:
    """``random_subsets`` as an int once the three sampling options are checked together."""
    subsets = non_negative_int("random_subsets", random_subsets)
    if not isinstance(single_removals, bool):
        raise ValueError(f"single_removals must be a bool, got {single_removals!r}")
    if not single_removals and subsets == 0:
        raise ValueError("with single_removals=False, random_subsets must be >= 1 (got 0)")
    if not (
        isinstance(removal_prob, numbers.Real)
        and not isinstance(removal_prob, bool)
        and 0.0 < float(removal_prob) <= 1.0
    ):
        raise ValueError(f"removal_prob must be a number in (0, 1], got {removal_prob!r}")
    return subsets


def _mean_constants(model: Transformer, tokens: jax.Array) -> Params:
    """The starting constants: every component's mean output over ``tokens`` (float32)."""
    cfg = model.config
    mean = mean_ablation(model, tokens)
    return {
        "z": jnp.asarray(mean.z, jnp.float32)[:, 0, 0],
        "attn": jnp.asarray(mean.attn, jnp.float32)[:, 0, 0],
        "mlp": (
            jnp.zeros((cfg.n_layers, cfg.d_model), jnp.float32)
            if mean.mlp is None
            else jnp.asarray(mean.mlp, jnp.float32)[:, 0, 0]
        ),
    }


def _as_ablation(
    cfg: ModelConfig, comps: Components, best: Params, best_loss: jax.Array
) -> Ablation:
    """The trained constants in the model's dtype, after checking their losses are finite."""
    bad = np.flatnonzero(~np.isfinite(np.asarray(best_loss)))
    if bad.size:
        raise ValueError(
            "optimal ablation: the metric is not finite even at mean ablation for components "
            f"{[comps.names[i] for i in bad]}"
        )
    dtype = jnp.dtype(cfg.dtype)
    out = _replacement({k: v.astype(dtype) for k, v in best.items()})
    if cfg.attn_only:
        return Ablation(z=out.z, attn=out.attn, mlp=None, kind="optimal")
    return out


def optimal_ablation(
    model: Transformer,
    comps: Components,
    tokens: Int[Array, "batch seq"],
    *,
    steps: int,
    key: jax.Array,
    optimizer: optax.GradientTransformation | None = None,
    metric: Callable[..., jax.Array] | None = None,
    random_subsets: int = 8,
    removal_prob: float = 0.5,
    single_removals: bool = True,
) -> Ablation:
    """Constant replacements that minimise the loss when components are removed.

    Each component of ``comps`` gets one constant, broadcast over examples and positions: a
    ``[d_head]`` vector for a head (replacing its ``z``), a ``[d_model]`` vector for an
    attention or MLP block. Every step evaluates ``random_subsets`` random subsets (each
    component removed with probability ``removal_prob``) plus, with ``single_removals``, all
    ``n`` single removals, and takes an optimizer step on their mean loss: a step costs
    ``random_subsets (+ n)`` forward and backward passes over ``tokens``. Constants start at the
    mean over ``tokens`` (``ja.ablation.mean(model, tokens)``); for each component the constant
    kept is the one with the lowest single-removal loss among those seen (every step with
    ``single_removals``, else only the start and the end), so its single-removal loss on
    ``tokens`` is never above mean ablation's. Components not in ``comps`` keep their mean.

    Args:
        model: The model (weights frozen).
        comps: The components that get learned constants.
        tokens: ``int [batch, seq]`` training sequences; every step uses the whole batch.
        steps: Optimisation steps (``>= 1``).
        key: ``jax.random`` key for the random subsets.
        optimizer: optax optimizer over the constants (default ``optax.adam(0.01)``).
        metric: Loss-like metric to minimise, ``(logits, tokens) -> [batch]`` or a
            :class:`~jaxablate.metrics.Metric` (default :func:`jaxablate.metrics.loss`).
        random_subsets: Random removal subsets per step (``>= 0``; 0 trains on single removals).
        removal_prob: Probability that a component is removed in a random subset, in ``(0, 1]``.
        single_removals: Train on the ``n`` single removals too (switch off for large ``n``,
            where ``n`` extra passes per step cost too much; then ``random_subsets >= 1``).

    Returns:
        An :class:`~jaxablate.ablation.Ablation` of kind ``"optimal"`` with arrays
        ``z [layer, 1, 1, head, d_head]``, ``attn``/``mlp [layer, 1, 1, d_model]`` (``mlp`` is
        ``None`` for attention-only models), usable wherever ``zero``/``mean``/``resample`` are.

    Raises:
        ValueError: ``steps < 1``, a bad key, optimizer, ``random_subsets`` or ``removal_prob``,
            components / tokens that do not fit the model, or a metric that is not finite.
    """
    check_model(model)
    steps = positive_int("steps", steps)
    key = check_key(key)
    optimizer = check_optimizer(optimizer, DEFAULT_OPTIMIZER)
    subsets = _check_sampling(random_subsets, removal_prob, single_removals)
    check_components(model.config, comps, where="ablation.optimal")
    tokens = check_tokens(model.config, tokens)
    metric_obj = as_metric(loss if metric is None else metric)
    graphdef, state = nnx.split(model)
    best, best_loss, _ = _train(
        state,
        tokens,
        metric_obj,
        _mean_constants(model, tokens),
        jax.random.split(key, steps),
        jnp.float32(removal_prob),
        graphdef=graphdef,
        comps=comps,
        optimizer=optimizer,
        random_subsets=subsets,
        single_removals=single_removals,
    )
    return _as_ablation(model.config, comps, best, best_loss)
