"""What ``jaxablate demo`` computed (:class:`DemoResult`) and its terminal summary.

The sign convention is :mod:`jaxablate.demo`'s: costs are removal costs, higher = more important.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Float

from jaxablate.components import Components, blocks, heads
from jaxablate.export import cost_label
from jaxablate.learned import LearnedMasks
from jaxablate.recovery import RecoveryResult
from jaxablate.tasks import Task

PNGS = {
    "loco_vs_shapley": "loco_vs_shapley.png",
    "pairwise_interaction": "pairwise_interaction.png",
    "shapley_interaction": "shapley_interaction.png",
    "spectrum": "spectrum.png",
    "mask_front": "mask_front.png",
    "recovery": "recovery_curves.png",
}
"""PNG files the demo writes (the last two only when their stages ran)."""


@dataclass
class DemoResult:
    """Everything the demo computed.

    Attributes:
        model_name: The shipped model.
        task: Its task.
        names: Component names, in column order.
        values: ``[2^n]`` metric with only coalition ``r`` kept (presence game, bit order).
        sign: ``+1`` when the metric is a loss (lower is better), else ``-1``; costs are
            ``sign * (v(N \\ S) - v(N))``.
        loco_cost: ``[n]`` cost of removing each component alone.
        shapley_cost: ``[n]`` Shapley value in cost sign (sums to the cost of removing all).
        pair_cost: ``[n, n]`` cost of removing each pair (diagonal: single costs).
        pair_excess: ``[n, n]`` ``pair_cost - loco_i - loco_j`` (zero diagonal).
        sii_cost: ``[n, n]`` pairwise Shapley interaction index in cost sign.
        spectrum: ``[n + 1]`` share of variance per interaction degree.
        summary: The terminal summary.
        learned: The :class:`jaxablate.learned.LearnedMasks` result, or ``None`` (skipped).
        recovery: The :class:`jaxablate.recovery.RecoveryResult`, or ``None`` (skipped).
        recovery_labels: Labels of the recovery runs.
        notes: Why optional sections are missing, by section.
        files: Written files by key (PNG keys of :data:`PNGS` and ``"report"``).
        seconds: Wall time of each stage.
    """

    model_name: str
    task: Task
    names: list[str]
    values: Float[np.ndarray, " n_coalitions"]
    sign: float
    loco_cost: Float[np.ndarray, " n"]
    shapley_cost: Float[np.ndarray, " n"]
    pair_cost: Float[np.ndarray, "n n"]
    pair_excess: Float[np.ndarray, "n n"]
    sii_cost: Float[np.ndarray, "n n"]
    spectrum: Float[np.ndarray, " n_degrees"]
    summary: str = ""
    learned: LearnedMasks | None = None
    recovery: RecoveryResult | None = None
    recovery_labels: list[str] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def full(self) -> float:
        """Metric of the full model."""
        return float(self.values[-1])

    @property
    def empty(self) -> float:
        """Metric with every component removed."""
        return float(self.values[0])


def demo_components(cfg: Any) -> Components:
    """The players of the demo: every head, plus every MLP block for models that have them."""
    comps = heads(cfg)
    return comps if cfg.attn_only else comps + blocks(cfg, "mlp")


def _pairs_ranked(excess: Float[np.ndarray, "n n"]) -> list[tuple[int, int]]:
    """Pairs ``i < j`` by decreasing ``|excess|``."""
    n = excess.shape[0]
    return sorted(
        ((i, j) for i in range(n) for j in range(i + 1, n)), key=lambda ij: -abs(excess[ij])
    )


# ---------------------------------------------------------------------------------------------
# Terminal summary
# ---------------------------------------------------------------------------------------------


def _pair_lines(res: DemoResult, tol: float, unit: str, top: int) -> list[str]:
    """The summary's pairs: joint removal clearly worse, then clearly better, than the sum."""
    names, c, pc, ex = res.names, res.loco_cost, res.pair_cost, res.pair_excess
    order = _pairs_ranked(ex)

    def pair(i: int, j: int, together: str) -> str:
        return (
            f"  {names[i]} + {names[j]}: alone {c[i]:+.3f} and {c[j]:+.3f} {unit}, "
            f"{together} {pc[i, j]:+.3f} {unit} (excess {ex[i, j]:+.3f})"
        )

    lines = ["Dispensable alone, not together (joint removal costs clearly more than the sum):"]
    synergy = [(i, j) for i, j in order if ex[i, j] > tol and pc[i, j] > 2 * (c[i] + c[j])]
    lines += [pair(i, j, "together") for i, j in synergy[:top]]
    if not synergy:
        lines.append("  none: no pair's joint removal costs clearly more than its single removals")
    lines.append(
        "Important alone, overlapping together (joint removal costs clearly less than the sum):"
    )
    overlap = [(i, j) for i, j in order if ex[i, j] < -tol]
    lines += [pair(i, j, "together only") for i, j in overlap[:top]]
    if not overlap:
        lines.append("  none when removed from the full model")
    sii = res.sii_cost
    neg = sorted((ij for ij in order if sii[ij] < -tol), key=lambda ij: sii[ij])
    if neg:
        lines.append(
            "  on average over all subsets (Shapley interaction < 0, e.g. parts in series):\n    "
            + ", ".join(f"{names[i]} + {names[j]} {sii[i, j]:+.2f}" for i, j in neg[:top])
        )
    return lines


def _ranking_lines(res: DemoResult, tol: float) -> list[str]:
    """The summary's rankings: leave-one-out vs Shapley, and the share beyond degree 1."""
    names, c, shap = res.names, res.loco_cost, res.shapley_cost
    by_loco = np.argsort(-c, kind="stable")
    by_shap = np.argsort(-shap, kind="stable")
    lines = [
        "Most important by leave-one-out: "
        + ", ".join(f"{names[i]} {c[i]:+.3f}" for i in by_loco[:3]),
        "Most important by Shapley:       "
        + ", ".join(f"{names[i]} {shap[i]:+.3f}" for i in by_shap[:3]),
    ]
    hidden = [i for i in by_shap if shap[i] > tol and c[i] < 0.25 * shap[i]]
    if hidden:
        lines.append(
            "Leave-one-out undersells "
            + ", ".join(names[i] for i in hidden[:4])
            + " (Shapley cost over 4x their single-removal cost)"
        )
    beyond = 1.0 - float(res.spectrum[1])
    lines.append(
        f"{beyond:.0%} of the variance over all subsets comes from interactions of degree >= 2 "
        "(what leave-one-out cannot see)."
    )
    return lines


def summarize(res: DemoResult, *, unit: str = "nats", top: int = 3) -> str:
    """The terminal summary; every named component is chosen from the data.

    Args:
        res: The study (its exhaustive fields; the optional stages are not used).
        unit: Unit of the costs in the text.
        top: Pairs named per kind.

    Returns:
        The summary, several lines.
    """
    n = len(res.names)
    scale = max(abs(res.empty - res.full), float(np.abs(res.pair_cost).max()), 1e-12)
    tol = 0.05 * scale  # "clearly" = more than 5% of the largest effect in the table
    lines = [
        f"jaxablate demo: {res.model_name} — all {2**n} subsets of {n} components "
        f"({', '.join(res.names)})",
        f"metric: {res.task.metric_label}",
        f"full model {res.full:.4f}; everything removed {res.empty:.4f}",
        f"costs: {cost_label(unit)}",
        "",
        *_pair_lines(res, tol, unit, top),
        "",
        *_ranking_lines(res, tol),
    ]
    return "\n".join(lines)
