"""Host-side planning of prefix sharing: which rows share their input to each masked layer.

Rows that agree on the components of layers ``< l`` share the residual stream entering layer
``l``. Sorting rows by their components, earliest layer most significant, makes every shared
prefix a contiguous run, so each chunk of sorted rows forms a small tree:

- stage ``j`` (the ``j``-th masked layer ``l_j``) has one node per distinct prefix of layers
  ``<= l_j`` in the chunk (the last stage: one node per row);
- each node's parent is its prefix of layers ``< l_j`` at stage ``j - 1`` (stage 0 is the root,
  the residual entering ``l_1``, shared by all rows).

Node counts differ between chunks; they are padded to the largest count over all chunks of a
call, so one compiled program serves every chunk.
"""

from dataclasses import dataclass

import numpy as np

from jaxablate.components import Components


@dataclass(frozen=True)
class PrefixPlan:
    """How to order and split rows into prefix trees.

    Attributes:
        layers: Masked layers in increasing order (one stage each).
        stage_cols: Row columns of the components in each stage's layer.
        order: Permutation that sorts the rows (``rows[order]``).
        keys: ``[stages, M]`` prefix code of each sorted row through each stage.
    """

    layers: tuple[int, ...]
    stage_cols: tuple[np.ndarray, ...]
    order: np.ndarray
    keys: np.ndarray


def stage_layers(comps: Components) -> tuple[tuple[int, ...], tuple[np.ndarray, ...]]:
    """Masked layers and, for each, the columns of its components."""
    layers = comps.layers
    cols = tuple(
        np.array([i for i, c in enumerate(comps) if c.layer == layer], dtype=np.int64)
        for layer in layers
    )
    return layers, cols


def plan(comps: Components, rows: np.ndarray) -> PrefixPlan:
    """Sort binary ``rows`` [M, n] so that shared prefixes are contiguous."""
    layers, cols = stage_layers(comps)
    binary = rows > 0.5
    n_rows = rows.shape[0]
    keys = np.zeros((len(layers), n_rows), dtype=np.int64)
    if len(comps) <= 62:
        # one integer per row: stage 1 columns most significant
        code = np.zeros(n_rows, dtype=np.int64)
        for j, c in enumerate(cols):
            for col in c:
                code = (code << 1) | binary[:, col]
            keys[j] = code
        order = np.argsort(keys[-1], kind="stable")
        keys = keys[:, order]
    else:
        stage_major = binary[:, np.concatenate(cols)]
        order = np.lexsort(stage_major.T[::-1])
        sorted_rows = stage_major[order]
        start = 0
        for j, c in enumerate(cols):
            start += len(c)
            _, keys[j] = np.unique(sorted_rows[:, :start], axis=0, return_inverse=True)
    return PrefixPlan(layers, cols, order, keys)


def node_counts(keys: np.ndarray, group: int) -> np.ndarray:
    """Largest number of distinct prefixes per stage within any block of ``group`` rows.

    ``keys`` must already be padded to a multiple of ``group``.
    """
    changes = np.ones_like(keys, dtype=bool)
    changes[:, 1:] = keys[:, 1:] != keys[:, :-1]
    blocks = changes.reshape(keys.shape[0], -1, group).copy()
    blocks[:, :, 0] = True  # every block starts a new node
    return blocks.sum(-1).max(-1)


def padded_sizes(counts: np.ndarray, comps: Components, group: int) -> tuple[int, ...]:
    """Static node counts per stage: measured counts rounded up to a power of two.

    Rounding lets calls with similar row structure reuse one compiled program; a stage never
    holds more nodes than the block has rows or than its prefixes have values. The last stage
    holds every row of the block.
    """
    _, cols = stage_layers(comps)
    bits = np.cumsum([len(c) for c in cols])
    sizes = []
    for count, n_bits in zip(counts[:-1], bits[:-1], strict=True):
        rounded = 1 << int(np.ceil(np.log2(max(int(count), 1))))
        sizes.append(min(rounded, group, 2 ** int(min(n_bits, 62))))
    return (*sizes, group)


def block_tree(
    rows: np.ndarray, keys: np.ndarray, sizes: tuple[int, ...]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Parents and representative rows of each stage for one block of sorted rows.

    Args:
        rows: ``[c, n]`` sorted rows of the block.
        keys: ``[stages, c]`` their prefix codes.
        sizes: Padded node count per stage (the last stage equals ``c``).

    Returns:
        ``parents[j]`` int32 ``[sizes[j]]`` (index into stage ``j - 1``; zeros for stage 0) and
        ``reps[j]`` float32 ``[sizes[j], n]`` (a row holding each node's prefix).
    """
    parents, reps = [], []
    prev_group = np.zeros(rows.shape[0], dtype=np.int64)
    for j in range(keys.shape[0]):
        new = np.ones(rows.shape[0], dtype=bool)
        new[1:] = keys[j, 1:] != keys[j, :-1]
        first = np.flatnonzero(new) if j < keys.shape[0] - 1 else np.arange(rows.shape[0])
        parent = prev_group[first]
        rep = rows[first]
        pad = sizes[j] - len(first)
        if pad < 0:
            raise AssertionError("prefix plan underestimated a stage's node count")
        if pad:
            parent = np.concatenate([parent, np.repeat(parent[-1:], pad)])
            rep = np.concatenate([rep, np.repeat(rep[-1:], pad, axis=0)])
        parents.append(parent.astype(np.int32))
        reps.append(rep.astype(np.float32))
        prev_group = np.cumsum(new) - 1
    return parents, reps
