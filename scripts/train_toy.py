"""Train a shipped toy model from its recipe, reproducibly (fixed seeds; jax on CPU).

    python scripts/train_toy.py induction-2l --out jaxablate/models/pretrained_data/induction-2l
    python scripts/train_toy.py modadd-1l --out jaxablate/models/pretrained_data/modadd-1l

Writes ``config.json`` + ``model.safetensors`` (``ja.save_model``) and ``metrics.json`` (the
recipe, the final training loss and the task metrics on a fixed evaluation batch). ``--steps``
overrides the recipe's step count (for quick checks; the shipped weights use the recipe).
``--check`` retrains and compares the metrics with the shipped ``metrics.json`` instead of
writing anything.

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
from jaxablate.pretrained import RECIPES, Recipe, shipped_metrics, task_metrics

CHUNK = 100  # optimiser steps per jitted scan


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
    elif recipe.head_dropout_mode == "one":
        k_drop, k_which = jax.random.split(key)
        drop = jax.random.bernoulli(k_drop, recipe.head_dropout, (b, 1))
        which = jax.random.randint(k_which, (b, 1), 0, n)
        keep = ~(drop & (jnp.arange(n)[None, :] == which))
    else:
        raise ValueError(
            f"head_dropout_mode must be 'independent' or 'one', got {recipe.head_dropout_mode!r}"
        )
    return keep.astype(jnp.float32).reshape(b, n_layers, n_heads)


def _loss_fn(recipe: Recipe, task: ja.pretrained.Task, graphdef, state, key):
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
    elif recipe.train_loss == "metric":
        per_example = task.metric(logits, tokens)
    else:
        raise ValueError(f"train_loss must be 'lm' or 'metric', got {recipe.train_loss!r}")
    return per_example.mean()


def train(recipe: Recipe, *, steps: int | None = None, verbose: bool = True) -> tuple[Any, dict]:
    """Train ``recipe``'s model from its seed; returns ``(model, metrics)``.

    Same recipe and ``steps`` give bitwise-identical weights on the same machine and jax version.
    """
    steps = recipe.steps if steps is None else steps
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
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
        ok = all(
            np.isclose(metrics["eval"][k], v, rtol=1e-4, atol=1e-5)
            for k, v in shipped["eval"].items()
        )
        print("reproduces the shipped metrics" if ok else f"MISMATCH; shipped: {shipped['eval']}")
        return 0 if ok else 1
    ja.save_model(model, args.out)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
