"""Evaluate a metric for many mask rows at once: one compiled, vmapped program per chunk.

Two compiled paths compute the same numbers:

- shared (default): rows are sorted so that rows agreeing on the components of early layers are
  neighbours; within a chunk, the residual stream entering each masked layer is computed once per
  distinct prefix (a tree, see :mod:`jaxablate._prefix`), everything before the first masked layer
  once per input batch, and at each masked layer the attention is computed once per parent and
  only the mix of head outputs per child.
- naive (``share_prefix=False``): every row runs the whole model, for tests and benchmarks.

The mask axis of a chunk is split into one group per device; on several devices the groups are
sharded over a 1-D mesh, so the same code runs on one CPU or many accelerators.
"""

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, Bool, Float, Int

from jaxablate import _chunking, _prefix
from jaxablate._batch import Batch, QueryKey, batch_of, queries_of
from jaxablate._checks import check_bool, local_mesh, one_axis_mesh, rows_2d
from jaxablate._prompts import Prompts
from jaxablate.components import Components, check_components, check_model, check_rows
from jaxablate.metrics import Metric, as_metric, loss, score
from jaxablate.models.inputs import Ablation, Masks, check_ablation, zero
from jaxablate.models.transformer import Transformer

MESH_AXIS = "masks"


def _naive_group(
    model: Transformer,
    comps: Components,
    tokens: tuple[jax.Array, jax.Array, jax.Array | None],
    rows: jax.Array,
    replacement: Ablation,
    metric: Metric,
    inner: int,
    queries: np.ndarray | None,
) -> jax.Array:
    """Every row runs the whole model (tokens broadcast so no work is shared) and the metric
    reads its positions and columns from the full logits."""
    ids, metric_ids, selectors = tokens
    masks = comps.masks_unchecked(rows, selectors)
    per_row_tokens = jnp.broadcast_to(ids, (rows.shape[0], *ids.shape))

    def one(m: Masks, t: jax.Array) -> jax.Array:
        return score(metric, model.forward(t, m, replacement), metric_ids, queries)

    return jax.lax.map(lambda a: one(*a), (masks, per_row_tokens), batch_size=inner)


def _tree_group(
    model: Transformer,
    comps: Components,
    tokens: tuple[jax.Array, jax.Array, jax.Array | None],
    parents: tuple[jax.Array, ...],
    reps: tuple[jax.Array, ...],
    replacement: Ablation,
    metric: Metric,
    inner: int,
    queries: np.ndarray | None,
) -> jax.Array:
    """One prefix tree (see :mod:`jaxablate._prefix`): rows of its last stage -> [rows, batch].

    Nodes of a stage go through ``jax.lax.map`` in vmapped batches of ``inner``: small batches
    keep a CPU's working set in cache, one batch of all nodes suits accelerators.

    A metric that reads a few positions (``queries``, from :attr:`Metric.positions`) runs the
    model on the positions up to the last one read by any example (attention is causal, so later
    ones change nothing), and the last layer computes its queries, MLP and unembedding at the
    read positions alone (each example at its own); a metric that reads a few vocabulary ids
    (:attr:`Metric.columns`) gets only their logits.
    """
    layers = comps.layers
    last = model.config.n_layers - 1
    ids, metric_ids, selectors = tokens
    run_tokens = ids
    if queries is not None:
        length = int(queries.max()) + 1
        run_tokens = ids[:, :length]
        replacement = jax.tree.map(lambda r: r[:, :, :length], replacement)

    def at_last(layer: int) -> np.ndarray | None:
        return queries if layer == last else None

    resid = model.unmasked_blocks(0, layers[0], model.embed(run_tokens))
    nodes = resid[None]
    for j, layer in enumerate(layers):
        stop = layers[j + 1] if j + 1 < len(layers) else last + 1
        attn_z = functools.partial(model.attn_z, layer, queries=at_last(layer))
        z = jax.lax.map(attn_z, nodes, batch_size=inner)
        masks = comps.masks_unchecked(reps[j], selectors)

        def child(p: jax.Array, m: Masks, nodes=nodes, z=z, layer=layer, stop=stop) -> jax.Array:
            r = model.block(layer, nodes[p], m, replacement, z=z[p], queries=at_last(layer))
            if stop <= layer + 1:
                return r
            # the last layer reads only the metric's positions: it runs on its own
            reads_last = stop == last + 1 and queries is not None
            r = model.unmasked_blocks(layer + 1, stop - reads_last, r)
            return model.block(last, r, None, None, queries=queries) if reads_last else r

        def row_metric(p: jax.Array, m: Masks, child=child) -> jax.Array:
            logits = model.unembed(child(p, m), metric.columns)
            return score(metric, logits, metric_ids, queries, taken=True)

        if j + 1 < len(layers):
            nodes = jax.lax.map(
                lambda a, child=child: child(*a), (parents[j], masks), batch_size=inner
            )
        else:  # the rows themselves: straight on to the metric, no residuals kept
            return jax.lax.map(lambda a: row_metric(*a), (parents[j], masks), batch_size=inner)
    raise AssertionError("components span no layer")


_STATIC = ("graphdef", "comps", "inner", "queries")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _naive_chunk(
    state: nnx.State,
    tokens: tuple[jax.Array, jax.Array, jax.Array | None],
    rows: jax.Array,
    replacement: Ablation,
    metric: Metric,
    *,
    graphdef: nnx.GraphDef,
    comps: Components,
    inner: int,
    queries: QueryKey,
) -> Float[Array, "group n_masks batch"]:
    model = nnx.merge(graphdef, state)
    group = functools.partial(
        _naive_group,
        model,
        comps,
        tokens,
        replacement=replacement,
        metric=metric,
        inner=inner,
        queries=queries_of(queries),
    )
    return jax.vmap(lambda r: group(rows=r))(rows)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _tree_chunk(
    state: nnx.State,
    tokens: tuple[jax.Array, jax.Array, jax.Array | None],
    parents: tuple[jax.Array, ...],
    reps: tuple[jax.Array, ...],
    replacement: Ablation,
    metric: Metric,
    *,
    graphdef: nnx.GraphDef,
    comps: Components,
    inner: int,
    queries: QueryKey,
) -> Float[Array, "group n_masks batch"]:
    model = nnx.merge(graphdef, state)
    q = queries_of(queries)

    def group(p: tuple[jax.Array, ...], r: tuple[jax.Array, ...]) -> jax.Array:
        return _tree_group(model, comps, tokens, p, r, replacement, metric, inner, q)

    return jax.vmap(group)(parents, reps)


def _put(tree: Any, mesh: Mesh, sharded: bool) -> Any:
    spec = PartitionSpec(MESH_AXIS) if sharded else PartitionSpec()
    return jax.device_put(tree, NamedSharding(mesh, spec))


class _Runner:
    """Compiled evaluation of chunks of sorted rows, one prefix tree per device group."""

    def __init__(self, model, comps, batch: Batch, replacement, metric, share_prefix, mesh):
        self.comps = comps
        self.cfg = model.config
        self.token_shape = batch.shape
        self.share_prefix = share_prefix
        self.mesh = mesh
        self.queries = batch.query_key  # pruned evaluation: another cost per row
        self.columns = None if metric.columns is None else int(metric.columns.shape[0])
        # what a row computes, for its memory and working set (the naive path computes all)
        self.reads = (self.queries, self.columns) if share_prefix else (None, None)
        self.groups = int(mesh.devices.size)
        graphdef, state = nnx.split(model)
        self.graphdef = graphdef
        selectors = (
            jnp.asarray(comps.selectors(batch.prompts or batch.tokens))
            if comps.positional
            else None
        )
        tokens = (batch.tokens, batch.metric_tokens, selectors)
        self.args = _put((state, tokens, replacement, metric), mesh, sharded=False)

    def probe_key(self) -> tuple[object, ...]:
        """What a probed plan depends on besides the rows (see :func:`_chunking.choose`)."""
        return (
            self.graphdef,
            self.comps,
            self.token_shape,
            self.share_prefix,
            self.queries,
            self.columns,
            self.groups,
        )

    def prepare(self, rows: np.ndarray, plan: _chunking.Plan) -> "_Prepared":
        """Sort, pad and measure ``rows`` for ``plan`` (chunks a multiple of the groups)."""
        chunk = plan.chunk
        n_rows = rows.shape[0]
        n_chunks = -(-n_rows // chunk)
        padded = n_chunks * chunk
        if self.share_prefix:
            p = _prefix.plan(self.comps, rows)
            order, keys = p.order, p.keys
        else:
            order, keys = np.arange(n_rows), np.zeros((1, n_rows), np.int64)
        take = np.concatenate([order, np.repeat(order[-1:], padded - n_rows)])
        keys = np.concatenate([keys, np.repeat(keys[:, -1:], padded - n_rows, axis=1)], axis=1)
        group = chunk // self.groups
        if self.share_prefix:
            sizes = _prefix.padded_sizes(_prefix.node_counts(keys, group), self.comps, group)
        else:
            sizes = (group,)
        queries, columns = self.reads
        width = _chunking.inner_width(
            self.cfg, self.token_shape, group, queries=queries, columns=columns
        )
        inner = min(plan.inner or width, group)
        return _Prepared(rows[take], keys, order, sizes, chunk, group, n_rows, inner)

    def run_chunk(self, prep: "_Prepared", index: int) -> jax.Array:
        """Dispatch chunk ``index`` (asynchronously); returns ``[groups, group, batch]`` on
        device (reshaped on the host: an eager reshape compiles a program in a fresh
        process)."""
        start, stop = index * prep.chunk, (index + 1) * prep.chunk
        rows = prep.rows[start:stop]
        state, tokens, replacement, metric = self.args
        static = dict(
            graphdef=self.graphdef, comps=self.comps, inner=prep.inner, queries=self.queries
        )
        if not self.share_prefix:
            grouped = _put(rows.reshape(self.groups, prep.group, -1), self.mesh, sharded=True)
            out = _naive_chunk(state, tokens, grouped, replacement, metric, **static)
        else:
            parents, reps = [], []
            for g in range(self.groups):
                sl = slice(g * prep.group, (g + 1) * prep.group)
                par, rep = _prefix.block_tree(rows[sl], prep.keys[:, start:stop][:, sl], prep.sizes)
                parents.append(par)
                reps.append(rep)
            parents_arr = tuple(np.stack(s) for s in zip(*parents, strict=True))
            reps_arr = tuple(np.stack(s) for s in zip(*reps, strict=True))
            parents_arr, reps_arr = _put((parents_arr, reps_arr), self.mesh, sharded=True)
            out = _tree_chunk(state, tokens, parents_arr, reps_arr, replacement, metric, **static)
        return out


class _Prepared:
    """Rows sorted and padded for chunked evaluation (see :meth:`_Runner.prepare`)."""

    def __init__(self, rows, keys, order, sizes, chunk, group, n_rows, inner):
        self.rows, self.keys, self.order, self.sizes = rows, keys, order, sizes
        self.chunk, self.group, self.n_rows, self.inner = chunk, group, n_rows, inner
        self.n_chunks = rows.shape[0] // chunk

    def unsort(self, sorted_values: np.ndarray) -> np.ndarray:
        """Values in the caller's row order."""
        out = np.empty((self.n_rows, *sorted_values.shape[1:]), sorted_values.dtype)
        out[self.order] = sorted_values[: self.n_rows]
        return out


@dataclass(frozen=True)
class Evaluation:
    """What one evaluation computed, and how.

    Attributes:
        per_example: The metric of every row on every example, ``[M, batch]``, in row order.
        plan: The chunk plan it ran with.
    """

    per_example: Float[np.ndarray, "n_masks batch"]
    plan: _chunking.Plan


def run(
    model: Transformer,
    comps: Components,
    rows: Bool[np.ndarray, "n_masks n_players"],
    tokens: Int[Array, "batch seq"] | Prompts,
    *,
    metric: Callable[..., jax.Array] = loss,
    ablation: Ablation | None = None,
    chunk_size: int | Literal["auto"] | None = None,
    share_prefix: bool = True,
    mesh: Mesh | None = None,
    memory_budget: int | None = None,
    plan: _chunking.Plan | None = None,
) -> Evaluation:
    """:func:`evaluate_per_example` with the plan it ran with (arguments as there).

    ``plan`` fixes the plan instead of choosing one from ``chunk_size`` and ``memory_budget``
    (a sweep passes the plan its manifest records): ``plan.chunk`` rows per compiled call, a
    multiple of the mesh's devices, each device taking ``plan.chunk // devices`` of them.
    """
    check_model(model)
    check_components(model.config, comps)
    check_bool("share_prefix", share_prefix)
    ablation = check_ablation(ablation)
    metric_obj = as_metric(metric)
    batch = batch_of(model.config, tokens, metric_obj)
    rows_arr = np.asarray(check_rows(rows, len(comps), binary=True))
    rows_2d(rows_arr, len(comps))
    replacement = (zero() if ablation is None else ablation).fit(
        model.config, batch=batch.shape[0], seq=batch.shape[1]
    )
    mesh = local_mesh(MESH_AXIS) if mesh is None else one_axis_mesh(mesh, "masks")
    runner = _Runner(model, comps, batch, replacement, metric_obj, share_prefix, mesh)
    if plan is None:
        plan = _chunking.choose(
            runner,
            rows_arr,
            model.config,
            batch.shape,
            chunk_size=chunk_size,
            budget=memory_budget,
            probe_key=runner.probe_key(),
        )
    elif plan.chunk % runner.groups:
        raise ValueError(
            f"plan.chunk={plan.chunk} must be a multiple of the mesh's {runner.groups} devices"
        )
    prep = runner.prepare(rows_arr, plan)
    outputs = [runner.run_chunk(prep, i) for i in range(prep.n_chunks)]
    host = [np.asarray(o).reshape(prep.chunk, -1) for o in outputs]
    values = prep.unsort(np.concatenate(host, axis=0))
    return Evaluation(per_example=values, plan=plan)


def evaluate_per_example(
    model: Transformer,
    comps: Components,
    rows: Bool[np.ndarray, "n_masks n_players"],
    tokens: Int[Array, "batch seq"] | Prompts,
    *,
    metric: Callable[..., jax.Array] = loss,
    ablation: Ablation | None = None,
    chunk_size: int | Literal["auto"] | None = None,
    share_prefix: bool = True,
    mesh: Mesh | None = None,
    memory_budget: int | None = None,
) -> Float[np.ndarray, "n_masks batch"]:
    """The metric of every example with each row's components kept and the rest ablated.

    Arguments as in :func:`evaluate`, which returns the mean of this over the batch.

    Returns:
        float32 numpy array ``[M, batch]``.
    """
    return run(
        model,
        comps,
        rows,
        tokens,
        metric=metric,
        ablation=ablation,
        chunk_size=chunk_size,
        share_prefix=share_prefix,
        mesh=mesh,
        memory_budget=memory_budget,
    ).per_example


def evaluate(
    model: Transformer,
    comps: Components,
    rows: Bool[np.ndarray, "n_masks n_players"],
    tokens: Int[Array, "batch seq"] | Prompts,
    *,
    metric: Callable[..., jax.Array] = loss,
    ablation: Ablation | None = None,
    chunk_size: int | Literal["auto"] | None = None,
    share_prefix: bool = True,
    mesh: Mesh | None = None,
    memory_budget: int | None = None,
) -> Float[np.ndarray, " n_masks"]:
    """The metric of the model with each row's components kept and the rest ablated.

    Each chunk of rows is one jitted program (``jax.vmap`` over the rows); the last chunk is
    padded to the chunk size so that nothing recompiles, and the padding is dropped.

    Args:
        model: The model (its weights are not changed).
        comps: The players; column ``i`` of ``rows`` is ``comps[i]``.
        rows: ``bool [M, n]`` (or 0/1 numbers): which components are kept in each row.
        tokens: ``int [batch, seq]`` inputs, or right-padded :class:`~jaxablate.Prompts`
            (the metric then scores each prompt at its own positions and never reads a pad).
        metric: ``(logits, tokens) -> [batch]``, e.g. :func:`jaxablate.metrics.loss`.
        ablation: Replacement for removed components (default: zero ablation).
        chunk_size: Rows per compiled call. ``None``: all rows at once if they fit
            ``memory_budget``, else the largest chunk that does; ``"auto"``: the same chunk,
            and on a CPU the rows vmapped together in it timed two ways (remembered).
            Rounded up to a multiple of the number of devices in ``mesh``.
        share_prefix: Compute work shared by rows once (see the module docstring); ``False``
            runs every row through the whole model (same numbers, for tests and benchmarks).
        mesh: Devices to split the mask axis over (a 1-D mesh); default: all local devices.
        memory_budget: Bytes a chunk's activations may take (default: half the accelerator's
            memory, or a quarter of host RAM on CPU, at most 8 GiB).

    Returns:
        float32 numpy array ``[M]``: the batch mean of :func:`evaluate_per_example`.
    """
    return evaluate_per_example(
        model,
        comps,
        rows,
        tokens,
        metric=metric,
        ablation=ablation,
        chunk_size=chunk_size,
        share_prefix=share_prefix,
        mesh=mesh,
        memory_budget=memory_budget,
    ).mean(axis=1)
