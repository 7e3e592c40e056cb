"""Weight-conversion tables: checkpoint tensor -> :class:`Transformer` parameter, per family.

Each :class:`Rule` reads one checkpoint tensor (one layer's, for names with ``{i}``) and maps it
to the destination's layout. ``nn.Linear`` weights are ``[out, in]``; ours are ``[in, out]``
split per head: ``q_proj [H*E, D] -> W_Q [H, D, E]``, ``o_proj [D, H*E] -> W_O [H, E, D]``.
GPT-2's ``Conv1D`` weights are already ``[in, out]``.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from jaxtyping import Float

from jaxablate.models import _hf_config as hc
from jaxablate.models import _hf_options as ho
from jaxablate.models.config import ModelConfig

Transform = Callable[[np.ndarray, ModelConfig], np.ndarray]


@dataclass(frozen=True)
class Rule:
    """One row of a conversion table.

    Attributes:
        source: Checkpoint tensor name; ``{i}`` stands for the layer index (stacked over layers).
        dest: Dotted path of the destination parameter in :class:`Transformer`.
        transform: Maps the source tensor (one layer's) to the destination's layout.
        when: Name of a boolean config attribute; when it is false the checkpoint has no such
            tensor and the destination (a bias) is filled with zeros.
        aliases: Other names the same tensor goes by (e.g. NeoX ``embed_out`` / ``lm_head``).
    """

    source: str
    dest: str
    transform: Transform
    when: str | None = None
    aliases: tuple[str, ...] = ()


def _same(x: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    return x


def _transpose(x: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    return x.T


def _kv(cfg: ModelConfig) -> int:
    return cfg.n_kv_heads or cfg.n_heads


def _qkv_weight(part: int) -> Transform:
    """GPT-2 ``c_attn.weight`` ``[d_model, 3 * H * E]`` -> ``[H, d_model, E]`` for q, k or v."""

    def f(
        x: Float[np.ndarray, "d_model three_he"], cfg: ModelConfig
    ) -> Float[np.ndarray, "n_heads d_model d_head"]:
        width = cfg.n_heads * cfg.d_head
        w = x[:, part * width : (part + 1) * width]
        return w.reshape(cfg.d_model, cfg.n_heads, cfg.d_head).transpose(1, 0, 2)

    return f


def _qkv_bias(part: int) -> Transform:
    """GPT-2 ``c_attn.bias`` ``[3 * H * E]`` -> ``[H, E]`` for q, k or v."""

    def f(
        x: Float[np.ndarray, " three_he"], cfg: ModelConfig
    ) -> Float[np.ndarray, "n_heads d_head"]:
        width = cfg.n_heads * cfg.d_head
        return x[part * width : (part + 1) * width].reshape(cfg.n_heads, cfg.d_head)

    return f


def _out_weight(
    x: Float[np.ndarray, "he d_model"], cfg: ModelConfig
) -> Float[np.ndarray, "n_heads d_head d_model"]:
    """GPT-2 ``attn.c_proj.weight`` ``[H * E, d_model]`` -> ``[H, E, d_model]``."""
    return x.reshape(cfg.n_heads, cfg.d_head, cfg.d_model)


def _proj(heads: Callable[[ModelConfig], int]) -> Transform:
    """``nn.Linear`` ``[heads * E, D]`` (q, k or v) -> ``[heads, D, E]``."""

    def f(
        x: Float[np.ndarray, "he d_model"], cfg: ModelConfig
    ) -> Float[np.ndarray, "heads d_model d_head"]:
        return x.reshape(heads(cfg), cfg.d_head, cfg.d_model).transpose(0, 2, 1)

    return f


def _proj_bias(heads: Callable[[ModelConfig], int]) -> Transform:
    """``nn.Linear`` bias ``[heads * E]`` -> ``[heads, E]``."""

    def f(x: Float[np.ndarray, " he"], cfg: ModelConfig) -> Float[np.ndarray, "heads d_head"]:
        return x.reshape(heads(cfg), cfg.d_head)

    return f


def _o_proj(
    x: Float[np.ndarray, "d_model he"], cfg: ModelConfig
) -> Float[np.ndarray, "n_heads d_head d_model"]:
    """``nn.Linear`` ``o_proj`` ``[D, H * E]`` -> ``[H, E, D]``."""
    return x.T.reshape(cfg.n_heads, cfg.d_head, cfg.d_model)


def _neox_qkv(part: int) -> Transform:
    """NeoX ``query_key_value.weight`` ``[H * 3 * E, D]`` (per head: q, k, v) -> ``[H, D, E]``."""

    def f(
        x: Float[np.ndarray, "h3e d_model"], cfg: ModelConfig
    ) -> Float[np.ndarray, "n_heads d_model d_head"]:
        w = x.reshape(cfg.n_heads, 3, cfg.d_head, cfg.d_model)[:, part]
        return w.transpose(0, 2, 1)

    return f


def _neox_qkv_bias(part: int) -> Transform:
    """NeoX ``query_key_value.bias`` ``[H * 3 * E]`` -> ``[H, E]``."""

    def f(x: Float[np.ndarray, " h3e"], cfg: ModelConfig) -> Float[np.ndarray, "n_heads d_head"]:
        return x.reshape(cfg.n_heads, 3, cfg.d_head)[:, part]

    return f


def _n_heads(cfg: ModelConfig) -> int:
    return cfg.n_heads


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


def _attention_rules(bias: str | None, o_bias: str | None) -> tuple[Rule, ...]:
    """``self_attn.{q,k,v,o}_proj`` rules; ``bias`` / ``o_bias`` gate the biases (see ``when``).

    ``bias="always"`` reads q/k/v biases unconditionally (Qwen2).
    """
    p = "layers.{i}.self_attn."
    rules = [
        Rule(p + "q_proj.weight", "attn.W_Q", _proj(_n_heads)),
        Rule(p + "k_proj.weight", "attn.W_K", _proj(_kv)),
        Rule(p + "v_proj.weight", "attn.W_V", _proj(_kv)),
        Rule(p + "o_proj.weight", "attn.W_O", _o_proj),
    ]
    if bias is not None:
        when = None if bias == "always" else bias
        rules += [
            Rule(p + "q_proj.bias", "attn.b_Q", _proj_bias(_n_heads), when),
            Rule(p + "k_proj.bias", "attn.b_K", _proj_bias(_kv), when),
            Rule(p + "v_proj.bias", "attn.b_V", _proj_bias(_kv), when),
        ]
    if o_bias is not None:
        rules.append(Rule(p + "o_proj.bias", "attn.b_O", _same, o_bias))
    return tuple(rules)


def _mlp_rules(bias: str | None) -> tuple[Rule, ...]:
    """Gated MLP: ``gate_proj -> W_gate``, ``up_proj -> W_in``, ``down_proj -> W_out``."""
    p = "layers.{i}.mlp."
    rules = [
        Rule(p + "gate_proj.weight", "mlp.W_gate", _transpose),
        Rule(p + "up_proj.weight", "mlp.W_in", _transpose),
        Rule(p + "down_proj.weight", "mlp.W_out", _transpose),
    ]
    if bias is not None:
        rules += [
            Rule(p + "gate_proj.bias", "mlp.b_gate", _same, bias),
            Rule(p + "up_proj.bias", "mlp.b_in", _same, bias),
            Rule(p + "down_proj.bias", "mlp.b_out", _same, bias),
        ]
    return tuple(rules)


def decoder_rules(
    *,
    bias: str | None = None,
    o_bias: str | None = None,
    mlp_bias: str | None = None,
    qk_norm: bool = False,
    post_norms: bool = False,
) -> tuple[Rule, ...]:
    """Rules of a Llama-shaped checkpoint (``model.`` prefix stripped).

    Args:
        bias: Config attribute gating the q/k/v biases (``"always"``: Qwen2; ``None``: none).
        o_bias: Config attribute gating ``o_proj.bias``.
        mlp_bias: Config attribute gating the MLP biases.
        qk_norm: Per-head ``q_norm`` / ``k_norm`` weights (Qwen3, Gemma3).
        post_norms: Gemma2/3 norm layout: ``post_attention_layernorm`` is the attention
            output's norm (``ln1_post``) and ``pre_feedforward_layernorm`` the MLP's input norm.
            Otherwise ``post_attention_layernorm`` is the MLP's input norm (``ln2``).
    """
    p = "layers.{i}."
    norms = [Rule(p + "input_layernorm.weight", "ln1.w", _same)]
    if post_norms:
        norms += [
            Rule(p + "post_attention_layernorm.weight", "ln1_post.w", _same),
            Rule(p + "pre_feedforward_layernorm.weight", "ln2.w", _same),
            Rule(p + "post_feedforward_layernorm.weight", "ln2_post.w", _same),
        ]
    else:
        norms.append(Rule(p + "post_attention_layernorm.weight", "ln2.w", _same))
    if qk_norm:
        norms += [
            Rule(p + "self_attn.q_norm.weight", "attn.q_norm.w", _same),
            Rule(p + "self_attn.k_norm.weight", "attn.k_norm.w", _same),
        ]
    return (
        Rule("embed_tokens.weight", "W_E", _same),
        *norms,
        *_attention_rules(bias, o_bias),
        *_mlp_rules(mlp_bias),
        Rule("norm.weight", "ln_final.w", _same),
        Rule("lm_head.weight", "W_U", _transpose),
    )


_NEOX = "layers.{i}."
GPT_NEOX_RULES: tuple[Rule, ...] = (
    Rule("embed_in.weight", "W_E", _same),
    Rule(_NEOX + "input_layernorm.weight", "ln1.w", _same),
    Rule(_NEOX + "input_layernorm.bias", "ln1.b", _same),
    Rule(_NEOX + "post_attention_layernorm.weight", "ln2.w", _same),
    Rule(_NEOX + "post_attention_layernorm.bias", "ln2.b", _same),
    *(
        Rule(_NEOX + "attention.query_key_value.weight", f"attn.W_{n}", _neox_qkv(part))
        for part, n in enumerate("QKV")
    ),
    *(
        Rule(
            _NEOX + "attention.query_key_value.bias",
            f"attn.b_{n}",
            _neox_qkv_bias(part),
            "attention_bias",
        )
        for part, n in enumerate("QKV")
    ),
    Rule(_NEOX + "attention.dense.weight", "attn.W_O", _o_proj),
    Rule(_NEOX + "attention.dense.bias", "attn.b_O", _same, "attention_bias"),
    Rule(_NEOX + "mlp.dense_h_to_4h.weight", "mlp.W_in", _transpose),
    Rule(_NEOX + "mlp.dense_h_to_4h.bias", "mlp.b_in", _same),
    Rule(_NEOX + "mlp.dense_4h_to_h.weight", "mlp.W_out", _transpose),
    Rule(_NEOX + "mlp.dense_4h_to_h.bias", "mlp.b_out", _same),
    Rule("final_layer_norm.weight", "ln_final.w", _same),
    Rule("final_layer_norm.bias", "ln_final.b", _same),
    Rule("embed_out.weight", "W_U", _transpose, aliases=("lm_head.weight",)),
)

#: Rotary caches and causal-mask buffers that older checkpoints store.
DECODER_IGNORED = ("layers.{i}.self_attn.rotary_emb.inv_freq", "rotary_emb.inv_freq")
GPT_NEOX_IGNORED = (
    "layers.{i}.attention.bias",
    "layers.{i}.attention.masked_bias",
    "layers.{i}.attention.rotary_emb.inv_freq",
    "rotary_emb.inv_freq",
)


@dataclass(frozen=True)
class Architecture:
    """How to read one family.

    Attributes:
        family: Its name in messages (``"GPT-2"``).
        options: ``{attribute: rule}`` for every config attribute (see ``ConfigRule``).
        config: Maps a config resolved against ``options`` to our :class:`ModelConfig`.
        rules: The weight-conversion table.
        ignored: Non-parameter buffers in checkpoints (``{i}`` is the layer index).
        prefixes: Prefixes stripped from checkpoint tensor names.
    """

    family: str
    options: Mapping[str, ho.ConfigRule]
    config: Callable[[Mapping[str, Any]], ModelConfig]
    rules: tuple[Rule, ...]
    ignored: tuple[str, ...]
    prefixes: tuple[str, ...]


_M = ("model.",)

#: Every supported ``model_type``.
ARCHITECTURES: dict[str, Architecture] = {
    "gpt2": Architecture(
        "GPT-2", ho.GPT2_OPTIONS, hc.gpt2_config, GPT2_RULES, GPT2_IGNORED, ("transformer.",)
    ),
    "llama": Architecture(
        "Llama",
        ho.LLAMA_OPTIONS,
        hc.llama_config,
        decoder_rules(bias="attention_bias", o_bias="attention_bias", mlp_bias="mlp_bias"),
        DECODER_IGNORED,
        _M,
    ),
    "mistral": Architecture(
        "Mistral", ho.MISTRAL_OPTIONS, hc.mistral_config, decoder_rules(), DECODER_IGNORED, _M
    ),
    "qwen2": Architecture(
        "Qwen2",
        ho.QWEN2_OPTIONS,
        hc.qwen2_config,
        decoder_rules(bias="always"),
        DECODER_IGNORED,
        _M,
    ),
    "qwen3": Architecture(
        "Qwen3",
        ho.QWEN3_OPTIONS,
        hc.qwen3_config,
        decoder_rules(bias="attention_bias", o_bias="attention_bias", qk_norm=True),
        DECODER_IGNORED,
        _M,
    ),
    "gemma": Architecture(
        "Gemma",
        ho.GEMMA_OPTIONS,
        hc.gemma_config,
        decoder_rules(bias="attention_bias", o_bias="attention_bias"),
        DECODER_IGNORED,
        _M,
    ),
    "gemma2": Architecture(
        "Gemma2",
        ho.GEMMA2_OPTIONS,
        hc.gemma2_config,
        decoder_rules(bias="attention_bias", o_bias="attention_bias", post_norms=True),
        DECODER_IGNORED,
        _M,
    ),
    "gemma3_text": Architecture(
        "Gemma3",
        ho.GEMMA3_OPTIONS,
        hc.gemma3_config,
        decoder_rules(
            bias="attention_bias", o_bias="attention_bias", qk_norm=True, post_norms=True
        ),
        DECODER_IGNORED,
        _M,
    ),
    "gpt_neox": Architecture(
        "GPT-NeoX",
        ho.GPT_NEOX_OPTIONS,
        hc.gpt_neox_config,
        GPT_NEOX_RULES,
        GPT_NEOX_IGNORED,
        ("gpt_neox.",),
    ),
}
