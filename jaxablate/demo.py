"""``jaxablate demo``: the whole study on a shipped toy model, with a terminal summary and a report.

Every subset of the model's heads (and MLP blocks, if any) is evaluated, and the table of
``2^n`` results is decomposed: leave-one-out (LOCO) costs, Shapley values, pairwise interactions
and the interaction spectrum. When :mod:`jaxablate.learned` and :mod:`jaxablate.recovery` are
installed, learned masks and recovery curves are added. The summary names, from the data, pairs
of components that look dispensable alone but not together (and the opposite).

Sign convention: a **removal cost** is how much the task metric gets worse when components are
removed (for a loss: the loss increase). ``cost(S) = v(N \\ S) - v(N)`` for a loss, so the
**excess** of a pair, ``cost({i, j}) - cost({i}) - cost({j})``, equals
:func:`jaxablate.interactions.removal_pairs` of the presence game.
"""

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxablate import interactions, report, subsets
from jaxablate._evaluate import evaluate
from jaxablate.components import Components, blocks, heads
from jaxablate.pretrained import RECIPES, list_pretrained, load_pretrained
from jaxablate.tasks import Task

PNGS = {
    "loco_vs_shapley": "loco_vs_shapley.png",
    "pairwise_interaction": "pairwise_interaction.png",
    "shapley_interaction": "shapley_interaction.png",
    "spectrum": "spectrum.png",
    "mask_front": "mask_front.png",
    "recovery": "recovery_curves.png",
}
"""PNG files the demo writes (the last two only when their modules are available)."""


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
        learned: The :class:`jaxablate.learned.LearnedMasks` result, or ``None``.
        recovery: The :class:`jaxablate.recovery.RecoveryResult`, or ``None``.
        recovery_labels: Labels of the recovery runs.
        notes: Why optional sections are missing, by section.
        files: Written files by key (PNG keys of :data:`PNGS` and ``"report"``).
        seconds: Wall time of each stage.
    """

    model_name: str
    task: Task
    names: list[str]
    values: np.ndarray
    sign: float
    loco_cost: np.ndarray
    shapley_cost: np.ndarray
    pair_cost: np.ndarray
    pair_excess: np.ndarray
    sii_cost: np.ndarray
    spectrum: np.ndarray
    summary: str = ""
    learned: Any = None
    recovery: Any = None
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


def decompose(values: np.ndarray, *, lower_is_better: bool) -> dict[str, np.ndarray]:
    """LOCO, Shapley, pair costs, pair excess, SII pairs and spectrum in cost sign."""
    v = np.asarray(values, np.float64)
    n = interactions.n_players(v)
    sign = 1.0 if lower_is_better else -1.0
    full = 2**n - 1
    bit = 1 << np.arange(n)
    pair_cost = sign * (v[full & ~(bit[:, None] | bit[None, :])] - v[full])
    out = {
        "loco_cost": -sign * np.asarray(interactions.loco(v), np.float64),
        "shapley_cost": -sign * np.asarray(interactions.shapley(v), np.float64),
        "pair_cost": pair_cost,
        "pair_excess": sign * np.asarray(interactions.removal_pairs(v), np.float64),
        "sii_cost": sign
        * np.asarray(interactions.pairs(interactions.shapley_interaction(v)), np.float64),
        "spectrum": np.asarray(interactions.spectrum(v), np.float64),
    }
    out = {k: x + 0.0 for k, x in out.items()}  # no "-0.000" in printed costs
    return {"sign": np.float64(sign), **out}


def _pairs_ranked(excess: np.ndarray) -> list[tuple[int, int]]:
    n = excess.shape[0]
    return sorted(
        ((i, j) for i in range(n) for j in range(i + 1, n)), key=lambda ij: -abs(excess[ij])
    )


def summarize(res: DemoResult, *, unit: str = "nats", top: int = 3) -> str:
    """The terminal summary; every named component is chosen from the data."""
    names, c, pc, ex = res.names, res.loco_cost, res.pair_cost, res.pair_excess
    n = len(names)
    scale = max(abs(res.empty - res.full), float(np.abs(pc).max()), 1e-12)
    tol = 0.05 * scale  # "clearly" = more than 5% of the largest effect in the table
    lines = [
        f"jaxablate demo: {res.model_name} — all {2**n} subsets of {n} components "
        f"({', '.join(names)})",
        f"metric: {res.task.metric_label}",
        f"full model {res.full:.4f}; everything removed {res.empty:.4f}",
        "",
        "Dispensable alone, not together (joint removal costs clearly more than the sum):",
    ]
    order = _pairs_ranked(ex)
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
    by_loco = np.argsort(-c, kind="stable")
    by_shap = np.argsort(-res.shapley_cost, kind="stable")
    lines += [
        "",
        "Most important by leave-one-out: "
        + ", ".join(f"{names[i]} {c[i]:+.3f}" for i in by_loco[:3]),
        "Most important by Shapley:       "
        + ", ".join(f"{names[i]} {res.shapley_cost[i]:+.3f}" for i in by_shap[:3]),
    ]
    hidden = [i for i in by_shap if res.shapley_cost[i] > tol and c[i] < 0.25 * res.shapley_cost[i]]
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
    return "\n".join(lines)


def _try_learned(model, comps, tokens, task, values, steps, key, res: DemoResult) -> None:
    try:
        from jaxablate.learned import learn_masks
    except ImportError as err:
        res.notes["mask_front"] = f"learned masks unavailable ({err})"
        return
    # penalty per *fraction* of components kept, in metric units: up to a few times the cost of
    # removing everything, so the front spans from "keep all" to "keep few"
    scale = max(abs(res.empty - res.full), 1e-3)
    sparsity = (scale * np.array([0.05, 0.15, 0.3, 0.6, 1.2, 2.4])).astype(np.float32)
    res.learned = learn_masks(
        model, comps, tokens[:64], metric=task.metric, sparsity=sparsity, steps=steps, key=key
    )


def _try_recovery(model, comps, tokens, task, steps, key, res: DemoResult) -> None:
    try:
        from jaxablate.recovery import recover
    except ImportError as err:
        res.notes["recovery"] = f"recovery unavailable ({err})"
        return
    n = len(comps)
    top = [int(i) for i in np.argsort(-res.loco_cost, kind="stable")[:2]]
    i, j = _pairs_ranked(res.pair_excess)[0]
    rows = np.ones((3, n), dtype=bool)
    rows[0, top[0]] = rows[1, top[1]] = False
    rows[2, [i, j]] = False
    res.recovery_labels = [
        f"{res.names[top[0]]} removed",
        f"{res.names[top[1]]} removed",
        f"{res.names[i]} + {res.names[j]} removed",
    ]
    k_train, k_eval, k_run = jax.random.split(key, 3)
    res.recovery = recover(
        model,
        comps,
        rows,
        task.batch(k_train, 2048),
        steps=steps,
        eval_tokens=task.batch(k_eval, 256),
        eval_every=max(steps // 10, 1),
        metric=task.metric,
        batch_size=32,
        key=k_run,
        progress=False,
    )


def run_demo_study(
    model_name: str = "induction-2l",
    *,
    out_dir: str | Path | None = None,
    batch_size: int = 256,
    learn_steps: int = 300,
    recover_steps: int = 200,
    key: jax.Array | None = None,
) -> DemoResult:
    """Run the demo's study and (with ``out_dir``) write its PNGs and ``report.html``.

    Args:
        model_name: A shipped model (:func:`jaxablate.list_pretrained`).
        out_dir: Where to write the report; ``None`` computes only.
        batch_size: Evaluation sequences.
        learn_steps: Steps of :func:`jaxablate.learned.learn_masks` (0 skips it).
        recover_steps: Steps of :func:`jaxablate.recovery.recover` (0 skips it).
        key: Randomness of the evaluation batch and the optional stages (default: key 0).

    Returns:
        A :class:`DemoResult`.
    """
    if model_name not in RECIPES:
        raise ValueError(f"unknown model {model_name!r}; available: {', '.join(list_pretrained())}")
    key = jax.random.key(0) if key is None else key
    k_eval, k_learn, k_rec = jax.random.split(key, 3)
    t0 = time.perf_counter()
    model, task = load_pretrained(model_name)
    comps = demo_components(model.config)
    tokens = task.batch(k_eval, batch_size)
    values = evaluate(model, comps, subsets.all(len(comps)), tokens, metric=task.metric)
    parts = decompose(values, lower_is_better=task.lower_is_better)
    res = DemoResult(
        model_name=model_name,
        task=task,
        names=comps.names,
        values=np.asarray(values, np.float64),
        sign=float(parts.pop("sign")),
        **parts,
    )
    res.seconds["sweep"] = time.perf_counter() - t0
    res.summary = summarize(res)
    if learn_steps > 0:
        t0 = time.perf_counter()
        _try_learned(model, comps, tokens, task, values, learn_steps, k_learn, res)
        res.seconds["learned"] = time.perf_counter() - t0
    else:
        res.notes["mask_front"] = "learned masks skipped (learn_steps=0)"
    if recover_steps > 0:
        t0 = time.perf_counter()
        _try_recovery(model, comps, tokens, task, recover_steps, k_rec, res)
        res.seconds["recovery"] = time.perf_counter() - t0
    else:
        res.notes["recovery"] = "recovery skipped (recover_steps=0)"
    if out_dir is not None:
        t0 = time.perf_counter()
        write_demo_report(res, Path(out_dir))
        res.seconds["report"] = time.perf_counter() - t0
    return res


def _best_per_size(values: np.ndarray, sign: float) -> np.ndarray:
    """Best metric over all subsets of each size ``0..n`` (by the task's direction)."""
    n = interactions.n_players(values)
    sizes = np.asarray(interactions.coalition_sizes(n))
    best = np.empty(n + 1)
    for k in range(n + 1):
        vk = values[sizes == k]
        best[k] = vk.min() if sign > 0 else vk.max()
    return best


def make_figures(res: DemoResult) -> dict[str, Any]:
    """The demo's matplotlib figures by :data:`PNGS` key (optional ones only when computed)."""
    from jaxablate import plots

    unit = "nats" if res.sign > 0 else "metric units"
    figs = {
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
    if res.learned is not None:
        lm = res.learned
        rows = np.asarray(lm.rows, bool)
        labels = [
            ("-" + ",".join(n for n, k in zip(res.names, r, strict=True) if not k))
            if not r.all()
            else "all kept"
            for r in rows
        ]
        figs["mask_front"] = plots.mask_front(
            np.asarray(lm.n_kept),
            np.asarray(lm.metric),
            exhaustive=_best_per_size(res.values, res.sign),
            metric_label=res.task.metric_label,
            full=res.full,
            labels=labels if len(res.names) <= 8 else None,
        )
    if res.recovery is not None:
        try:
            figs["recovery"] = plots.recovery_curves(res.recovery, names=res.recovery_labels)
        except ImportError as err:
            res.notes["recovery"] = f"recovery plot unavailable ({err})"
    return figs


def write_demo_report(res: DemoResult, out_dir: Path) -> Path:
    """Write the PNGs and the self-contained ``report.html`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figs = make_figures(res)
    for key, fig in figs.items():
        path = out_dir / PNGS[key]
        fig.savefig(path, dpi=110)
        res.files[key] = path
    n = len(res.names)
    head_rows = [
        (name, float(res.loco_cost[i]), float(res.shapley_cost[i]))
        for i, name in enumerate(res.names)
    ]
    pair_rows = [
        (
            f"{res.names[i]} + {res.names[j]}",
            float(res.loco_cost[i]),
            float(res.loco_cost[j]),
            float(res.pair_cost[i, j]),
            float(res.pair_excess[i, j]),
            float(res.sii_cost[i, j]),
        )
        for i, j in _pairs_ranked(res.pair_excess)[:10]
    ]

    def img(key: str, alt: str) -> str:
        if key in res.files:
            return report.image(res.files[key], alt)
        return report.paragraph(f"Not available: {res.notes.get(key, 'not computed')}.", note=True)

    sections = [
        report.section("Summary", report.preformatted(res.summary)),
        report.section(
            "Leave-one-out vs Shapley",
            report.paragraph(
                "Removal cost = how much the metric gets worse when a component is removed "
                "(zero ablation). Leave-one-out removes one component from the full model; the "
                f"Shapley value averages its cost over all {2**n} subsets of the others."
            ),
            img("loco_vs_shapley", "leave-one-out vs Shapley bars"),
            report.table(["component", "leave-one-out cost", "Shapley cost"], head_rows),
        ),
        report.section(
            "Pairs",
            report.paragraph(
                "Excess = cost of removing both minus the two single costs. Positive: the pair "
                "backs each other up (each looks dispensable alone). Negative: they overlap."
            ),
            img("pairwise_interaction", "pairwise interaction heatmap"),
            report.table(
                ["pair", "cost of i", "cost of j", "cost of both", "excess", "Shapley interaction"],
                pair_rows,
                caption="Top pairs by |excess|",
            ),
            img("shapley_interaction", "Shapley interaction heatmap"),
        ),
        report.section(
            "Interaction spectrum",
            report.paragraph(
                "Share of the variance of the metric over all subsets carried by interactions of "
                "each degree; degree 1 is what an additive (leave-one-out) picture can explain."
            ),
            img("spectrum", "interaction spectrum"),
            report.table(
                ["degree", "share of variance"],
                [(str(d), f"{s:.1%}") for d, s in enumerate(res.spectrum) if d > 0],
            ),
        ),
        report.section(
            "Learned masks",
            report.paragraph(
                "Continuous masks trained to keep the metric low with few components, one run per "
                "sparsity penalty; grey: the best subset of each size from the exhaustive table."
            ),
            img("mask_front", "learned mask front"),
        ),
        report.section(
            "Recovery after ablation",
            report.paragraph(
                "Fine-tuning the remaining weights with the components kept removed: "
                + ", ".join(res.recovery_labels or ["(not run)"])
                + "."
            ),
            img("recovery", "recovery curves"),
        ),
        report.section(
            "Setup",
            report.paragraph(f"Task: {res.task.description} Metric: {res.task.metric_label}."),
            report.paragraph(
                "Stage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in res.seconds.items()) + "."
            ),
        ),
    ]
    doc = report.page(
        f"jaxablate demo: {res.model_name}",
        sections,
        subtitle="Leave-one-out misses what subsets reveal.",
    )
    path = report.write(out_dir / "report.html", doc)
    res.files["report"] = path
    return path


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``jaxablate demo``'s options."""
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


def run_demo(args: argparse.Namespace) -> int:
    """``jaxablate demo``: run the study, print the summary, write the report."""
    t0 = time.perf_counter()
    res = run_demo_study(
        args.model,
        out_dir=args.out,
        batch_size=64 if args.fast else 256,
        learn_steps=30 if args.fast else 300,
        recover_steps=20 if args.fast else 200,
        key=jax.random.key(args.seed),
    )
    print(res.summary)
    for note in res.notes.values():
        print(f"note: {note}")
    print(f"\nreport: {res.files['report']}  ({time.perf_counter() - t0:.0f} s)")
    return 0
