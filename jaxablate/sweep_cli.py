"""``jaxablate sweep`` and ``jaxablate show``: thin command-line wrappers over the sweep library.

::

    jaxablate sweep --model induction-2l --tokens tokens.npy --components heads \\
        --ablation mean --metric loss --out runs/heads
    jaxablate show runs/heads
"""

import argparse
import json
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxablate import ablation as ablation_lib
from jaxablate import metrics as metrics_lib
from jaxablate._files import atomic_write_text
from jaxablate._prompts import Prompts
from jaxablate._sweep import load_sweep, sweep, sweep_chunks, sweep_status
from jaxablate.components import Component, Components, blocks, heads
from jaxablate.models.config import ModelConfig
from jaxablate.models.hf import from_hf
from jaxablate.models.inputs import Ablation
from jaxablate.models.io import load_model
from jaxablate.models.transformer import Transformer
from jaxablate.pretrained import RECIPES, list_pretrained, load_pretrained
from jaxablate.prompts_cli import add_prompt_arguments, answer_metric, load_prompts, resample_source

ABLATIONS = ("zero", "mean", "resample")
METRICS = ("loss", "accuracy", "kl", "logit_diff")  # logit_diff: --prompts answers
_KIND_SPEC = re.compile(r"^(heads|attn|mlp)(?::(\d+)(?:-(\d+))?)?$")
_NAME_SPEC = re.compile(r"^L(\d+)(?:H(\d+)|\.(attn|mlp))$")
_LOGIT_DIFF_SPEC = re.compile(r"logit_diff:(\d+):(\d+)(?::(-?\d+))?")
_TASK_SPEC = re.compile(r"task(?::(\w+))?")
#: The file in a sweep directory that records the ``jaxablate sweep`` command that started it.
COMMAND_FILE = "command.json"


# ------------------------------------------------------------------------------ helpers


def resolve_model(name_or_dir: str) -> Transformer:
    """A model from a directory (jaxablate or Hugging Face format), a shipped toy model name, or
    a Hugging Face Hub id ``org/name`` (through the local cache; see :func:`jaxablate.from_hf`).

    Raises:
        ValueError: none of these.
    """
    if os.path.isdir(name_or_dir):
        return load_model(name_or_dir)
    known = list_pretrained()
    if name_or_dir in known:
        model, _ = load_pretrained(name_or_dir)
        return model
    if "/" in name_or_dir:
        try:
            return from_hf(name_or_dir)
        except ValueError as err:
            raise ValueError(f"--model {name_or_dir!r}: {err}") from None
    raise ValueError(
        f"--model {name_or_dir!r} is neither a model directory nor a shipped toy model "
        f"(shipped: {known}) nor a Hugging Face Hub id 'org/name'"
    )


def _layers(cfg: ModelConfig, lo: str | None, hi: str | None) -> list[int] | None:
    if lo is None:
        return None
    first, last = int(lo), int(lo if hi is None else hi)
    if last < first:
        raise ValueError(
            f"--components: layer range {first}-{last} is empty (ranges are inclusive: low-high)"
        )
    return list(range(first, last + 1))


def _block_kind(text: str) -> Literal["attn", "mlp"]:
    return "attn" if text == "attn" else "mlp"


def _named(cfg: ModelConfig, item: str, name: re.Match[str]) -> Components:
    """The one component named by ``item`` (``L0H3``, ``L1.attn``, ``L1.mlp``)."""
    layer = int(name.group(1))
    if not 0 <= layer < cfg.n_layers:
        raise ValueError(
            f"--components {item}: the model has layers 0..{cfg.n_layers - 1}, got layer {layer}"
        )
    if name.group(2) is None:
        return blocks(cfg, _block_kind(name.group(3)), [layer])
    head = int(name.group(2))
    if not 0 <= head < cfg.n_heads:
        raise ValueError(
            f"--components {item}: the model has heads 0..{cfg.n_heads - 1}, got head {head}"
        )
    return Components(cfg, (Component("head", layer, head),))


def parse_components(cfg: ModelConfig, spec: str) -> Components:
    """Components from a comma-separated spec, in the order given.

    Items: ``heads``, ``attn``, ``mlp`` (every layer), ``heads:2`` (one layer), ``heads:1-3``
    (inclusive layer range), or a component name (``L0H3``, ``L1.attn``, ``L1.mlp``). For
    example ``heads:0,mlp`` is every head of layer 0 followed by every MLP block.

    Raises:
        ValueError: an item matches none of these forms or names a missing layer or head.
    """
    parts: list[Components] = []
    for item in (s.strip() for s in spec.split(",")):
        kind = _KIND_SPEC.match(item)
        name = _NAME_SPEC.match(item)
        if kind:
            layers = _layers(cfg, kind.group(2), kind.group(3))
            if kind.group(1) == "heads":
                parts.append(heads(cfg, layers))
            else:
                parts.append(blocks(cfg, _block_kind(kind.group(1)), layers))
        elif name:
            parts.append(_named(cfg, item, name))
        else:
            raise ValueError(
                f"--components: unknown component spec {item!r}; use heads, attn, mlp, "
                "optionally with layers "
                "(heads:2, heads:1-3), or names like L0H3, L1.mlp, joined by commas"
            )
    out = parts[0]
    for p in parts[1:]:
        out = out + p
    return out


def _load_tokens(path: str, what: str, vocab_size: int | None = None) -> jax.Array:
    try:
        tokens = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"{what} {path}: cannot read a .npy array ({err})") from None
    if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(
            f"{what} {path} must hold an integer array [batch, seq], got {tokens.dtype} "
            f"{tokens.shape}"
        )
    if vocab_size is not None and tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise ValueError(
            f"{what} {path}: token ids must lie in [0, {vocab_size}) (the model's vocab_size), "
            f"got values in [{tokens.min()}, {tokens.max()}]"
        )
    return jnp.asarray(tokens)


def _ablation(
    kind: str, model: Transformer, tokens: jax.Array | Prompts, ref: jax.Array | None
) -> Ablation:
    if kind == "zero":
        return ablation_lib.zero()
    if kind == "mean":
        return ablation_lib.mean(model, tokens if ref is None else ref)
    if isinstance(tokens, Prompts):
        return ablation_lib.resample(model, resample_source(tokens, ref))
    if ref is None:
        raise ValueError("--ablation resample needs --ref-tokens (source inputs, same shape)")
    if ref.shape != tokens.shape:
        raise ValueError(
            f"--ref-tokens for resample must have the tokens' shape {tokens.shape}, got {ref.shape}"
        )
    return ablation_lib.resample(model, ref)


def _metric_spec(text: str) -> str:
    if text in METRICS or _LOGIT_DIFF_SPEC.fullmatch(text) or _TASK_SPEC.fullmatch(text):
        return text
    raise argparse.ArgumentTypeError(
        f"--metric must be one of {', '.join(METRICS)}, task, task:NAME or "
        f"logit_diff:CORRECT:WRONG[:POSITION] (token ids; position default -1), got {text!r}"
    )


def task_metrics(model_name: str) -> dict[str, Any]:
    """The metrics of a shipped model's task by name: ``task`` (its headline metric) and
    ``task:NAME`` for every named metric (``task:repeat_loss``, ``task:repeat_accuracy``, ...).

    Raises:
        ValueError: ``model_name`` is not a shipped toy model.
    """
    if model_name not in RECIPES:
        raise ValueError(
            f"--metric task needs --model to be a shipped toy model ({', '.join(sorted(RECIPES))}),"
            f" got {model_name!r}; use loss, accuracy, kl or logit_diff:... for other models"
        )
    task = RECIPES[model_name].make_task()
    named = {metrics_lib.metric_name(task.metric): task.metric, **task.extra_metrics}
    return {"task": task.metric, **{f"task:{k}": m for k, m in named.items()}}


def _metric(name: str, model: Transformer, tokens: jax.Array | Prompts, model_name: str) -> Any:
    if _TASK_SPEC.fullmatch(name):
        known = task_metrics(model_name)
        if name not in known:
            raise ValueError(
                f"--metric {name}: the task of {model_name} has the metrics {', '.join(known)}"
            )
        return known[name]
    if name == "logit_diff":
        return answer_metric(tokens)
    if name == "kl":
        return metrics_lib.kl_to_clean(model, tokens)
    m = _LOGIT_DIFF_SPEC.fullmatch(name)
    if m:
        correct, wrong = int(m.group(1)), int(m.group(2))
        vocab = model.config.vocab_size
        if not (correct < vocab and wrong < vocab):
            raise ValueError(f"--metric {name}: token ids must lie in [0, {vocab}) (vocab_size)")
        position = int(m.group(3)) if m.group(3) is not None else -1
        return metrics_lib.logit_diff(correct, wrong, position=position)
    return {"loss": metrics_lib.loss, "accuracy": metrics_lib.accuracy}[name]


def _worker(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)/(\d+)", text)
    if not m:
        raise argparse.ArgumentTypeError(f"--worker must read INDEX/COUNT, e.g. 0/4, got {text!r}")
    index, count = int(m.group(1)), int(m.group(2))
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(
            f"--worker INDEX/COUNT must be 0 <= INDEX < COUNT (workers 0..COUNT-1), got {text!r}"
        )
    return index, count


def _chunk(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int or 'auto', got {text!r}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}")
    return value


def _error(command: str, err: Exception) -> int:
    print(f"jaxablate {command}: error: {err}", file=sys.stderr)
    return 2


# ------------------------------------------------------------------------------ a study


def add_study_arguments(parser: argparse.ArgumentParser, *, metric_help: str) -> None:
    """Register what every study command reads: model, inputs, components, ablation, metric."""
    a = parser.add_argument
    a("--model", required=True, help="model directory (jaxablate or HF format) or toy model name")
    a("--tokens", help=".npy file of int tokens [batch, seq] (or --prompts)")
    add_prompt_arguments(parser)
    a("--components", default="heads", help="e.g. heads, heads:2-3, mlp, heads:0,mlp, L0H1")
    a("--ablation", choices=ABLATIONS, default="zero", help="replacement of removed components")
    a("--ref-tokens", help=".npy reference tokens (mean: averaged over; resample: sources)")
    # default None: loss with --tokens, logit_diff with --prompts (set by load_study)
    a("--metric", type=_metric_spec, default=None, help=metric_help)


def load_study(args: argparse.Namespace) -> tuple[Transformer, Components, Any, Any, Ablation]:
    """The model, components, inputs (tokens or Prompts), metric and ablation that
    :func:`add_study_arguments`'s options name; ``args.metric`` gets its default.

    Raises:
        ValueError: an option that cannot be used (the message names it).
    """
    model = resolve_model(args.model)
    prompts = load_prompts(args, model)  # --prompts FILE.jsonl, else None
    vocab = model.config.vocab_size
    tokens = _load_tokens(args.tokens, "--tokens", vocab) if prompts is None else prompts
    args.metric = args.metric or ("loss" if prompts is None else "logit_diff")
    ref = None
    if args.ref_tokens is not None:
        ref = _load_tokens(args.ref_tokens, "--ref-tokens", vocab)
    comps = parse_components(model.config, args.components)
    metric = _metric(args.metric, model, tokens, args.model)
    return model, comps, tokens, metric, _ablation(args.ablation, model, tokens, ref)


# ------------------------------------------------------------------------------ sweep


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``jaxablate sweep``."""
    a = parser.add_argument
    add_study_arguments(
        parser,
        metric_help="loss (next-token loss at every position), accuracy, kl (KL divergence from "
        "the clean model), task (a shipped model's task metric, the one the demo reports), "
        "task:NAME (one of the task's named metrics, e.g. task:repeat_accuracy) or "
        "logit_diff:CORRECT:WRONG[:POSITION] (logit of token CORRECT minus WRONG at POSITION, "
        "default -1; evaluated at that position only); with --prompts also logit_diff (each "
        "prompt's correct minus wrong answer at its last token; the default there)",
    )
    a("--out", required=True, help="sweep directory (rerun the same command to resume)")
    a("--chunk-size", type=_chunk, default="auto", help="rows per on-disk chunk (default auto)")
    a("--eval-chunk-size", type=_chunk, default="auto", help="rows per compiled call")
    a("--worker", type=_worker, help="INDEX/COUNT (default: jax.process_index/process_count)")
    a("--no-wait", action="store_true", help="exit after this worker's chunks")
    a("--no-progress", action="store_true", help="no progress bar")


def _resume_command(command_line: list[str]) -> list[str]:
    """``command_line`` without ``--worker`` and ``--no-wait``: one process finishing it all."""
    out: list[str] = []
    skip = False
    for word in command_line:
        if skip:
            skip = False
        elif word == "--worker":
            skip = True
        elif word != "--no-wait" and not word.startswith("--worker="):
            out.append(word)
    return out


def _is_sweep(out_dir: str) -> bool:
    """Whether ``out_dir`` holds a sweep (its manifest)."""
    try:
        sweep_status(out_dir)
    except ValueError:
        return False
    return True


def _record_command(out_dir: str, command_line: list[str]) -> None:
    """Write :data:`COMMAND_FILE` into a sweep directory this command created (never replaced;
    a failure to write it, e.g. on a full disk, is ignored: it only serves advice)."""
    out = Path(out_dir)
    if not _is_sweep(out_dir):
        return
    record = {"argv": _resume_command(command_line), "cwd": os.getcwd()}
    try:
        atomic_write_text(out / COMMAND_FILE, json.dumps(record, indent=2), exclusive=True)
    except OSError:
        pass


def recorded_command(out_dir: str | os.PathLike) -> str | None:
    """The shell command that resumes the sweep in ``out_dir``, if ``jaxablate sweep`` started
    it (``cd DIR && ...`` when it ran from another directory), else ``None``."""
    try:
        record = json.loads((Path(out_dir) / COMMAND_FILE).read_text())
        text = shlex.join(str(a) for a in record["argv"])
        cwd = str(record["cwd"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return text if os.path.abspath(cwd) == os.getcwd() else f"cd {shlex.quote(cwd)} && {text}"


def run_sweep(args: argparse.Namespace) -> int:
    """Run (or resume) a sweep over every subset of the chosen components.

    With ``--no-wait`` only this worker's chunks are computed (:func:`jaxablate.sweep_chunks`);
    the summary is printed when the sweep is complete. A sweep directory this command creates
    records the command (:data:`COMMAND_FILE`), so ``jaxablate show`` can say how to finish an
    interrupted sweep.
    """
    fresh = not _is_sweep(args.out)
    try:
        return _sweep_and_report(args)
    finally:  # also after Ctrl-C or a full disk: that is when the advice is needed
        if fresh:
            _record_command(args.out, args.command_line)


def _sweep_and_report(args: argparse.Namespace) -> int:
    try:
        if os.path.exists(args.out) and not os.path.isdir(args.out):
            raise ValueError(f"--out {args.out} is a file, not a directory: give a directory")
        model, comps, tokens, metric, ablation = load_study(args)
        options: dict[str, Any] = {
            "metric": metric,
            "ablation": ablation,
            "chunk_size": args.chunk_size,
            "eval_chunk_size": args.eval_chunk_size,
            "progress": not args.no_progress,
            "worker": args.worker,
        }
        if args.no_wait:
            status = sweep_chunks(model, comps, "all", tokens, args.out, **options)
            if not status.complete:
                print(
                    f"this worker's chunks are done; {status.chunks_done} of {status.n_chunks} "
                    f"chunks in {args.out}, other workers' chunks missing"
                )
                return 0
            values, _ = load_sweep(args.out)
        else:
            values = sweep(model, comps, "all", tokens, args.out, **options)
    except ValueError as err:
        return _error("sweep", err)
    n = len(comps)
    print(f"swept {2**n} subsets of {n} components ({', '.join(comps.names)}) into {args.out}")
    print(f"{args.metric}: all kept {values[-1]:.6g}, all ablated {values[0]:.6g}")
    print(f"summarise with: jaxablate show {args.out}")
    return 0


# ------------------------------------------------------------------------------ show


def add_show_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``jaxablate show``."""
    parser.add_argument("dir", help="a finished sweep directory")
    parser.add_argument("--top", type=_positive, default=10, help="rows per table (default 10)")
    parser.add_argument(
        "--raw",
        action="store_true",
        help="print raw values of the presence game (v(all) - v(all without i), ...) instead "
        "of removal costs",
    )
    parser.add_argument(
        "--direction",
        choices=("lower", "higher"),
        help="which values of the metric are better, for a metric whose name does not say "
        "(default: read from the name: ...loss and kl_to_clean lower, ...accuracy and "
        "logit_diff higher)",
    )


def _finished_sweep(out_dir: str) -> tuple[np.ndarray, dict[str, Any]]:
    """The values and manifest of a complete sweep over all subsets.

    Raises:
        ValueError: not a sweep directory, an unfinished one (the message gives the command that
            finishes it) or one over explicit rows.
    """
    status = sweep_status(out_dir)
    if not status.complete:
        command = recorded_command(out_dir)
        how = (
            f"finish it with: {command}"
            if command
            else "finish it by rerunning the ja.sweep call that started it (same arguments)"
        )
        raise ValueError(
            f"sweep {out_dir} is incomplete: {len(status.missing)} of {status.n_chunks} chunks "
            f"missing; {how}"
        )
    values, meta = load_sweep(out_dir)
    if meta["rows"] != "all":
        raise ValueError(
            f"{out_dir} holds explicit rows; show needs a sweep over all subsets (rows='all')"
        )
    return values, meta


def _direction(meta: dict[str, Any], given: str | None) -> bool:
    """Whether lower values of the sweep's metric are better."""
    from jaxablate.export import loss_like

    if given is not None:
        return given == "lower"
    name = meta["metric"]["name"]
    lower = loss_like(name)
    if lower is None:
        raise ValueError(
            f"the direction of metric {name!r} is unknown: pass --direction lower (a loss) or "
            "--direction higher, or --raw for the raw values"
        )
    return lower


def _show_tables(names: list[str], top: int, costs: dict[str, Any]) -> list[str]:
    """The Shapley / leave-one-out table and the top pairs, in the sign ``costs`` says."""
    phi, loco, sii = costs["shapley"], costs["loco"], costs["sii"]
    n = len(names)
    lines = [
        f"{costs['what']}, top {min(top, n)} components by |shapley|:",
        f"  ({costs['sum']})",
        f"  {'component':<12}{'shapley':>12}{'loco':>12}",
    ]
    for i in np.argsort(-np.abs(phi), kind="stable")[:top]:
        lines.append(f"  {names[i]:<12}{phi[i]:>+12.6f}{loco[i]:>+12.6f}")
    lines.append("")
    if n >= 2:
        iu, ju = np.triu_indices(n, k=1)
        order = np.argsort(-np.abs(sii[iu, ju]), kind="stable")[:top]
        lines.append(f"Top {len(order)} interacting pairs, {costs['pairs']}:")
        lines.append(f"  {'pair':<24}{'sii':>12}")
        for k in order:
            pair = f"{names[iu[k]]} x {names[ju[k]]}"
            lines.append(f"  {pair:<24}{sii[iu[k], ju[k]]:>+12.6f}")
        lines.append("")
    return lines


def _show_values(values: np.ndarray, meta: dict[str, Any], args: argparse.Namespace) -> dict:
    """What the tables print: removal costs (default) or raw presence-game values."""
    from jaxablate import interactions
    from jaxablate.export import cost_label, metric_unit, removal_costs

    if args.raw:
        return {
            "what": "Raw values of the presence game (the metric with only coalition S kept)",
            "sum": "shapley sums to v(all) - v(none); loco = v(all) - v(all without i)",
            "shapley": np.asarray(interactions.shapley(values), np.float64),
            "loco": np.asarray(interactions.loco(values), np.float64),
            "sii": np.asarray(
                interactions.pairs(interactions.shapley_interaction(values)), np.float64
            ),
            "pairs": "Shapley interaction index of the presence game",
        }
    parts = removal_costs(values, lower_is_better=_direction(meta, args.direction))
    unit = metric_unit(meta["metric"]["name"])
    return {
        "what": cost_label(unit).capitalize(),
        "sum": "shapley: averaged over all subsets, sums to the cost of removing all; loco: "
        "removed alone; raw game values: --raw",
        "shapley": parts["shapley_cost"],
        "loco": parts["loco_cost"],
        "sii": parts["sii_cost"],
        "pairs": "Shapley interaction index of the removal cost (> 0: removing both costs more "
        "than the two apart)",
    }


def run_show(args: argparse.Namespace) -> int:
    """Print top Shapley values, top interacting pairs and the interaction spectrum, as removal
    costs (higher = more important; ``--raw``: the presence game's values)."""
    from jaxablate import interactions

    try:
        values, meta = _finished_sweep(args.dir)
        shown = _show_values(values, meta, args)
    except ValueError as err:
        return _error("show", err)
    names = meta["components"]
    n = len(names)
    lines = [
        f"sweep {args.dir}: {n} components, {2**n} subsets, metric {meta['metric']['name']}, "
        f"{meta['ablation']['kind']} ablation",
        f"value with all kept: {values[-1]:.6g}   with all ablated: {values[0]:.6g}",
        "",
        *_show_tables(names, args.top, shown),
    ]
    spec = np.asarray(interactions.spectrum(values), np.float64)
    lines.append("Spectrum (share of variance by interaction degree):")
    for d in range(1, n + 1):
        lines.append(f"  degree {d:<3}{spec[d]:>9.4f}  {'#' * round(40 * spec[d])}")
    print("\n".join(lines))
    return 0
