"""Tables of Hugging Face config attributes: each is mapped, ignored, fixed, or refused by name.

One table per architecture (``{attribute: ConfigRule}``), built over :data:`PRETRAINED_OPTIONS`.
A rule's ``default`` is what transformers uses when ``config.json`` omits the attribute; it is
filled in before the architecture's config function reads the mapped attributes. ``None`` marks
an attribute whose omission means "derived from others" (``head_dim`` from ``hidden_size`` and
``num_attention_heads``, ``layer_types`` from the sliding-window pattern, ...).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

OptionKind = Literal["mapped", "ignored", "fixed"]


@dataclass(frozen=True)
class ConfigRule:
    """How :func:`resolve_options` treats one attribute of a Hugging Face config.

    Attributes:
        kind: ``"mapped"``: read into :class:`ModelConfig` by the architecture's config function,
            which refuses values it cannot represent. ``"ignored"``: no effect on the logits of
            an eval-mode forward pass (dropout, token ids, generation and serialisation
            bookkeeping). ``"fixed"``: only ``default`` is supported; any other value is refused.
        default: The value transformers uses when the attribute is omitted (``None``: derived
            from other attributes). It fills in an attribute that ``config.json`` omits, and is
            the one value a ``"fixed"`` rule allows.
        note: Why the attribute is ignored or fixed (for readers and error messages).
    """

    kind: OptionKind
    default: Any = None
    note: str = ""


def mapped(default: Any) -> ConfigRule:
    """A ``"mapped"`` rule with its transformers default."""
    return ConfigRule("mapped", default)


def fixed(default: Any, note: str) -> ConfigRule:
    """A ``"fixed"`` rule: only ``default`` is supported (``note`` says why)."""
    return ConfigRule("fixed", default, note)


def ignored(names: str, note: str) -> dict[str, ConfigRule]:
    """One ``"ignored"`` rule for each whitespace-separated name in ``names``."""
    return {name: ConfigRule("ignored", None, note) for name in names.split()}


#: Attributes of ``PretrainedConfig`` itself (transformers 4.x and 5.x), shared by every
#: architecture table. Old ``config.json`` files carry many of them (generation defaults above
#: all); each has no effect on a decoder-only forward pass, or must stay at its default.
PRETRAINED_OPTIONS: Mapping[str, ConfigRule] = {
    **ignored(
        "transformers_version architectures _name_or_path _commit_hash"
        " finetuning_task tokenizer_class prefix task_specific_params"
        " _attn_implementation_autoset attn_implementation _attn_implementation",
        "serialisation and bookkeeping",
    ),
    **ignored(
        "dtype torch_dtype use_bfloat16 torchscript tf_legacy_loss",
        "storage dtype or export flags; from_hf's dtype= chooses ours",
    ),
    **ignored(
        "output_hidden_states output_attentions return_dict use_cache chunk_size_feed_forward"
        " gradient_checkpointing output_past cache_implementation",
        "what a forward pass returns, caches or how it is chunked, not what it computes",
    ),
    **ignored("id2label label2id num_labels problem_type", "classification heads only"),
    **ignored(
        "bos_token_id eos_token_id pad_token_id sep_token_id decoder_start_token_id"
        " forced_bos_token_id forced_eos_token_id",
        "token ids used by tokenizers and generation",
    ),
    **ignored(
        "max_length min_length do_sample early_stopping num_beams num_beam_groups"
        " diversity_penalty temperature top_k top_p typical_p repetition_penalty"
        " length_penalty no_repeat_ngram_size encoder_no_repeat_ngram_size bad_words_ids"
        " num_return_sequences output_scores return_dict_in_generate remove_invalid_values"
        " exponential_decay_length_penalty suppress_tokens begin_suppress_tokens",
        "generation defaults",
    ),
    **ignored("is_decoder", "decoder-only models are causal whatever it says"),
    "is_encoder_decoder": fixed(False, "encoder-decoder models are not supported"),
    "tie_encoder_decoder": fixed(False, "encoder-decoder models are not supported"),
    "cross_attention_hidden_size": fixed(None, "cross-attention is not supported"),
    "pruned_heads": fixed({}, "pruned heads give layers of different widths"),
    "quantization_config": fixed(None, "quantised checkpoints are not supported"),
}

#: ``GPT2Config``: every attribute of a default-constructed one (tests check this against the
#: installed transformers), plus ``PretrainedConfig``'s and legacy ones.
GPT2_OPTIONS: Mapping[str, ConfigRule] = {
    **PRETRAINED_OPTIONS,
    "model_type": mapped("gpt2"),
    "vocab_size": mapped(50257),
    "n_positions": mapped(1024),
    "n_embd": mapped(768),
    "n_layer": mapped(12),
    "n_head": mapped(12),
    "n_inner": mapped(None),
    "activation_function": mapped("gelu_new"),
    "layer_norm_epsilon": mapped(1e-5),
    "tie_word_embeddings": mapped(True),
    "scale_attn_weights": fixed(True, "scores are always divided by sqrt(d_head)"),
    "scale_attn_by_inverse_layer_idx": fixed(False, "no per-layer score scaling"),
    "add_cross_attention": fixed(False, "cross-attention is not supported"),
    **ignored("resid_pdrop embd_pdrop attn_pdrop", "dropout (off at inference)"),
    **ignored("initializer_range", "initialisation only"),
    **ignored(
        "summary_type summary_use_proj summary_activation summary_proj_to_labels"
        " summary_first_dropout",
        "sequence-summary heads (GPT2DoubleHeadsModel, classification), not the LM head",
    ),
    # Same scores, computed in float32 with the scale applied inside the matmul: precision only.
    # Ours always computes scores and softmax in float32.
    **ignored("reorder_and_upcast_attn", "numerical precision only"),
    **ignored("n_ctx", "legacy alias of n_positions, unused by transformers"),
}

#: Rotary position attributes shared by every rotary family: ``rope_parameters`` (transformers
#: 5), and the 4.x spellings that older ``config.json`` files carry instead.
_ROPE_OPTIONS: Mapping[str, ConfigRule] = {
    "rope_parameters": mapped(None),  # None: from rope_theta / rope_scaling
    "rope_theta": mapped(None),  # legacy; None: 10000
    "rope_scaling": mapped(None),  # legacy
}

#: Attributes shared by the Llama-shaped families (RMSNorm, rotary, gated MLP).
_DECODER_OPTIONS: Mapping[str, ConfigRule] = {
    **PRETRAINED_OPTIONS,
    **_ROPE_OPTIONS,
    "vocab_size": mapped(32000),
    "hidden_size": mapped(4096),
    "intermediate_size": mapped(11008),
    "num_hidden_layers": mapped(32),
    "num_attention_heads": mapped(32),
    "num_key_value_heads": mapped(None),  # None: num_attention_heads
    "head_dim": mapped(None),  # None: hidden_size // num_attention_heads
    "hidden_act": mapped("silu"),
    "max_position_embeddings": mapped(2048),
    "rms_norm_eps": mapped(1e-6),
    "tie_word_embeddings": mapped(False),
    **ignored("attention_dropout", "dropout (off at inference)"),
    **ignored("initializer_range", "initialisation only"),
}

LLAMA_OPTIONS: Mapping[str, ConfigRule] = {
    **_DECODER_OPTIONS,
    "model_type": mapped("llama"),
    "attention_bias": mapped(False),
    "mlp_bias": mapped(False),
    # transformers 5 runs the same matmuls whatever it says (it sliced them for tensor
    # parallelism in 4.x, with the same result up to rounding).
    **ignored("pretraining_tp", "tensor-parallel slicing of the same matmuls"),
}

MISTRAL_OPTIONS: Mapping[str, ConfigRule] = {
    **_DECODER_OPTIONS,
    "model_type": mapped("mistral"),
    "intermediate_size": mapped(14336),
    "num_key_value_heads": mapped(8),
    "max_position_embeddings": mapped(131072),
    "sliding_window": mapped(4096),
}

#: Qwen2/Qwen3 sliding-window attributes: ``layer_types`` if given, else layers from
#: ``max_window_layers`` on slide when ``use_sliding_window``.
_QWEN_OPTIONS: Mapping[str, ConfigRule] = {
    **_DECODER_OPTIONS,
    "vocab_size": mapped(151936),
    "intermediate_size": mapped(22016),
    "max_position_embeddings": mapped(32768),
    "use_sliding_window": mapped(False),
    "sliding_window": mapped(4096),
    "max_window_layers": mapped(28),
    "layer_types": mapped(None),
    "use_mrope": fixed(False, "multimodal rotary sections (Qwen2-VL) are not supported"),
}

QWEN2_OPTIONS: Mapping[str, ConfigRule] = {**_QWEN_OPTIONS, "model_type": mapped("qwen2")}

QWEN3_OPTIONS: Mapping[str, ConfigRule] = {
    **_QWEN_OPTIONS,
    "model_type": mapped("qwen3"),
    "head_dim": mapped(128),
    "attention_bias": mapped(False),
}

_GEMMA_BASE: Mapping[str, ConfigRule] = {
    **_DECODER_OPTIONS,
    "vocab_size": mapped(256000),
    "head_dim": mapped(256),
    "max_position_embeddings": mapped(8192),
    "tie_word_embeddings": mapped(True),
    "attention_bias": mapped(False),
    "use_bidirectional_attention": mapped(None),  # None or False: causal
}

GEMMA_OPTIONS: Mapping[str, ConfigRule] = {
    **_GEMMA_BASE,
    "model_type": mapped("gemma"),
    "hidden_size": mapped(3072),
    "intermediate_size": mapped(24576),
    "num_hidden_layers": mapped(28),
    "num_attention_heads": mapped(16),
    "num_key_value_heads": mapped(16),
    "hidden_act": mapped("gelu_pytorch_tanh"),
    **ignored("hidden_activation", "transformers 4.x spelling; transformers 5 uses hidden_act"),
}

#: Gemma2 and Gemma3 (text): ``hidden_activation`` is the one used; ``hidden_act`` is legacy.
_GEMMA_NEW: Mapping[str, ConfigRule] = {
    **{k: v for k, v in _GEMMA_BASE.items() if k != "hidden_act"},
    "hidden_size": mapped(2304),
    "intermediate_size": mapped(9216),
    "num_hidden_layers": mapped(26),
    "num_attention_heads": mapped(8),
    "num_key_value_heads": mapped(4),
    "hidden_activation": mapped("gelu_pytorch_tanh"),
    **ignored("hidden_act", "unused: transformers reads hidden_activation"),
    "query_pre_attn_scalar": mapped(256),
    "sliding_window": mapped(4096),
    "layer_types": mapped(None),
}

GEMMA2_OPTIONS: Mapping[str, ConfigRule] = {
    **_GEMMA_NEW,
    "model_type": mapped("gemma2"),
    "final_logit_softcapping": mapped(30.0),
    "attn_logit_softcapping": mapped(50.0),
}

GEMMA3_OPTIONS: Mapping[str, ConfigRule] = {
    **_GEMMA_NEW,
    "model_type": mapped("gemma3_text"),
    "vocab_size": mapped(262208),
    "max_position_embeddings": mapped(131072),
    "final_logit_softcapping": mapped(None),
    "attn_logit_softcapping": mapped(None),
    "use_bidirectional_attention": mapped(False),
    "rope_local_base_freq": mapped(None),  # legacy; None: 10000
    "sliding_window_pattern": mapped(6),  # legacy; used when layer_types is omitted
    **ignored("_sliding_window_pattern", "bookkeeping copy; layer_types is what is used"),
}

GPT_NEOX_OPTIONS: Mapping[str, ConfigRule] = {
    **PRETRAINED_OPTIONS,
    **_ROPE_OPTIONS,
    "model_type": mapped("gpt_neox"),
    "vocab_size": mapped(50432),
    "hidden_size": mapped(6144),
    "num_hidden_layers": mapped(44),
    "num_attention_heads": mapped(64),
    "intermediate_size": mapped(24576),
    "hidden_act": mapped("gelu"),
    "max_position_embeddings": mapped(2048),
    "layer_norm_eps": mapped(1e-5),
    "tie_word_embeddings": mapped(False),
    "use_parallel_residual": mapped(True),
    "attention_bias": mapped(True),
    "rotary_pct": mapped(None),  # legacy; None: 0.25
    "rotary_emb_base": mapped(None),  # legacy; None: 10000
    **ignored(
        "attention_dropout hidden_dropout classifier_dropout attention_probs_dropout_prob"
        " hidden_dropout_prob",
        "dropout (off at inference)",
    ),
    **ignored("initializer_range", "initialisation only"),
}


def refusal(family: str, problems: list[str]) -> ValueError:
    """The error for unsupported config attributes (each problem names one)."""
    return ValueError(f"unsupported {family} config: " + "; ".join(problems))


def _same_value(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # e.g. an array-valued attribute
        return False


def resolve_options(
    hf: Mapping[str, Any],
    options: Mapping[str, ConfigRule],
    family: str,
    library_defaults: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Check every attribute of a HF config against a table; fill in omitted ones.

    Args:
        hf: The config as a dict (``config.json``, or ``PretrainedConfig.to_dict()``).
        options: The architecture's table, ``{attribute: rule}``.
        family: Architecture name for messages (``"GPT-2"``).
        library_defaults: ``to_dict()`` of a default-constructed config of the installed
            transformers, when there is one (model objects). An attribute missing from
            ``options`` is accepted only if it equals its value here.

    Returns:
        ``hf`` over the table's defaults: every mapped attribute is present.

    Raises:
        ValueError: naming each attribute, its value and what is supported: a ``"fixed"``
            attribute off its default, or one the table does not know (at a non-default value).
    """
    problems = []
    for key, value in hf.items():
        rule = options.get(key)
        if rule is None:
            if library_defaults is not None and key in library_defaults:
                if _same_value(value, library_defaults[key]):
                    continue
            problems.append(
                f"{key}={value!r} is an option jaxablate does not know, so it may change the "
                "model (supported: leaving it out, or at its transformers default)"
            )
        elif rule.kind == "fixed" and not _same_value(value, rule.default):
            problems.append(f"{key}={value!r} (supported: only {rule.default!r}; {rule.note})")
    if problems:
        raise refusal(family, problems)
    return {**{k: r.default for k, r in options.items() if r.kind != "ignored"}, **hf}
