"""Peak host memory of ``ja.from_hf`` on a local checkpoint, relative to the checkpoint's size.

Builds a random Llama-shaped checkpoint (about 550 MB of float32, or half that in bfloat16)
with numpy and safetensors (no torch), loads it in a fresh subprocess, and reports the peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) reached during the load minus the resident set
after the imports (``VmRSS``; Linux). The import peak is recorded too: the figure is only
meaningful while the load peaks above it. The loaded model itself is one checkpoint's worth,
so 1.0 is the floor; the streaming loader aims at <= 1.5.

Run: ``python benchmarks/load_memory.py`` (writes ``benchmarks/results/load_memory.json``).
"""

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

CONFIG = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "vocab_size": 32000,
    "hidden_size": 1024,
    "intermediate_size": 2816,
    "num_hidden_layers": 6,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "rope_theta": 10000.0,
    "hidden_act": "silu",
}

_WORKER = textwrap.dedent(
    """
    import json, resource, sys
    import jax.numpy as jnp
    import jaxablate as ja
    jnp.zeros(3).block_until_ready()  # initialise the backend before the baseline
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    status = open("/proc/self/status").read().split("VmRSS:")[1]
    before = int(status.split()[0])  # the resident set now, in KiB
    model = ja.from_hf(sys.argv[1], dtype=sys.argv[2])
    model.W_E[...].block_until_ready()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"baseline_kib": before, "import_peak_kib": peak_before, "peak_kib": after}))
    """
)


def _shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Llama checkpoint tensor names and ``[out, in]`` shapes for ``cfg``."""
    d, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    e = d // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * e
    shapes = {
        "model.embed_tokens.weight": (v, d),
        "model.norm.weight": (d,),
        "lm_head.weight": (v, d),
    }
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": (d,),
            p + "post_attention_layernorm.weight": (d,),
            p + "self_attn.q_proj.weight": (d, d),
            p + "self_attn.k_proj.weight": (kv, d),
            p + "self_attn.v_proj.weight": (kv, d),
            p + "self_attn.o_proj.weight": (d, d),
            p + "mlp.gate_proj.weight": (f, d),
            p + "mlp.up_proj.weight": (f, d),
            p + "mlp.down_proj.weight": (d, f),
        }
    return shapes


def build(root: Path, dtype: str) -> int:
    """Write a random checkpoint to ``root``; returns its tensor bytes."""
    rng = np.random.default_rng(0)
    target = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float32
    tensors = {
        name: (0.02 * rng.standard_normal(shape, np.float32)).astype(target)
        for name, shape in _shapes(CONFIG).items()
    }
    save_file(tensors, str(root / "model.safetensors"))
    (root / "config.json").write_text(json.dumps({**CONFIG, "torch_dtype": dtype}))
    return sum(t.nbytes for t in tensors.values())


def measure(dtype: str) -> dict:
    """Build a checkpoint in ``dtype``, load it in a subprocess, and report the peak."""
    with tempfile.TemporaryDirectory() as tmp:
        size = build(Path(tmp), dtype)
        done = subprocess.run(
            [sys.executable, "-c", _WORKER, tmp, dtype],
            capture_output=True,
            text=True,
            check=True,
        )
    rss = json.loads(done.stdout.strip().splitlines()[-1])
    extra = (rss["peak_kib"] - rss["baseline_kib"]) * 1024
    return {
        "dtype": dtype,
        "checkpoint_bytes": size,
        "baseline_rss_bytes": rss["baseline_kib"] * 1024,
        "import_peak_rss_bytes": rss["import_peak_kib"] * 1024,
        "load_peak_minus_baseline_bytes": extra,
        "ratio_to_checkpoint": round(extra / size, 3),
    }


def main() -> None:
    """Measure float32 and bfloat16 loads; print and save the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results/load_memory.json"))
    args = parser.parse_args()
    results = {"config": CONFIG, "runs": [measure("float32"), measure("bfloat16")]}
    for run in results["runs"]:
        print(
            f"{run['dtype']:>8}: checkpoint {run['checkpoint_bytes'] / 1e6:.0f} MB, load peak "
            f"+{run['load_peak_minus_baseline_bytes'] / 1e6:.0f} MB over the baseline "
            f"({run['ratio_to_checkpoint']:.2f}x the checkpoint)"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
