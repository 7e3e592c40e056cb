"""Hugging Face config dicts (resolved by ``resolve_options``) -> our :class:`ModelConfig`.

One function per family. Each reads the mapped attributes of its table (``_hf_options``) and
refuses, by name and value, anything :class:`ModelConfig` cannot represent: a rope type other
than default/linear/llama3, an activation we lack, a sliding-window layout without a window.
"""

import math
from collections.abc import Mapping
from typing import Any

from jaxablate._checks import positive_int
from jaxablate.models._hf_options import refusal
from jaxablate.models.config import Activation, ModelConfig

#: transformers ``ACT2FN`` names -> ours (``swish`` is SiLU; ``gelu_pytorch_tanh`` and
#: ``gelu_fast`` are the same tanh approximation as ``gelu_new``).
ACTIVATIONS: dict[str, Activation] = {
    "gelu_new": "gelu_new",
    "gelu_pytorch_tanh": "gelu_new",
    "gelu_fast": "gelu_new",
    "gelu": "gelu",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}

#: Keys a rope-parameters dict may hold, per supported ``rope_type``.
_ROPE_KEYS = {
    "default": {"rope_type", "type", "rope_theta", "partial_rotary_factor"},
    "linear": {"rope_type", "type", "rope_theta", "partial_rotary_factor", "factor"},
    "llama3": {
        "rope_type",
        "type",
        "rope_theta",
        "partial_rotary_factor",
        "factor",
        "low_freq_factor",
        "high_freq_factor",
        "original_max_position_embeddings",
    },
}


def _number(family: str, key: str, value: Any, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise refusal(family, [f"{key}={value!r} (supported: a finite number)"])
    if positive and not value > 0:
        raise refusal(family, [f"{key}={value!r} (supported: a number > 0)"])
    return float(value)


def _flag(family: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise refusal(family, [f"{key}={value!r} (supported: True or False)"])
    return value


def activation(family: str, key: str, value: Any) -> Activation:
    """Our activation for a transformers ``ACT2FN`` name, or a refusal naming it."""
    if value not in ACTIVATIONS:
        raise refusal(family, [f"{key}={value!r} (supported: {sorted(ACTIVATIONS)})"])
    return ACTIVATIONS[value]


def _rope_dict(family: str, key: str, params: Any, theta: float, n_ctx: int) -> dict[str, Any]:
    """``ModelConfig`` rope fields for one rope-parameters dict (``key`` names it in messages)."""
    if not isinstance(params, Mapping):
        raise refusal(family, [f"{key}={params!r} (supported: a dict with rope_type)"])
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in _ROPE_KEYS:
        raise refusal(
            family,
            [f"{key} rope_type={kind!r} (supported: {sorted(_ROPE_KEYS)}; {kind!r} is not)"],
        )
    unknown = sorted(set(params) - _ROPE_KEYS[kind])
    if unknown:
        raise refusal(family, [f"{key} keys {unknown} (supported for {kind}: the others)"])
    out: dict[str, Any] = {
        "rope_theta": _number(family, f"{key} rope_theta", params.get("rope_theta", theta))
    }
    if kind == "default":
        return out
    out["rope_scaling"] = kind
    out["rope_factor"] = _number(family, f"{key} factor", params.get("factor"))
    if kind == "llama3":
        out["rope_low_freq_factor"] = _number(
            family, f"{key} low_freq_factor", params.get("low_freq_factor")
        )
        out["rope_high_freq_factor"] = _number(
            family, f"{key} high_freq_factor", params.get("high_freq_factor")
        )
        original = params.get("original_max_position_embeddings", n_ctx)
        out["rope_original_context"] = positive_int(
            f"{family} config {key} original_max_position_embeddings", original
        )
    return out


def _rotary_dim(family: str, params: Mapping[str, Any], d_head: int, fraction: Any) -> int | None:
    """Rotated dims per head (``None``: all of them), from ``partial_rotary_factor``."""
    fraction = params.get("partial_rotary_factor", fraction)
    if fraction is None:
        return None
    fraction = _number(family, "partial_rotary_factor", fraction)
    dim = int(d_head * fraction)
    if not 0 < dim <= d_head or dim % 2:
        raise refusal(
            family,
            [f"partial_rotary_factor={fraction!r} (supported: an even dim count in 2..d_head)"],
        )
    return None if dim == d_head else dim


def rope_fields(
    hf: Mapping[str, Any], family: str, d_head: int, *, theta: Any = None, fraction: Any = None
) -> dict[str, Any]:
    """Rope fields of a flat ``rope_parameters`` (or the legacy ``rope_theta``/``rope_scaling``).

    Args:
        hf: Resolved config.
        family: Name for messages.
        d_head: Head width (for ``partial_rotary_factor``).
        theta: Legacy base when neither ``rope_parameters`` nor ``rope_theta`` gives one.
        fraction: Legacy rotated fraction (NeoX ``rotary_pct``) when the dict gives none.
    """
    params = hf.get("rope_scaling") or hf.get("rope_parameters") or {}
    base = hf.get("rope_theta")
    base = base if base is not None else (theta if theta is not None else 10000.0)
    key = "rope_scaling" if hf.get("rope_scaling") else "rope_parameters"
    out = _rope_dict(family, key, params, base, hf["max_position_embeddings"])
    out["rotary_dim"] = _rotary_dim(family, params, d_head, fraction)
    return out


def _gemma3_rope(hf: Mapping[str, Any], d_head: int) -> dict[str, Any]:
    """Gemma3: full-attention layers' rope (may be scaled), sliding layers' plain base."""
    family = "Gemma3"
    params = hf.get("rope_parameters") or {}
    if not isinstance(params, Mapping):
        raise refusal(family, [f"rope_parameters={params!r} (supported: a dict per layer type)"])
    full = dict(params.get("full_attention") or {"rope_type": "default"})
    full.update(hf.get("rope_scaling") or {})
    local = params.get("sliding_attention") or {"rope_type": "default"}
    given = hf.get("rope_theta")
    theta = float(given) if isinstance(given, int | float) else 1_000_000.0
    n_ctx = hf["max_position_embeddings"]
    out = _rope_dict(family, "rope_parameters['full_attention']", full, theta, n_ctx)
    local_theta = hf.get("rope_local_base_freq")
    local_theta = local_theta if local_theta is not None else 10000.0
    local_fields = _rope_dict(
        family, "rope_parameters['sliding_attention']", local, local_theta, n_ctx
    )
    if "rope_scaling" in local_fields:
        raise refusal(
            family,
            [
                f"rope_parameters['sliding_attention'] rope_type={local.get('rope_type')!r} "
                "(supported: only 'default' on sliding layers)"
            ],
        )
    out["rope_local_theta"] = local_fields["rope_theta"]
    for name, part in (("full_attention", full), ("sliding_attention", local)):
        if _rotary_dim(family, part, d_head, None) is not None:
            raise refusal(family, [f"rope_parameters['{name}'] partial_rotary_factor < 1"])
    return out


def shapes(hf: Mapping[str, Any], family: str) -> dict[str, Any]:
    """Shape fields of a Llama-shaped config (``hidden_size``, heads, ``head_dim``, ...)."""
    d_model = positive_int(f"{family} config hidden_size", hf["hidden_size"])
    n_heads = positive_int(f"{family} config num_attention_heads", hf["num_attention_heads"])
    kv = hf["num_key_value_heads"]
    kv = n_heads if kv is None else positive_int(f"{family} config num_key_value_heads", kv)
    if n_heads % kv:
        raise refusal(
            family,
            [f"num_key_value_heads={kv} (supported: a divisor of num_attention_heads={n_heads})"],
        )
    d_head = hf.get("head_dim")
    if d_head is None:
        if d_model % n_heads:
            raise refusal(
                family,
                [f"hidden_size={d_model} (supported: a multiple of num_attention_heads={n_heads})"],
            )
        d_head = d_model // n_heads
    return {
        "n_layers": positive_int(f"{family} config num_hidden_layers", hf["num_hidden_layers"]),
        "n_heads": n_heads,
        "n_kv_heads": None if kv == n_heads else kv,
        "d_model": d_model,
        "d_head": positive_int(f"{family} config head_dim", d_head),
        "d_mlp": positive_int(f"{family} config intermediate_size", hf["intermediate_size"]),
        "vocab_size": positive_int(f"{family} config vocab_size", hf["vocab_size"]),
        "n_ctx": positive_int(
            f"{family} config max_position_embeddings", hf["max_position_embeddings"]
        ),
        "tie_embeddings": _flag(family, "tie_word_embeddings", hf["tie_word_embeddings"]),
    }


def _rms_decoder(hf: Mapping[str, Any], family: str, act_key: str) -> dict[str, Any]:
    """Fields shared by the RMSNorm / rotary / gated-MLP families."""
    return {
        **shapes(hf, family),
        "norm": "rmsnorm",
        "positions": "rotary",
        "gated_mlp": True,
        "act_fn": activation(family, act_key, hf[act_key]),
        "layer_norm_eps": _number(family, "rms_norm_eps", hf["rms_norm_eps"]),
    }


def _sliding_layers(
    family: str, layer_types: Any, n_layers: int, window: Any
) -> tuple[int | None, tuple[bool, ...] | None]:
    """``(sliding_window, sliding_layers)`` from ``layer_types`` and a window size."""
    if not isinstance(layer_types, list | tuple) or len(layer_types) != n_layers:
        raise refusal(
            family, [f"layer_types={layer_types!r} (supported: one entry per layer, {n_layers})"]
        )
    bad = sorted({t for t in layer_types if t not in ("full_attention", "sliding_attention")})
    if bad:
        raise refusal(
            family, [f"layer_types {bad} (supported: 'full_attention', 'sliding_attention')"]
        )
    sliding = tuple(t == "sliding_attention" for t in layer_types)
    if not any(sliding):
        return None, None
    if window is None:
        raise refusal(family, ["sliding_window=None with sliding layers (supported: an int)"])
    window = positive_int(f"{family} config sliding_window", window)
    return window, (None if all(sliding) else sliding)


def llama_config(hf: Mapping[str, Any]) -> ModelConfig:
    """Our config for ``LlamaForCausalLM`` (rope scaling default, linear or llama3)."""
    fields = _rms_decoder(hf, "Llama", "hidden_act")
    return ModelConfig(**fields, **rope_fields(hf, "Llama", fields["d_head"]))


def mistral_config(hf: Mapping[str, Any]) -> ModelConfig:
    """Our config for ``MistralForCausalLM`` (a window on every layer, or none)."""
    fields = _rms_decoder(hf, "Mistral", "hidden_act")
    window = hf["sliding_window"]
    if window is not None:
        window = positive_int("Mistral config sliding_window", window)
    return ModelConfig(
        **fields, **rope_fields(hf, "Mistral", fields["d_head"]), sliding_window=window
    )


def _qwen(hf: Mapping[str, Any], family: str, **extra: Any) -> ModelConfig:
    fields = _rms_decoder(hf, family, "hidden_act")
    n = fields["n_layers"]
    use = _flag(family, "use_sliding_window", hf["use_sliding_window"])
    window = hf["sliding_window"] if use else None
    types = hf["layer_types"]
    if types is None:  # transformers' default layout
        first = hf["max_window_layers"]
        types = [
            "sliding_attention" if window is not None and i >= first else "full_attention"
            for i in range(n)
        ]
    window, layers = _sliding_layers(family, types, n, window)
    return ModelConfig(
        **fields,
        **rope_fields(hf, family, fields["d_head"]),
        sliding_window=window,
        sliding_layers=layers,
        **extra,
    )


def qwen2_config(hf: Mapping[str, Any]) -> ModelConfig:
    """Our config for ``Qwen2ForCausalLM`` (q/k/v biases; optional sliding layers)."""
    return _qwen(hf, "Qwen2")


def qwen3_config(hf: Mapping[str, Any]) -> ModelConfig:
    """Our config for ``Qwen3ForCausalLM`` (per-head q/k RMSNorm)."""
    return _qwen(hf, "Qwen3", qk_norm=True)


def _causal(family: str, value: Any) -> None:
    if value not in (None, False):
        raise refusal(family, [f"use_bidirectional_attention={value!r} (supported: None or False)"])


def gemma_config(hf: Mapping[str, Any]) -> ModelConfig:
    """Our config for ``GemmaForCausalLM`` (``1 + w`` norms, scaled embeddings, GeGLU)."""
    _causal("Gemma", hf["use_bidirectional_attention"])
    act = "gelu_pytorch_tanh" if hf["hidden_act"] == "gelu" else hf["hidden_act"]  # as HF does
    fields = _rms_decoder({**hf, "hidden_act": act}, "Gemma", "hidden_act")
    return ModelConfig(
        **fields,
        **rope_fields(hf, "Gemma", fields["d_head"]),
        norm_offset=1.0,
        embed_scale=math.sqrt(fields["d_model"]),
    )


def _softcap(family: str, key: str, value: Any) -> float | None:
    return None if value is None else _number(family, key, value)


def _gemma_new(hf: Mapping[str, Any], family: str, types: Any) -> dict[str, Any]:
    """Fields shared by Gemma2 and Gemma3: post norms, softcaps, sliding layers."""
    _causal(family, hf["use_bidirectional_attention"])
    fields = _rms_decoder(hf, family, "hidden_activation")
    window, layers = _sliding_layers(family, types, fields["n_layers"], hf["sliding_window"])
    scalar = _number(family, "query_pre_attn_scalar", hf["query_pre_attn_scalar"])
    return {
        **fields,
        "norm_offset": 1.0,
        "embed_scale": math.sqrt(fields["d_model"]),
        "post_norms": True,
        "attn_scale": scalar**-0.5,
        "attn_softcap": _softcap(family, "attn_logit_softcapping", hf["attn_logit_softcapping"]),
        "final_softcap": _softcap(family, "final_logit_softcapping", hf["final_logit_softcapping"]),
        "sliding_window": window,
        "sliding_layers": layers,
    }


def gemma2_config(hf: Mapping[str, Any]) -> ModelConfig:
    """Our config for ``Gemma2ForCausalLM`` (softcaps, alternating sliding layers)."""
    n = hf["num_hidden_layers"]
    types = hf["layer_types"]
    if types is None and isinstance(n, int):  # transformers' default: even layers slide
        types = ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(n)]
    fields = _gemma_new(hf, "Gemma2", types)
    return ModelConfig(**fields, **rope_fields(hf, "Gemma2", fields["d_head"]))


def gemma3_config(hf: Mapping[str, Any]) -> ModelConfig:
    """Our config for ``Gemma3ForCausalLM`` (text): q/k norms, a local rope base."""
    n = hf["num_hidden_layers"]
    types = hf["layer_types"]
    if types is None and isinstance(n, int):  # transformers' default: every 6th layer is full
        pattern = positive_int("Gemma3 config sliding_window_pattern", hf["sliding_window_pattern"])
        types = ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(n)]
    fields = _gemma_new(hf, "Gemma3", types)
    rope = _gemma3_rope(hf, fields["d_head"])
    return ModelConfig(**fields, **rope, qk_norm=True)


def gpt_neox_config(hf: Mapping[str, Any]) -> ModelConfig:
    """Our config for ``GPTNeoXForCausalLM`` (partial rotary, parallel residual, LayerNorm)."""
    family = "GPT-NeoX"
    fields = shapes({**hf, "num_key_value_heads": None, "head_dim": None}, family)
    theta = hf["rotary_emb_base"]
    fraction = hf["rotary_pct"] if hf["rotary_pct"] is not None else 0.25
    return ModelConfig(
        **fields,
        **rope_fields(hf, family, fields["d_head"], theta=theta, fraction=fraction),
        positions="rotary",
        parallel_residual=_flag(family, "use_parallel_residual", hf["use_parallel_residual"]),
        act_fn=activation(family, "hidden_act", hf["hidden_act"]),
        layer_norm_eps=_number(family, "layer_norm_eps", hf["layer_norm_eps"]),
    )


def _gpt2_mlp_width(n_inner: Any, d_model: int) -> int:
    """GPT-2's MLP width: ``n_inner``, or ``4 * n_embd`` when it is ``None``."""
    if n_inner is None:
        return 4 * d_model
    if isinstance(n_inner, bool) or not isinstance(n_inner, int) or n_inner < 1:
        raise refusal("GPT-2", [f"n_inner={n_inner!r} (supported: None or a positive int)"])
    return n_inner


def gpt2_config(hf: Mapping[str, Any]) -> ModelConfig:
    """Our :class:`ModelConfig` for a GPT-2 config resolved by ``resolve_options``.

    Args:
        hf: Every mapped attribute of ``GPT2_OPTIONS`` present (``resolve_options`` output).

    Raises:
        ValueError: a mapped attribute whose value we cannot represent, named with its value
            and what is supported.
    """
    act = hf["activation_function"]
    if act not in ACTIVATIONS:
        raise refusal("GPT-2", [f"activation_function={act!r} (supported: {sorted(ACTIVATIONS)})"])
    d_model = positive_int("GPT-2 config n_embd", hf["n_embd"])
    n_heads = positive_int("GPT-2 config n_head", hf["n_head"])
    if d_model % n_heads:
        raise refusal("GPT-2", [f"n_embd={d_model} (supported: a multiple of n_head={n_heads})"])
    eps, tied = hf["layer_norm_epsilon"], hf["tie_word_embeddings"]
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not eps > 0:
        raise refusal("GPT-2", [f"layer_norm_epsilon={eps!r} (supported: a number > 0)"])
    if not isinstance(tied, bool):
        raise refusal("GPT-2", [f"tie_word_embeddings={tied!r} (supported: True or False)"])
    return ModelConfig(
        n_layers=positive_int("GPT-2 config n_layer", hf["n_layer"]),
        n_heads=n_heads,
        d_model=d_model,
        d_head=d_model // n_heads,
        d_mlp=_gpt2_mlp_width(hf["n_inner"], d_model),
        vocab_size=positive_int("GPT-2 config vocab_size", hf["vocab_size"]),
        n_ctx=positive_int("GPT-2 config n_positions", hf["n_positions"]),
        act_fn=ACTIVATIONS[act],
        layer_norm_eps=float(eps),
        tie_embeddings=tied,
    )
