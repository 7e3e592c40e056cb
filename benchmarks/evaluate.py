"""Subsets per second and achieved FLOP/s of evaluating many masks, against baselines run alongside.

Paths, all computing the same table:
  (a) loop   : a jitted single-mask forward called once per subset from Python (sync per row)
  (b) naive  : ``ja.evaluate(..., share_prefix=False)``: vmapped chunks, every row runs the model
  (c) default: ``ja.evaluate`` with prefix sharing and the probed chunk size
  (d) TransformerLens: a ``run_with_hooks`` loop with a mask hook on ``hook_z`` (if installed)

Each representative case runs twice: with the next-token loss at every position, and with a
logit difference at the last position (the usual interpretability metric), which ``ja.evaluate``
prunes to the work that position depends on (``Metric.positions``). The Llama-shaped model
(grouped-query attention, SwiGLU MLP, RMSNorm, rotary positions; random weights, offline) runs
its last layer's query heads with both metrics, without TransformerLens (whose loop here builds
a GPT-2-shaped model).

FLOP/s are naive-equivalent (the FLOPs a full forward per subset would do), reported as a fraction
of a large float32 matmul's FLOP/s measured in the same run; for (c), which skips shared work, this
is an effective rate. Compile time is reported apart from steady-state time.

Usage: python benchmarks/evaluate.py [--out PATH] [--quick] [--llama-only]
  (default PATH: benchmarks/results/evaluate.json, or evaluate_llama.json with --llama-only)
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jaxablate as ja

MODELS = {
    "representative": dict(
        cfg=dict(
            n_layers=4, n_heads=8, d_model=256, d_head=32, d_mlp=1024, vocab_size=2048, n_ctx=64
        ),
        batch=16,
        seq=64,
    ),
    "llama": dict(
        cfg=dict(
            n_layers=4,
            n_heads=8,
            n_kv_heads=2,
            d_model=256,
            d_head=32,
            d_mlp=688,
            vocab_size=4096,
            n_ctx=64,
            norm="rmsnorm",
            positions="rotary",
            gated_mlp=True,
            act_fn="silu",
            tie_embeddings=False,
            layer_norm_eps=1e-6,
        ),
        batch=16,
        seq=64,
    ),
    "tiny": dict(
        cfg=dict(n_layers=2, n_heads=4, d_model=64, d_head=16, d_mlp=256, vocab_size=128, n_ctx=16),
        batch=4,
        seq=16,
    ),
}


def forward_flops(cfg: ja.ModelConfig, batch: int, seq: int) -> float:
    """Matmul FLOPs of one full forward pass (2 per multiply-add); GQA and gated MLPs counted."""
    tokens = batch * seq
    hd = cfg.n_heads * cfg.d_head
    kv = (cfg.n_kv_heads or cfg.n_heads) * cfg.d_head
    per_layer = 2 * tokens * cfg.d_model * (hd + 2 * kv)  # q, k, v
    per_layer += 2 * 2 * batch * cfg.n_heads * seq * seq * cfg.d_head  # scores, pattern @ v
    per_layer += 2 * tokens * hd * cfg.d_model  # output projection
    mlp_matrices = 3 if cfg.gated_mlp else 2
    per_layer += 0 if cfg.attn_only else 2 * mlp_matrices * tokens * cfg.d_model * cfg.d_mlp
    return cfg.n_layers * per_layer + 2 * tokens * cfg.d_model * cfg.vocab_size


def matmul_peak(n: int = 2048, reps: int = 10, dtype: str = "float32") -> float:
    """FLOP/s of a jitted ``[n, n] @ [n, n]`` matmul in ``dtype`` (also used by device.py and
    gpt2_small.py)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    start = time.perf_counter()
    for _ in range(reps):
        out = f(a)
    out.block_until_ready()
    return 2 * n**3 * reps / (time.perf_counter() - start)


CORRECT, WRONG = 3, 4  # token ids of the logit-difference metric


def make_metric(name: str):
    """The benchmark's metrics: ``loss`` (every position) or ``logit_diff`` (last position)."""
    if name == "loss":
        return ja.metrics.loss
    return ja.metrics.logit_diff(CORRECT, WRONG)


def time_loop(model, comps, rows, tokens, metric) -> dict:
    """(a): one jitted call and one device sync per subset."""
    graphdef, state = nnx.split(model)
    repl = ja.ablation.zero().fit(model.config, batch=tokens.shape[0], seq=tokens.shape[1])

    @jax.jit
    def one(state, tokens, row):
        m = nnx.merge(graphdef, state)
        return metric(m.forward(tokens, comps.masks_unchecked(row), repl), tokens).mean()

    tokens = jnp.asarray(tokens)
    rows_j = jnp.asarray(rows, jnp.float32)
    start = time.perf_counter()
    float(one(state, tokens, rows_j[0]))
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    values = [float(one(state, tokens, r)) for r in rows_j]
    return dict(
        compile_s=compile_s, run_s=time.perf_counter() - start, rows=len(rows), values=values
    )


def time_evaluate(model, comps, rows, tokens, **kwargs) -> dict:
    """(b)/(c): first call (compile + probe) and a second, steady-state call."""
    start = time.perf_counter()
    ja.evaluate(model, comps, rows, tokens, **kwargs)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    values = ja.evaluate(model, comps, rows, tokens, **kwargs)
    run_s = time.perf_counter() - start
    return dict(
        compile_s=max(first_s - run_s, 0.0), run_s=run_s, rows=len(rows), values=values.tolist()
    )


TL_SCRIPT = textwrap.dedent(
    """
    import json, sys, time, numpy as np, torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    spec = json.loads(sys.argv[1])
    c = spec["cfg"]
    cfg = HookedTransformerConfig(
        n_layers=c["n_layers"], d_model=c["d_model"], n_heads=c["n_heads"], d_head=c["d_head"],
        d_mlp=c["d_mlp"], d_vocab=c["vocab_size"], n_ctx=c["n_ctx"], act_fn="gelu_new",
        normalization_type="LN", device="cpu", seed=0)
    model = HookedTransformer(cfg).eval()
    tokens = torch.tensor(np.array(spec["tokens"]), dtype=torch.long)
    rows = np.array(spec["rows"], dtype=bool)
    layers = spec["layers"]
    def hooks(row):
        out = []
        for j, layer in enumerate(layers):
            m = torch.ones(c["n_heads"])
            k = spec["heads_per_layer"]
            m[:k] = torch.tensor(row[j * k:(j + 1) * k], dtype=torch.float32)
            hook = lambda z, hook, m=m: z * m[None, None, :, None]  # noqa: E731
            out.append((f"blocks.{layer}.attn.hook_z", hook))
        return out
    def value(row):
        if spec["metric"] == "loss":
            return float(model.run_with_hooks(tokens, return_type="loss", fwd_hooks=hooks(row)))
        logits = model.run_with_hooks(tokens, return_type="logits", fwd_hooks=hooks(row))
        last = logits[:, -1]
        return float((last[:, spec["correct"]] - last[:, spec["wrong"]]).mean())
    with torch.no_grad():
        for row in rows[:4]:  # warm-up: allocator and thread pool
            value(row)
        run_s = float("inf")
        for _ in range(2):  # best of two passes, as a quiet machine would give
            start = time.perf_counter()
            for row in rows:
                value(row)
            run_s = min(run_s, time.perf_counter() - start)
    print(json.dumps(dict(run_s=run_s, rows=len(rows), torch=torch.__version__)))
    """
)


def time_transformer_lens(spec, tokens, rows, layers, heads_per_layer, metric) -> dict | None:
    """(d) in a subprocess with the malloc settings NOTES.md prescribes for torch peers."""
    try:
        import transformer_lens  # noqa: F401
    except ImportError:
        return None
    env = dict(
        os.environ, MALLOC_MMAP_THRESHOLD_="4294967296", MALLOC_TRIM_THRESHOLD_="17179869184"
    )
    payload = json.dumps(
        dict(
            cfg=spec["cfg"],
            tokens=tokens.tolist(),
            rows=rows.tolist(),
            layers=layers,
            heads_per_layer=heads_per_layer,
            metric=metric,
            correct=CORRECT,
            wrong=WRONG,
        )
    )
    done = subprocess.run(
        [sys.executable, "-c", TL_SCRIPT, payload], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        return dict(error=done.stderr.strip().splitlines()[-1])
    return json.loads(done.stdout.strip().splitlines()[-1])


def case(name, spec, comps_fn, layers, n_timed, peak, quick, metric_name="loss", tl=True) -> dict:
    cfg = ja.ModelConfig(**spec["cfg"], init_std=0.05)
    model = ja.Transformer(cfg, rngs=nnx.Rngs(0))
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (spec["batch"], spec["seq"]))
    tokens = tokens.astype(np.int32)
    comps = comps_fn(cfg)
    rows = ja.subsets.all(len(comps))
    timed = rows[np.random.default_rng(1).permutation(len(rows))[:n_timed]]
    flops = forward_flops(cfg, spec["batch"], spec["seq"])
    metric = make_metric(metric_name)
    out = dict(
        case=name,
        metric=metric_name,
        n_components=len(comps),
        n_rows=len(rows),
        flops_per_subset=flops,
    )
    results = {
        "a_loop": time_loop(model, comps, timed, tokens, metric),
        "b_naive": time_evaluate(
            model, comps, timed, tokens, metric=metric, share_prefix=False, chunk_size="auto"
        ),
        "c_default": time_evaluate(model, comps, rows, tokens, metric=metric, chunk_size="auto"),
    }
    if tl and not quick:
        per_layer = len(comps) // len(layers)
        tl = time_transformer_lens(
            spec, tokens, timed[: max(16, n_timed // 4)], layers, per_layer, metric_name
        )
        if tl is not None:
            results["d_transformer_lens"] = tl
    # the paths agree on the subsets they share
    idx = {tuple(r): i for i, r in enumerate(rows.tolist())}
    c_vals = np.array(results["c_default"]["values"])
    for key in ("a_loop", "b_naive"):
        vals = np.array(results[key]["values"])
        ref = c_vals[[idx[tuple(r)] for r in timed.tolist()]]
        np.testing.assert_allclose(vals, ref, rtol=1e-4, atol=1e-4)
    for r in results.values():
        r.pop("values", None)
        if "run_s" in r:
            r["subsets_per_s"] = r["rows"] / r["run_s"]
            r["flops_per_s"] = r["subsets_per_s"] * flops
            r["fraction_of_matmul_peak"] = r["flops_per_s"] / peak
    rate = {k: v.get("subsets_per_s") for k, v in results.items()}
    out["paths"] = results
    out["ratios"] = {
        "b_over_a": rate["b_naive"] / rate["a_loop"],
        "c_over_b": rate["c_default"] / rate["b_naive"],
    }
    if rate.get("d_transformer_lens"):
        out["ratios"]["c_over_transformer_lens"] = rate["c_default"] / rate["d_transformer_lens"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="JSON path (default: see the usage line)")
    parser.add_argument("--quick", action="store_true", help="fewer timed rows, no TransformerLens")
    parser.add_argument(
        "--llama-only", action="store_true", help="only the Llama-shaped case (both metrics)"
    )
    args = parser.parse_args()
    if args.out is None:
        name = "evaluate_llama.json" if args.llama_only else "evaluate.json"
        args.out = f"benchmarks/results/{name}"
    peak = matmul_peak()
    n = 64 if args.quick else 256
    cases = [] if args.llama_only else gpt2_cases(n, peak, args.quick)
    cases += llama_cases(n, peak, args.quick)
    write_report(args.out, peak, cases)


def llama_cases(n: int, peak: float, quick: bool) -> list[dict]:
    """The Llama-shaped model's last layer: its 8 query heads (2 key/value heads), both metrics."""
    spec = MODELS["llama"]
    last = spec["cfg"]["n_layers"] - 1
    return [
        case(
            f"llama (i): last layer's 8 query heads, {m}",
            spec,
            lambda c: ja.heads(c, layers=[last]),
            [last],
            n,
            peak,
            quick,
            m,
            tl=False,
        )
        for m in ("loss", "logit_diff")
    ]


def gpt2_cases(n: int, peak: float, quick: bool) -> list[dict]:
    """The GPT-2-shaped representative model's three head sets, and the tiny model."""
    rep, tiny = MODELS["representative"], MODELS["tiny"]
    representative = [
        ("(i): last layer's 8 heads", lambda c: ja.heads(c, layers=[3]), [3]),
        (
            "(ii): 4 heads in each of layers 0-2",
            lambda c: ja.heads(c, layers=[0, 1, 2], heads=[0, 1, 2, 3]),
            [0, 1, 2],
        ),
        (
            "(ii'): 4 heads in each of layers 1-3",
            lambda c: ja.heads(c, layers=[1, 2, 3], heads=[0, 1, 2, 3]),
            [1, 2, 3],
        ),
    ]
    metrics = ["loss"] if quick else ["loss", "logit_diff"]
    cases = [
        case(f"representative {label}, {m}", rep, fn, layers, n, peak, quick, m)
        for m in metrics
        for label, fn, layers in representative
    ]
    cases.append(
        case("tiny: all 8 heads, loss", tiny, lambda c: ja.heads(c), [0, 1], 256, peak, quick)
    )
    return cases


def write_report(out: str, peak: float, cases: list[dict]) -> None:
    report = dict(
        benchmark="evaluate",
        device=str(jax.devices()[0]),
        device_kind=jax.devices()[0].device_kind,
        cpu=platform.processor() or platform.machine(),
        cores=os.cpu_count(),
        versions=dict(
            jax=jax.__version__, jaxablate=ja.__version__, python=platform.python_version()
        ),
        load_average_at_end=os.getloadavg(),
        matmul_flops_per_s=peak,
        cases=cases,
    )
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2))
    print(f"device {report['device_kind']}, matmul peak {peak / 1e9:.0f} GFLOP/s")
    for c in cases:
        print(f"\n{c['case']}  ({c['n_rows']} subsets)")
        for key, r in c["paths"].items():
            if "error" in r:
                print(f"  {key:22s} error: {r['error']}")
                continue
            print(
                f"  {key:22s} {r['subsets_per_s']:10.1f} subsets/s  "
                f"{100 * r['fraction_of_matmul_peak']:6.1f}% of matmul peak  "
                f"(compile {r.get('compile_s', 0):.1f} s)"
            )
        print("  ratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in c["ratios"].items()))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
