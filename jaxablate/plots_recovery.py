"""Plot of :func:`jaxablate.recover` curves: one line per configuration, the baseline dashed."""

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxablate.recovery import RecoveryResult


def _label(row: np.ndarray, names: Sequence[str]) -> str:
    removed = [name for name, kept in zip(names, row, strict=True) if not kept]
    if not removed:
        return "none removed"
    shown = ", ".join(removed[:4]) + (f", +{len(removed) - 4}" if len(removed) > 4 else "")
    return f"-{{{shown}}}"


def recovery_curves(
    result: RecoveryResult, *, ax: Axes | None = None, names: Sequence[str] | None = None
) -> Figure:
    """Metric against training step for every configuration of ``result``.

    Args:
        result: What :func:`jaxablate.recover` returned.
        ax: Axes to draw into (default: a new figure with the Agg canvas; nothing is shown).
        names: One legend label per configuration (default: the removed components).

    Returns:
        The figure holding the axes.
    """
    K = result.metric.shape[0]
    if names is None:
        names = [_label(row, result.names) for row in result.rows]
    elif len(names) != K:
        raise ValueError(f"names must give one label per configuration ({K}), got {len(names)}")
    if ax is None:
        fig = Figure(figsize=(6.0, 4.0))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    for k in range(K):
        ax.plot(result.steps, result.metric[k], marker="o", markersize=3, label=str(names[k]))
    ax.axhline(result.baseline, color="black", linestyle="--", linewidth=1.0, label="unablated")
    ax.set_xlabel("recovery training step")
    ax.set_ylabel(result.metric_name)
    ax.set_title("recovery after ablation")
    ax.legend(fontsize="small")
    return fig
