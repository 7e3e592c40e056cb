"""jaxablate.plots: labels and names on every figure, input checks, and no training stack."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from jaxablate import plots


def test_plots_have_labels_and_names():
    names = ["L0H0", "L0H1", "L1H0"]
    figs = [
        plots.loco_vs_shapley(names, [0.1, 0.0, 0.5], [0.3, 0.2, 0.4]),
        plots.interaction_heatmap(names, np.array([[0, 1, -1], [1, 0, 0.5], [-1, 0.5, 0]])),
        plots.spectrum_bars([0.0, 0.6, 0.3, 0.1]),
        plots.mask_front([1, 2], [0.5, 0.1], exhaustive=[2.0, 0.4, 0.1, 0.0], full=0.0),
        plots.recovery_curves([0, 5], [[2.0, 1.0]], ["-{L0H0}"], baseline=0.5),
    ]
    for fig in figs:
        assert isinstance(fig, Figure)
        ax = fig.axes[0]
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    ticks = [t.get_text() for t in figs[1].axes[0].get_yticklabels()]
    assert ticks == names
    assert [t.get_text() for t in figs[0].axes[0].get_xticklabels()] == names
    with pytest.raises(ValueError, match="3 component names for 2 values"):
        plots.loco_vs_shapley(names, [0.1, 0.2], [0.1, 0.2])
    with pytest.raises(ValueError, match="square"):
        plots.interaction_heatmap(names, np.zeros((3, 2)))


def test_removed_label():
    names = ["A", "B", "C", "D", "E", "F"]
    assert plots.removed_label([True] * 6, names) == "none removed"
    assert plots.removed_label([False, True, True, True, True, True], names) == "-{A}"
    assert plots.removed_label([False] * 6, names) == "-{A, B, C, D, +2}"
    with pytest.raises(ValueError, match="6 component names for 2 values"):
        plots.removed_label([True, False], names)


def test_recovery_curves_draw_the_arrays():
    steps = np.array([0, 5, 10])
    curves = np.array([[2.0, 1.5, 1.2], [1.0, 1.0, 1.0]], np.float32)
    rows = np.array([[False, True], [True, True]])
    labels = [plots.removed_label(r, ["L0H0", "L0H1"]) for r in rows]
    fig = plots.recovery_curves(steps, curves, labels, baseline=1.0, metric_label="loss")
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert len(lines) == 3
    np.testing.assert_array_equal(lines[0].get_xdata(), steps)
    np.testing.assert_array_equal(lines[0].get_ydata(), curves[0])
    assert lines[-1].get_linestyle() == "--"
    np.testing.assert_array_equal(lines[-1].get_ydata(), [1.0, 1.0])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "-{L0H0}",
        "none removed",
        "unablated",
    ]
    assert ax.get_ylabel() == "loss"
    # into given axes, without a baseline
    fig2 = plots.recovery_curves(steps, curves, ["a", "b"], ax=ax)
    assert fig2 is fig and len(ax.get_lines()) == 5
    sub = Figure().subfigures(1, 2)[1]
    assert plots.recovery_curves(steps, curves, ["a", "b"], ax=sub.subplots()) is sub.figure
    with pytest.raises(ValueError, match="one label per configuration"):
        plots.recovery_curves(steps, curves, ["a"])
    with pytest.raises(ValueError, match="one per step"):
        plots.recovery_curves(steps[:2], curves, ["a", "b"])


def test_plots_import_nothing_from_the_package():
    """Loaded on its own, the plotting module pulls neither jaxablate nor the training stack."""
    path = Path(plots.__file__)
    code = textwrap.dedent(
        f"""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("standalone_plots", {str(path)!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.recovery_curves([0, 1], [[1.0, 0.5]], ["run"])
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in
                        ("jaxablate", "optax", "orbax", "flax"))
        print(loaded)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
