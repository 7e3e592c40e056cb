"""Benchmark: sparse Möbius recovery on planted games, jaxablate vs shapiq's SPEX and ProxySPEX.

A planted game over ``n`` players is ``v(S) = 0.3 + sum_T m(T) [T ⊆ S] + noise``: 20 random
terms of degree 1-3 (degree uniform, players uniform, ``|m(T)|`` uniform in [0.5, 1.5], random
sign) and Gaussian noise of standard deviation 0.01 drawn afresh for every row asked. Every
game counts the rows it is asked for (the ``evaluations`` columns are those counts).

For each ``n`` (60, 120, 200) and budget, ``ja.estimate.sparse_mobius(game, budget=B,
key=jax.random.key(seed), max_degree=3)`` runs on several planted games (one per seed), and
shapiq 1.4's ``SPEX`` (``max_order=3``, soft decoder, default ``degree_parameter=5``) and
``ProxySPEX`` (LightGBM, ``pip install lightgbm``) run at the same budget on the first seeds;
their Möbius coefficients are read before shapiq converts them to an index (a subclass keeps
``_process_moebius``'s input). Then jaxablate alone with more noise (sd 0.05, 0.1), and with
players kept with probability 0.8 instead of 1/2 (``keep=0.8``). Scored against the planted
terms:

- ``recovered``: every planted term present and within 5% of its value;
- ``false``: terms returned that are not planted, all of them / those with
  ``|value| > 0.025`` (5% of the smallest planted magnitude);
- ``max_rel_err``: the worst relative error over the planted terms (1 for a missing term);
- ``r2_fresh``: ``R^2`` of the reconstruction on 4000 fresh uniform coalitions of the
  noiseless game (rows not counted in any budget; independent of jaxablate's own hold-out).

shapiq runs in a child process with a cap per run (``--cap``, default 1200 s); a run past the
cap is killed and reported as such. BLAS threads: ``OPENBLAS_NUM_THREADS`` defaults to 1 here
(the machine is shared; recorded in the JSON); set it before running to change that.

Usage::

    PYTHONPATH=. python benchmarks/estimate_sparse.py --out benchmarks/results/estimate_sparse.json
    PYTHONPATH=. python benchmarks/estimate_sparse.py --quick   # jaxablate only, 2 budgets per n
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import importlib.metadata
import json
import multiprocessing as mp
import platform
import queue
import statistics
import time
from pathlib import Path

import numpy as np

N_TERMS = 20
NOISE = 0.01
FRESH_ROWS = 4000
FALSE_CUT = 0.025

OURS = {
    60: [300, 500, 1000, 2000, 5000, 20_000],
    120: [500, 1000, 2000, 5000, 20_000],
    200: [1000, 2000, 3000, 5000, 20_000],
}
SHAPIQ = {60: [1000, 2000, 5000, 20_000], 120: [2000], 200: [2000]}
NOISE_CASES = [
    (60, 1000, 0.1),
    (60, 2000, 0.05),
    (60, 2000, 0.1),
    (200, 5000, 0.05),
    (200, 5000, 0.1),
]
KEEP_CASES = [(60, 600, 0.8), (60, 1500, 0.8), (200, 2500, 0.8)]


class Planted:
    """The planted game of the module docstring; counts rows asked."""

    def __init__(self, n: int, seed: int, noise: float = NOISE):
        rng = np.random.default_rng(seed)
        self.n = n
        self.terms: dict[tuple[int, ...], float] = {(): 0.3}
        while len(self.terms) < N_TERMS + 1:
            d = int(rng.integers(1, 4))
            t = tuple(sorted(int(i) for i in rng.choice(n, d, replace=False)))
            self.terms[t] = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.5))
        self.noise = noise
        self.rng = np.random.default_rng(seed + 10_000)
        self.asked = 0

    def exact(self, rows: np.ndarray) -> np.ndarray:
        return predict(self.terms, rows)

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=bool)
        self.asked += rows.shape[0]
        return self.exact(rows) + self.noise * self.rng.standard_normal(rows.shape[0])


def predict(terms: dict[tuple[int, ...], float], rows: np.ndarray) -> np.ndarray:
    out = np.zeros(rows.shape[0])
    for t, v in terms.items():
        out += v * (rows[:, list(t)].all(axis=1) if t else 1.0)
    return out


def score(game: Planted, terms: dict[tuple[int, ...], float]) -> dict:
    planted = game.terms
    rel = [min(abs(terms[t] - v) / abs(v), 1.0) if t in terms else 1.0 for t, v in planted.items()]
    false = [t for t in terms if t not in planted]
    rows = np.random.default_rng(game.n + 77).random((FRESH_ROWS, game.n)) < 0.5
    y = game.exact(rows)
    r2 = 1.0 - float(((y - predict(terms, rows)) ** 2).sum()) / float(((y - y.mean()) ** 2).sum())
    return {
        "recovered": bool(max(rel) <= 0.05),
        "max_rel_err": float(max(rel)),
        "false_all": len(false),
        "false_big": sum(abs(terms[t]) > FALSE_CUT for t in false),
        "terms_returned": len(terms),
        "r2_fresh": r2,
    }


# ------------------------------------------------------------------------------ jaxablate


def run_ours(n: int, budget: int, seed: int, noise: float = NOISE, keep: float = 0.5) -> dict:
    import jax

    import jaxablate as ja

    game = Planted(n, seed, noise)
    t0 = time.perf_counter()
    key = jax.random.key(seed)
    est = ja.estimate.sparse_mobius(game, budget=budget, key=key, max_degree=3, keep=keep)
    wall = time.perf_counter() - t0
    out = score(game, est.terms)
    out.update(
        evaluations=game.asked, seconds=wall, r2_heldout=est.r2_heldout, n=n, budget=budget,
        seed=seed, noise=noise, keep=keep,
    )  # fmt: skip
    return out


# ------------------------------------------------------------------------------ shapiq


def _shapiq_worker(kind: str, n: int, budget: int, seed: int, results: mp.Queue) -> None:
    from shapiq.approximator.sparse import SPEX, ProxySPEX

    base = SPEX if kind == "SPEX" else ProxySPEX

    class Capture(base):  # keeps the Möbius coefficients shapiq converts to an index
        def _process_moebius(self, moebius_transform):
            self.moebius = dict(moebius_transform)
            return super()._process_moebius(moebius_transform)

    game = Planted(n, seed)
    approx = Capture(n=n, index="FBII", max_order=3, random_state=seed)
    t0 = time.perf_counter()
    try:
        approx.approximate(budget, game)
    except Exception as err:  # reported in the table
        results.put({"error": f"{type(err).__name__}: {err}"})
        return
    wall = time.perf_counter() - t0
    terms = {tuple(sorted(int(i) for i in k)): float(v) for k, v in approx.moebius.items()}
    results.put({"terms": list(terms.items()), "evaluations": game.asked, "seconds": wall})


def run_shapiq(kind: str, n: int, budget: int, seed: int, cap: float) -> dict:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=_shapiq_worker, args=(kind, n, budget, seed, results))
    proc.start()
    try:
        got = results.get(timeout=cap)
    except queue.Empty:  # past the cap
        proc.kill()
        proc.join()
        return {"n": n, "budget": budget, "seed": seed, "skipped": f"exceeds cap of {cap:.0f} s"}
    proc.join()
    base = {"n": n, "budget": budget, "seed": seed}
    if "error" in got:
        return base | {"error": got["error"]}
    terms = dict((tuple(k), v) for k, v in got["terms"])
    out = score(Planted(n, seed), terms)
    return base | out | {"evaluations": got["evaluations"], "seconds": got["seconds"]}


# ------------------------------------------------------------------------------ report


def summarise(runs: list[dict]) -> dict:
    ok = [r for r in runs if "recovered" in r]
    if not ok:
        return {"count": len(runs), "note": runs[0].get("skipped") or runs[0].get("error")}
    return {
        "count": len(ok),
        "recovered": sum(r["recovered"] for r in ok),
        "false_all": sum(r["false_all"] for r in ok),
        "false_big": sum(r["false_big"] for r in ok),
        "worst_rel_err": max(r["max_rel_err"] for r in ok),
        "min_r2_fresh": min(r["r2_fresh"] for r in ok),
        "max_evaluations": max(r["evaluations"] for r in ok),
        "median_seconds": statistics.median(r["seconds"] for r in ok),
    }


def row(method: str, n: int, budget: int, s: dict) -> str:
    if "recovered" not in s:
        return f"| {n} | {budget} | {method} | — | {s.get('note')} | | | | |"
    return (
        f"| {n} | {budget} | {method} | {s['max_evaluations']} | {s['recovered']}/{s['count']} "
        f"| {s['false_all']} / {s['false_big']} | {s['worst_rel_err']:.3f} "
        f"| {s['min_r2_fresh']:.5f} | {s['median_seconds']:.2f} |"
    )


def environment() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for pkg in ("jax", "numpy", "shapiq", "sparse-transform", "lightgbm"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_start": os.getloadavg(),
        "python": platform.python_version(),
        "versions": versions,
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results/estimate_sparse.json")
    parser.add_argument("--seeds", type=int, default=5, help="planted games per (n, budget)")
    parser.add_argument("--shapiq-seeds", type=int, default=1)
    parser.add_argument("--cap", type=float, default=1200.0, help="seconds per shapiq run")
    parser.add_argument("--quick", action="store_true", help="jaxablate only, 2 budgets per n")
    parser.add_argument("--no-proxyspex", action="store_true")
    args = parser.parse_args()
    result: dict = {"environment": environment(), "ours": [], "shapiq": [], "noise": [], "keep": []}
    lines = [
        "| n | budget | method | evaluations | recovered | false (all / big) | worst rel err "
        "| min R^2 fresh | median s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    run_ours(60, 300, 0)  # warm-up: imports, the key's compilation
    for n, budgets in OURS.items():
        for budget in budgets[:2] if args.quick else budgets:
            runs = [run_ours(n, budget, seed) for seed in range(args.seeds)]
            result["ours"].append({"n": n, "budget": budget, "runs": runs, **summarise(runs)})
            lines.append(row("jaxablate", n, budget, summarise(runs)))
            print(lines[-1], flush=True)
    kinds = [] if args.quick else ["SPEX"] + ([] if args.no_proxyspex else ["ProxySPEX"])
    for n, budgets in SHAPIQ.items():
        for budget in budgets:
            for kind in kinds:
                runs = [run_shapiq(kind, n, budget, s, args.cap) for s in range(args.shapiq_seeds)]
                result["shapiq"].append(
                    {"method": kind, "n": n, "budget": budget, "runs": runs, **summarise(runs)}
                )
                lines.append(row(f"shapiq {kind}", n, budget, summarise(runs)))
                print(lines[-1], flush=True)
    for n, budget, noise in [] if args.quick else NOISE_CASES:
        runs = [run_ours(n, budget, seed, noise) for seed in range(args.seeds)]
        result["noise"].append({"n": n, "budget": budget, "noise": noise, "runs": runs})
        result["noise"][-1].update(summarise(runs))
        lines.append(row(f"jaxablate, noise {noise}", n, budget, summarise(runs)))
        print(lines[-1], flush=True)
    for n, budget, keep in [] if args.quick else KEEP_CASES:
        runs = [run_ours(n, budget, seed, keep=keep) for seed in range(args.seeds)]
        result["keep"].append({"n": n, "budget": budget, "keep": keep, "runs": runs})
        result["keep"][-1].update(summarise(runs))
        lines.append(row(f"jaxablate, keep {keep}", n, budget, summarise(runs)))
        print(lines[-1], flush=True)
    result["table"] = "\n".join(lines)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
