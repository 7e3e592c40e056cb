"""``jaxablate estimate``: a thin command-line wrapper over :mod:`jaxablate.estimate`.

::

    jaxablate estimate --model induction-2l --tokens tokens.npy --components heads \\
        --index shapley --budget 2000 --seed 0 --out runs/estimate --json shapley.json \\
        --report shapley.html

Also the report section of an estimate (:func:`report_section`), for ``report.py``'s users.
"""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import jax

from jaxablate import estimate, report
from jaxablate._files import atomic_write_text
from jaxablate.games import Estimate, Game
from jaxablate.sweep_cli import _error, add_study_arguments, load_study

#: What ``--index`` estimates: the estimator and its ``method`` / ``index`` argument.
INDICES = ("shapley", "banzhaf", "sii", "removal")
_LABELS = {
    "shapley": "Shapley value",
    "banzhaf": "Banzhaf value",
    "sii": "Shapley interaction index (pairs)",
    "removal": "leave-two-out excess v(N) - v(N\\i) - v(N\\j) + v(N\\ij) (pairs)",
}


def add_estimate_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``jaxablate estimate``."""
    a = parser.add_argument
    add_study_arguments(
        parser, metric_help="as for jaxablate sweep (default loss, with --prompts logit_diff)"
    )
    a("--index", choices=INDICES, default="shapley", help="what to estimate (default shapley)")
    a(
        "--method",
        help="shapley: kernel (default) or permutation; banzhaf: regression (default) or msr",
    )
    a("--budget", type=int, required=True, help="most distinct subsets to evaluate")
    a("--seed", type=int, default=0, help="seed of the jax.random key (default 0)")
    a("--out", help="directory every evaluation is written through (rerun to resume)")
    a("--json", help="write the estimate (values, stderr, names, settings) to this JSON file")
    a("--top", type=int, default=10, help="rows of the printed table (default 10)")
    a("--report", help="write an HTML report of the estimate to this file")


def _run(game: Game, index: str, method: str | None, budget: int, seed: int) -> Estimate:
    key = jax.random.key(seed)
    if index in ("sii", "removal"):
        if method is not None:
            raise ValueError(f"--method does not apply to --index {index}")
        return estimate.pairs(game, budget=budget, key=key, index=index)  # type: ignore[arg-type]
    options: dict[str, Any] = {} if method is None else {"method": method}
    fn = estimate.shapley if index == "shapley" else estimate.banzhaf
    return fn(game, budget=budget, key=key, **options)


def _save(path: str, est: Estimate, names: list[str], args: argparse.Namespace, wall: float):
    record = {
        "index": args.index,
        "method": args.method,
        "budget": args.budget,
        "seed": args.seed,
        "evaluations": est.evaluations,
        "wall_seconds": wall,
        "components": names,
        "values": est.values.tolist(),
        "stderr": est.stderr.tolist(),
    }
    atomic_write_text(Path(path), json.dumps(record, indent=1) + "\n")


def run_estimate(args: argparse.Namespace) -> int:
    """Estimate Shapley or Banzhaf values, or pairwise interactions, under a budget."""
    try:
        model, comps, tokens, metric, ablation = load_study(args)
        game = Game(model, comps, tokens, metric=metric, ablation=ablation, out=args.out)
        start = time.perf_counter()
        est = _run(game, args.index, args.method, args.budget, args.seed)
        wall = time.perf_counter() - start
        if args.json:
            _save(args.json, est, comps.names, args, wall)
        if args.report:
            _write_report(args.report, est, comps.names, args)
    except ValueError as err:
        return _error("estimate", err)
    print(
        f"{_LABELS[args.index]} of {len(comps)} components, {est.evaluations} of "
        f"{args.budget} evaluations ({game.evaluations - game.resumed} run, {game.resumed} "
        f"read back from --out, {game.calls} calls), "
        f"{wall:.1f} s; estimate ± stderr (95% interval: ± 2 stderr)"
    )
    print(estimate.format_table(est, comps.names, top=max(1, args.top)))
    return 0


def report_section(
    est: Estimate, names: list[str], *, title: str = "Estimated values", top: int = 20
) -> str:
    """An HTML report section (:func:`jaxablate.report.section`) of an estimate.

    Args:
        est: From :func:`jaxablate.estimate.shapley`, ``banzhaf`` or ``pairs``.
        names: Component names (``comps.names``).
        title: The section's title.
        top: Rows of the table, largest ``|estimate|`` first.

    Raises:
        ValueError: ``names`` does not match the estimate.
    """
    head, rows = estimate.summary_rows(est, names, top)
    kind = "pairs" if est.values.ndim == 2 else "components"
    note = (
        f"Estimated from {est.evaluations} evaluations; stderr is the Monte Carlo standard "
        "error, and estimate ± 2 stderr an approximate 95% interval (zero: computed exactly)."
    )
    return report.section(
        title,
        report.paragraph(note, note=True),
        report.table(head, rows, caption=f"Top {len(rows)} {kind} by |estimate|"),
    )


def _write_report(path: str, est: Estimate, names: list[str], args: argparse.Namespace) -> None:
    label = _LABELS[args.index]
    section = report_section(est, names, title=label[0].upper() + label[1:])
    subtitle = (
        f"model {args.model}, components {args.components}, ablation {args.ablation}, "
        f"budget {args.budget}, seed {args.seed}"
    )
    report.write(path, report.page("jaxablate estimate", [section], subtitle=subtitle))


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="jaxablate estimate")
    add_estimate_arguments(parser)
    sys.exit(run_estimate(parser.parse_args()))
