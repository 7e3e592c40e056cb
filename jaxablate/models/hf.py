"""Hugging Face checkpoints -> :class:`Transformer`, as a table of (source, destination, transform).

``from_hf`` takes a ``transformers`` model object or a local directory holding ``config.json`` and
``*.safetensors`` (one file, or shards with ``model.safetensors.index.json``). A directory is read
with safetensors' numpy API: loading one needs neither torch nor transformers. Nothing is ever
downloaded.
"""

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxablate.models.config import ModelConfig
from jaxablate.models.transformer import Transformer

Transform = Callable[[np.ndarray, ModelConfig], np.ndarray]


@dataclass(frozen=True)
class Rule:
    """One row of a conversion table.

    Attributes:
        source: Checkpoint tensor name; ``{i}`` stands for the layer index (stacked over layers).
        dest: Dotted path of the destination parameter in :class:`Transformer`.
        transform: Maps the source tensor (one layer's) to the destination's layout.
    """

    source: str
    dest: str
    transform: Transform


def _same(x: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    return x


def _transpose(x: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    return x.T


def _qkv_weight(part: int) -> Transform:
    """GPT-2 ``c_attn.weight`` ``[d_model, 3 * H * E]`` -> ``[H, d_model, E]`` for q, k or v."""

    def f(x: np.ndarray, cfg: ModelConfig) -> np.ndarray:
        width = cfg.n_heads * cfg.d_head
        w = x[:, part * width : (part + 1) * width]
        return w.reshape(cfg.d_model, cfg.n_heads, cfg.d_head).transpose(1, 0, 2)

    return f


def _qkv_bias(part: int) -> Transform:
    def f(x: np.ndarray, cfg: ModelConfig) -> np.ndarray:
        width = cfg.n_heads * cfg.d_head
        return x[part * width : (part + 1) * width].reshape(cfg.n_heads, cfg.d_head)

    return f


def _out_weight(x: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    """GPT-2 ``attn.c_proj.weight`` ``[H * E, d_model]`` -> ``[H, E, d_model]``."""
    return x.reshape(cfg.n_heads, cfg.d_head, cfg.d_model)


GPT2_RULES: tuple[Rule, ...] = (
    Rule("wte.weight", "W_E", _same),
    Rule("wpe.weight", "W_pos", _same),
    Rule("h.{i}.ln_1.weight", "ln1.w", _same),
    Rule("h.{i}.ln_1.bias", "ln1.b", _same),
    Rule("h.{i}.attn.c_attn.weight", "attn.W_Q", _qkv_weight(0)),
    Rule("h.{i}.attn.c_attn.weight", "attn.W_K", _qkv_weight(1)),
    Rule("h.{i}.attn.c_attn.weight", "attn.W_V", _qkv_weight(2)),
    Rule("h.{i}.attn.c_attn.bias", "attn.b_Q", _qkv_bias(0)),
    Rule("h.{i}.attn.c_attn.bias", "attn.b_K", _qkv_bias(1)),
    Rule("h.{i}.attn.c_attn.bias", "attn.b_V", _qkv_bias(2)),
    Rule("h.{i}.attn.c_proj.weight", "attn.W_O", _out_weight),
    Rule("h.{i}.attn.c_proj.bias", "attn.b_O", _same),
    Rule("h.{i}.ln_2.weight", "ln2.w", _same),
    Rule("h.{i}.ln_2.bias", "ln2.b", _same),
    Rule("h.{i}.mlp.c_fc.weight", "mlp.W_in", _same),
    Rule("h.{i}.mlp.c_fc.bias", "mlp.b_in", _same),
    Rule("h.{i}.mlp.c_proj.weight", "mlp.W_out", _same),
    Rule("h.{i}.mlp.c_proj.bias", "mlp.b_out", _same),
    Rule("ln_f.weight", "ln_final.w", _same),
    Rule("ln_f.bias", "ln_final.b", _same),
    Rule("lm_head.weight", "W_U", _transpose),
)

#: Non-parameter buffers that some transformers versions store and we ignore.
GPT2_IGNORED = ("h.{i}.attn.bias", "h.{i}.attn.masked_bias")

_GPT2_ACTIVATIONS = {
    "gelu_new": "gelu_new",
    "gelu_pytorch_tanh": "gelu_new",
    "gelu": "gelu",
    "relu": "relu",
    "silu": "silu",
}


def gpt2_config(hf: Mapping[str, Any]) -> ModelConfig:
    """Our :class:`ModelConfig` for a GPT-2 ``config.json`` (as a dict)."""
    unsupported = {
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "add_cross_attention": False,
        "scale_attn_weights": True,
    }
    for key, ok in unsupported.items():
        if hf.get(key, ok) != ok:
            raise ValueError(f"GPT-2 option {key}={hf[key]!r} is not supported (need {ok!r})")
    act = hf.get("activation_function", "gelu_new")
    if act not in _GPT2_ACTIVATIONS:
        raise ValueError(
            f"GPT-2 activation_function {act!r} is not supported; "
            f"supported: {sorted(_GPT2_ACTIVATIONS)}"
        )
    d_model, n_heads = int(hf["n_embd"]), int(hf["n_head"])
    if d_model % n_heads:
        raise ValueError(f"GPT-2 n_embd={d_model} is not divisible by n_head={n_heads}")
    n_inner = hf.get("n_inner")
    return ModelConfig(
        n_layers=int(hf["n_layer"]),
        n_heads=n_heads,
        d_model=d_model,
        d_head=d_model // n_heads,
        d_mlp=int(n_inner) if n_inner else 4 * d_model,
        vocab_size=int(hf["vocab_size"]),
        n_ctx=int(hf["n_positions"]),
        act_fn=_GPT2_ACTIVATIONS[act],
        layer_norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
    )


@dataclass(frozen=True)
class Architecture:
    """How to read one family: its config mapping, conversion table and ignored buffers."""

    config: Callable[[Mapping[str, Any]], ModelConfig]
    rules: tuple[Rule, ...]
    ignored: tuple[str, ...]
    prefixes: tuple[str, ...]


ARCHITECTURES: dict[str, Architecture] = {
    "gpt2": Architecture(gpt2_config, GPT2_RULES, GPT2_IGNORED, ("transformer.",)),
}


def convert(
    tensors: Mapping[str, np.ndarray], hf_config: Mapping[str, Any], *, dtype: str = "float32"
) -> Transformer:
    """Build a :class:`Transformer` from checkpoint tensors and a HF config dict.

    Raises:
        ValueError: unknown architecture, or tensors missing from / unexpected in the checkpoint
            (both listed in the message).
    """
    model_type = hf_config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ValueError(
            f"unsupported architecture model_type={model_type!r} "
            f"(architectures={hf_config.get('architectures')}); supported: {sorted(ARCHITECTURES)}"
        )
    arch = ARCHITECTURES[model_type]
    cfg = arch.config(hf_config).replace(dtype=dtype)
    names = {_strip(k, arch.prefixes): k for k in tensors}
    if len(names) != len(tensors):
        raise ValueError("checkpoint holds the same tensor under several prefixes")
    model = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
    used: set[str] = set()
    missing: list[str] = []
    for rule in arch.rules:
        dest = _lookup(model, rule.dest)
        if dest is None:  # e.g. W_U of a tied model, MLP of an attention-only one
            continue
        layered = "{i}" in rule.source
        sources = (
            [rule.source.format(i=i) for i in range(cfg.n_layers)] if layered else [rule.source]
        )
        absent = [s for s in sources if s not in names]
        used.update(s for s in sources if s in names)
        if absent:
            missing.extend(absent)
            continue
        parts = [rule.transform(np.asarray(tensors[names[s]]), cfg) for s in sources]
        value = np.stack(parts) if layered else parts[0]
        expected = tuple(dest.shape)
        if value.shape != expected:
            raise ValueError(
                f"tensor {rule.source} converts to shape {value.shape}, "
                f"expected {expected} for {rule.dest}"
            )
        dest.set_value(jnp.asarray(value, jnp.dtype(cfg.dtype)))
    ignored = {p.format(i=i) for p in arch.ignored for i in range(cfg.n_layers)}
    if cfg.tie_embeddings:
        ignored.add("lm_head.weight")  # a tied copy of wte
    unexpected = sorted(set(names) - used - ignored)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint does not match the {model_type} layout: "
            f"missing tensors {sorted(missing)}, "
            f"unexpected tensors {unexpected}"
        )
    return model


def _strip(name: str, prefixes: tuple[str, ...]) -> str:
    for prefix in prefixes:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def _lookup(model: Transformer, path: str) -> nnx.Param | None:
    node: Any = model
    for part in path.split("."):
        node = getattr(node, part, None)
        if node is None:
            return None
    return node


def read_directory(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Tensors (numpy) and config of a local checkpoint directory; never touches the network."""
    from safetensors.numpy import load_file

    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"{root} is not a directory (from_hf never downloads: give a local path)")
    config_file = root / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{root} has no config.json")
    hf_config = json.loads(config_file.read_text())
    index = root / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (root / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        found = sorted(p.name for p in root.iterdir())
        raise ValueError(
            f"{root} has neither model.safetensors nor model.safetensors.index.json "
            f"(found {found}); save the model with save_pretrained(safe_serialization=True)"
        )
    tensors: dict[str, np.ndarray] = {}
    for name in files:
        tensors.update(load_file(str(root / name)))
    return tensors, hf_config


def from_hf(source: Any, *, dtype: str = "float32") -> Transformer:
    """A :class:`Transformer` with the weights of a Hugging Face GPT-2-family model.

    Args:
        source: A ``transformers`` model object (e.g. ``GPT2LMHeadModel``) or a local directory
            with ``config.json`` and safetensors weights.
        dtype: Dtype of our weights (``float32`` or ``bfloat16``).

    Raises:
        ValueError: unsupported architecture, a non-directory path, or a checkpoint whose tensors
            do not match the architecture (missing and unexpected names are listed).
    """
    if isinstance(source, str | os.PathLike):
        tensors, hf_config = read_directory(source)
    elif hasattr(source, "state_dict") and hasattr(source, "config"):
        hf_config = source.config.to_dict()
        tensors = {k: v.detach().float().cpu().numpy() for k, v in source.state_dict().items()}
    else:
        raise ValueError(
            "from_hf needs a transformers model or a local directory path, "
            f"got {type(source).__name__}"
        )
    return convert(tensors, hf_config, dtype=dtype)
