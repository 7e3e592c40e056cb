"""Benchmark: accuracy, coverage and wall time of ``ja.estimate`` against shapiq's approximators.

Games with known values (every reference independent of the estimators):

- exact tables of real sweeps: ``ja.evaluate`` over every subset of random small models' heads
  (n = 12, 14, 16) and of the shipped ``induction-2l`` model's heads and attention blocks
  (n = 10); exact values from ``ja.interactions`` in float64;
- structured AND/OR games (``tests/_games.py``: strong redundancy and codependence terms of
  order 2..5) with closed-form values, n = 12, 16 and 40.

For each game and budget, every estimator runs with ``--seeds`` keys / random states; RMSE is
pooled over seeds and players, and the ratio is ours / shapiq's best (its lowest RMSE among
KernelSHAP with and without the pairing trick, PermutationSamplingSV, SVARM and
UnbiasedKernelSHAP, all at the same budget of distinct evaluations). Coverage: share of
(player, seed) with ``|estimate - exact| <= 2 stderr``. Banzhaf is compared with shapiq's SVARM
(``index="BV"``), pairwise SII with KernelSHAPIQ, SVARMIQ, PermutationSamplingSII and SHAPIQ.
The convergence curve (RMSE against budget, kernel method, n = 40 AND/OR game) is fitted on a
log-log scale (slope -0.5 is 1/sqrt(budget)). Timing: one Shapley estimate over all 144 heads
of a GPT-2-small-shaped random model (12 x 12 heads, d_model 768, vocab 50257), 4 x 16 tokens,
including evaluation, first call (with compilation) and a second call apart.

Usage::

    python benchmarks/estimate.py --out benchmarks/results/estimate.json [--quick]
"""

import argparse
import importlib.metadata
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jaxablate as ja
from jaxablate import _pair_estimates, _sampling
from jaxablate import estimate as est
from jaxablate import interactions as ia
from tests._games import TableGame, and_or_game


def exact_values(table: np.ndarray) -> dict[str, np.ndarray]:
    with jax.enable_x64(True):
        v = np.asarray(table, np.float64)
        return {
            "shapley": np.asarray(ia.shapley(v)),
            "banzhaf": np.asarray(ia.banzhaf(v)),
            "sii": np.asarray(ia.pairs(ia.shapley_interaction(v))),
        }


def sweep_tables(quick: bool) -> list[tuple[str, TableGame, dict]]:
    """``(label, game, exact values)`` of real sweeps over every subset."""
    out = []
    shapes = [(2, 6, 12), (2, 7, 14), (4, 4, 16)][: 1 if quick else 3]
    for layers, heads, n in shapes:
        cfg = ja.ModelConfig(
            n_layers=layers, n_heads=heads, d_model=8 * heads, d_head=8, d_mlp=64,
            vocab_size=64, n_ctx=16, init_std=0.4,
        )  # fmt: skip
        model = ja.Transformer(cfg, rngs=nnx.Rngs(n))
        tokens = np.random.default_rng(n).integers(0, 64, (8, 16)).astype(np.int32)
        table = ja.Game(model, ja.heads(cfg), tokens).table()
        out.append((f"random {layers}x{heads} heads (n={n}), loss", TableGame(table)))
    toy, task = ja.load_pretrained("induction-2l")
    comps = ja.heads(toy.config) + ja.blocks(toy.config, "attn")
    game = ja.Game(toy, comps, task.batch(jax.random.key(0), 16), metric=task.metric)
    out.append(("induction-2l heads + attn (n=10), task metric", TableGame(game.table())))
    return [(label, g, exact_values(g.values)) for label, g in out]


def synthetic_games(quick: bool) -> list[tuple[str, object, dict]]:
    out = []
    for n in (12, 16) if quick else (12, 16, 40):
        g = and_or_game(n, n)
        out.append(
            (
                f"AND/OR game n={n}",
                g,
                {"shapley": g.shapley(), "banzhaf": g.banzhaf(), "sii": g.sii_pairs()},
            )
        )
    return out


def _order1(iv, n: int) -> np.ndarray:
    d = iv.dict_values
    return np.array([d.get((i,), 0.0) for i in range(n)])


def shapiq_sv(game, budget: int, seed: int) -> dict[str, np.ndarray]:
    import shapiq

    n = game.n
    makers = {
        "KernelSHAP": lambda: shapiq.KernelSHAP(n, random_state=seed),
        "KernelSHAP+pairing": lambda: shapiq.KernelSHAP(n, pairing_trick=True, random_state=seed),
        "PermutationSamplingSV": lambda: shapiq.PermutationSamplingSV(n, random_state=seed),
        "SVARM": lambda: shapiq.SVARM(n, random_state=seed),
        "UnbiasedKernelSHAP": lambda: shapiq.UnbiasedKernelSHAP(n, random_state=seed),
    }
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, make in makers.items():
            out[name] = _order1(make().approximate(budget, game), n)
    return out


def _rmse(errors: list[np.ndarray]) -> float:
    return float(np.sqrt(np.mean(np.square(errors))))


def _ours(fn, game, exact, budget, seeds) -> dict:
    runs = [fn(game, budget, jax.random.key(s)) for s in range(seeds)]
    if exact.ndim == 2:
        iu, ju = np.triu_indices(game.n, k=1)
        err = [r.values[iu, ju] - exact[iu, ju] for r in runs]
        se = [r.stderr[iu, ju] for r in runs]
    else:
        err = [r.values - exact for r in runs]
        se = [r.stderr for r in runs]
    cover = float(np.mean([np.abs(e) <= 2 * s for e, s in zip(err, se, strict=True)]))
    used = int(max(r.evaluations for r in runs))
    return {"rmse": _rmse(err), "coverage": cover, "evaluations": used}


def shapley_accuracy(games, budgets, seeds) -> list[dict]:
    rows = []
    for label, game, exact in games:
        for budget in budgets:
            if budget >= 2**game.n or (game.n > 16 and budget not in (1000, 5000)):
                continue  # shapiq's SVARM takes ~25 s per call at n = 40, B = 5000
            row = {"game": label, "n": game.n, "budget": budget}
            seeds = seeds if game.n <= 16 else min(seeds, 10)
            for method in ("kernel", "permutation"):
                fn = lambda g, b, k, m=method: est.shapley(g, budget=b, key=k, method=m)  # noqa: E731
                row[f"ours_{method}"] = _ours(fn, game, exact["shapley"], budget, seeds)
            theirs: dict[str, list] = {}
            for s in range(seeds):
                for name, phi in shapiq_sv(game, budget, s).items():
                    theirs.setdefault(name, []).append(phi - exact["shapley"])
            row["shapiq"] = {name: _rmse(e) for name, e in theirs.items()}
            best = min(row["shapiq"], key=row["shapiq"].get)
            row["shapiq_best"] = best
            row["ratio_kernel_to_best"] = row["ours_kernel"]["rmse"] / row["shapiq"][best]
            print(
                f"  {label:<48} B={budget:>6}  kernel {row['ours_kernel']['rmse']:.4g} "
                f"(cov {row['ours_kernel']['coverage']:.2f})  perm "
                f"{row['ours_permutation']['rmse']:.4g}  shapiq best {best} "
                f"{row['shapiq'][best]:.4g}  ratio {row['ratio_kernel_to_best']:.3f}",
                flush=True,
            )
            rows.append(row)
    return rows


def banzhaf_accuracy(games, budgets, seeds) -> list[dict]:
    import shapiq

    rows = []
    for label, game, exact in games:
        for budget in budgets:
            if budget >= 2**game.n:
                continue
            row = {"game": label, "n": game.n, "budget": budget}
            for method in ("regression", "msr"):
                fn = lambda g, b, k, m=method: est.banzhaf(g, budget=b, key=k, method=m)  # noqa: E731
                row[f"ours_{method}"] = _ours(fn, game, exact["banzhaf"], budget, seeds)
            err = []
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for s in range(seeds):
                    iv = shapiq.SVARM(game.n, index="BV", random_state=s).approximate(budget, game)
                    err.append(_order1(iv, game.n) - exact["banzhaf"])
            row["shapiq_SVARM_BV"] = _rmse(err)
            print(
                f"  {label:<48} B={budget:>6}  regression {row['ours_regression']['rmse']:.4g} "
                f"(cov {row['ours_regression']['coverage']:.2f})  msr "
                f"{row['ours_msr']['rmse']:.4g}  SVARM-BV {row['shapiq_SVARM_BV']:.4g}",
                flush=True,
            )
            rows.append(row)
    return rows


def _centred_sii(game, budget: int, key) -> ja.Estimate:
    """The plain centred SII estimator (the default before the regression adjustment, and
    still the one for more than 63 players), for comparison."""
    checker = est.Budget(game, budget)
    return _pair_estimates.sii_pairs(checker, _sampling.rng_of(key))


def pairs_accuracy(games, budgets, seeds) -> list[dict]:
    import shapiq

    rows = []
    makers = {
        "KernelSHAPIQ": shapiq.KernelSHAPIQ,
        "SVARMIQ": shapiq.SVARMIQ,
        "PermutationSamplingSII": shapiq.PermutationSamplingSII,
        "SHAPIQ": shapiq.SHAPIQ,
    }
    for label, game, exact in games:
        if game.n > 16:
            continue
        iu, ju = np.triu_indices(game.n, k=1)
        for budget in budgets:
            if budget >= 2**game.n:
                continue
            row = {"game": label, "n": game.n, "budget": budget}
            fn = lambda g, b, k: est.pairs(g, budget=b, key=k)  # noqa: E731
            row["ours_sii"] = _ours(fn, game, exact["sii"], budget, seeds)
            row["ours_sii_centred"] = _ours(_centred_sii, game, exact["sii"], budget, seeds)
            row["shapiq"] = {}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for name, cls in makers.items():
                    err = []
                    for s in range(seeds):
                        a = cls(game.n, max_order=2, index="SII", random_state=s)
                        d = a.approximate(budget, game).dict_values
                        got = np.array(
                            [d.get((int(i), int(j)), 0.0) for i, j in zip(iu, ju, strict=True)]
                        )
                        err.append(got - exact["sii"][iu, ju])
                    row["shapiq"][name] = _rmse(err)
            best = min(row["shapiq"], key=row["shapiq"].get)
            row["shapiq_best"] = best
            row["ratio_sii_to_best"] = row["ours_sii"]["rmse"] / row["shapiq"][best]
            row["ratio_sii_to_centred"] = row["ours_sii"]["rmse"] / row["ours_sii_centred"]["rmse"]
            print(
                f"  {label:<48} B={budget:>6}  sii {row['ours_sii']['rmse']:.4g} (cov "
                f"{row['ours_sii']['coverage']:.2f})  centred {row['ours_sii_centred']['rmse']:.4g}"
                f"  shapiq best {best} {row['shapiq'][best]:.4g}  ratio "
                f"{row['ratio_sii_to_best']:.3f}",
                flush=True,
            )
            rows.append(row)
    return rows


def convergence(seeds: int, quick: bool) -> dict:
    """RMSE of the kernel method against budget on the n = 40 AND/OR game (closed form)."""
    game = and_or_game(40, 40)
    exact = game.shapley()
    budgets = [500, 2000, 8000] if quick else [500, 1000, 2000, 4000, 8000, 16000, 32000]
    out = {"game": "AND/OR game n=40", "budgets": budgets, "rmse": [], "coverage": []}
    for budget in budgets:
        fn = lambda g, b, k: est.shapley(g, budget=b, key=k)  # noqa: E731
        r = _ours(fn, game, exact, budget, seeds)
        out["rmse"].append(r["rmse"])
        out["coverage"].append(r["coverage"])
    slope = np.polyfit(np.log(budgets), np.log(out["rmse"]), 1)[0]
    out["log_log_slope"] = float(slope)
    print(f"  convergence: rmse {np.round(out['rmse'], 4).tolist()}, slope {slope:.3f}")
    return out


def parity(games, seeds: int) -> list[dict]:
    """Kernel vs shapiq's KernelSHAP with pairing (the best shapiq approximator in every row of
    the main table) with many seeds, to tell a small difference from noise: per-seed MSEs,
    pooled, with the standard error of the RMSE ratio (delta method, independent runs)."""
    import shapiq

    rows = []
    for label, game, exact in games:
        for budget in (500, 2000):
            ours = [
                np.mean((est.shapley(game, budget=budget, key=jax.random.key(s)).values
                         - exact["shapley"]) ** 2)
                for s in range(seeds)
            ]  # fmt: skip
            theirs = []
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for s in range(seeds):
                    a = shapiq.KernelSHAP(game.n, pairing_trick=True, random_state=s)
                    phi = _order1(a.approximate(budget, game), game.n)
                    theirs.append(np.mean((phi - exact["shapley"]) ** 2))
            o, t = np.array(ours), np.array(theirs)
            ratio = float(np.sqrt(o.mean() / t.mean()))
            rel = np.sqrt((o.std() / o.mean()) ** 2 + (t.std() / t.mean()) ** 2) / np.sqrt(seeds)
            rows.append({"game": label, "n": game.n, "budget": budget, "seeds": seeds,
                         "ours_rmse": float(np.sqrt(o.mean())),
                         "kernelshap_pairing_rmse": float(np.sqrt(t.mean())),
                         "ratio": ratio, "ratio_stderr": float(ratio * rel / 2)})  # fmt: skip
            print(f"  {label:<48} B={budget:>5}  ratio {ratio:.3f} ± {ratio * rel / 2:.3f}")
    return rows


def gpt2_timing(budget: int) -> dict:
    """Wall time of one Shapley estimate over the 144 heads of a GPT-2-small-shaped model."""
    cfg = ja.ModelConfig(
        n_layers=12, n_heads=12, d_model=768, d_head=64, d_mlp=3072, vocab_size=50257,
        n_ctx=1024, init_std=0.02,
    )  # fmt: skip
    model = ja.Transformer(cfg, rngs=nnx.Rngs(0))
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (4, 16)).astype(np.int32)
    comps = ja.heads(cfg)
    out: dict = {"model": "GPT-2-small shape, random weights", "tokens": [4, 16], "n": len(comps)}
    game = ja.Game(model, comps, tokens, metric=ja.metrics.loss)
    out["chunk"] = game.chunk
    for label, seed in (("first", 0), ("second", 1)):
        start = time.perf_counter()
        e = est.shapley(game, budget=budget, key=jax.random.key(seed))
        wall = time.perf_counter() - start
        out[label] = {
            "budget": budget,
            "evaluations": e.evaluations,
            "wall_s": wall,
            "rows_per_s": e.evaluations / wall,
            "median_stderr": float(np.median(e.stderr)),
        }
        print(f"  GPT-2 shape, 144 heads, {label} estimate: {wall:.1f} s, {e.evaluations} rows")
    host = and_or_game(144, 0)  # the estimator's own maths at this n, no model
    for name, fn in (
        ("shapley_kernel", lambda b, k: est.shapley(host, budget=b, key=k)),
        ("pairs_sii", lambda b, k: est.pairs(host, budget=b, key=k)),
    ):
        start = time.perf_counter()
        fn(20000, jax.random.key(0))
        out[f"host_{name}_20000_s"] = time.perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/estimate.json"))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="fewer games, budgets and seeds")
    parser.add_argument("--timing-budget", type=int, default=300, help="GPT-2 estimate budget")
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument(
        "--parity-seeds", type=int, default=0, help="only the many-seed kernel vs KernelSHAP check"
    )
    parser.add_argument(
        "--only", help="comma-separated sections to rerun into an existing --out file"
    )
    args = parser.parse_args()
    seeds = 5 if args.quick else args.seeds
    meta = {
        "benchmark": "ja.estimate vs shapiq approximators: RMSE, coverage, wall time",
        "device": str(jax.devices()[0]),
        "platform": jax.default_backend(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "shapiq": importlib.metadata.version("shapiq"),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "seeds": seeds,
        "load_average_at_start": os.getloadavg(),
        "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
    }
    print(json.dumps(meta, indent=1))
    games = sweep_tables(args.quick) + synthetic_games(args.quick)
    budgets = [200, 500, 1000, 2000] if args.quick else [200, 500, 1000, 2000, 5000, 10000]
    result: dict = {"meta": meta}
    if args.parity_seeds:
        picked = [games[0], games[-2]]  # random n = 12 table, AND/OR n = 16
        sections = {"parity": lambda: parity(picked, args.parity_seeds)}
    else:
        sections = {
            "shapley": lambda: shapley_accuracy(games, budgets, seeds),
            "banzhaf": lambda: banzhaf_accuracy(games, budgets[:4], seeds),
            "pairs": lambda: pairs_accuracy(games, budgets[1:4], max(3, seeds // 4)),
            "convergence": lambda: convergence(seeds, args.quick),
        }
    if not args.skip_timing and not args.parity_seeds:
        sections["timing"] = lambda: gpt2_timing(args.timing_budget)
    if args.only:
        result = json.loads(args.out.read_text())
        result.setdefault("reruns", []).append({"sections": args.only, **meta})
        sections = {k: v for k, v in sections.items() if k in args.only.split(",")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name, run in sections.items():
        print(f"{name}:")
        result[name] = run()
        meta["load_average_at_end"] = os.getloadavg()
        args.out.write_text(json.dumps(result, indent=1) + "\n")  # after every section
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
