"""Recovery fine-tuning: K = 16 ablation configurations vmapped vs a loop of 16 single runs.

Both sides call ``ja.recover`` with the same model, data, optimizer and steps; the vmapped side
passes all 16 rows at once, the loop passes one row per call. A third, naive side trains each
run with one jitted call per step from Python (a typical hand-written training loop; the same
compiled step as ``recover``'s, with K = 1 and one step per call). Compilation is timed apart (a
warm-up call of each shape), then steady state; the figure of merit is training steps per second
summed over runs (run-steps/s).

``--host-devices 2`` splits the CPU into 2 XLA devices (``--xla_force_host_platform_device_count``):
the vmapped side then spreads its K runs over both cores, which a single run's tiny ops cannot
use; the loop's single runs stay on one device.

``--grid`` adds a sweep over model width and batch shape (one repetition each, no naive side):
how the gain of vmapping depends on how much of a single run's step is per-op overhead.

Usage: ``python benchmarks/recovery.py [--steps 200] [--grid] [--out
benchmarks/results/recovery.json]``
"""

import argparse
import datetime
import json
import os
import platform
import sys
import time


def _host_devices_from_argv() -> int:
    """``--host-devices N`` must take effect before jax starts, so it is read here."""
    for i, arg in enumerate(sys.argv):
        if arg == "--host-devices" and i + 1 < len(sys.argv):
            return int(sys.argv[i + 1])
        if arg.startswith("--host-devices="):
            return int(arg.split("=", 1)[1])
    return 1


if _host_devices_from_argv() > 1:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + f" --xla_force_host_platform_device_count={_host_devices_from_argv()}"
    )

import flax  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import jaxablate as ja  # noqa: E402
from jaxablate.recovery import RecoveryResult, _init_runs, _train_steps, recover  # noqa: E402


def _python_loop(model, comps, rows, train, args, tx) -> None:
    """Each run trained by a Python loop of one-step jitted calls (no evaluation)."""
    graphdef, params, frozen = nnx.split(model, nnx.Param, ...)
    replacement = ja.ablation.zero().fit(model.config, batch=args.batch_size, seq=args.seq)
    tokens, key = jax.numpy.asarray(train), jax.random.key(1)
    for k in range(rows.shape[0]):
        masks = comps.masks(rows[k : k + 1])
        allowed = jax.tree.map(lambda x: np.ones((1, *x.shape), bool), params)
        state, opt = _init_runs(params, n_runs=1, tx=tx)
        for t in range(args.steps):
            state, opt = _train_steps(
                state, opt, frozen, masks, allowed, replacement, tokens, key,
                np.int32(t), np.int32(t + 1), graphdef=graphdef, tx=tx, batch_size=args.batch_size,
            )  # fmt: skip
        jax.block_until_ready(state)


def measure(
    dims: dict,
    *,
    runs: int,
    steps: int,
    batch_size: int,
    seq: int,
    repeats: int,
    python_loop: bool,
) -> dict:
    """Time ``runs`` configurations vmapped vs a loop of single runs on one model size."""
    cfg = ja.ModelConfig(**dims, n_ctx=seq)
    model = ja.Transformer(cfg, rngs=nnx.Rngs(0))
    comps = ja.heads(cfg)
    k_rows, k_train, k_eval = jax.random.split(jax.random.key(0), 3)
    rows = np.asarray(jax.random.bernoulli(k_rows, 0.7, (runs, len(comps))))
    train = np.asarray(jax.random.randint(k_train, (512, seq), 0, cfg.vocab_size))
    ev = np.asarray(jax.random.randint(k_eval, (16, seq), 0, cfg.vocab_size))
    tx = optax.adamw(1e-3)

    def run(r: np.ndarray, n_steps: int) -> RecoveryResult:
        return recover(
            model, comps, r, train, steps=n_steps, eval_tokens=ev, eval_every=n_steps,
            batch_size=batch_size, key=jax.random.key(1), optimizer=tx, progress=False,
        )  # fmt: skip

    def timed(fn) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    # compilation (first call of each shape; a 1-step run)
    compile_vmapped = timed(lambda: run(rows, 1))
    compile_single = timed(lambda: run(rows[:1], 1))
    vmapped = min(timed(lambda: run(rows, steps)) for _ in range(repeats))
    loop = min(
        timed(lambda: [run(rows[k : k + 1], steps) for k in range(runs)]) for _ in range(repeats)
    )
    seconds = {"vmapped": vmapped, "loop": loop}
    if python_loop:
        # compile its step first (recover's own calls compiled it for sharded arguments)
        _python_loop(model, comps, rows[:1], train, argparse.Namespace(
            batch_size=batch_size, seq=seq, steps=1), tx)  # fmt: skip
        args = argparse.Namespace(batch_size=batch_size, seq=seq, steps=steps)
        seconds["python_step_loop"] = timed(
            lambda: _python_loop(model, comps, rows, train, args, tx)
        )
    run_steps = runs * steps
    out = {
        "model": dims,
        "batch_size": batch_size,
        "seq": seq,
        "runs": runs,
        "steps": steps,
        "compile_s": {"vmapped": compile_vmapped, "single": compile_single},
        "seconds": seconds,
        "run_steps_per_s": {k: run_steps / v for k, v in seconds.items()},
        "speedup": loop / vmapped,
    }
    if python_loop:
        out["speedup_vs_python_step_loop"] = seconds["python_step_loop"] / vmapped
    return out


HEADLINE = dict(n_layers=2, n_heads=4, d_model=32, d_head=8, d_mlp=64, vocab_size=32)
GRID_WIDTHS = (16, 32, 64)
GRID_BATCHES = ((2, 8), (4, 16), (8, 32))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=16, help="K configurations")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions (best kept)")
    parser.add_argument(
        "--grid",
        action="store_true",
        help="also measure d_model 16/32/64 x batch 2x8/4x16/8x32 (d_head 8, d_mlp 2 d_model)",
    )
    parser.add_argument(
        "--host-devices",
        type=int,
        default=1,
        help="split the CPU into N XLA devices; the vmapped side spreads its runs over them",
    )
    parser.add_argument(
        "--out", default=os.path.join(os.path.dirname(__file__), "results", "recovery.json")
    )
    args = parser.parse_args()

    headline = measure(
        HEADLINE, runs=args.runs, steps=args.steps, batch_size=args.batch_size, seq=args.seq,
        repeats=args.repeats, python_loop=True,
    )  # fmt: skip
    grid = []
    if args.grid:
        for width in GRID_WIDTHS:
            dims = dict(HEADLINE, d_model=width, n_heads=width // 8, d_mlp=2 * width)
            for batch_size, seq in GRID_BATCHES:
                point = measure(
                    dims, runs=args.runs, steps=args.steps, batch_size=batch_size, seq=seq,
                    repeats=1, python_loop=False,
                )  # fmt: skip
                print(
                    f"d_model {width:3d}  batch {batch_size} x {seq:2d}: "
                    f"vmapped / loop = {point['speedup']:.2f}x",
                    flush=True,
                )
                grid.append(point)
    result = {
        "benchmark": "recovery",
        "date": datetime.date.today().isoformat(),
        "device": str(jax.devices()[0].device_kind),
        "n_devices": len(jax.devices()),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "versions": {
            "python": sys.version.split()[0],
            "jax": jax.__version__,
            "flax": flax.__version__,
            "optax": optax.__version__,
        },
        **headline,
        "grid": grid,
        "note": "each side includes 2 evaluations per run (steps 0 and end) and the baseline",
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k != "grid"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
