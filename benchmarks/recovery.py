"""Recovery fine-tuning: K = 16 ablation configurations vmapped vs a loop of 16 single runs.

Both sides call ``ja.recover`` with the same model, data, optimizer and steps; the vmapped side
passes all 16 rows at once, the loop passes one row per call. A third, naive side trains each
run with one jitted call per step from Python (a typical hand-written training loop; the same
compiled step as ``recover``'s, with K = 1 and one step per call). Compilation is timed apart (a
warm-up call of each shape), then steady state; the figure of merit is training steps per second
summed over runs (run-steps/s).

Usage: ``python benchmarks/recovery.py [--steps 200] [--out benchmarks/results/recovery.json]``
"""

import argparse
import datetime
import json
import os
import platform
import sys
import time

import flax
import jax
import numpy as np
import optax
from flax import nnx

import jaxablate as ja
from jaxablate.recovery import RecoveryResult, _init_runs, _train_steps, recover


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=16, help="K configurations")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions (best kept)")
    parser.add_argument(
        "--out", default=os.path.join(os.path.dirname(__file__), "results", "recovery.json")
    )
    args = parser.parse_args()

    cfg = ja.ModelConfig(
        n_layers=2, n_heads=4, d_model=32, d_head=8, d_mlp=64, vocab_size=32, n_ctx=args.seq
    )
    model = ja.Transformer(cfg, rngs=nnx.Rngs(0))
    comps = ja.heads(cfg)
    k_rows, k_train, k_eval = jax.random.split(jax.random.key(0), 3)
    rows = np.asarray(jax.random.bernoulli(k_rows, 0.7, (args.runs, len(comps))))
    train = np.asarray(jax.random.randint(k_train, (512, args.seq), 0, cfg.vocab_size))
    ev = np.asarray(jax.random.randint(k_eval, (16, args.seq), 0, cfg.vocab_size))
    tx = optax.adamw(1e-3)

    def run(r: np.ndarray, steps: int) -> RecoveryResult:
        return recover(
            model, comps, r, train, steps=steps, eval_tokens=ev, eval_every=steps,
            batch_size=args.batch_size, key=jax.random.key(1), optimizer=tx, progress=False,
        )  # fmt: skip

    def timed(fn) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    # compilation (first call of each shape; a 1-step run)
    compile_vmapped = timed(lambda: run(rows, 1))
    compile_single = timed(lambda: run(rows[:1], 1))

    vmapped = min(timed(lambda: run(rows, args.steps)) for _ in range(args.repeats))
    loop = min(
        timed(lambda: [run(rows[k : k + 1], args.steps) for k in range(args.runs)])
        for _ in range(args.repeats)
    )
    python_loop = min(
        timed(lambda: _python_loop(model, comps, rows, train, args, tx)) for _ in range(1)
    )
    run_steps = args.runs * args.steps
    result = {
        "benchmark": "recovery",
        "date": datetime.date.today().isoformat(),
        "device": str(jax.devices()[0].device_kind),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "versions": {
            "python": sys.version.split()[0],
            "jax": jax.__version__,
            "flax": flax.__version__,
            "optax": optax.__version__,
        },
        "model": {
            k: getattr(cfg, k)
            for k in ("n_layers", "n_heads", "d_model", "d_head", "d_mlp", "vocab_size")
        },
        "runs": args.runs,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "seq": args.seq,
        "compile_s": {"vmapped": compile_vmapped, "single": compile_single},
        "seconds": {"vmapped": vmapped, "loop": loop, "python_step_loop": python_loop},
        "run_steps_per_s": {
            "vmapped": run_steps / vmapped,
            "loop": run_steps / loop,
            "python_step_loop": run_steps / python_loop,
        },
        "speedup": loop / vmapped,
        "speedup_vs_python_step_loop": python_loop / vmapped,
        "note": "each side includes 2 evaluations per run (steps 0 and end) and the baseline",
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
