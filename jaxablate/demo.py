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

This module is the top floor: it runs the study with the package's own modules;
:mod:`jaxablate._demo_result` holds :class:`DemoResult` and the summary, and
:mod:`jaxablate._demo_report` its figures and HTML report.
"""

import argparse
import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Int

from jaxablate import subsets
from jaxablate._checks import check_key, non_negative_int, positive_int
from jaxablate._demo_report import make_figures, write_demo_report
from jaxablate._demo_result import (
    PNGS,
    DemoResult,
    _pairs_ranked,
    demo_components,
    summarize,
)
from jaxablate._evaluate import evaluate
from jaxablate._files import progress_bar
from jaxablate.components import Components
from jaxablate.export import removal_costs
from jaxablate.learned import learn_masks
from jaxablate.models.transformer import Transformer
from jaxablate.pretrained import RECIPES, list_pretrained, load_pretrained
from jaxablate.recovery import recover
from jaxablate.tasks import Task

__all__ = [
    "PNGS",
    "DemoResult",
    "Stages",
    "add_demo_arguments",
    "demo_components",
    "make_figures",
    "run_demo",
    "run_demo_study",
    "summarize",
    "write_demo_report",
]


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
