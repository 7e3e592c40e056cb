"""Latency of a fresh process: model build, first call and the ``"auto"`` probe, vs steady state.

Every measurement runs in a fresh child process (what a notebook user gets after a kernel restart)
on the representative model of ``benchmarks/evaluate.py`` (4 layers, 8 heads, d_model 256, 16 x 64
tokens), with the last layer's 8 heads as players, all 256 subsets and the next-token loss:

- ``default``: build the model, then ``ja.evaluate(..., chunk_size=None)`` four times;
- ``auto``: build the model, then ``ja.evaluate(..., chunk_size="auto")`` (the sweep default) four
  times (the first call runs the timed chunk-size probe).

The steady call is the median of calls 2-4 in the same process; every other figure is reported
as a ratio to it: build, first-call overhead (first call minus steady) and the second call, and
the seconds JAX's compile events count (tracing, lowering, XLA compilation or loading from the
persistent cache) in the build and in the first call, a direct measure of the overheads that
does not subtract two noisy timings. Each mode runs twice against one temporary
compilation-cache directory (``JAXABLATE_COMPILE_CACHE`` pointed at it): ``cold`` (empty cache:
what a first run after installing pays) and ``warm`` (the second process finds the first one's
programs). With ``--no-cache`` the cache is switched off (``JAXABLATE_COMPILE_CACHE=0``)
instead, and cold and warm are two identical runs. A tree without the cache (an older checkout)
ignores the variable: its cold and warm runs are the same setting.

Usage: python benchmarks/latency.py [--out benchmarks/results/latency.json] [--no-cache]
  [--modes default,auto] [--repeats 1] [--tree LABEL=DIR ...]
  (``--tree`` imports jaxablate from another checkout, e.g. the last commit unpacked with
  ``git archive HEAD jaxablate | tar -x -C DIR``; several trees are interleaved run by run, so
  before and after see the same load)
"""

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CALLS = 4  # evaluate calls per child: the first, then three steady ones


#: JAX's compile events: tracing, lowering, and XLA compilation or a persistent-cache load.
COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


def child(mode: str) -> dict:
    """One fresh process: import, build, ``CALLS`` evaluate calls; seconds of each, and the
    seconds JAX spent compiling (or loading from the cache) in each."""
    start = time.perf_counter()
    import jax
    import numpy as np
    from flax import nnx

    import jaxablate as ja
    from jaxablate import _evaluate

    sys.path.insert(0, str(HERE))
    from evaluate import MODELS  # the benchmark model of benchmarks/evaluate.py

    import_s = time.perf_counter() - start
    compiling = [0.0]

    def listener(event: str, duration: float, **_: object) -> None:
        if event in COMPILE_EVENTS:
            compiling[0] += duration

    jax.monitoring.register_event_duration_secs_listener(listener)
    spec = MODELS["representative"]
    cfg = ja.ModelConfig(**spec["cfg"], init_std=0.05)
    start = time.perf_counter()
    model = ja.Transformer(cfg, rngs=nnx.Rngs(0))
    jax.block_until_ready(nnx.state(model))
    build_s = time.perf_counter() - start
    build_compile_s, compiling[0] = compiling[0], 0.0
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (spec["batch"], spec["seq"]))
    tokens = tokens.astype(np.int32)
    comps = ja.heads(cfg, layers=[cfg.n_layers - 1])
    rows = ja.subsets.all(len(comps))
    chunk_size = "auto" if mode == "auto" else None
    calls, calls_compile, plan = [], [], None
    for _ in range(CALLS):
        start = time.perf_counter()
        result = _evaluate.run(model, comps, rows, tokens, chunk_size=chunk_size)
        calls.append(time.perf_counter() - start)
        calls_compile.append(compiling[0])
        compiling[0] = 0.0
        plan = result.plan
    return dict(
        mode=mode,
        import_s=import_s,
        build_s=build_s,
        calls_s=calls,
        build_compile_s=build_compile_s,
        calls_compile_s=calls_compile,
        plan=dict(chunk=plan.chunk, inner=plan.inner) if plan is not None else None,
        backend=jax.default_backend(),
        versions=dict(jax=jax.__version__, jaxablate=ja.__version__),
        device_kind=jax.devices()[0].device_kind,
        cache_dir=jax.config.jax_compilation_cache_dir,
        has_compile_cache_module=importlib.util.find_spec("jaxablate._compile_cache") is not None,
    )


def run_child(mode: str, cache: str, tree: Path) -> dict:
    """Run :func:`child` in a fresh interpreter with ``JAXABLATE_COMPILE_CACHE=cache``, importing
    jaxablate from ``tree``."""
    path = os.pathsep.join(p for p in (str(tree), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, JAXABLATE_COMPILE_CACHE=cache, PYTHONPATH=path)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"child {mode} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def ratios(raw: dict) -> dict:
    """Every figure as a ratio to the steady call (median of calls 2..CALLS)."""
    steady = statistics.median(raw["calls_s"][1:])
    return dict(
        steady_s=steady,
        build=raw["build_s"] / steady,
        first_call_overhead=(raw["calls_s"][0] - steady) / steady,
        second_call_overhead=(raw["calls_s"][1] - steady) / steady,
        first_call=raw["calls_s"][0] / steady,
        # the same overheads as JAX's compile events count them (less noisy than differences)
        build_compiling=raw.get("build_compile_s", float("nan")) / steady,
        first_call_compiling=raw.get("calls_compile_s", [float("nan")])[0] / steady,
    )


def measure(tree: tuple[str, Path], mode: str, rep: int, no_cache: bool) -> list[dict]:
    """A cold and a warm child of ``mode`` sharing one temporary cache directory."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = "0" if no_cache else str(Path(tmp) / "xla")
        for state in ("cold", "warm"):
            raw = run_child(mode, cache, tree[1])
            entry = dict(tree=tree[0], mode=mode, cache=state, repeat=rep, raw=raw)
            entry["ratios"] = r = ratios(raw)
            out.append(entry)
            print(
                f"{tree[0]:10s} {mode:8s} {state:5s} steady {r['steady_s']:6.2f} s  build "
                f"{r['build']:5.2f}x  first-call overhead {r['first_call_overhead']:5.2f}x  "
                f"second {r['second_call_overhead']:+5.2f}x  compiling: build "
                f"{r['build_compiling']:.2f}x, first call {r['first_call_compiling']:.2f}x  "
                f"plan {raw['plan']}",
                flush=True,
            )
    return out


def summarize(runs: list[dict]) -> dict:
    """Mean ratios per tree, mode and cache state (``"tree/mode/cache"``)."""
    groups: dict[str, list[dict]] = {}
    for run in runs:
        groups.setdefault(f"{run['tree']}/{run['mode']}/{run['cache']}", []).append(run["ratios"])
    return {
        key: {k: statistics.fmean(r[k] for r in rs) for k in rs[0]} | {"runs": len(rs)}
        for key, rs in groups.items()
    }


def parse_tree(text: str) -> tuple[str, Path]:
    """``LABEL=DIR`` (or a bare ``DIR``, labelled by its name)."""
    label, _, directory = text.rpartition("=")
    return (label or Path(directory).name, Path(directory).resolve())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "results" / "latency.json"))
    parser.add_argument("--no-cache", action="store_true", help="JAXABLATE_COMPILE_CACHE=0")
    parser.add_argument("--modes", default="default,auto")
    parser.add_argument("--repeats", type=int, default=1, help="cold/warm pairs per mode")
    parser.add_argument(
        "--tree",
        action="append",
        type=parse_tree,
        help="LABEL=DIR to import jaxablate from (repeatable; default: this checkout)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return
    trees = args.tree or [("this checkout", HERE.parent)]
    load_start = os.getloadavg()
    runs = [
        run
        for mode in args.modes.split(",")
        for rep in range(args.repeats)
        for tree in trees  # interleaved, so every tree sees the same load
        for run in measure(tree, mode, rep, args.no_cache)
    ]
    report = dict(
        benchmark="latency",
        trees={label: str(path) for label, path in trees},
        cache="off" if args.no_cache else "temporary directory",
        python=platform.python_version(),
        cores=os.cpu_count(),
        load_average_at_start=load_start,
        load_average_at_end=os.getloadavg(),
        date=time.strftime("%Y-%m-%d %H:%M"),
        summary=summarize(runs),
        runs=runs,
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report["summary"], indent=1))
    print(f"load average {load_start} -> {report['load_average_at_end']}; wrote {args.out}")


if __name__ == "__main__":
    main()
