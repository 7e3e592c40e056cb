"""Error of the bfloat16 compute path against float32, on each benchmark model.

For each model of ``benchmarks/evaluate.py`` (random weights, ``init_std=0.05``, its tokens) and
each metric (``loss`` at every position, ``logit_diff`` at the last one), all 2^8 subsets of the
players below are evaluated three ways on the same weights:

- ``f32``: the float32 model (the reference);
- ``bf16``: ``ModelConfig(dtype="bfloat16")`` with the float32 weights cast to bfloat16 (weights
  and activations bfloat16; norm statistics, softmax, logits and metrics float32);
- ``f32-rounded``: the float32 model with those bfloat16 weights upcast, which separates the error
  of rounding the weights (f32-rounded vs f32) from the error of computing in bfloat16 (bf16 vs
  f32-rounded).

Errors are reported for the values themselves and for the interaction quantities derived from the
2^8 table (Möbius dividends of the non-empty coalitions, Shapley values, pairwise Shapley
interactions; computed in float64):
max absolute error, and the same relative to the largest magnitude of the float32 quantity
(``rel``). For the values, ``rel_spread`` divides by their spread (max - min), the scale ablation
effects live on (a loss near 7.6 whose subsets differ by 0.05 would otherwise look exact).

Usage: python benchmarks/bf16_error.py [--out benchmarks/results/bf16_error.json] [--quick]
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jaxablate as ja
from jaxablate import interactions as ia

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate import MODELS, make_metric

#: (model, players) of each case: the last layer's heads (256 subsets) or all 8 heads (tiny).
CASES = {
    "representative": lambda cfg: ja.heads(cfg, layers=[cfg.n_layers - 1]),
    "llama": lambda cfg: ja.heads(cfg, layers=[cfg.n_layers - 1]),
    "tiny": lambda cfg: ja.heads(cfg),
}


def cast(model: ja.Transformer, dtype: str) -> ja.Transformer:
    """``model``'s weights cast to ``dtype``, in a model of that dtype (the same config else)."""
    out = nnx.eval_shape(
        lambda: ja.Transformer(model.config.replace(dtype=dtype), rngs=nnx.Rngs(0))
    )
    nnx.update(out, jax.tree.map(lambda x: x.astype(jnp.dtype(dtype)), nnx.state(model)))
    return out


def three_models(spec: dict) -> dict[str, ja.Transformer]:
    """The float32 model, its bfloat16 cast and the float32 model on the rounded weights."""
    f32 = ja.Transformer(ja.ModelConfig(**spec["cfg"], init_std=0.05), rngs=nnx.Rngs(0))
    bf16 = cast(f32, "bfloat16")
    return {"f32": f32, "bf16": bf16, "f32-rounded": cast(bf16, "float32")}


def derived(values: np.ndarray) -> dict[str, np.ndarray]:
    """The values and the interaction quantities derived from their table (float64)."""
    with jax.enable_x64(True):
        v = jnp.asarray(values, jnp.float64)
        return {
            "values": np.asarray(v),
            "mobius": np.asarray(ia.mobius(v))[1:],  # without m(empty set) = v(empty set)
            "shapley": np.asarray(ia.shapley(v)),
            "pairs_sii": np.asarray(ia.pairs(ia.shapley_interaction(v))),
        }


def errors(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict[str, dict]:
    """Max absolute and relative errors of each quantity of ``got`` against ``ref``."""
    out = {}
    for name, r in ref.items():
        err = float(np.max(np.abs(got[name] - r)))
        entry = dict(max_abs=err, rel=err / float(np.max(np.abs(r))))
        if name == "values":
            entry["rel_spread"] = err / float(np.ptp(r))
            entry["spread"] = float(np.ptp(r))
        out[name] = entry
    return out


def measure(name: str, metric_name: str) -> dict:
    """All subsets of one case under each model; errors of bf16 and of the rounding alone."""
    spec = MODELS[name]
    models = three_models(spec)
    cfg = models["f32"].config
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (spec["batch"], spec["seq"]))
    tokens = tokens.astype(np.int32)
    n_players = len(CASES[name](cfg))
    rows = ja.subsets.all(n_players)
    metric = make_metric(metric_name)
    tables, seconds = {}, {}
    for key, model in models.items():
        comps = CASES[name](model.config)  # components are built for a model's config (dtype)
        start = time.perf_counter()
        values = ja.evaluate(model, comps, rows, tokens, metric=metric)
        seconds[key] = time.perf_counter() - start
        tables[key] = derived(np.asarray(values, np.float64))
    return dict(
        model=name,
        metric=metric_name,
        n_players=n_players,
        bf16_vs_f32=errors(tables["f32"], tables["bf16"]),
        rounding_only=errors(tables["f32"], tables["f32-rounded"]),
        compute_only=errors(tables["f32-rounded"], tables["bf16"]),
        seconds=seconds,
    )


def print_table(cases: list[dict]) -> None:
    """The README's table: bf16 against f32 (and the rounding's share) per model and metric."""
    print(
        "| model | metric | values: max abs | rel to spread | (weights rounding only) | "
        "Möbius rel | Shapley rel | pairs SII rel |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for c in cases:
        e, r = c["bf16_vs_f32"], c["rounding_only"]
        print(
            f"| {c['model']} | {c['metric']} | {e['values']['max_abs']:.2e} | "
            f"{100 * e['values']['rel_spread']:.2f}% | {100 * r['values']['rel_spread']:.2f}% | "
            f"{100 * e['mobius']['rel']:.2f}% | {100 * e['shapley']['rel']:.2f}% | "
            f"{100 * e['pairs_sii']['rel']:.2f}% |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/bf16_error.json")
    parser.add_argument("--quick", action="store_true", help="the tiny model only")
    args = parser.parse_args()
    names = ["tiny"] if args.quick else list(CASES)
    cases = [measure(n, m) for n in names for m in ("loss", "logit_diff")]
    report = dict(
        benchmark="bf16_error",
        device=jax.devices()[0].device_kind,
        versions=dict(jax=jax.__version__, python=platform.python_version()),
        load_average_at_end=os.getloadavg(),
        cases=cases,
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print_table(cases)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
