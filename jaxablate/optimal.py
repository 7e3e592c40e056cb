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

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jaxtyping import Array, Int

from jaxablate._replacements import mean as mean_ablation
from jaxablate.components import Components, check_components
from jaxablate.metrics import Metric, as_metric, loss, per_example
from jaxablate.models.inputs import Ablation, check_tokens
from jaxablate.models.transformer import Transformer

__all__ = [
    "DEFAULT_OPTIMIZER",
    "check_key",
    "check_optimizer",
    "check_steps",
    "metric_mean",
    "optimal_ablation",
]

#: Default optimizer of :func:`optimal_ablation` (one object, so calls share the compiled program).
DEFAULT_OPTIMIZER = optax.adam(0.01)


def positive_int(name: str, value: object) -> int:
    """``value`` as a positive int, else ``ValueError`` naming ``name``."""
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def check_steps(steps: object) -> int:
    """``steps`` as a positive int, else ``ValueError``."""
    return positive_int("steps", steps)


def check_key(key: object) -> None:
    """Raise ``ValueError`` unless ``key`` is a ``jax.random`` key (typed or raw uint32 [2])."""
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape == ():
            return
    elif isinstance(key, jax.Array | np.ndarray) and key.shape == (2,) and key.dtype == np.uint32:
        return
    raise ValueError(
        f"key must be a single jax.random key (jax.random.key(0) or jax.random.PRNGKey(0)), "
        f"got {key!r}"
    )


def check_optimizer(
    optimizer: object, default: optax.GradientTransformation
) -> optax.GradientTransformation:
    """``optimizer`` (or ``default`` for ``None``) if it is an optax gradient transformation."""
    if optimizer is None:
        return default
    if not (
        callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))
    ):
        raise ValueError(
            f"optimizer must be an optax.GradientTransformation (e.g. optax.adam(0.1)), "
            f"got {optimizer!r}"
        )
    try:
        hash(optimizer)
    except TypeError:
        raise ValueError("optimizer must be hashable (a plain optax transformation)") from None
    return optimizer


def _index(comps: Components) -> dict[str, tuple[np.ndarray, ...]]:
    """Static positions of each component's constant in the parameter arrays."""
    out = {}
    for kind in ("head", "attn", "mlp"):
        cols = np.array([i for i, c in enumerate(comps) if c.kind == kind], dtype=np.int64)
        layers = np.array([comps[int(i)].layer for i in cols], dtype=np.int64)
        heads = np.array(
            [comps[int(i)].head if kind == "head" else 0 for i in cols], dtype=np.int64
        )
        out[kind] = (cols, layers, heads)
    return out


def _replacement(params: dict[str, jax.Array]) -> Ablation:
    return Ablation(
        z=params["z"][:, None, None],
        attn=params["attn"][:, None, None],
        mlp=params["mlp"][:, None, None],
        kind="optimal",
    )


def _keep_best(
    best: dict[str, jax.Array],
    current: dict[str, jax.Array],
    improved: jax.Array,
    comps: Components,
) -> dict[str, jax.Array]:
    """``best`` with the constants of the components flagged in ``improved`` from ``current``."""
    out = dict(best)
    for kind, name in (("head", "z"), ("attn", "attn"), ("mlp", "mlp")):
        cols, layers, heads = _index(comps)[kind]
        if cols.size == 0:
            continue
        at = (layers, heads) if kind == "head" else (layers,)
        take = improved[cols][:, None]
        out[name] = best[name].at[at].set(jnp.where(take, current[name][at], best[name][at]))
    return out


def metric_mean(metric: Metric, logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """Batch mean of ``metric``; raises (at trace time) unless it returns one value per example."""
    return per_example(metric, logits, tokens).mean()


@functools.partial(
    jax.jit,
    static_argnames=("graphdef", "comps", "optimizer", "random_subsets", "single_removals"),
)
def _train(
    state: nnx.State,
    tokens: jax.Array,
    metric: Metric,
    params0: dict[str, jax.Array],
    keys: jax.Array,
    removal_prob: jax.Array,
    *,
    graphdef: nnx.GraphDef,
    comps: Components,
    optimizer: optax.GradientTransformation,
    random_subsets: int,
    single_removals: bool,
) -> tuple[dict[str, jax.Array], jax.Array, jax.Array]:
    """Training scan; returns the best constants, their single-removal losses, loss history."""
    model = nnx.merge(graphdef, state)
    n = len(comps)
    singles = 1.0 - jnp.eye(n, dtype=jnp.float32)

    def values(params: dict[str, jax.Array], rows: jax.Array) -> jax.Array:
        replacement = _replacement(params)

        def one(row: jax.Array) -> jax.Array:
            logits = model.forward(tokens, comps.masks_unchecked(row), replacement)
            return metric_mean(metric, logits, tokens)

        return jax.vmap(one)(rows)

    def objective(params: dict[str, jax.Array], rows: jax.Array):
        v = values(params, rows)
        return v.mean(), v[:n]

    grad_fn = jax.value_and_grad(objective, has_aux=True)

    def keep_best(best, best_loss, params, single):
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
        params = optax.apply_updates(params, updates)
        return (params, opt_state, best, best_loss), total

    start = values(params0, singles)
    init = (params0, optimizer.init(params0), params0, start)
    (params, _, best, best_loss), history = jax.lax.scan(body, init, keys)
    best, best_loss = keep_best(best, best_loss, params, values(params, singles))
    return best, best_loss, history


def optimal_ablation(
    model: Transformer,
    comps: Components,
    tokens: Int[Array, "batch seq"],
    *,
    steps: int,
    key: jax.Array,
    optimizer: optax.GradientTransformation | None = None,
    metric: Metric | None = None,
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
        metric: Loss-like metric to minimise (default :func:`jaxablate.metrics.loss`).
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
            or components / tokens that do not fit the model.
    """
    steps = check_steps(steps)
    check_key(key)
    optimizer = check_optimizer(optimizer, DEFAULT_OPTIMIZER)
    if (
        not isinstance(random_subsets, int | np.integer)
        or isinstance(random_subsets, bool)
        or random_subsets < 0
    ):
        raise ValueError(f"random_subsets must be an int >= 0, got {random_subsets!r}")
    if not isinstance(single_removals, bool):
        raise ValueError(f"single_removals must be a bool, got {single_removals!r}")
    if not single_removals and random_subsets == 0:
        raise ValueError("with single_removals=False, random_subsets must be >= 1 (got 0)")
    if not (
        isinstance(removal_prob, numbers.Real)
        and not isinstance(removal_prob, bool)
        and 0.0 < float(removal_prob) <= 1.0
    ):
        raise ValueError(f"removal_prob must be a number in (0, 1], got {removal_prob!r}")
    check_components(model.config, comps)
    tokens = check_tokens(model.config, tokens)
    metric = loss if metric is None else metric
    metric = as_metric(metric)

    cfg = model.config
    mean = mean_ablation(model, tokens)
    params0 = {
        "z": jnp.asarray(mean.z, jnp.float32)[:, 0, 0],
        "attn": jnp.asarray(mean.attn, jnp.float32)[:, 0, 0],
        "mlp": (
            jnp.zeros((cfg.n_layers, cfg.d_model), jnp.float32)
            if mean.mlp is None
            else jnp.asarray(mean.mlp, jnp.float32)[:, 0, 0]
        ),
    }
    graphdef, state = nnx.split(model)
    best, best_loss, _ = _train(
        state,
        tokens,
        metric,
        params0,
        jax.random.split(key, steps),
        jnp.float32(removal_prob),
        graphdef=graphdef,
        comps=comps,
        optimizer=optimizer,
        random_subsets=int(random_subsets),
        single_removals=single_removals,
    )
    if not np.all(np.isfinite(np.asarray(best_loss))):
        raise ValueError(
            "optimal ablation: the metric is not finite even at mean ablation for components "
            f"{[comps.names[i] for i in np.flatnonzero(~np.isfinite(np.asarray(best_loss)))]}"
        )
    dtype = jnp.dtype(cfg.dtype)
    out = _replacement({k: v.astype(dtype) for k, v in best.items()})
    if cfg.attn_only:
        return Ablation(z=out.z, attn=out.attn, mlp=None, kind="optimal")
    return out
