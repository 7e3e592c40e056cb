"""Recovery after ablation: fine-tune many ablated copies of a model together.

Meyes et al. (2019) showed that networks recover from ablation damage when training continues,
so an ablation measures immediate fragility rather than long-term importance. :func:`recover`
studies that recovery for K ablation configurations at once: K parameter copies and K optimizer
states live on a leading axis and one jitted program (``jax.vmap`` over K inside a
``jax.lax.fori_loop`` over steps) trains them all on the same minibatches.

Removed components stay removed. Their replacement applies at every step, and the parameters
they *own* receive no update (the optimizer's updates are zeroed there, so weight decay does not
move them either; they stay bit-identical to the start):

- head ``L{l}H{h}`` (a query head): ``attn.W_Q / b_Q [l, h]`` and its output-projection rows
  ``attn.W_O[l, h]`` (with mean ablation the replacement ``z`` still passes through them); its
  key/value head ``attn.W_K / W_V / b_K / b_V [l, h // group]`` once every query head of that
  group is removed (grouped-query attention shares one key/value head among ``group``);
- all heads of layer ``l`` removed, or block ``L{l}.attn`` removed: also ``ln1 [l]`` and the q/k
  norms ``attn.q_norm / k_norm [l]``, which feed nothing else; the block also owns
  ``attn.b_O[l]`` and its output norm ``ln1_post [l]`` (which still normalises ``b_O`` plus the
  replacement while only heads are removed);
- block ``L{l}.mlp``: ``mlp.W_in / b_in / W_gate / b_gate / W_out / b_out [l]``, ``ln2 [l]`` (the
  MLP's own norm, which feeds nothing else) and ``ln2_post [l]``.

Memory grows linearly in K; see :func:`memory_estimate`.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, Bool, Int

from jaxablate import _chunking
from jaxablate import _recovery_ckpt as ckpt
from jaxablate._checks import (
    check_bool,
    check_key,
    check_optimizer,
    local_mesh,
    one_axis_mesh,
    positive_int,
    rows_2d,
)
from jaxablate._evaluate import evaluate
from jaxablate._files import progress_bar
from jaxablate._fingerprint import metric_sketch, sketch
from jaxablate._recovery_core import _eval_runs, _init_runs, _train_steps
from jaxablate._recovery_params import (
    DEFAULT_OPTIMIZER,
    _leaf_name,
    _memory_parts,
    memory_estimate,
    trainable_filter,
    update_masks,
)
from jaxablate.components import Components, check_components, check_model, check_rows
from jaxablate.metrics import Metric, as_metric, loss
from jaxablate.models.inputs import Ablation, Masks, check_ablation, check_tokens
from jaxablate.models.transformer import Transformer

__all__ = [
    "DEFAULT_OPTIMIZER",
    "RecoveryResult",
    "memory_estimate",
    "recover",
    "trainable_filter",
    "update_masks",
]

_NO_DAMAGE_RTOL = 1e-5
RUNS_AXIS = "runs"


@dataclass(frozen=True)
class RecoveryResult:
    """Curves of a :func:`recover` study.

    Attributes:
        steps: ``int [E]`` training steps at which the metric was evaluated (0 = right after
            ablation, before any update).
        metric: ``float [K, E]`` the metric of each configuration on the evaluation tokens.
        baseline: The metric of the unablated, untrained model.
        recovered_fraction: ``float [K, E]`` ``(m_0 - m_t) / (m_0 - baseline)``: 0 at the start,
            1 when the damage is fully undone; NaN for rows whose ablation did no measurable
            damage (``|m_0 - baseline| <= 1e-5 * max(1, |baseline|)``).
        rows: ``bool [K, n]`` the configurations (True = kept).
        names: Component names, one per column of ``rows``.
        metric_name: The metric's name.
        params: With ``return_params=True``: every parameter of every run, each leaf with a
            leading K axis (an ``nnx.State`` of numpy arrays); else ``None``. :meth:`model`
            rebuilds run k.
        graphdef: The model's ``nnx.GraphDef`` that :meth:`model` merges ``params`` into.
    """

    steps: np.ndarray
    metric: np.ndarray
    baseline: float
    recovered_fraction: np.ndarray
    rows: np.ndarray
    names: tuple[str, ...]
    metric_name: str
    params: Any = None
    graphdef: Any = field(default=None, repr=False)

    def model(self, k: int) -> Transformer:
        """The fine-tuned model of configuration ``k`` (needs ``return_params=True``)."""
        if self.params is None:
            raise ValueError(
                "this result holds no parameters: call recover(..., return_params=True)"
            )
        K = self.metric.shape[0]
        if not 0 <= k < K:
            raise ValueError(f"k must lie in [0, {K}), got {k}")
        return nnx.merge(
            self.graphdef, jax.tree.map(lambda x: jnp.asarray(np.asarray(x)[k]), self.params)
        )


# ------------------------------------------------------------------------------ driver steps
@dataclass(frozen=True)
class _Inputs:
    """The validated arguments of one :func:`recover` call."""

    rows: np.ndarray  # bool [K, n]
    train_tok: jax.Array
    eval_tok: jax.Array
    steps: int
    eval_every: int
    batch_size: int
    checkpoint_every: int | None
    key: jax.Array
    tx: optax.GradientTransformation
    metric: Metric
    ablation: Ablation
    train_repl: Ablation
    eval_repl: Ablation

    @property
    def n_runs(self) -> int:
        """K, the number of configurations."""
        return int(self.rows.shape[0])


@dataclass(frozen=True)
class _Trainable:
    """The model split into what the runs train and what they share."""

    graphdef: nnx.GraphDef
    train: Any
    frozen: Any
    names: list[str]  # dotted names of the trainable leaves
    shapes: list[tuple[int, ...]]
    treedef: Any


@dataclass
class _Runs:
    """The K (padded) runs on their devices: training state, masks and shared inputs."""

    train: Any
    opt_state: Any
    masks: Masks
    allowed: Any
    frozen: Any
    train_repl: Ablation
    eval_repl: Ablation
    train_tok: jax.Array
    eval_tok: jax.Array
    metric: Metric
    split: NamedSharding  # the runs axis split over the mesh


def _shared_replacement(ablation: Ablation, cfg: Any, batch: int, seq: int, what: str) -> Ablation:
    fitted = ablation.fit(cfg, batch=batch, seq=seq)
    for name in ("z", "attn", "mlp"):
        if getattr(fitted, name).shape[1] != 1:
            raise ValueError(
                f"recover needs replacements shared by every example (zero or mean ablation); "
                f"the {ablation.kind} ablation's {name!r} has one per example (batch axis "
                f"{getattr(fitted, name).shape[1]}), which random {what} minibatches cannot keep"
            )
    return fitted


def _named_tokens(cfg: Any, tokens: Any, name: str) -> jax.Array:
    """:func:`check_tokens` with the argument named in its message."""
    try:
        return check_tokens(cfg, tokens)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None


def _check_checkpoint_dir(directory: Any) -> None:
    """``None`` or a path that is not an existing file, else ``ValueError``."""
    if directory is None:
        return
    if not isinstance(directory, str | os.PathLike):
        raise ValueError(
            f"checkpoint_dir must be a directory path or None, got {type(directory).__name__}"
        )
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(f"checkpoint_dir {os.fspath(directory)} is a file, not a directory")


def _validate(
    model: Transformer,
    comps: Components,
    rows: Any,
    train_tokens: Any,
    eval_tokens: Any,
    opts: dict[str, Any],
) -> _Inputs:
    """Check every argument of :func:`recover` (``opts``: its keyword arguments)."""
    cfg = check_model(model).config
    check_components(cfg, comps, where="recover")
    for flag in ("progress", "return_params"):
        check_bool(flag, opts[flag])
    _check_checkpoint_dir(opts["checkpoint_dir"])
    rows_arr = check_rows(rows, len(comps), binary=True)
    rows_2d(rows_arr, len(comps))
    checkpoint_every = opts["checkpoint_every"]
    if checkpoint_every is not None:
        if opts["checkpoint_dir"] is None:
            raise ValueError("checkpoint_every needs a checkpoint_dir to write to")
        checkpoint_every = positive_int("checkpoint_every", checkpoint_every)
    eval_every = positive_int("eval_every", opts["eval_every"])
    if checkpoint_every is None and opts["checkpoint_dir"] is not None:
        checkpoint_every = eval_every
    batch_size = positive_int("batch_size", opts["batch_size"])
    train_tok = _named_tokens(cfg, train_tokens, "train_tokens")
    eval_tok = _named_tokens(cfg, eval_tokens, "eval_tokens")
    abl = check_ablation(opts["ablation"])
    return _Inputs(
        rows=np.asarray(rows_arr).astype(bool),
        train_tok=train_tok,
        eval_tok=eval_tok,
        steps=positive_int("steps", opts["steps"]),
        eval_every=eval_every,
        batch_size=batch_size,
        checkpoint_every=checkpoint_every,
        key=check_key(opts["key"]),
        tx=check_optimizer(opts["optimizer"], DEFAULT_OPTIMIZER),
        metric=as_metric(opts["metric"]),
        ablation=abl,
        train_repl=_shared_replacement(abl, cfg, batch_size, train_tok.shape[1], "training"),
        eval_repl=_shared_replacement(abl, cfg, eval_tok.shape[0], eval_tok.shape[1], "evaluation"),
    )


def _split_trainable(model: Transformer, trainable: Any) -> _Trainable:
    """Split ``model`` by :func:`trainable_filter`; refuse a filter that selects nothing."""
    graphdef, train, frozen = nnx.split(model, trainable_filter(trainable), ...)
    path_leaves, treedef = jax.tree_util.tree_flatten_with_path(train)
    names = [_leaf_name(p) for p, _ in path_leaves]
    if not names:
        _, everything = nnx.split(model, nnx.Param)
        all_names = [_leaf_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(everything)[0]]
        raise ValueError(
            f"trainable={trainable!r} selects no parameters; the model has {all_names}"
        )
    shapes = [tuple(x.shape) for _, x in path_leaves]
    return _Trainable(graphdef, train, frozen, names, shapes, treedef)


def _plan_devices(
    model: Transformer, inp: _Inputs, trainable: Any, mesh: Mesh | None, memory_budget: int | None
) -> tuple[Mesh, int]:
    """The mesh and the padded run count; refuse runs whose memory estimate exceeds the budget.

    The budget bounds one device's runs on accelerators; CPU devices share the host's memory,
    so there it bounds all of them.
    """
    K = inp.n_runs
    mesh = local_mesh(RUNS_AXIS, K) if mesh is None else one_axis_mesh(mesh, "runs")
    n_devices = int(mesh.devices.size)
    K_pad = -(-K // n_devices) * n_devices
    on_cpu = mesh.devices.flat[0].platform == "cpu"
    runs_checked = K_pad if on_cpu else K_pad // n_devices
    budget = _chunking.default_budget() if memory_budget is None else int(memory_budget)
    per_run, shared = _memory_parts(
        model, batch_size=inp.batch_size, seq=inp.train_tok.shape[1],
        eval_batch=inp.eval_tok.shape[0], eval_seq=inp.eval_tok.shape[1], trainable=trainable,
        optimizer=inp.tx,
    )  # fmt: skip
    need = runs_checked * per_run + shared
    if need > budget:
        fits = max(0, (budget - shared) // max(per_run, 1)) * (1 if on_cpu else n_devices)
        where = "" if on_cpu or n_devices == 1 else f" on each of {n_devices} devices"
        raise ValueError(
            f"K={K} configurations need about {need / 2**30:.2f} GiB{where} "
            f"({per_run / 2**20:.1f} MiB per run) but memory_budget is {budget / 2**30:.2f} GiB; "
            f"at most {fits} fit: split rows into smaller groups, lower batch_size or eval tokens, "
            "or raise memory_budget"
        )
    return mesh, K_pad


def _place_runs(comps: Components, inp: _Inputs, tr: _Trainable, mesh: Mesh, n_pad: int) -> _Runs:
    """Fresh state of ``n_pad`` runs (the last row repeated as padding), split over ``mesh``."""
    rows = np.concatenate([inp.rows, np.repeat(inp.rows[-1:], n_pad - inp.n_runs, axis=0)])
    allowed = jax.tree.unflatten(
        tr.treedef, [jnp.asarray(a) for a in update_masks(comps, rows, tr.names, tr.shapes)]
    )
    train_k, opt_state = _init_runs(tr.train, n_runs=n_pad, tx=inp.tx)
    split = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
    replicated = NamedSharding(mesh, PartitionSpec())
    train_k, opt_state, masks, allowed = jax.device_put(
        (train_k, opt_state, comps.masks(jnp.asarray(rows)), allowed), split
    )
    shared = jax.device_put(
        (tr.frozen, inp.train_repl, inp.eval_repl, inp.train_tok, inp.eval_tok, inp.metric),
        replicated,
    )
    return _Runs(train_k, opt_state, masks, allowed, *shared, split=split)


def _fingerprint(model: Transformer, comps: Components, inp: _Inputs, names: list[str]) -> dict:
    """What a checkpoint directory records about the call that wrote it."""
    m = inp.metric
    return ckpt.fingerprint_fields(
        model=ckpt.array_hash(nnx.split(model, nnx.Param)[1]),
        model_config=repr(model.config),
        components=comps.names,
        rows=[inp.n_runs, ckpt.array_hash(inp.rows)],
        train_tokens=[list(inp.train_tok.shape), ckpt.array_hash(inp.train_tok)],
        eval_tokens=[list(inp.eval_tok.shape), ckpt.array_hash(inp.eval_tok)],
        steps=inp.steps,
        eval_every=inp.eval_every,
        batch_size=inp.batch_size,
        key=ckpt.array_hash(inp.key),
        metric=[m.name, ckpt.array_hash(m.data), m.positions],
        metric_sketch=metric_sketch(m),
        ablation=[inp.ablation.kind, ckpt.array_hash(inp.train_repl, inp.eval_repl)],
        ablation_sketch=sketch((inp.train_repl, inp.eval_repl)),
        **ckpt.optimizer_fields(inp.tx),
        trainable=names,
    )


def _state_leaves(runs: _Runs, K: int) -> list[jax.Array]:
    """The first ``K`` (unpadded) runs' training state, gathered to the host, as leaves."""
    return [jnp.asarray(np.asarray(x)[:K]) for x in jax.tree.leaves((runs.train, runs.opt_state))]


def _resume(
    store: ckpt.Store, directory: str, runs: _Runs, inp: _Inputs, curves: np.ndarray
) -> int:
    """Load the newest good checkpoint in ``store`` into ``runs`` and ``curves``; its step, or 0
    (a damaged step is reported and the one before it used, see :meth:`ckpt.Store.restore_latest`).
    """
    K = inp.n_runs
    key_data = _key_data(inp.key)
    like = [x[:K] for x in jax.tree.leaves((runs.train, runs.opt_state))]
    found = store.restore_latest(like, key_data, curves)
    if found is None:
        return 0
    latest, leaves, saved_key, saved_curves = found
    if not np.array_equal(np.asarray(saved_key), np.asarray(key_data)):
        raise ValueError(f"checkpoint in {directory!r} was written with another key")
    curves[...] = saved_curves
    # padded runs repeat the last row, so they equal its run exactly
    n_pad = int(runs.masks.heads.shape[0])
    leaves = [jnp.concatenate([x, jnp.repeat(x[-1:], n_pad - K, axis=0)]) for x in leaves]
    structure = jax.tree.structure((runs.train, runs.opt_state))
    runs.train, runs.opt_state = jax.device_put(jax.tree.unflatten(structure, leaves), runs.split)
    return int(latest)


def _curve_steps(steps: int, eval_every: int) -> np.ndarray:
    points = list(range(0, steps + 1, eval_every))
    if points[-1] != steps:
        points.append(steps)
    return np.asarray(points, np.int64)


def _train(
    runs: _Runs,
    inp: _Inputs,
    graphdef: nnx.GraphDef,
    curves: np.ndarray,
    *,
    start: int,
    store: ckpt.Store | None,
    progress: bool,
) -> None:
    """Train ``runs`` from step ``start`` to the end, filling ``curves`` at the eval points and
    writing checkpoints to ``store``."""
    K = inp.n_runs
    curve_steps = _curve_steps(inp.steps, inp.eval_every)

    def evaluate_now() -> np.ndarray:
        out = _eval_runs(
            runs.train, runs.frozen, runs.masks, runs.eval_repl, runs.eval_tok, runs.metric,
            graphdef=graphdef,
        )  # fmt: skip
        return np.asarray(out)[:K]

    if start == 0:
        curves[:, 0] = evaluate_now()
    every = inp.checkpoint_every
    saves = set(range(every, inp.steps, every)) if store is not None and every else set()
    boundaries = sorted({int(s) for s in curve_steps[1:]} | saves)
    bar = progress_bar(
        total=inp.steps, initial=start, desc="recover", unit="step", enabled=progress
    )
    with bar:
        for stop in (b for b in boundaries if b > start):
            runs.train, runs.opt_state = _train_steps(
                runs.train, runs.opt_state, runs.frozen, runs.masks, runs.allowed,
                runs.train_repl, runs.train_tok, inp.key, jnp.asarray(start, jnp.int32),
                jnp.asarray(stop, jnp.int32), graphdef=graphdef, tx=inp.tx,
                batch_size=inp.batch_size,
            )  # fmt: skip
            if stop in curve_steps:
                curves[:, int(np.searchsorted(curve_steps, stop))] = evaluate_now()
            if store is not None and (stop in saves or stop == inp.steps):
                store.save(stop, _state_leaves(runs, K), _key_data(inp.key), curves)
            bar.update(stop - start)
            start = stop


def _train_or_resume(
    model: Transformer,
    comps: Components,
    inp: _Inputs,
    tr: _Trainable,
    runs: _Runs,
    checkpoint_dir: str | None,
    progress: bool,
) -> np.ndarray:
    """Train ``runs`` to the end, resuming from ``checkpoint_dir``'s newest checkpoint if any.

    Returns:
        ``float [K, E]`` the curves (evaluated here or restored from the checkpoint).
    """
    curves = np.full((inp.n_runs, len(_curve_steps(inp.steps, inp.eval_every))), np.nan, np.float32)
    if checkpoint_dir is None:
        _train(runs, inp, tr.graphdef, curves, start=0, store=None, progress=progress)
        return curves
    fingerprint = _fingerprint(model, comps, inp, tr.names)
    fingerprint = ckpt.check_directory(checkpoint_dir, fingerprint)
    store = ckpt.Store(checkpoint_dir, fingerprint)
    try:
        start = _resume(store, checkpoint_dir, runs, inp, curves)
        _train(runs, inp, tr.graphdef, curves, start=start, store=store, progress=progress)
    finally:
        store.close()
    return curves


def _result(
    model: Transformer,
    comps: Components,
    inp: _Inputs,
    runs: _Runs,
    curves: np.ndarray,
    return_params: bool,
) -> RecoveryResult:
    """The curves, the recovered fractions against the unablated baseline, and the parameters."""
    K = inp.n_runs
    baseline = float(
        evaluate(
            model, comps, np.ones((1, len(comps)), bool), inp.eval_tok, metric=inp.metric,
            ablation=inp.ablation,
        )[0]
    )  # fmt: skip
    m0 = curves[:, :1].astype(np.float64)
    damage = m0 - baseline
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = (m0 - curves) / damage
    frac = np.where(np.abs(damage) <= _NO_DAMAGE_RTOL * max(1.0, abs(baseline)), np.nan, frac)
    params = None
    if return_params:
        frozen_k = jax.tree.map(
            lambda x: np.broadcast_to(np.asarray(x), (K, *x.shape)), runs.frozen
        )
        params = nnx.merge_state(jax.tree.map(lambda x: np.asarray(x)[:K], runs.train), frozen_k)
    return RecoveryResult(
        steps=_curve_steps(inp.steps, inp.eval_every),
        metric=curves,
        baseline=baseline,
        recovered_fraction=frac.astype(np.float32),
        rows=inp.rows,
        names=tuple(comps.names),
        metric_name=inp.metric.name,
        params=params,
        graphdef=nnx.split(model)[0] if return_params else None,
    )


def recover(
    model: Transformer,
    comps: Components,
    rows: Bool[np.ndarray, "n_masks n_players"],
    train_tokens: Int[Array, "batch seq"],
    *,
    steps: int,
    eval_tokens: Int[Array, "batch seq"],
    eval_every: int,
    batch_size: int,
    key: jax.Array,
    metric: Callable[..., jax.Array] = loss,
    ablation: Ablation | None = None,
    optimizer: optax.GradientTransformation | None = None,
    trainable: Any = None,
    checkpoint_dir: str | None = None,
    checkpoint_every: int | None = None,
    progress: bool = True,
    return_params: bool = False,
    memory_budget: int | None = None,
    mesh: Mesh | None = None,
) -> RecoveryResult:
    """Fine-tune K ablated copies of ``model`` together and record how each recovers.

    Every configuration starts from ``model``'s weights with its mask held fixed: removed
    components are replaced at every step and the parameters they own are never updated (see
    the module docstring). Training minimises the next-token loss (:func:`jaxablate.metrics.loss`)
    on minibatches of ``batch_size`` sequences drawn with replacement from ``train_tokens``;
    step ``t`` draws from ``jax.random.fold_in(key, t)``, the same batch for every run, so runs
    differ only by their masks and a resumed run repeats an uninterrupted one exactly.

    Args:
        model: The pretrained model (not modified).
        comps: The components that ``rows`` refer to.
        rows: ``bool [K, n]``: one ablation configuration per row (True = kept).
        train_tokens: Sequences to draw training minibatches from.
        steps: Number of training steps.
        eval_tokens: Sequences the metric is evaluated on (all at once, for every run).
        eval_every: Evaluate every this many steps (and at step 0 and ``steps``).
        batch_size: Sequences per training step.
        key: ``jax.random`` key for minibatch sampling.
        metric: ``(logits, tokens) -> [batch]`` evaluated on ``eval_tokens``.
        ablation: Replacement for removed components, shared by all examples (zero or mean
            ablation; computed once from the pretrained model and held fixed). Default: zero.
        optimizer: An optax transformation (default ``optax.adamw(1e-3)``). Pass the same object
            to further calls to reuse the compiled step.
        trainable: What may change: ``None`` (all parameters not owned by removed components),
            name patterns (``"mlp"``, ``["attn.*", "ln1"]``, ``"W_E"``) or an nnx filter; see
            :func:`trainable_filter`.
        checkpoint_dir: Orbax checkpoints go here; calling again with the same directory
            resumes (or returns the finished curves). Another configuration is refused
            (inputs equal up to their last bits, as on another device, are accepted).
        checkpoint_every: Steps between checkpoints (default: ``eval_every``); needs
            ``checkpoint_dir``.
        progress: Show a tqdm bar when stderr is a terminal.
        return_params: Also return every run's final parameters.
        memory_budget: Bytes the K runs may use (default: the rule :func:`jaxablate.evaluate`
            uses, half the accelerator's memory or a quarter of host RAM, at most 8 GiB); see
            :func:`memory_estimate`. On accelerators it bounds each device's share of the runs.
        mesh: Devices to split the K runs over (a 1-D mesh); default: up to K local devices.
            K is padded to a multiple of the device count with copies of the last row, whose
            results are dropped; results and checkpoints do not depend on the device count.

    Returns:
        A :class:`RecoveryResult`.

    Raises:
        ValueError: bad arguments, too many runs for the memory budget, or a foreign checkpoint.
    """
    opts = dict(
        steps=steps, eval_every=eval_every, batch_size=batch_size, key=key, metric=metric,
        ablation=ablation, optimizer=optimizer, checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every, progress=progress, return_params=return_params,
    )  # fmt: skip
    inp = _validate(model, comps, rows, train_tokens, eval_tokens, opts)
    tr = _split_trainable(model, trainable)
    mesh, n_pad = _plan_devices(model, inp, trainable, mesh, memory_budget)
    runs = _place_runs(comps, inp, tr, mesh, n_pad)
    curves = _train_or_resume(model, comps, inp, tr, runs, checkpoint_dir, progress)
    return _result(model, comps, inp, runs, curves, return_params)


def _key_data(key: jax.Array) -> jax.Array:
    return jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
