"""The figures and the HTML report of ``jaxablate demo``, from a :class:`DemoResult`: plain arrays
go to :mod:`jaxablate.plots`, HTML strings to :mod:`jaxablate.report`.
"""

from pathlib import Path

import numpy as np
from jaxtyping import Float
from matplotlib.figure import Figure

from jaxablate import interactions, plots, report
from jaxablate._demo_result import PNGS, DemoResult, _pairs_ranked
from jaxablate._files import atomic_write
from jaxablate.export import cost_label
from jaxablate.learned import LearnedMasks
from jaxablate.recovery import RecoveryResult

# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------


def _best_per_size(values: Float[np.ndarray, " n_coalitions"], sign: float) -> np.ndarray:
    """Best metric over all subsets of each size ``0..n`` (by the task's direction)."""
    n = interactions.n_players(values)
    sizes = np.asarray(interactions.coalition_sizes(n))
    best = np.empty(n + 1)
    for k in range(n + 1):
        vk = values[sizes == k]
        best[k] = vk.min() if sign > 0 else vk.max()
    return best


def _unit(res: DemoResult) -> str:
    """Unit of the study's costs."""
    return "nats" if res.sign > 0 else "metric units"


def _exhaustive_figures(res: DemoResult) -> dict[str, Figure]:
    """The four figures of the exhaustive table, by :data:`PNGS` key."""
    unit = _unit(res)
    return {
        "loco_vs_shapley": plots.loco_vs_shapley(
            res.names,
            res.loco_cost,
            res.shapley_cost,
            ylabel=f"removal cost ({unit}; higher = more important)",
            title=f"{res.model_name}: leave-one-out vs Shapley",
        ),
        "pairwise_interaction": plots.interaction_heatmap(
            res.names,
            res.pair_excess,
            title="Pair removal: joint cost minus the two single costs",
            colorbar_label=f"excess cost ({unit}); red = worse together",
        ),
        "shapley_interaction": plots.interaction_heatmap(
            res.names,
            res.sii_cost,
            title="Shapley interaction index of each pair (cost sign)",
            colorbar_label=f"SII ({unit}); red = redundant, blue = overlapping",
        ),
        "spectrum": plots.spectrum_bars(
            res.spectrum, title=f"{res.model_name}: interaction spectrum over all subsets"
        ),
    }


def _mask_front_figure(res: DemoResult, learned: LearnedMasks) -> Figure:
    """Learned masks over the exhaustive best subset of each size."""
    rows = np.asarray(learned.rows, bool)
    labels = [plots.removed_label(r, res.names) for r in rows]
    return plots.mask_front(
        np.asarray(learned.n_kept),
        np.asarray(learned.metric),
        exhaustive=_best_per_size(res.values, res.sign),
        metric_label=res.task.metric_label,
        full=res.full,
        labels=labels if len(res.names) <= 8 else None,
    )


def _recovery_figure(res: DemoResult, recovery: RecoveryResult) -> Figure:
    """Recovery curves of the demo's runs, labelled by what they removed."""
    return plots.recovery_curves(
        recovery.steps,
        recovery.metric,
        res.recovery_labels,
        baseline=recovery.baseline,
        metric_label=res.task.metric_label,
    )


def make_figures(res: DemoResult) -> dict[str, Figure]:
    """The demo's matplotlib figures by :data:`PNGS` key (optional ones only when computed).

    Args:
        res: The study.

    Returns:
        Figures by key, in report order.
    """
    figs = _exhaustive_figures(res)
    if res.learned is not None:
        figs["mask_front"] = _mask_front_figure(res, res.learned)
    if res.recovery is not None:
        figs["recovery"] = _recovery_figure(res, res.recovery)
    return figs


# ---------------------------------------------------------------------------------------------
# HTML report, one function per section
# ---------------------------------------------------------------------------------------------


def _save_png(fig: Figure, path: Path) -> Path:
    """Write ``fig`` to ``path`` as a PNG, atomically."""
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    return path


def _figure_or_note(res: DemoResult, key: str, alt: str) -> str:
    """The saved PNG of ``key`` inlined, or a note saying why it is missing."""
    if key in res.files:
        return report.image(res.files[key], alt)
    return report.paragraph(f"Not available: {res.notes.get(key, 'not computed')}.", note=True)


def _importance_section(res: DemoResult) -> str:
    rows = [
        (name, float(res.loco_cost[i]), float(res.shapley_cost[i]))
        for i, name in enumerate(res.names)
    ]
    return report.section(
        "Leave-one-out vs Shapley",
        report.paragraph(
            "Removal cost = how much the metric gets worse when a component is removed "
            "(zero ablation). Leave-one-out removes one component from the full model; the "
            f"Shapley value averages its cost over all {2 ** len(res.names)} subsets of the others."
        ),
        _figure_or_note(res, "loco_vs_shapley", "leave-one-out vs Shapley bars"),
        report.table(
            ["component", "leave-one-out cost", "Shapley cost"],
            rows,
            caption=cost_label(_unit(res)),
        ),
    )


def _pairs_section(res: DemoResult, top: int = 10) -> str:
    rows = [
        (
            f"{res.names[i]} + {res.names[j]}",
            float(res.loco_cost[i]),
            float(res.loco_cost[j]),
            float(res.pair_cost[i, j]),
            float(res.pair_excess[i, j]),
            float(res.sii_cost[i, j]),
        )
        for i, j in _pairs_ranked(res.pair_excess)[:top]
    ]
    return report.section(
        "Pairs",
        report.paragraph(
            "Excess = cost of removing both minus the two single costs. Positive: the pair "
            "backs each other up (each looks dispensable alone). Negative: they overlap."
        ),
        _figure_or_note(res, "pairwise_interaction", "pairwise interaction heatmap"),
        report.table(
            ["pair", "cost of i", "cost of j", "cost of both", "excess", "Shapley interaction"],
            rows,
            caption=f"Top pairs by |excess|; {cost_label(_unit(res))}",
        ),
        _figure_or_note(res, "shapley_interaction", "Shapley interaction heatmap"),
    )


def _spectrum_section(res: DemoResult) -> str:
    return report.section(
        "Interaction spectrum",
        report.paragraph(
            "Share of the variance of the metric over all subsets carried by interactions of "
            "each degree; degree 1 is what an additive (leave-one-out) picture can explain."
        ),
        _figure_or_note(res, "spectrum", "interaction spectrum"),
        report.table(
            ["degree", "share of variance"],
            [(str(d), f"{s:.1%}") for d, s in enumerate(res.spectrum) if d > 0],
        ),
    )


def _learned_section(res: DemoResult) -> str:
    return report.section(
        "Learned masks",
        report.paragraph(
            "Continuous masks trained to keep the metric low with few components, one run per "
            "sparsity penalty; grey: the best subset of each size from the exhaustive table."
        ),
        _figure_or_note(res, "mask_front", "learned mask front"),
    )


def _recovery_section(res: DemoResult) -> str:
    return report.section(
        "Recovery after ablation",
        report.paragraph(
            "Fine-tuning the remaining weights with the components kept removed: "
            + ", ".join(res.recovery_labels or ["(not run)"])
            + "."
        ),
        _figure_or_note(res, "recovery", "recovery curves"),
    )


def _setup_section(res: DemoResult) -> str:
    return report.section(
        "Setup",
        report.paragraph(f"Task: {res.task.description} Metric: {res.task.metric_label}."),
        report.paragraph(
            "Stage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in res.seconds.items()) + "."
        ),
    )


def write_demo_report(res: DemoResult, out_dir: Path) -> Path:
    """Write the PNGs and the self-contained ``report.html`` into ``out_dir``.

    Args:
        res: The study; its ``files`` gain every written path.
        out_dir: The report directory (created if missing).

    Returns:
        The path of ``report.html``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for key, fig in make_figures(res).items():
        res.files[key] = _save_png(fig, out_dir / PNGS[key])
    sections = [
        report.section("Summary", report.preformatted(res.summary)),
        _importance_section(res),
        _pairs_section(res),
        _spectrum_section(res),
        _learned_section(res),
        _recovery_section(res),
        _setup_section(res),
    ]
    doc = report.page(
        f"jaxablate demo: {res.model_name}",
        sections,
        subtitle="Leave-one-out misses what subsets reveal.",
    )
    res.files["report"] = report.write(out_dir / "report.html", doc)
    return res.files["report"]
