"""Matplotlib figures for ablation studies (every function returns a Figure).

All functions take plain arrays, sequences and component names, so they work on any study's
results, in notebooks or scripts, and this module imports nothing from the rest of the package:
plotting needs neither the models nor the training stack. Figures are built with the
object-oriented API (``matplotlib.figure.Figure``, rendered by Agg on ``savefig``), never through
``pyplot``: no global backend is switched, no GUI is needed, nothing has to be closed, and Jupyter
still displays a returned Figure.

Sign convention used in the labels: a **removal cost** is how much the metric gets worse when
components are removed (for a loss: the loss increase), so bigger bars mean more important.

Recovery curves from a :class:`jaxablate.RecoveryResult` ``r``::

    labels = [plots.removed_label(row, r.names) for row in r.rows]
    fig = plots.recovery_curves(
        r.steps, r.metric, labels, baseline=r.baseline, metric_label=r.metric_name
    )

What a head attends to, from :meth:`jaxablate.Transformer.run_with_cache` over prompts ``p``::

    cache = model.run_with_cache(p, names=["pattern"])
    fig = plots.attention_pattern(
        cache["pattern"], layer=1, head=3, example=0, token_labels=labels, lengths=p.lengths
    )
"""

from collections.abc import Sequence

import numpy as np
from jaxtyping import ArrayLike, Bool, Real
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = [
    "attention_pattern",
    "interaction_heatmap",
    "loco_vs_shapley",
    "mask_front",
    "recovery_curves",
    "removed_label",
    "spectrum_bars",
]

_BLUE, _ORANGE, _GREY = "#1f77b4", "#ff7f0e", "#7f7f7f"


def _subplots(figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots()


def _names(names: Sequence[str], n: int) -> list[str]:
    names = [str(x) for x in names]
    if len(names) != n:
        raise ValueError(f"got {len(names)} component names for {n} values")
    return names


def loco_vs_shapley(
    names: Sequence[str],
    loco: Real[ArrayLike, " n"],
    shapley: Real[ArrayLike, " n"],
    *,
    ylabel: str = "removal cost (metric increase)",
    title: str = "Leave-one-out vs Shapley",
) -> Figure:
    """Grouped bars: each component's leave-one-out cost next to its Shapley value.

    Args:
        names: Component names (x-axis).
        loco: ``[n]`` cost of removing each component alone from the full model.
        shapley: ``[n]`` Shapley value of each component, in the same (cost) sign.
        ylabel: Y-axis label, which should state the sign convention.
        title: Figure title.

    Returns:
        The figure.
    """
    loco = np.asarray(loco, dtype=float).ravel()
    shapley = np.asarray(shapley, dtype=float).ravel()
    if loco.shape != shapley.shape:
        raise ValueError(
            f"loco and shapley must have the same shape, got {loco.shape} and {shapley.shape}"
        )
    labels = _names(names, loco.size)
    x = np.arange(loco.size)
    fig, ax = _subplots((max(6.0, 0.7 * loco.size + 2), 4.2))
    w = 0.38
    ax.bar(x - w / 2, loco, w, label="leave-one-out (removed alone)", color=_BLUE)
    ax.bar(x + w / 2, shapley, w, label="Shapley (average over all subsets)", color=_ORANGE)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, labels, rotation=45 if loco.size > 12 else 0)
    ax.set_xlabel("component")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return fig


def interaction_heatmap(
    names: Sequence[str],
    matrix: Real[ArrayLike, "n n"],
    *,
    title: str = "Pairwise interaction",
    colorbar_label: str = "interaction",
    annotate: bool | None = None,
) -> Figure:
    """Symmetric ``[n, n]`` interaction matrix as a diverging heatmap centred at zero.

    Args:
        names: Component names (both axes).
        matrix: ``[n, n]`` values, e.g. ``removal_pairs`` or ``pairs(shapley_interaction(v))``.
        title: Figure title (say which index and sign it shows).
        colorbar_label: Label of the colour bar.
        annotate: Write each value in its cell (default: when ``n <= 12``).

    Returns:
        The figure.
    """
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"matrix must be square [n, n], got shape {m.shape}")
    n = m.shape[0]
    labels = _names(names, n)
    annotate = n <= 12 if annotate is None else annotate
    vmax = float(np.nanmax(np.abs(m))) or 1.0
    size = max(4.5, 0.55 * n + 2.5)
    fig, ax = _subplots((size + 1.2, size))
    im = ax.imshow(m, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    ax.set_xticks(
        np.arange(n), labels, rotation=45 if n > 6 else 0, ha="right" if n > 6 else "center"
    )
    ax.set_yticks(np.arange(n), labels)
    ax.set_xlabel("component j")
    ax.set_ylabel("component i")
    ax.set_title(title)
    if annotate:
        for i in range(n):
            for j in range(n):
                if i == j:
                    continue
                color = "white" if abs(m[i, j]) > 0.6 * vmax else "black"
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=8, color=color)
    fig.colorbar(im, ax=ax, label=colorbar_label, shrink=0.85)
    return fig


def spectrum_bars(
    spectrum: Real[ArrayLike, " n_degrees"], *, title: str = "Interaction spectrum"
) -> Figure:
    """Share of the variance over all subsets at each interaction degree.

    Args:
        spectrum: ``[n + 1]`` from :func:`jaxablate.interactions.spectrum` (entry 0 is 0).
        title: Figure title.

    Returns:
        The figure.
    """
    s = np.asarray(spectrum, dtype=float).ravel()
    deg = np.arange(1, s.size)
    fig, ax = _subplots((max(5.0, 0.5 * s.size + 2), 3.8))
    bars = ax.bar(deg, s[1:], color=[_BLUE] + [_ORANGE] * (s.size - 2))
    for b, v in zip(bars, s[1:], strict=True):
        if v >= 0.005:
            ax.text(
                b.get_x() + b.get_width() / 2, v, f"{v:.0%}", ha="center", va="bottom", fontsize=9
            )
    ax.set_xticks(deg)
    ax.set_xlabel("interaction degree (1 = additive, each component on its own)")
    ax.set_ylabel("share of variance over all subsets")
    ax.set_ylim(0, min(1.0, float(s[1:].max()) * 1.15 + 0.02))
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return fig


def mask_front(
    n_kept: Real[ArrayLike, " n_masks"],
    metric: Real[ArrayLike, " n_masks"],
    *,
    exhaustive: Real[ArrayLike, " n_sizes"] | None = None,
    metric_label: str = "metric",
    full: float | None = None,
    labels: Sequence[str] | None = None,
    title: str = "Learned masks vs the best subset of each size",
) -> Figure:
    """Metric against subset size: learned masks, optionally over the exhaustive best per size.

    Args:
        n_kept: ``[P]`` components kept by each learned (binarised) mask.
        metric: ``[P]`` the exact metric of each binarised mask.
        exhaustive: Optional ``[n + 1]`` best metric over all subsets of each size ``0..n``
            (from a full sweep), drawn as a line for reference.
        metric_label: Y-axis label (say whether lower is better).
        full: The full model's metric, drawn dashed.
        labels: Optional text per learned point (e.g. the kept components).
        title: Figure title.

    Returns:
        The figure.
    """
    k = np.asarray(n_kept, dtype=float).ravel()
    y = np.asarray(metric, dtype=float).ravel()
    if k.shape != y.shape:
        raise ValueError(f"n_kept and metric must have the same shape, got {k.shape} and {y.shape}")
    fig, ax = _subplots((7.0, 4.5))
    if exhaustive is not None:
        best = np.asarray(exhaustive, dtype=float).ravel()
        ax.plot(
            np.arange(best.size),
            best,
            "-",
            color=_GREY,
            marker=".",
            label="best subset of each size (exhaustive)",
        )
    ax.scatter(k, y, s=55, color=_ORANGE, zorder=3, edgecolor="black", label="learned masks")
    if labels is not None:
        if len(labels) != k.size:
            raise ValueError(f"got {len(labels)} labels for {k.size} learned masks")
        seen = set()
        for xi, yi, t in zip(k, y, labels, strict=True):
            if (xi, round(float(yi), 6)) in seen:  # penalties that found the same mask
                continue
            seen.add((xi, round(float(yi), 6)))
            ax.annotate(
                str(t), (xi, yi), textcoords="offset points", xytext=(-6, 8), ha="right", fontsize=8
            )
    if full is not None:
        ax.axhline(full, color="black", ls="--", lw=1, label="full model")
    ax.set_xlabel("components kept")
    ax.set_ylabel(metric_label)
    ax.set_title(title)
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    return fig


def removed_label(kept: Bool[ArrayLike, " n"], names: Sequence[str], *, limit: int = 4) -> str:
    """A short label naming the removed components of one row, e.g. ``"-{L0H1, L1H2}"``.

    Args:
        kept: ``bool [n]`` one subset (True = kept).
        names: The ``n`` component names.
        limit: Name at most this many; the rest are counted (``"-{A, B, C, D, +2}"``).

    Returns:
        The label, ``"none removed"`` for a full row.
    """
    row = np.asarray(kept, dtype=bool).ravel()
    removed = [name for name, k in zip(_names(names, row.size), row, strict=True) if not k]
    if not removed:
        return "none removed"
    more = f", +{len(removed) - limit}" if len(removed) > limit else ""
    return "-{" + ", ".join(removed[:limit]) + more + "}"


def _root_figure(ax: Axes) -> Figure:
    fig = ax.figure
    if isinstance(fig, Figure):
        return fig
    if fig is None:
        raise ValueError("ax belongs to no figure")
    return fig.figure  # a SubFigure: its root Figure


def recovery_curves(
    steps: Real[ArrayLike, " n_evals"],
    curves: Real[ArrayLike, "n_runs n_evals"],
    labels: Sequence[str],
    *,
    baseline: float | None = None,
    metric_label: str = "metric",
    title: str = "Recovery after ablation",
    ax: Axes | None = None,
) -> Figure:
    """Metric against training step, one line per ablated configuration, the baseline dashed.

    With a :class:`jaxablate.RecoveryResult` ``r``: ``recovery_curves(r.steps, r.metric,
    [removed_label(row, r.names) for row in r.rows], baseline=r.baseline,
    metric_label=r.metric_name)``.

    Args:
        steps: ``[E]`` training steps at which the metric was evaluated.
        curves: ``[K, E]`` the metric of each configuration at each step.
        labels: One legend label per configuration (``K`` of them).
        baseline: The unablated model's metric, drawn dashed (``None``: not drawn).
        metric_label: Y-axis label (say whether lower is better).
        title: Figure title.
        ax: Axes to draw into (default: a new figure).

    Returns:
        The figure holding the axes.
    """
    x = np.asarray(steps, dtype=float).ravel()
    y = np.asarray(curves, dtype=float)
    if y.ndim != 2 or y.shape[1] != x.size:
        raise ValueError(f"curves must be [n_runs, {x.size}] (one per step), got shape {y.shape}")
    if len(labels) != y.shape[0]:
        raise ValueError(
            f"labels must give one label per configuration ({y.shape[0]}), got {len(labels)}"
        )
    fig, ax = _subplots((6.5, 4.2)) if ax is None else (_root_figure(ax), ax)
    for yk, label in zip(y, labels, strict=True):
        ax.plot(x, yk, marker="o", markersize=3, label=str(label))
    if baseline is not None:
        ax.axhline(float(baseline), color="black", ls="--", lw=1, label="unablated")
    ax.set_xlabel("recovery training step")
    ax.set_ylabel(metric_label)
    ax.set_title(title)
    ax.legend(frameon=False, fontsize="small")
    ax.grid(alpha=0.3)
    return fig


def _pattern_2d(
    pattern: Real[ArrayLike, "..."], layer: int | None, head: int | None, example: int | None
) -> np.ndarray:
    """The ``[query, key]`` pattern: ``pattern`` itself, or one entry of a stacked one."""
    p = np.asarray(pattern, dtype=float)
    if p.ndim == 2:
        if (layer, head, example) != (None, None, None):
            raise ValueError(
                "layer, head and example index a stacked [layer, batch, head, query, key] "
                f"pattern; this one is already [query, key] {p.shape}: leave them out"
            )
        return p
    if p.ndim != 5:
        raise ValueError(
            "pattern must be [query, key], or [layer, batch, head, query, key] "
            f"(cache['pattern']) with layer and head given, got shape {p.shape}"
        )
    if layer is None or head is None:
        raise ValueError(
            f"a stacked pattern {p.shape} needs layer= and head= (and example=, default 0)"
        )
    return p[layer, 0 if example is None else example, head]


def _pad_length(lengths: int | ArrayLike | None, example: int | None, seq: int) -> int:
    """Real tokens of the shown example: ``lengths`` itself, or ``lengths[example]``."""
    if lengths is None:
        return seq
    arr = np.asarray(lengths).ravel()
    if arr.size != 1 and example is None:
        raise ValueError(f"got {arr.size} lengths for one [query, key] pattern: pass one")
    n = int(arr[0 if example is None else example])
    if not 1 <= n <= seq:
        raise ValueError(f"the example's length must lie in [1, {seq}] (its positions), got {n}")
    return n


def attention_pattern(
    pattern: Real[ArrayLike, "query key"] | Real[ArrayLike, "layer batch head query key"],
    *,
    layer: int | None = None,
    head: int | None = None,
    example: int | None = None,
    token_labels: Sequence[str] | None = None,
    lengths: int | ArrayLike | None = None,
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """One head's attention over a prompt: row ``q`` is how query position ``q`` spreads its
    attention over the key positions (each row sums to 1; later keys are causally 0).

    Args:
        pattern: ``[query, key]`` probabilities, or ``cache["pattern"]`` of
            :meth:`jaxablate.Transformer.run_with_cache` (``[layer, batch, head, query, key]``)
            with ``layer``, ``head`` and ``example`` choosing one.
        layer: The head's layer (stacked patterns only).
        head: The head (a query head under grouped-query attention; stacked patterns only).
        example: Which example of the batch (stacked patterns only; default 0).
        token_labels: One label per position (e.g. the decoded tokens), for both axes.
        lengths: Real tokens of the example, or ``[batch]`` lengths (``Prompts.lengths``) read
            at ``example``: pad positions past it are left out of the figure.
        title: Figure title (default: names the head).
        ax: Axes to draw into (default: a new figure).

    Returns:
        The figure holding the axes.
    """
    p = _pattern_2d(pattern, layer, head, example)
    seq = p.shape[0]
    if p.shape[1] != seq:
        raise ValueError(f"pattern must be square [query, key] over one prompt, got {p.shape}")
    n = _pad_length(lengths, example, seq)
    p = p[:n, :n]
    size = min(12.0, max(4.5, 0.35 * n + 2.5))
    fig, ax = _subplots((size + 1.2, size)) if ax is None else (_root_figure(ax), ax)
    im = ax.imshow(p, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    if token_labels is not None:
        labels = [str(t) for t in token_labels]
        if len(labels) not in (n, seq):
            raise ValueError(
                f"got {len(labels)} token labels for a prompt of {n} real tokens ({seq} positions)"
            )
        ax.set_xticks(np.arange(n), labels[:n], rotation=90)
        ax.set_yticks(np.arange(n), labels[:n])
    ax.set_xlabel("key (attended-to position)")
    ax.set_ylabel("query (attending position)")
    default = "Attention pattern" if layer is None else f"L{layer}H{head} attention pattern"
    if example is not None:
        default += f" (example {example})"
    ax.set_title(default if title is None else title)
    fig.colorbar(im, ax=ax, label="attention probability", shrink=0.85)
    return fig
