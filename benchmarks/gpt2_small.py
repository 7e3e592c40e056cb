"""GPT-2-small-shaped head ablations: jaxablate against TransformerLens 3.9 on the same weights.

Model: GPT-2 small's shape (12 layers x 12 heads, d_model 768, d_mlp 3072, vocab 50257) with
random weights built offline (``transformers.GPT2LMHeadModel`` from a config, saved once with
``save_pretrained``), 8 prompts x 16 random tokens, zero ablation of heads (on ``z``).

Workloads (issue 16), each with two metrics, **loss** (next-token loss at every position) and
**diff** (logit of token 3 minus token 4 at the last position):
  W1: all 144 heads, random subsets (each head kept with probability 1/2);
  W2: the 12 heads of layer 11, all 4096 subsets.

Paths, each in its own subprocess (so peak RSS, ``ru_maxrss``, is that path's alone):
  ja default  : ``ja.evaluate(...)`` (no timed probe; the plan is sized by the positions and
                vocabulary columns the metric reads)
  ja auto     : ``ja.evaluate(..., chunk_size="auto")`` (the probe is part of its first call)
  tl loop     : TransformerLens ``run_with_hooks`` once per subset, a mask hook on ``hook_z``
  tl batched  : 16 masks per pass (tokens repeated, per-example mask in the hook)
  tl hand     : the hand-optimised forms, batched: for diff, the final LayerNorm at the last
                position only and a dot with ``W_U[:, c] - W_U[:, w]``; for W2, the residual
                entering layer 11 computed once (``stop_at_layer=11``), then
                ``start_at_layer=11`` per batch of subsets

jaxablate's first call includes compilation (and for auto the probe); the reported rate is the
second, steady-state call over the same rows. TransformerLens paths run in a process with the
malloc settings of NOTES.md, best of two passes after a warm-up, over the first rows only
(``--tl-rows``). Values of every path are compared with ja default on the rows they share.

The FLOP bound of a subset counts only the matmul work no sharing can remove (everything from
the first masked layer's output projection on, at the positions and vocabulary columns the metric
reads, with the keys and values the last layer needs); "of bound" is achieved FLOP/s of that
work as a fraction of a jitted 2048^3 float32 matmul timed in the same run.

Usage: python benchmarks/gpt2_small.py [--quick] [--out PATH] [--tl-python PATH]
  (default PATH: benchmarks/results/gpt2_small.json; ``--tl-python``: an interpreter with
  transformer_lens==3.9.0, default this one)
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPE = dict(n_layers=12, n_heads=12, d_model=768, d_head=64, d_mlp=3072, vocab=50257)
BATCH, SEQ, CORRECT, WRONG, TL_M = 8, 16, 3, 4, 16
WORKLOADS = ("W1", "W2")
METRICS = ("loss", "diff")


def subset_flops(workload: str, metric: str) -> float:
    """Matmul FLOPs per subset that no sharing removes (2 per multiply-add)."""
    d, mlp, h, v = SHAPE["d_model"], SHAPE["d_mlp"], SHAPE["n_heads"], SHAPE["vocab"]
    hd = h * SHAPE["d_head"]
    reads = 1 if metric == "diff" else SEQ
    cols = 2 if metric == "diff" else v

    def block(tokens: int, queries: int, with_qkv: bool) -> float:
        qkv = 2 * tokens * d * 2 * hd + 2 * queries * d * hd if with_qkv else 0
        attn = 2 * 2 * queries * SEQ * hd if with_qkv else 0
        return qkv + attn + 2 * queries * hd * d + 2 * 2 * queries * d * mlp

    first = 0 if workload == "W1" else SHAPE["n_layers"] - 1
    total = 0.0
    for layer in range(first, SHAPE["n_layers"]):
        last = layer == SHAPE["n_layers"] - 1
        queries = reads if last else SEQ
        total += block(SEQ, queries, with_qkv=layer > first)
    return BATCH * (total + 2 * reads * d * cols)


def peak_rss_gib() -> float:
    """Peak resident set of this process (Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# ----------------------------------------------------------------------------- children


def ja_child(work: Path, workload: str, metric: str, mode: str) -> dict:
    """One jaxablate path: first call (compile, probe), then the timed steady-state call."""
    import jaxablate as ja
    from jaxablate._evaluate import run

    model = ja.from_hf(str(work / "model"))
    tokens = np.load(work / "tokens.npy")
    rows = np.load(work / f"rows_{workload}.npy")
    comps = ja.heads(model.config, layers=None if workload == "W1" else [11])
    fn = ja.metrics.loss if metric == "loss" else ja.metrics.logit_diff(CORRECT, WRONG)
    kwargs = dict(metric=fn, chunk_size="auto" if mode == "auto" else None)
    start = time.perf_counter()
    run(model, comps, rows, tokens, **kwargs)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    done = run(model, comps, rows, tokens, **kwargs)
    run_s = time.perf_counter() - start
    return dict(
        rows=len(rows),
        run_s=run_s,
        compile_s=max(first_s - run_s, 0.0),
        peak_rss_gib=peak_rss_gib(),
        plan=dict(chunk=done.plan.chunk, inner=done.plan.inner),
        values=done.per_example.mean(axis=1).tolist(),
    )


def tl_model(work: Path):
    """TransformerLens 3.9 ``HookedTransformer`` with the saved GPT-2 weights, no folding."""
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(work / "model").eval()
    cfg = HookedTransformerConfig(
        n_layers=SHAPE["n_layers"],
        d_model=SHAPE["d_model"],
        n_heads=SHAPE["n_heads"],
        d_head=SHAPE["d_head"],
        d_mlp=SHAPE["d_mlp"],
        d_vocab=SHAPE["vocab"],
        n_ctx=hf.config.n_positions,
        act_fn="gelu_new",
        normalization_type="LN",
        eps=hf.config.layer_norm_epsilon,
        device="cpu",
        default_prepend_bos=False,
    )
    model = HookedTransformer(cfg)
    model.load_and_process_state_dict(
        convert_gpt2_weights(hf, cfg),
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    del hf
    torch.set_grad_enabled(False)
    return model.eval()


def tl_values(model, tokens, masks, workload: str, metric: str, form: str, resid11):
    """Metric values of ``masks [m, 12 x layers, 12]`` (one per subset) under one TL form."""
    import torch

    m, n_layers = masks.shape[0], masks.shape[1]
    layers = range(SHAPE["n_layers"] - n_layers, SHAPE["n_layers"])
    per_example = masks.repeat_interleave(BATCH, dim=0)[:, None, :, :, None]  # [m*B,1,L,H,1]
    hooks = [
        (f"blocks.{layer}.attn.hook_z", lambda z, hook, j=j: z * per_example[:, :, j])
        for j, layer in enumerate(layers)
    ]
    toks = tokens.repeat(m, 1)
    diff_dir = model.W_U[:, CORRECT] - model.W_U[:, WRONG]
    diff_bias = model.b_U[CORRECT] - model.b_U[WRONG]
    if form == "hand" and workload == "W2":
        start = dict(start_at_layer=SHAPE["n_layers"] - 1, tokens=toks)
        inp = resid11.repeat(m, 1, 1)
    else:
        start, inp = {}, toks
    if form == "hand" and metric == "diff":
        resid = model.run_with_hooks(inp, stop_at_layer=SHAPE["n_layers"], fwd_hooks=hooks, **start)
        out = model.ln_final(resid[:, -1:])[:, 0] @ diff_dir + diff_bias
        return out.reshape(m, BATCH).mean(1)
    logits = model.run_with_hooks(inp, return_type="logits", fwd_hooks=hooks, **start)
    if metric == "diff":
        last = logits[:, -1]
        return (last[:, CORRECT] - last[:, WRONG]).reshape(m, BATCH).mean(1)
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    nll = -logp.gather(-1, toks[:, 1:, None])[..., 0]
    return nll.mean(1).reshape(m, BATCH).mean(1)


def tl_child(work: Path, workload: str, metric: str, form: str, n_rows: int) -> dict:
    """One TransformerLens path: a warm-up, then the best of two timed passes."""
    import torch

    model = tl_model(work)
    tokens = torch.tensor(np.load(work / "tokens.npy"), dtype=torch.long)
    rows = np.load(work / f"rows_{workload}.npy")[:n_rows]
    n_layers = SHAPE["n_layers"] if workload == "W1" else 1
    masks = torch.tensor(rows.reshape(len(rows), n_layers, SHAPE["n_heads"]), dtype=torch.float32)
    resid11 = model(tokens, stop_at_layer=SHAPE["n_layers"] - 1) if workload == "W2" else None
    size = 1 if form == "loop" else TL_M

    def sweep(masks: torch.Tensor) -> list[float]:
        out = []
        for i in range(0, len(masks), size):
            vals = tl_values(model, tokens, masks[i : i + size], workload, metric, form, resid11)
            out.extend(float(v) for v in vals)  # a sync per call, as a user's loop has
        return out

    start = time.perf_counter()
    sweep(masks[: min(len(masks), 2 * size)])  # warm-up: allocator and thread pool
    compile_s = time.perf_counter() - start
    run_s, values = float("inf"), []
    for _ in range(2):
        start = time.perf_counter()
        values = sweep(masks)
        run_s = min(run_s, time.perf_counter() - start)
    return dict(
        rows=len(rows),
        run_s=run_s,
        compile_s=compile_s,
        peak_rss_gib=peak_rss_gib(),
        torch=torch.__version__,
        values=values,
    )


# ----------------------------------------------------------------------------- parent


def prepare(work: Path, n_w1: int, n_w2: int) -> None:
    """Random GPT-2-small-shaped weights (saved once), tokens and the rows of W1 and W2."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        n_embd=SHAPE["d_model"],
        n_layer=SHAPE["n_layers"],
        n_head=SHAPE["n_heads"],
        vocab_size=SHAPE["vocab"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    GPT2LMHeadModel(config).eval().save_pretrained(work / "model")
    rng = np.random.default_rng(0)
    np.save(work / "tokens.npy", rng.integers(0, SHAPE["vocab"], (BATCH, SEQ)).astype(np.int32))
    np.save(work / "rows_W1.npy", np.random.default_rng(1).random((n_w1, 144)) < 0.5)
    every = ((np.arange(4096)[:, None] >> np.arange(12)) & 1).astype(bool)  # bit order
    pick = np.sort(np.random.default_rng(2).permutation(4096)[:n_w2]) if n_w2 < 4096 else None
    np.save(work / "rows_W2.npy", every if pick is None else every[pick])


def child(work: Path, argv: list[str], python: str) -> dict:
    """Run one path in a fresh process (malloc settings of NOTES.md for torch peers)."""
    env = dict(
        os.environ,
        GPT2_SMALL_WORK=str(work),
        MALLOC_MMAP_THRESHOLD_="4294967296",
        MALLOC_TRIM_THRESHOLD_="17179869184",
    )
    done = subprocess.run(
        [python, __file__, "--child", *argv], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        lines = (done.stderr.strip() or "no output").splitlines()
        return dict(error=lines[-1])
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(reference: dict, result: dict) -> None:
    """Record the largest difference from ja default on the rows both computed."""
    if "values" not in result or "values" not in reference:
        return
    a = np.asarray(result["values"])
    b = np.asarray(reference["values"])[: len(a)]
    result["max_abs_diff_vs_ja_default"] = float(np.abs(a - b).max())
    result["max_rel_diff_vs_ja_default"] = float((np.abs(a - b) / np.abs(b).clip(1e-6)).max())


def run_case(work: Path, workload: str, metric: str, args, peak: float) -> dict:
    """All paths of one workload and metric, each in its own process."""
    paths = {
        f"ja {m}": child(work, ["ja", workload, metric, m], sys.executable)
        for m in ("default", "auto")
    }
    if not args.no_tl:
        n_tl = args.tl_rows
        for form in ("loop", "batched", "hand"):
            if form == "hand" and (workload, metric) == ("W1", "loss"):
                continue  # nothing to hand-optimise: every position reads the whole vocabulary
            argv = ["tl", workload, metric, form, str(n_tl)]
            paths[f"tl {form}"] = child(work, argv, args.tl_python)
    flops = subset_flops(workload, metric)
    for name, r in paths.items():
        compare(paths["ja default"], r)
        if "run_s" in r:
            r["subsets_per_s"] = r["rows"] / r["run_s"]
            r["fraction_of_flop_bound"] = r["subsets_per_s"] * flops / peak
        print(f"{workload} {metric:4s} {name:10s} " + summary(r), flush=True)
    for r in paths.values():
        r.pop("values", None)
    return dict(workload=workload, metric=metric, flops_per_subset=flops, paths=paths)


def summary(r: dict) -> str:
    """One line of a path's results."""
    if "error" in r:
        return f"error: {r['error']}"
    diff = r.get("max_abs_diff_vs_ja_default")
    return (
        f"{r['subsets_per_s']:9.1f} subsets/s  {100 * r['fraction_of_flop_bound']:5.1f}% of bound"
        f"  RSS {r['peak_rss_gib']:.2f} GiB  compile {r['compile_s']:.1f} s"
        + ("" if diff is None else f"  |diff| {diff:.1e}")
        + (f"  plan {r['plan']}" if "plan" in r else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/gpt2_small.json")
    parser.add_argument("--quick", action="store_true", help="fewer subsets (a loaded machine)")
    parser.add_argument("--no-tl", action="store_true", help="skip TransformerLens")
    parser.add_argument("--tl-python", default=sys.executable)
    parser.add_argument("--tl-rows", type=int, default=None, help="rows TL paths time")
    parser.add_argument("--only", default=None, help="one case, e.g. W2:diff")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_main(args.child)
    n_w1, n_w2 = (32, 512) if args.quick else (256, 4096)
    args.tl_rows = args.tl_rows or (32 if args.quick else 64)
    import jax

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from evaluate import matmul_peak  # the parent only: TL children never import jax

    peak = matmul_peak()
    print(f"matmul peak {peak / 1e9:.0f} GFLOP/s, load {os.getloadavg()}", flush=True)
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepare(work, n_w1, n_w2)
        for workload in WORKLOADS:
            for metric in METRICS:
                if args.only in (None, f"{workload}:{metric}"):
                    cases.append(run_case(work, workload, metric, args, peak))
    report = dict(
        benchmark="gpt2_small",
        quick=args.quick,
        device=str(jax.devices()[0]),
        cpu=platform.processor() or platform.machine(),
        cores=os.cpu_count(),
        versions=dict(jax=jax.__version__, python=platform.python_version()),
        load_average_at_end=os.getloadavg(),
        matmul_flops_per_s=peak,
        rows=dict(W1=n_w1, W2=n_w2, transformer_lens=args.tl_rows),
        cases=cases,
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


def child_main(argv: list[str]) -> None:
    """``--child ja W M mode`` or ``--child tl W M form rows``: print one JSON line."""
    kind, workload, metric, *rest = argv
    work = Path(os.environ["GPT2_SMALL_WORK"])
    if kind == "ja":
        out = ja_child(work, workload, metric, rest[0])
    else:
        out = tl_child(work, workload, metric, rest[0], int(rest[1]))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
