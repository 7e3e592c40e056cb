"""Benchmark: Möbius + Shapley + all-pairs SII over 2^n tables, jaxablate vs shapiq.

For each n, jaxablate runs ``mobius(v)``, ``shapley(v)`` and ``pairs(shapley_interaction(v))``
(first call = compile + run, then the median of steady-state calls, ``block_until_ready``
before every clock stop), in float32 (the default) and float64 (x64 on, as shapiq). shapiq's
``ExactComputer`` runs ``"Moebius"``, ``"SV"`` and ``("SII", order=2)`` on the same table in a
child process with a time cap per call; a call past the cap is killed and reported as
"skipped (exceeds cap)", and larger n are not attempted. Nothing is extrapolated.

Usage::

    python benchmarks/interactions.py --out benchmarks/results/interactions.json
"""

import argparse
import importlib.metadata
import json
import multiprocessing as mp
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import numpy as np

from jaxablate import interactions as ia


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def table(n: int) -> np.ndarray:
    return np.random.default_rng(n).normal(size=2**n)


def time_ours(n: int, x64: bool, min_repeats: int = 5, min_seconds: float = 1.0) -> dict:
    """First-call and steady-state seconds of each step and of the three together."""
    steps = {
        "mobius": ia.mobius,
        "shapley": ia.shapley,
        "pairs_sii": lambda v: ia.pairs(ia.shapley_interaction(v)),
    }
    out: dict = {}
    with jax.enable_x64(x64):
        v = jax.device_put(table(n).astype(np.float64 if x64 else np.float32))
        for name, f in steps.items():
            t0 = time.perf_counter()
            f(v).block_until_ready()
            first = time.perf_counter() - t0
            runs: list[float] = []
            while len(runs) < min_repeats or sum(runs) < min_seconds:
                t0 = time.perf_counter()
                f(v).block_until_ready()
                runs.append(time.perf_counter() - t0)
                if len(runs) >= 200:
                    break
            out[name] = {"first_call_s": first, "steady_s": statistics.median(runs)}
    out["total_first_call_s"] = sum(out[k]["first_call_s"] for k in steps)
    out["total_steady_s"] = sum(out[k]["steady_s"] for k in steps)
    return out


def _shapiq_worker(n: int, queue: mp.Queue) -> None:
    import shapiq

    values = table(n)
    weights = 1 << np.arange(n)

    def game(coalitions: np.ndarray) -> np.ndarray:
        return values[(np.asarray(coalitions, dtype=bool) * weights[None, :]).sum(axis=1)]

    t0 = time.perf_counter()
    computer = shapiq.ExactComputer(game, n_players=n)
    queue.put(("setup", time.perf_counter() - t0))
    for name, args in [("mobius", ("Moebius",)), ("shapley", ("SV",)), ("pairs_sii", ("SII", 2))]:
        t0 = time.perf_counter()
        computer(*args)
        queue.put((name, time.perf_counter() - t0))
    queue.put(("done", 0.0))


def time_shapiq(n: int, cap_s: float) -> dict:
    """shapiq's seconds per call in a child process; a call past ``cap_s`` is killed."""
    ctx = mp.get_context("spawn")  # fork would copy JAX threads
    queue = ctx.Queue()
    proc = ctx.Process(target=_shapiq_worker, args=(n, queue), daemon=True)
    proc.start()
    out: dict = {}
    try:
        while True:
            try:
                name, seconds = queue.get(timeout=cap_s)
            except Exception:  # queue.Empty: the running call exceeded the cap
                out["status"] = f"skipped (exceeds cap of {cap_s:g} s per call)"
                return out
            if name == "done":
                break
            out[name] = seconds
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
    out["status"] = "ok"
    out["total_s"] = out["mobius"] + out["shapley"] + out["pairs_sii"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/interactions.json"))
    parser.add_argument("--n-min", type=int, default=8)
    parser.add_argument("--n-max", type=int, default=20)
    parser.add_argument("--shapiq-cap-s", type=float, default=20.0)
    args = parser.parse_args()

    meta = {
        "benchmark": "mobius + shapley + pairs(shapley_interaction), random float table",
        "device": str(jax.devices()[0]),
        "platform": jax.default_backend(),
        "cpu": "2 cores AMD Zen 5 (per NOTES.md; /proc/cpuinfo says: " + cpu_name() + ")",
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "shapiq": importlib.metadata.version("shapiq"),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "shapiq_cap_s_per_call": args.shapiq_cap_s,
        "load_average_at_start": os.getloadavg(),
        "ratio": "shapiq total seconds / jaxablate float64 steady-state total seconds",
    }
    print(json.dumps(meta, indent=1))
    rows = []
    shapiq_stopped = None
    header = f"{'n':>3} {'f32 steady':>11} {'f64 steady':>11} {'f64 1st':>9} {'shapiq':>9} ratio"
    print(header)
    for n in range(args.n_min, args.n_max + 1):
        row: dict = {"n": n, "float32": time_ours(n, x64=False), "float64": time_ours(n, x64=True)}
        if shapiq_stopped is None:
            row["shapiq"] = time_shapiq(n, args.shapiq_cap_s)
            if row["shapiq"]["status"] != "ok":
                shapiq_stopped = n
        else:
            row["shapiq"] = {"status": f"not run (n = {shapiq_stopped} exceeded the cap)"}
        ours = row["float64"]["total_steady_s"]
        row["ratio"] = row["shapiq"]["total_s"] / ours if "total_s" in row["shapiq"] else None
        rows.append(row)
        theirs = f"{row['shapiq']['total_s']:9.3f}" if row["ratio"] else f"{'skipped':>9}"
        ratio = f"{row['ratio']:.0f}x" if row["ratio"] else row["shapiq"]["status"]
        print(
            f"{n:>3} {row['float32']['total_steady_s']:11.5f} {ours:11.5f} "
            f"{row['float64']['total_first_call_s']:9.3f} {theirs} {ratio}",
            flush=True,
        )
    meta["load_average_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
