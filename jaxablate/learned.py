"""Learned continuous masks over components (optax): a whole accuracy-vs-size front in one run.

Masks are model inputs, so they can be optimised like weights while the weights stay frozen.
:func:`learn_masks` trains one row of mask parameters per sparsity penalty and minimises

    ``metric(model with mask m) + sparsity * expected_fraction_kept(m)``

for a **loss-like** metric (lower is better). The size term is the expected *fraction* of the
``n`` components kept (not their number), so the same penalty means the same trade-off for any
``n``: a penalty ``s`` pays for removing a component whose removal costs less than ``s / n``.

Two parametrisations of a mask ``m_i`` from a parameter ``logits_i``:

- ``"hard_concrete"`` (Louizos, Welling & Kingma 2018, "Learning sparse neural networks through
  L0 regularization"): temperature ``beta = 2/3``, stretch ``(gamma, zeta) = (-0.1, 1.1)``.
  Training samples ``m = clip(sigmoid((log u - log(1 - u) + logits) / beta) * (zeta - gamma) +
  gamma, 0, 1)`` with ``u ~ U(0, 1)``, one draw per component and step; the size is the expected
  L0 norm, ``P(m_i > 0) = sigmoid(logits_i - beta * log(-gamma / zeta))``, averaged over ``i``.
  The test-time (deterministic) mask is ``clip(sigmoid(logits) * (zeta - gamma) + gamma, 0, 1)``.
- ``"sigmoid"``: ``m = sigmoid(logits)``, deterministic; the size is the mean mask.

``probs`` are the keep-probabilities (``P(m_i > 0)`` resp. ``sigmoid(logits)``) and a component
is kept in the binarised ``rows`` iff its probability exceeds 0.5.

Training is one compiled program: ``jax.lax.scan`` over the steps of a ``jax.vmap`` over the
penalties. Every penalty sees the same noise (one key per step, split from ``key``), and the
optimizer state is vmapped too, so ``P`` penalties trained together give the ``P`` runs trained
one at a time. Only the ``[P, n]`` mask parameters are trained; the model state is a constant
input. Each step uses the whole token batch.

Optimal ablation constants (:func:`jaxablate.optimal.optimal_ablation`, ``ja.ablation.optimal``)
live in :mod:`jaxablate.optimal`.
"""

import functools
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple, cast, get_args

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jaxtyping import Array, Float, Int

from jaxablate._batch import Batch, QueryKey, batch_of, model_tokens, queries_of
from jaxablate._checks import check_key, check_optimizer, one_of, positive_int
from jaxablate._evaluate import evaluate
from jaxablate._prompts import Prompts
from jaxablate.components import Components, check_components, check_model
from jaxablate.metrics import Metric, as_metric, kl_to_clean, score
from jaxablate.models.inputs import Ablation, check_ablation
from jaxablate.models.transformer import Transformer

__all__ = [
    "BETA",
    "GAMMA",
    "ZETA",
    "LearnedMasks",
    "TrainingHistory",
    "hard_concrete_keep_prob",
    "hard_concrete_mask",
    "hard_concrete_sample",
    "learn_masks",
]

Parametrization = Literal["hard_concrete", "sigmoid"]

#: Hard-concrete temperature (Louizos et al. 2018).
BETA = 2.0 / 3.0
#: Lower end of the hard-concrete stretch interval.
GAMMA = -0.1
#: Upper end of the hard-concrete stretch interval.
ZETA = 1.1

#: Default optimizer: one module-level object, so repeated calls reuse the compiled program.
DEFAULT_OPTIMIZER = optax.adam(0.1)


def hard_concrete_sample(
    log_alpha: Float[Array, "*n_masks n_players"], key: jax.Array
) -> Float[Array, "*n_masks n_players"]:
    """One hard-concrete draw per entry of ``log_alpha`` (values in ``[0, 1]``, exact 0 and 1)."""
    u = jax.random.uniform(key, log_alpha.shape, jnp.float32, minval=1e-6, maxval=1.0 - 1e-6)
    s = jax.nn.sigmoid((jnp.log(u) - jnp.log1p(-u) + log_alpha) / BETA)
    return jnp.clip(s * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def hard_concrete_mask(
    log_alpha: Float[Array, "*n_masks n_players"],
) -> Float[Array, "*n_masks n_players"]:
    """The deterministic (test-time) hard-concrete mask."""
    return jnp.clip(jax.nn.sigmoid(log_alpha) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def hard_concrete_keep_prob(
    log_alpha: Float[Array, "*n_masks n_players"],
) -> Float[Array, "*n_masks n_players"]:
    """``P(mask > 0)``: the expected L0 norm of each hard-concrete gate."""
    return jax.nn.sigmoid(log_alpha - BETA * math.log(-GAMMA / ZETA))


class TrainingHistory(NamedTuple):
    """Per-step record of a :func:`learn_masks` run, each ``[steps, P]``.

    Attributes:
        loss: The objective ``metric + sparsity * size`` at the step's (sampled) masks.
        metric: The metric part of the objective.
        size: Expected fraction of components kept.
    """

    loss: np.ndarray
    metric: np.ndarray
    size: np.ndarray


@dataclass(frozen=True, eq=False)
class LearnedMasks:
    """Masks learned for each of ``P`` sparsity penalties over ``n`` components.

    Attributes:
        names: Component names, the column order of every ``[P, n]`` field.
        sparsity: ``[P]`` penalties (on the expected fraction of components kept).
        parametrization: ``"hard_concrete"`` or ``"sigmoid"``.
        logits: ``[P, n]`` trained mask parameters (``log_alpha`` for hard-concrete).
        probs: ``[P, n]`` keep-probabilities.
        mask: ``[P, n]`` deterministic continuous masks (test-time hard-concrete gates, or the
            sigmoids).
        rows: ``bool [P, n]``: component kept iff its keep-probability exceeds 0.5.
        metric: ``[P]`` exact metric of each binarised row (:func:`jaxablate.evaluate`).
        n_kept: ``[P]`` number of components kept in each row.
        history: Training loss, metric and expected size per step.
    """

    names: tuple[str, ...]
    sparsity: np.ndarray
    parametrization: str
    logits: np.ndarray
    probs: np.ndarray
    mask: np.ndarray
    rows: np.ndarray
    metric: np.ndarray
    n_kept: np.ndarray
    history: TrainingHistory

    def __repr__(self) -> str:
        lines = [
            f"LearnedMasks({self.parametrization}, n={len(self.names)}, P={len(self.sparsity)})"
        ]
        for s, k, v, row in zip(self.sparsity, self.n_kept, self.metric, self.rows, strict=True):
            kept = [name for name, keep in zip(self.names, row, strict=True) if keep]
            shown = ", ".join(kept[:8]) + (", ..." if len(kept) > 8 else "")
            lines.append(f"  sparsity={s:.4g}: metric={v:.4g}, kept {k}: [{shown}]")
        return "\n".join(lines)


def _keep_prob(logits: jax.Array, parametrization: str) -> jax.Array:
    """Keep-probabilities of the mask parameters (``P(m > 0)``, or the sigmoids)."""
    if parametrization == "hard_concrete":
        return hard_concrete_keep_prob(logits)
    return jax.nn.sigmoid(logits)


def _test_mask(logits: jax.Array, parametrization: str) -> jax.Array:
    """The deterministic continuous masks of the mask parameters."""
    if parametrization == "hard_concrete":
        return hard_concrete_mask(logits)
    return jax.nn.sigmoid(logits)


@functools.partial(
    jax.jit, static_argnames=("graphdef", "comps", "parametrization", "optimizer", "queries")
)
def _train(
    state: nnx.State,
    tokens: tuple[Int[Array, "batch seq"], Int[Array, "batch seq"]],
    replacement: Ablation,
    metric: Metric,
    logits0: Float[Array, "n_masks n_players"],
    sparsity: Float[Array, " n_masks"],
    keys: jax.Array,
    *,
    graphdef: nnx.GraphDef,
    comps: Components,
    parametrization: str,
    optimizer: optax.GradientTransformation,
    queries: QueryKey,
) -> tuple[Float[Array, "n_masks n_players"], tuple[jax.Array, jax.Array, jax.Array]]:
    """The whole training run: ``scan`` over ``keys`` (one per step) of a ``vmap`` over rows."""
    model = nnx.merge(graphdef, state)
    ids, metric_ids = tokens

    def objective(row: jax.Array, penalty: jax.Array, key: jax.Array):
        if parametrization == "hard_concrete":
            mask = hard_concrete_sample(row, key)
        else:
            mask = jax.nn.sigmoid(row)
        size = _keep_prob(row, parametrization).mean()
        logits = model.forward(ids, comps.masks_unchecked(mask), replacement)
        value = score(metric, logits, metric_ids, queries_of(queries)).mean()
        return value + penalty * size, (value, size)

    grad_fn = jax.value_and_grad(objective, has_aux=True)

    def one_step(row: jax.Array, opt_state, penalty: jax.Array, key: jax.Array):
        (total, (value, size)), grad = grad_fn(row, penalty, key)
        updates, opt_state = optimizer.update(grad, opt_state, row)
        row = cast(jax.Array, optax.apply_updates(row, updates))
        return row, opt_state, (total, value, size)

    step_all = jax.vmap(one_step, in_axes=(0, 0, 0, None))

    def body(carry, key):
        rows, opt_state = carry
        rows, opt_state, record = step_all(rows, opt_state, sparsity, key)
        return (rows, opt_state), record

    opt_state = jax.vmap(optimizer.init)(logits0)
    (logits, _), record = jax.lax.scan(body, (logits0, opt_state), keys)
    return logits, record


def _check_sparsity(sparsity: object) -> np.ndarray:
    """``sparsity`` as a float64 ``[P]`` array of finite penalties ``>= 0``, else ``ValueError``."""
    try:
        arr = np.asarray(sparsity, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"sparsity must be a number or a 1-D list of numbers, got {sparsity!r}"
        ) from None
    if arr.ndim == 0:
        arr = arr[None]
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(
            f"sparsity must be a number or a non-empty 1-D array [P], got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"sparsity penalties must be finite and >= 0, got {arr.tolist()}")
    return arr


def _check_init_logit(init_logit: object) -> float:
    """``init_logit`` as a finite float, else ``ValueError``."""
    if (
        not isinstance(init_logit, numbers.Real)
        or isinstance(init_logit, bool)
        or not math.isfinite(float(init_logit))
    ):
        raise ValueError(f"init_logit must be a finite number, got {init_logit!r}")
    return float(init_logit)


@dataclass(frozen=True)
class _Study:
    """The checked inputs of one :func:`learn_masks` call, shared by training and evaluation."""

    model: Transformer
    comps: Components
    tokens: jax.Array | Prompts
    metric: Metric
    ablation: Ablation
    batch: Batch


def _fit(
    study: _Study,
    logits0: jax.Array,
    penalties: np.ndarray,
    keys: jax.Array,
    *,
    parametrization: str,
    optimizer: optax.GradientTransformation,
) -> tuple[jax.Array, TrainingHistory]:
    """Run :func:`_train` on checked inputs: the trained mask parameters and their history."""
    model, batch = study.model, study.batch
    replacement = study.ablation.fit(model.config, batch=batch.shape[0], seq=batch.shape[1])
    graphdef, state = nnx.split(model)
    logits, record = _train(
        state,
        (batch.tokens, batch.metric_tokens),
        replacement,
        study.metric,
        logits0,
        jnp.asarray(penalties, jnp.float32),
        keys,
        graphdef=graphdef,
        comps=study.comps,
        parametrization=parametrization,
        optimizer=optimizer,
        queries=batch.query_key,
    )
    if not np.all(np.isfinite(np.asarray(logits))):
        raise ValueError(
            f"learn_masks diverged: the mask parameters are NaN or inf after {keys.shape[0]} "
            "steps; lower the optimizer's learning rate"
        )
    return logits, TrainingHistory(*(np.asarray(r) for r in record))


def _binarise(
    study: _Study,
    penalties: np.ndarray,
    parametrization: str,
    logits: jax.Array,
    history: TrainingHistory,
) -> LearnedMasks:
    """The :class:`LearnedMasks` of trained parameters, each binarised row evaluated exactly."""
    probs = np.asarray(_keep_prob(logits, parametrization))
    rows = probs > 0.5
    values = evaluate(
        study.model, study.comps, rows, study.tokens, metric=study.metric, ablation=study.ablation
    )
    return LearnedMasks(
        names=tuple(study.comps.names),
        sparsity=penalties,
        parametrization=parametrization,
        logits=np.asarray(logits),
        probs=probs,
        mask=np.asarray(_test_mask(logits, parametrization)),
        rows=rows,
        metric=values,
        n_kept=rows.sum(axis=1),
        history=history,
    )


def learn_masks(
    model: Transformer,
    comps: Components,
    tokens: Int[Array, "batch seq"] | Prompts,
    *,
    sparsity: float | Float[Array, " n_masks"],
    steps: int,
    key: jax.Array,
    metric: Callable[..., jax.Array] | None = None,
    ablation: Ablation | None = None,
    parametrization: Parametrization = "hard_concrete",
    optimizer: optax.GradientTransformation | None = None,
    init_logit: float = 3.0,
) -> LearnedMasks:
    """Learn which components to keep, for one or many sparsity penalties in one program.

    Minimises ``metric + sparsity * (expected fraction of components kept)`` over continuous
    masks (see the module docstring for the parametrisations), with the model's weights frozen.
    All penalties train together under ``jax.vmap``; the run is one ``jax.jit`` call, and a
    second call with the same shapes, metric kind, optimizer object and parametrisation reuses
    the compiled program.

    The relaxation is not convex: a binarised row is a good subset of its size, not
    necessarily the best, and hard-concrete tends to keep a little more than the exact optimum of
    the penalised objective. Metrics that are flat at the clean model and whose cost grows
    sub-additively with the number removed (``kl_to_clean`` on random models) give the least
    reliable fronts; for small ``n`` compare with :func:`jaxablate.evaluate` over
    ``ja.subsets.k_subsets(n, k)``.

    Args:
        model: The model (its weights are not changed).
        comps: The components to mask; column ``i`` of every result is ``comps[i]``.
        tokens: ``int [batch, seq]`` (or :class:`~jaxablate.Prompts`); every step uses the whole
            batch.
        sparsity: One penalty or a 1-D array of ``P`` penalties (all ``>= 0``); a single number
            gives ``P = 1``.
        steps: Optimisation steps (``>= 1``).
        key: ``jax.random`` key for the hard-concrete noise (the same noise for every penalty).
        metric: A **loss-like** metric (lower is better), ``(logits, tokens) -> [batch]`` or a
            :class:`~jaxablate.metrics.Metric`; default ``kl_to_clean(model, tokens)``. Negate
            higher-is-better metrics such as ``logit_diff`` yourself.
        ablation: Replacement of removed components (default zero ablation).
        parametrization: ``"hard_concrete"`` (default) or ``"sigmoid"``.
        optimizer: An optax optimizer over the mask parameters (default ``optax.adam(0.1)``).
            Pass the same object again to reuse the compiled program.
        init_logit: Initial value of every mask parameter; the default 3.0 starts all masks
            near 1 (kept): keep-probability 0.99 (hard-concrete) or 0.95 (sigmoid).

    Returns:
        A :class:`LearnedMasks` whose ``metric`` is the exact metric of each binarised row.

    Raises:
        ValueError: negative or non-finite sparsity, ``steps < 1``, an unknown parametrisation,
            a bad key, optimizer, ``init_logit``, model/components mismatch or tokens.
    """
    check_model(model)
    kind = one_of("parametrization", parametrization, get_args(Parametrization))
    steps = positive_int("steps", steps)
    penalties = _check_sparsity(sparsity)
    key = check_key(key)
    opt = check_optimizer(optimizer, DEFAULT_OPTIMIZER)
    init = _check_init_logit(init_logit)
    check_components(model.config, comps, where="learn_masks")
    model_tokens(model.config, tokens)
    abl = check_ablation(ablation)
    metric_obj = kl_to_clean(model, tokens) if metric is None else as_metric(metric)
    study = _Study(
        model,
        comps,
        tokens,
        metric_obj,
        abl,
        batch_of(model.config, tokens, metric_obj),
    )
    logits0 = jnp.full((penalties.shape[0], len(comps)), init, jnp.float32)
    keys = jax.random.split(key, steps)
    logits, history = _fit(study, logits0, penalties, keys, parametrization=kind, optimizer=opt)
    return _binarise(study, penalties, kind, logits, history)
