"""The evaluate, interactions and recovery benchmarks on whatever device JAX sees, in one run.

Runs, on ``jax.devices()[0]`` (CPU, GPU or TPU), with the helpers of ``benchmarks/evaluate.py``,
``benchmarks/interactions.py`` and ``benchmarks/recovery.py``:

- evaluate: all subsets of each case's players (``ja.evaluate``, prefix sharing and the probed
  chunk size: path (c) of ``evaluate.py``) and 256 random subsets through the naive path (b),
  each in float32 and in bfloat16 (the same weights cast); subsets/s and the naive-equivalent
  FLOP/s as a fraction of the device's peak for that dtype;
- interactions: Möbius + Shapley + all-pairs SII over a random table of 2^n values (float32);
  table entries per second;
- recovery: K = 16 vmapped fine-tuning runs against a loop of 16 single runs; run-steps/s.

Peak FLOP/s come from :data:`PEAKS` (vendor datasheets, dense, without sparsity) for known
accelerators; a CPU's are measured with a float32 and a bfloat16 matmul in the same run, and every
device also gets that measured matmul rate for comparison. JAX's default float32 matmul on
NVIDIA GPUs since Ampere uses TF32 tensor cores, so float32 results are also given against the
TF32 peak. Peak memory is ``memory_stats()["peak_bytes_in_use"]`` on accelerators (the process's
running peak after each section) and the peak resident set (``ru_maxrss``) on CPU.

The full run takes a few minutes on one GPU (the 4096-subset case, the GPT-2-small-shaped model
and the wider recovery run are for accelerators only); ``--quick`` is a CI-sized run (one case
per benchmark: a 2-layer, 4-head model's 16 subsets with the memory rule's chunks, one small
table, two training steps of a 1-layer model) that takes well under a minute on a quiet CPU; it
checks that the report is written, not the rates.

The report is rewritten after every case (``"complete": false`` until the end), so a run cut
short by a time limit keeps what it measured; ``--sections`` runs some sections only (to fill in
one that was cut short).

Usage: python benchmarks/device.py [--quick] [--sections evaluate,interactions,recovery]
  [--out benchmarks/results/device-<name>.json]
"""

import argparse
import json
import os
import platform
import re
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
from flax import nnx

import jaxablate as ja

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the benchmark scripts' own helpers (recovery reads --host-devices from argv; not passed here)
import evaluate as bench_eval
import interactions as bench_ia
import recovery as bench_rec
from bf16_error import cast

SECTIONS = ("evaluate", "interactions", "recovery")
#: A section's callback: the section's results so far, to be written to the report.
Save = Callable[[list[dict]], None]


#: Dense peak TFLOP/s (float32 on CUDA cores, TF32 and bfloat16 on tensor cores or MXUs), from
#: the vendors' datasheets; ``None`` where the device has no such unit. Matched in this order
#: against ``device_kind`` (a regular expression each).
PEAKS: tuple[tuple[str, dict[str, float | None]], ...] = (
    (r"H100.*PCIe", dict(float32=51.0, tf32=378.0, bfloat16=756.0)),
    (r"H200 NVL|H100 NVL", dict(float32=60.0, tf32=418.0, bfloat16=835.0)),
    (r"H200|H100", dict(float32=67.0, tf32=495.0, bfloat16=989.0)),  # SXM
    (r"A100", dict(float32=19.5, tf32=156.0, bfloat16=312.0)),
    (r"\bL4\b", dict(float32=30.3, tf32=60.0, bfloat16=121.0)),
    (r"\bT4\b", dict(float32=8.1, tf32=None, bfloat16=None)),  # no bf16 units (fp16: 65)
    (r"v5 ?lite|v5e", dict(float32=None, tf32=None, bfloat16=197.0)),
    (r"v6 ?lite|v6e", dict(float32=None, tf32=None, bfloat16=918.0)),
    (r"v5p|TPU v5$", dict(float32=None, tf32=None, bfloat16=459.0)),
    (r"TPU v4", dict(float32=None, tf32=None, bfloat16=275.0)),
)

#: ``--quick``'s evaluate case: 2 layers x 2 heads, so 16 subsets (prefix sharing still has a
#: layer-0 prefix to share); CI-sized, not a representative rate.
QUICK = dict(
    cfg=dict(n_layers=2, n_heads=2, d_model=32, d_head=16, d_mlp=64, vocab_size=64, n_ctx=8),
    batch=2,
    seq=8,
)
#: ``--quick``'s recovery model (``recovery.HEADLINE`` shrunk to one layer).
QUICK_RECOVERY = dict(n_layers=1, n_heads=2, d_model=16, d_head=8, d_mlp=32, vocab_size=32)

#: A GPT-2-small-shaped model (random weights) that fills an accelerator; not run on CPU.
LARGE = dict(
    cfg=dict(
        n_layers=12, n_heads=12, d_model=768, d_head=64, d_mlp=3072, vocab_size=50257, n_ctx=128
    ),
    batch=8,
    seq=128,
)


def peaks(device: jax.Device, quick: bool) -> dict:
    """The device's peak FLOP/s per dtype (table or measured) and the measured matmul rates."""
    n, reps = (512, 3) if quick else ((2048, 10) if device.platform == "cpu" else (8192, 20))
    measured = {d: bench_eval.matmul_peak(n, reps, d) for d in ("float32", "bfloat16")}
    table = next((p for pattern, p in PEAKS if re.search(pattern, device.device_kind)), None)
    if table is None:
        source, peak = "measured matmul (no datasheet entry)", dict(measured, tf32=None)
    else:
        source = "datasheet"
        peak = {k: None if v is None else v * 1e12 for k, v in table.items()}
    return dict(source=source, peak_flops_per_s=peak, matmul_flops_per_s=measured, matmul_n=n)


def peak_memory(device: jax.Device) -> dict:
    """Peak bytes so far: the device's (accelerators) or the process's resident set (CPU)."""
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "peak_bytes_in_use" in stats:
        return dict(kind="device peak_bytes_in_use", bytes=int(stats["peak_bytes_in_use"]))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return dict(kind="host ru_maxrss", bytes=int(rss))


def fraction(rate: float, peak: dict, dtype: str) -> dict:
    """``rate`` (FLOP/s) against the peak of ``dtype`` (and TF32 for float32)."""
    keys = ("float32", "tf32") if dtype == "float32" else ("bfloat16",)
    p = peak["peak_flops_per_s"]
    return {k: (rate / p[k] if p.get(k) else None) for k in keys}


def eval_case(label, spec, comps_fn, metric_name, dtype, peak, chunk_size, n_timed=256) -> dict:
    """One evaluate case: path (c) on all subsets and path (b) on ``n_timed`` random ones."""
    cfg = ja.ModelConfig(**spec["cfg"], init_std=0.05)
    model = ja.Transformer(cfg, rngs=nnx.Rngs(0))
    if dtype != "float32":
        model = cast(model, dtype)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, cfg.vocab_size, (spec["batch"], spec["seq"])).astype(np.int32)
    comps = comps_fn(model.config)  # built for the model's dtype
    rows = ja.subsets.all(len(comps))
    timed = rows[np.random.default_rng(1).permutation(len(rows))[:n_timed]]
    metric = bench_eval.make_metric(metric_name)
    flops = bench_eval.forward_flops(cfg, spec["batch"], spec["seq"])
    out = dict(
        case=label, metric=metric_name, dtype=dtype, n_rows=len(rows), flops=flops,
        chunk_size=chunk_size,
    )  # fmt: skip
    for path, r, share in (("b_naive", timed, False), ("c_default", rows, True)):
        t = bench_eval.time_evaluate(
            model, comps, r, tokens, metric=metric, share_prefix=share, chunk_size=chunk_size
        )
        t.pop("values")
        t["subsets_per_s"] = t["rows"] / t["run_s"]
        t["fraction_of_peak"] = fraction(t["subsets_per_s"] * flops, peak, dtype)
        out[path] = t
    return out


def evaluate_section(device: jax.Device, peak: dict, quick: bool, save: Save) -> list[dict]:
    """The evaluate cases for this device and mode, each in float32 and bfloat16."""
    models = bench_eval.MODELS
    last = lambda c: ja.heads(c, layers=[c.n_layers - 1])  # noqa: E731
    if quick:
        cases = [("quick: all 4 heads", QUICK, ja.heads, "loss")]
    else:
        early = lambda c: ja.heads(c, layers=[0, 1, 2], heads=[0, 1, 2, 3])  # noqa: E731
        cases = [
            ("representative (i): last layer's 8 heads", models["representative"], last, "loss"),
            ("representative (i): last layer's 8 heads", models["representative"], last, "last"),
            ("llama (i): last layer's 8 query heads", models["llama"], last, "loss"),
            ("tiny: all 8 heads", models["tiny"], ja.heads, "loss"),
        ]
        if device.platform != "cpu":  # 4096 subsets, and a large model: accelerators only
            label = "representative (ii): 4 heads in layers 0-2"
            cases.append((label, models["representative"], early, "loss"))
            label = "gpt2-small shape: layer 11's 12 heads"
            cases += [(label, LARGE, last, m) for m in ("loss", "last")]
    out = []
    for label, spec, fn, metric in cases:
        metric_name = "loss" if metric == "loss" else "logit_diff"
        for dtype in ("float32", "bfloat16"):
            # quick: the memory rule alone (no timed probe: CI-sized)
            chunk_size = None if quick else "auto"
            n_timed = 16 if quick else 256
            out.append(eval_case(label, spec, fn, metric_name, dtype, peak, chunk_size, n_timed))
            report_line(out[-1])
            save(out)
    return out


def report_line(c: dict) -> None:
    """One printed line per evaluate case."""
    b, d = c["b_naive"], c["c_default"]
    frac = b["fraction_of_peak"].get(c["dtype"]) or b["fraction_of_peak"].get("tf32")
    frac_text = "n/a" if frac is None else f"{100 * frac:.1f}%"
    print(
        f"  {c['case']}, {c['metric']}, {c['dtype']}: (c) {d['subsets_per_s']:.1f} subsets/s, "
        f"(b) {b['subsets_per_s']:.1f} subsets/s = {frac_text} of peak; compile (c) "
        f"{d['compile_s']:.1f} s",
        flush=True,
    )


def interactions_section(quick: bool, save: Save) -> list[dict]:
    """Möbius + Shapley + pairs SII over 2^n tables (float32): entries per second."""
    out = []
    for n in (8,) if quick else (16, 20, 24):
        t = bench_ia.time_ours(n, x64=False, min_repeats=3, min_seconds=0.05 if quick else 1.0)
        t["n"] = n
        t["entries_per_s"] = 2**n / t["total_steady_s"]
        out.append(t)
        print(f"  n={n}: {t['total_steady_s']:.4f} s steady, {t['entries_per_s']:.3g} entries/s")
        save(out)
    return out


def recovery_section(device: jax.Device, quick: bool, save: Save) -> list[dict]:
    """K vmapped recovery runs against a loop of single runs (the recovery benchmark)."""
    if quick:
        # K = 1: both sides share one compiled step (compiling it dominates a CI-sized run);
        # the vmapped-vs-loop speed-up needs the full run
        sizes = [(QUICK_RECOVERY, dict(runs=1, steps=2, batch_size=2, seq=8, repeats=1))]
    else:
        sizes = [(bench_rec.HEADLINE, dict(runs=16, steps=200, batch_size=4, seq=16, repeats=2))]
        if device.platform != "cpu":
            wide = dict(n_layers=4, n_heads=8, d_model=256, d_head=32, d_mlp=1024, vocab_size=2048)
            sizes.append((wide, dict(runs=16, steps=100, batch_size=16, seq=64, repeats=1)))
    out = []
    for dims, opts in sizes:
        r = bench_rec.measure(dims, python_loop=False, **opts)
        out.append(r)
        rate = r["run_steps_per_s"]
        print(
            f"  d_model {dims['d_model']}: vmapped {rate['vmapped']:.0f} run-steps/s, loop "
            f"{rate['loop']:.0f} ({r['speedup']:.2f}x)",
            flush=True,
        )
        save(out)
    return out


def slug(device: jax.Device) -> str:
    """A file-name form of the device: ``cpu``, ``nvidia-h200``, ``tpu-v5-lite``..."""
    name = "cpu" if device.platform == "cpu" else device.device_kind
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def write_report(out: Path, report: dict) -> None:
    """Write ``report`` to ``out`` atomically (a reader never sees half a file)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, out)


def parse_sections(text: str) -> list[str]:
    """``--sections``: a comma-separated subset of :data:`SECTIONS`, run in their order."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"--sections takes a comma-separated subset of {', '.join(SECTIONS)}; got {text!r}"
        )
    return [s for s in SECTIONS if s in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized run (under a minute)")
    parser.add_argument("--sections", type=parse_sections, default=list(SECTIONS))
    parser.add_argument("--out", default=None, help="JSON path (default: see the usage line)")
    args = parser.parse_args()
    device = jax.devices()[0]
    name = slug(device) + ("-quick" if args.quick else "")
    out = Path(args.out or Path(__file__).resolve().parent / "results" / f"device-{name}.json")
    start = time.perf_counter()
    print(f"device: {device.device_kind} ({device.platform}), {len(jax.devices())} device(s)")
    peak = peaks(device, args.quick)
    print(f"peaks ({peak['source']}): {peak['peak_flops_per_s']}", flush=True)
    report: dict = dict(
        benchmark="device",
        quick=args.quick,
        complete=False,
        sections=args.sections,
        device=dict(kind=device.device_kind, platform=device.platform, count=len(jax.devices())),
        host=dict(cpu=platform.processor() or platform.machine(), cores=os.cpu_count()),
        versions=dict(jax=jax.__version__, jaxablate=ja.__version__, python=sys.version.split()[0]),
        peaks=peak,
        section_seconds={},
        peak_memory_after={},
    )
    runners = dict(
        evaluate=lambda save: evaluate_section(device, peak, args.quick, save),
        interactions=lambda save: interactions_section(args.quick, save),
        recovery=lambda save: recovery_section(device, args.quick, save),
    )
    for section in args.sections:
        print(f"{section}:", flush=True)
        section_start, cpu_start = time.perf_counter(), time.process_time()

        def save(results: list[dict], section: str = section) -> None:
            report[section] = results
            report["wall_s"] = time.perf_counter() - start
            write_report(out, report)

        results = runners[section](save)
        seconds = dict(
            wall=time.perf_counter() - section_start, cpu=time.process_time() - cpu_start
        )
        report["section_seconds"][section] = seconds
        report["peak_memory_after"][section] = peak_memory(device)
        save(results)  # with the section's seconds and memory
        print(f"  ({seconds['wall']:.0f} s, {seconds['cpu']:.0f} CPU-s)")
    report.update(complete=True, load_average_at_end=os.getloadavg())
    report["wall_s"] = time.perf_counter() - start
    write_report(out, report)
    last = report["peak_memory_after"][args.sections[-1]]
    print(f"{report['wall_s']:.0f} s in all; peak memory {last}; wrote {out}")


if __name__ == "__main__":
    main()
