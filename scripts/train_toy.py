"""Train a shipped toy model from its recipe, reproducibly (fixed seeds; jax on CPU).

    python scripts/train_toy.py induction-2l --out jaxablate/models/pretrained_data/induction-2l
    python scripts/train_toy.py modadd-1l --out jaxablate/models/pretrained_data/modadd-1l

Writes ``config.json`` + ``model.safetensors`` (``ja.save_model``) and ``metrics.json`` (the
recipe, the final training loss and the task metrics on a fixed evaluation batch). ``--steps``
overrides the recipe's step count (for quick checks; the shipped weights use the recipe).
``--check`` retrains and compares the metrics with the shipped ``metrics.json`` instead of
writing anything, within a tolerance (``CHECK_RTOL``): the same recipe gives bitwise-identical
weights only on the same CPU and jax version.

The loop: AdamW over the model's ``nnx.Param`` state, warm-up + cosine schedule, one jitted
``jax.lax.scan`` per chunk of steps. Per-head dropout draws a Bernoulli keep-mask per example and
step from the step's key and passes it to the model as ``ja.Masks`` (zero ablation), so heads
learn to back each other up.
"""

import argparse
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jaxablate as ja
from jaxablate._checks import positive_int
from jaxablate.pretrained import RECIPES, Recipe, shipped_metrics, task_metrics
from jaxablate.tasks import Task

CHUNK = 100  # optimiser steps per jitted scan

# Retraining is bitwise reproducible only on the same CPU and jax version: over thousands of
# steps, last-bit differences grow. Measured for modadd-1l (answer loss, 3000 steps): shipped
# 0.01504, retrained on two other CPUs 0.01740 and 0.01811, and with the initial weights scaled
# by (1 + 1e-7 * normal noise) 0.01685, 0.01625, 0.01648, 0.01558 (accuracy 1.0 in every run):
# at most 20% from the shipped value. --check accepts 2.5 times that; another seed is outside
# (seeds 1 and 2 give 0.0291 and 0.0517).
CHECK_RTOL = 0.5  # losses
CHECK_ACCURACY_ATOL = 0.01  # accuracies (names with "accuracy"): 5 of 512 evaluation examples


def _schedule(recipe: Recipe, steps: int) -> optax.Schedule:
    warmup = min(recipe.warmup, max(steps // 10, 1))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=recipe.lr,
        warmup_steps=warmup,
        decay_steps=max(steps, warmup + 1),
        end_value=recipe.lr * 0.1,
    )


def _keep_heads(recipe: Recipe, key: jax.Array, n_layers: int, n_heads: int) -> jax.Array:
    """Per-example head keep-masks ``float32 [batch, layer, head]`` for one step."""
    b, n = recipe.batch_size, n_layers * n_heads
    if recipe.head_dropout_mode == "independent":
        keep = jax.random.bernoulli(key, 1.0 - recipe.head_dropout, (b, n))
    else:  # "one" (Recipe validates the mode)
        k_drop, k_which = jax.random.split(key)
        drop = jax.random.bernoulli(k_drop, recipe.head_dropout, (b, 1))
        which = jax.random.randint(k_which, (b, 1), 0, n)
        keep = ~(drop & (jnp.arange(n)[None, :] == which))
    return keep.astype(jnp.float32).reshape(b, n_layers, n_heads)


def _loss_fn(recipe: Recipe, task: Task, graphdef, state, key):
    data_key, drop_key = jax.random.split(key)
    tokens = task.batch(data_key, recipe.batch_size)
    model = nnx.merge(graphdef, state)
    cfg = model.config
    if recipe.head_dropout > 0:
        keep = _keep_heads(recipe, drop_key, cfg.n_layers, cfg.n_heads)
        lead = (recipe.batch_size,)
        masks = ja.Masks(
            heads=keep,
            attn=jnp.ones((*lead, cfg.n_layers), jnp.float32),
            mlp=jnp.ones((*lead, cfg.n_layers), jnp.float32),
        )
        logits = jax.vmap(lambda t, m: model(t[None], masks=m)[0])(tokens, masks)
    else:
        logits = model(tokens)
    if recipe.train_loss == "lm":
        per_example = ja.metrics.loss(logits, tokens)
    else:  # "metric" (Recipe validates the loss)
        per_example = task.metric(logits, tokens)
    return per_example.mean()


def train(recipe: Recipe, *, steps: int | None = None, verbose: bool = True) -> tuple[Any, dict]:
    """Train ``recipe``'s model from its seed; returns ``(model, metrics)``.

    Same recipe and ``steps`` give bitwise-identical weights on the same machine and jax version.
    """
    steps = recipe.steps if steps is None else positive_int("steps", steps)
    task = recipe.make_task()
    model = ja.Transformer(recipe.config, rngs=nnx.Rngs(recipe.seed))
    graphdef, state = nnx.split(model)
    tx = optax.adamw(_schedule(recipe, steps), weight_decay=recipe.weight_decay)
    opt_state = tx.init(state)
    grad_fn = jax.value_and_grad(functools.partial(_loss_fn, recipe, task, graphdef))
    base = jax.random.key(recipe.seed)

    def step(carry, i):
        state, opt_state = carry
        loss, grads = grad_fn(state, jax.random.fold_in(base, i))
        updates, opt_state = tx.update(grads, opt_state, state)
        return (optax.apply_updates(state, updates), opt_state), loss

    @jax.jit
    def run_chunk(state, opt_state, idx):
        (state, opt_state), losses = jax.lax.scan(step, (state, opt_state), idx)
        return state, opt_state, losses

    t0 = time.perf_counter()
    losses = []
    for start in range(0, steps, CHUNK):
        idx = jnp.arange(start, min(start + CHUNK, steps), dtype=jnp.int32)
        state, opt_state, chunk_losses = run_chunk(state, opt_state, idx)
        losses.append(np.asarray(chunk_losses))
        if verbose:
            print(
                f"{recipe.name} step {start + len(idx):5d}/{steps}  "
                f"train loss {float(losses[-1].mean()):.4f}  ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    model = nnx.merge(graphdef, state)
    all_losses = np.concatenate(losses)
    evals = task_metrics(
        model, task, key=jax.random.key(recipe.eval_seed), batch_size=recipe.eval_batch
    )
    metrics = {
        "name": recipe.name,
        "recipe": {**recipe.to_dict(), "steps": steps},
        "final_train_loss": float(all_losses[-min(100, len(all_losses)) :].mean()),
        "eval": evals,
        "versions": {"jax": jax.__version__, "jaxablate": ja.__version__},
    }
    return model, metrics


def matches_shipped(fresh: dict[str, float], shipped: dict[str, float]) -> bool:
    """Whether retrained metrics are as good as the shipped ones (see ``CHECK_RTOL``)."""

    def close(name: str, a: float, b: float) -> bool:
        if "accuracy" in name:
            return abs(a - b) <= CHECK_ACCURACY_ATOL
        return abs(a - b) <= CHECK_RTOL * abs(b)

    return set(fresh) == set(shipped) and all(close(k, fresh[k], v) for k, v in shipped.items())


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(RECIPES))
    parser.add_argument("--out", type=Path, help="directory to write the model to")
    parser.add_argument("--steps", type=int, default=None, help="override the recipe's steps")
    parser.add_argument(
        "--check", action="store_true", help="retrain and compare with the shipped metrics.json"
    )
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.out is None and not args.check:
        parser.error("give --out DIR (or --check)")
    model, metrics = train(RECIPES[args.name], steps=args.steps, verbose=not args.quiet)
    print(json.dumps(metrics["eval"], indent=2))
    if args.check:
        shipped = shipped_metrics(args.name)
        ok = matches_shipped(metrics["eval"], shipped["eval"])
        print("reproduces the shipped metrics" if ok else f"MISMATCH; shipped: {shipped['eval']}")
        return 0 if ok else 1
    ja.save_model(model, args.out)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
