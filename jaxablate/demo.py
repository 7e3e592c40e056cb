"""``jaxablate demo``: the whole study on a shipped toy model, with a terminal summary and a report.

Every subset of the model's heads (and MLP blocks, if any) is evaluated, and the table of
``2^n`` results is decomposed: leave-one-out (LOCO) costs, Shapley values, pairwise interactions
and the interaction spectrum. Learned masks (:func:`jaxablate.learn_masks`) and recovery curves
(:func:`jaxablate.recover`) are added unless their step counts are 0. The summary names, from the
data, pairs of components that look dispensable alone but not together (and the opposite).

Sign convention (:mod:`jaxablate.export`): a **removal cost** is how much the task metric gets
worse when components are removed (for a loss: the loss increase). ``cost(S) = v(N \\ S) - v(N)``
for a loss, so the **excess** of a pair, ``cost({i, j}) - cost({i}) - cost({j})``, equals
:func:`jaxablate.interactions.removal_pairs` of the presence game.

From the command line each stage is announced on stderr as it starts, with a progress bar for
the long ones when stderr is a terminal, and its time when it ends.

This module is the top floor: it runs the study with the package's own modules and hands plain
arrays to :mod:`jaxablate.plots` and HTML strings to :mod:`jaxablate.report`.
"""

import argparse
import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int
from matplotlib.figure import Figure

from jaxablate import interactions, plots, report, subsets
from jaxablate._checks import check_key, non_negative_int, positive_int
from jaxablate._evaluate import evaluate
from jaxablate._files import atomic_write, progress_bar
from jaxablate.components import Components, blocks, heads
from jaxablate.export import cost_label, removal_costs
from jaxablate.learned import LearnedMasks, learn_masks
from jaxablate.models.pretrained import RECIPES, list_pretrained, load_pretrained
from jaxablate.models.transformer import Transformer
from jaxablate.recovery import RecoveryResult, recover
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
    lines = ["Dispensable alone, not together (joint removal costs clearly more than the sum):"]
    synergy = [(i, j) for i, j in order if ex[i, j] > tol and pc[i, j] > 2 * (c[i] + c[j])]
    for i, j in synergy[:top]:
        lines.append(
            f"  {names[i]} + {names[j]}: alone {c[i]:+.3f} and {c[j]:+.3f} {unit}, "
            f"together {pc[i, j]:+.3f} {unit} (excess {ex[i, j]:+.3f})"
        )
    if not synergy:
        lines.append("  none: no pair's joint removal costs clearly more than its single removals")
    lines.append(
        "Important alone, overlapping together (joint removal costs clearly less than the sum):"
    )
    overlap = [(i, j) for i, j in order if ex[i, j] < -tol]
    for i, j in overlap[:top]:
        lines.append(
            f"  {names[i]} + {names[j]}: alone {c[i]:+.3f} and {c[j]:+.3f} {unit}, "
            f"together only {pc[i, j]:+.3f} {unit} (excess {ex[i, j]:+.3f})"
        )
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


# ---------------------------------------------------------------------------------------------
# Stages of the study
# ---------------------------------------------------------------------------------------------


class Stages:
    """Announces each stage of the demo on stderr as it starts, and its time when it ends.

    Attributes:
        total: Number of stages (skipped ones count).
        enabled: Print at all (and show progress bars when stderr is a terminal).
        seconds: Wall time of each finished stage, by key.
    """

    def __init__(self, total: int, *, enabled: bool):
        self.total = total
        self.enabled = enabled
        self.seconds: dict[str, float] = {}
        self._count = 0

    def _say(self, text: str) -> None:
        if self.enabled:
            print(text, file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def run(self, key: str, text: str) -> Iterator[None]:
        """Announce stage ``text``, time the block as ``key``, and say when it is done."""
        self._count += 1
        self._say(f"[{self._count}/{self.total}] {text} ...")
        t0 = time.perf_counter()
        yield
        self.seconds[key] = time.perf_counter() - t0
        self._say(f"      done in {self.seconds[key]:.1f} s")

    def skip(self, text: str) -> None:
        """Announce a stage that does not run."""
        self._count += 1
        self._say(f"[{self._count}/{self.total}] {text}: skipped")


@contextlib.contextmanager
def _ticking(bar: Any) -> Iterator[None]:
    """Redraw ``bar`` twice a second while the block runs, so its elapsed time moves."""
    if bar.disable:
        yield
        return
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(0.5):
            bar.refresh()

    thread = threading.Thread(target=tick, name="demo progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _all_values(
    model: Transformer,
    comps: Components,
    tokens: Int[Array, "batch seq"],
    task: Task,
    progress: bool,
) -> np.ndarray:
    """The metric of every subset, in eight equal slices of rows (one compiled program) so that
    a progress bar can follow."""
    rows = subsets.all(len(comps))
    step = max(1, rows.shape[0] // 8)
    parts = []
    with progress_bar(total=rows.shape[0], desc="subsets", unit="subset", enabled=progress) as bar:
        for start in range(0, rows.shape[0], step):
            part = rows[start : start + step]
            parts.append(evaluate(model, comps, part, tokens, metric=task.metric))
            bar.update(part.shape[0])
    return np.concatenate([np.asarray(p, np.float64) for p in parts])


def _exhaustive_stages(
    stages: Stages, model_name: str, batch_size: int, key: jax.Array
) -> tuple[DemoResult, Transformer, Components, Int[Array, "batch seq"]]:
    """Load the model, evaluate every subset and decompose the table."""
    with stages.run("load", f"loading {model_name} and drawing {batch_size} sequences"):
        model, task = load_pretrained(model_name)
        comps = demo_components(model.config)
        tokens = task.batch(key, batch_size)
    n = len(comps)
    with stages.run("sweep", f"evaluating all {2**n} subsets of {n} components (compiles first)"):
        values = _all_values(model, comps, tokens, task, stages.enabled)
    with stages.run("decompose", "decomposing: leave-one-out, Shapley values, pairs, spectrum"):
        parts = removal_costs(values, lower_is_better=task.lower_is_better)
        res = DemoResult(
            model_name=model_name,
            task=task,
            names=comps.names,
            values=values,
            sign=float(parts["sign"]),
            loco_cost=parts["loco_cost"],
            shapley_cost=parts["shapley_cost"],
            pair_cost=parts["pair_cost"],
            pair_excess=parts["pair_excess"],
            sii_cost=parts["sii_cost"],
            spectrum=parts["spectrum"],
        )
        res.summary = summarize(res)
    return res, model, comps, tokens


SPARSITY_SCALES = (0.05, 0.15, 0.3, 0.6, 1.2, 2.4)
"""Sparsity penalties of the learned masks, in units of the cost of removing everything."""


def _learned_stage(
    res: DemoResult,
    model: Transformer,
    comps: Components,
    tokens: Int[Array, "batch seq"],
    steps: int,
    key: jax.Array,
    stages: Stages,
) -> None:
    """Learn masks for a range of sparsity penalties into ``res.learned`` (``steps=0``: skip)."""
    what = f"learning masks: {len(SPARSITY_SCALES)} sparsity penalties x {steps} steps"
    if steps == 0:  # optional by request only: a failing run raises like any other stage
        res.notes["mask_front"] = "learned masks skipped (learn_steps=0)"
        stages.skip("learning masks")
        return
    # penalty per *fraction* of components kept, in metric units: up to a few times the cost of
    # removing everything, so the front spans from "keep all" to "keep few"
    scale = max(abs(res.empty - res.full), 1e-3)
    sparsity = jnp.asarray(scale * np.array(SPARSITY_SCALES), jnp.float32)
    with (
        stages.run("learned", f"{what}, one compiled run (the bar fills when it ends)"),
        progress_bar(total=steps, desc="learn masks", unit="step", enabled=stages.enabled) as bar,
        _ticking(bar),
    ):
        res.learned = learn_masks(
            model, comps, tokens[:64], metric=res.task.metric, sparsity=sparsity, steps=steps,
            key=key,
        )  # fmt: skip
        bar.update(steps)


def _recovery_rows(res: DemoResult) -> tuple[np.ndarray, list[str]]:
    """Rows and labels of the recovery runs: the two costliest single removals, the top pair."""
    top = [int(i) for i in np.argsort(-res.loco_cost, kind="stable")[:2]]
    i, j = _pairs_ranked(res.pair_excess)[0]
    rows = np.ones((3, len(res.names)), dtype=bool)
    rows[0, top[0]] = rows[1, top[1]] = False
    rows[2, [i, j]] = False
    labels = [
        f"{res.names[top[0]]} removed",
        f"{res.names[top[1]]} removed",
        f"{res.names[i]} + {res.names[j]} removed",
    ]
    return rows, labels


def _recovery_stage(
    res: DemoResult,
    model: Transformer,
    comps: Components,
    steps: int,
    key: jax.Array,
    stages: Stages,
) -> None:
    """Fine-tune three ablated copies into ``res.recovery`` (``steps=0``: skip)."""
    if steps == 0:  # optional by request only: a failing run raises like any other stage
        res.notes["recovery"] = "recovery skipped (recover_steps=0)"
        stages.skip("fine-tuning ablated models")
        return
    rows, res.recovery_labels = _recovery_rows(res)
    k_train, k_eval, k_run = jax.random.split(key, 3)
    with stages.run("recovery", f"fine-tuning {len(rows)} ablated models for {steps} steps"):
        res.recovery = recover(
            model,
            comps,
            rows,
            res.task.batch(k_train, 2048),
            steps=steps,
            eval_tokens=res.task.batch(k_eval, 256),
            eval_every=max(steps // 10, 1),
            metric=res.task.metric,
            batch_size=32,
            key=k_run,
            progress=stages.enabled,
        )


def run_demo_study(
    model_name: str = "induction-2l",
    *,
    out_dir: str | Path | None = None,
    batch_size: int = 256,
    learn_steps: int = 300,
    recover_steps: int = 200,
    key: jax.Array | None = None,
    progress: bool = False,
) -> DemoResult:
    """Run the demo's study and (with ``out_dir``) write its PNGs and ``report.html``.

    Args:
        model_name: A shipped model (:func:`jaxablate.list_pretrained`).
        out_dir: Where to write the report; ``None`` computes only.
        batch_size: Evaluation sequences.
        learn_steps: Steps of :func:`jaxablate.learned.learn_masks` (0 skips it).
        recover_steps: Steps of :func:`jaxablate.recovery.recover` (0 skips it).
        key: Randomness of the evaluation batch and the optional stages (default: key 0).
        progress: Announce each stage on stderr as it starts and its time when it ends, with
            progress bars for the long ones when stderr is a terminal.

    Returns:
        A :class:`DemoResult`; ``seconds`` holds the wall time of each stage.

    Raises:
        ValueError: An unknown model, or a bad size, step count or key.
    """
    if model_name not in RECIPES:
        raise ValueError(f"unknown model {model_name!r}; available: {', '.join(list_pretrained())}")
    batch_size = positive_int("batch_size", batch_size)
    learn_steps = non_negative_int("learn_steps", learn_steps)
    recover_steps = non_negative_int("recover_steps", recover_steps)
    key = jax.random.key(0) if key is None else check_key(key)
    k_eval, k_learn, k_rec = jax.random.split(key, 3)
    stages = Stages(5 if out_dir is None else 6, enabled=progress)
    res, model, comps, tokens = _exhaustive_stages(stages, model_name, batch_size, k_eval)
    _learned_stage(res, model, comps, tokens, learn_steps, k_learn, stages)
    _recovery_stage(res, model, comps, recover_steps, k_rec, stages)
    res.seconds = stages.seconds
    if out_dir is not None:
        with stages.run("report", f"writing the report into {out_dir}"):
            write_demo_report(res, Path(out_dir))
    return res


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


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``jaxablate demo``'s options.

    Args:
        parser: The ``demo`` subcommand's parser.
    """
    parser.add_argument(
        "--model",
        default="induction-2l",
        choices=sorted(RECIPES),
        help="shipped toy model to study (default: induction-2l)",
    )
    parser.add_argument(
        "--out", default="jaxablate-demo", help="report directory (default: ./jaxablate-demo)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the evaluation batch")
    parser.add_argument(
        "--fast", action="store_true", help="fewer sequences and training steps (a quick check)"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="do not announce the stages on stderr"
    )


def run_demo(args: argparse.Namespace) -> int:
    """``jaxablate demo``: run the study, print the summary, write the report.

    Args:
        args: Parsed options of :func:`add_demo_arguments`.

    Returns:
        The exit status (0).
    """
    t0 = time.perf_counter()
    res = run_demo_study(
        args.model,
        out_dir=args.out,
        batch_size=64 if args.fast else 256,
        learn_steps=30 if args.fast else 300,
        recover_steps=20 if args.fast else 200,
        key=jax.random.key(args.seed),
        progress=not args.no_progress,
    )
    print(res.summary)
    for note in res.notes.values():
        print(f"note: {note}")
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in res.seconds.items())
    print(f"\nreport: {res.files['report']}")
    print(f"elapsed: {time.perf_counter() - t0:.1f} s ({stages})")
    return 0
