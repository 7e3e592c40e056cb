"""Hugging Face checkpoints -> :class:`Transformer`, as a table of (source, destination, transform).

``from_hf`` takes a ``transformers`` model object or a local directory holding ``config.json`` and
``*.safetensors`` (one file, or shards with ``model.safetensors.index.json``). A directory is read
with safetensors' numpy API: loading one needs neither torch nor transformers. Nothing is ever
downloaded.

Every config attribute is checked against the architecture's table of :class:`ConfigRule`
(:data:`GPT2_OPTIONS`): mapped into :class:`ModelConfig`, ignored (no effect on eval-mode
logits), fixed at its transformers default, or refused by name. An attribute the table does not
know is refused unless it equals the value of a default-constructed transformers config.
"""

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Float

from jaxablate._checks import positive_int
from jaxablate.models.config import Activation, ModelConfig
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

#: GPT-2 ``activation_function`` values -> ours (transformers' ``ACT2FN`` names; ``swish`` is
#: SiLU, ``gelu_pytorch_tanh`` the same tanh approximation as ``gelu_new``).
_GPT2_ACTIVATIONS: dict[str, Activation] = {
    "gelu_new": "gelu_new",
    "gelu_pytorch_tanh": "gelu_new",
    "gelu": "gelu",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}

OptionKind = Literal["mapped", "ignored", "fixed"]


@dataclass(frozen=True)
class ConfigRule:
    """How :func:`model_config` treats one attribute of a Hugging Face config.

    Attributes:
        kind: ``"mapped"``: read into :class:`ModelConfig` by the architecture's config function,
            which refuses values it cannot represent. ``"ignored"``: no effect on the logits of
            an eval-mode forward pass (dropout, token ids, generation and serialisation
            bookkeeping). ``"fixed"``: only ``default`` is supported; any other value is refused.
        default: The value in a default-constructed transformers config. It fills in an
            attribute that ``config.json`` omits, and is the one value a ``"fixed"`` rule allows.
        note: Why the attribute is ignored or fixed (for readers and error messages).
    """

    kind: OptionKind
    default: Any = None
    note: str = ""


def _mapped(default: Any) -> ConfigRule:
    return ConfigRule("mapped", default)


def _fixed(default: Any, note: str) -> ConfigRule:
    return ConfigRule("fixed", default, note)


def _ignored(names: str, note: str) -> dict[str, ConfigRule]:
    """One ``"ignored"`` rule for each whitespace-separated name in ``names``."""
    return {name: ConfigRule("ignored", None, note) for name in names.split()}


#: Attributes of ``PretrainedConfig`` itself (transformers 4.x and 5.x), shared by every
#: architecture table. Old ``config.json`` files carry many of them (generation defaults above
#: all); each has no effect on a decoder-only forward pass, or must stay at its default.
PRETRAINED_OPTIONS: Mapping[str, ConfigRule] = {
    **_ignored(
        "transformers_version architectures _name_or_path _commit_hash"
        " finetuning_task tokenizer_class prefix task_specific_params"
        " _attn_implementation_autoset attn_implementation _attn_implementation",
        "serialisation and bookkeeping",
    ),
    **_ignored(
        "dtype torch_dtype use_bfloat16 torchscript tf_legacy_loss",
        "storage dtype or export flags; from_hf's dtype= chooses ours",
    ),
    **_ignored(
        "output_hidden_states output_attentions return_dict use_cache chunk_size_feed_forward"
        " gradient_checkpointing output_past",
        "what a forward pass returns or how it is chunked, not what it computes",
    ),
    **_ignored("id2label label2id num_labels problem_type", "classification heads only"),
    **_ignored(
        "bos_token_id eos_token_id pad_token_id sep_token_id decoder_start_token_id"
        " forced_bos_token_id forced_eos_token_id",
        "token ids used by tokenizers and generation",
    ),
    **_ignored(
        "max_length min_length do_sample early_stopping num_beams num_beam_groups"
        " diversity_penalty temperature top_k top_p typical_p repetition_penalty"
        " length_penalty no_repeat_ngram_size encoder_no_repeat_ngram_size bad_words_ids"
        " num_return_sequences output_scores return_dict_in_generate remove_invalid_values"
        " exponential_decay_length_penalty suppress_tokens begin_suppress_tokens",
        "generation defaults",
    ),
    **_ignored("is_decoder", "decoder-only models are causal whatever it says"),
    "is_encoder_decoder": _fixed(False, "encoder-decoder models are not supported"),
    "tie_encoder_decoder": _fixed(False, "encoder-decoder models are not supported"),
    "cross_attention_hidden_size": _fixed(None, "cross-attention is not supported"),
    "pruned_heads": _fixed({}, "pruned heads give layers of different widths"),
    "quantization_config": _fixed(None, "quantised checkpoints are not supported"),
}

#: ``GPT2Config``: every attribute of a default-constructed one (tests check this against the
#: installed transformers), plus ``PretrainedConfig``'s and legacy ones.
GPT2_OPTIONS: Mapping[str, ConfigRule] = {
    **PRETRAINED_OPTIONS,
    "model_type": _mapped("gpt2"),
    "vocab_size": _mapped(50257),
    "n_positions": _mapped(1024),
    "n_embd": _mapped(768),
    "n_layer": _mapped(12),
    "n_head": _mapped(12),
    "n_inner": _mapped(None),
    "activation_function": _mapped("gelu_new"),
    "layer_norm_epsilon": _mapped(1e-5),
    "tie_word_embeddings": _mapped(True),
    "scale_attn_weights": _fixed(True, "scores are always divided by sqrt(d_head)"),
    "scale_attn_by_inverse_layer_idx": _fixed(False, "no per-layer score scaling"),
    "add_cross_attention": _fixed(False, "cross-attention is not supported"),
    **_ignored("resid_pdrop embd_pdrop attn_pdrop", "dropout (off at inference)"),
    **_ignored("initializer_range", "initialisation only"),
    **_ignored(
        "summary_type summary_use_proj summary_activation summary_proj_to_labels"
        " summary_first_dropout",
        "sequence-summary heads (GPT2DoubleHeadsModel, classification), not the LM head",
    ),
    # Same scores, computed in float32 with the scale applied inside the matmul: precision only.
    # Ours always computes scores and softmax in float32.
    **_ignored("reorder_and_upcast_attn", "numerical precision only"),
    **_ignored("n_ctx", "legacy alias of n_positions, unused by transformers"),
}


def _refusal(family: str, problems: list[str]) -> ValueError:
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
        raise _refusal(family, problems)
    return {**{k: r.default for k, r in options.items() if r.kind != "ignored"}, **hf}


def _gpt2_mlp_width(n_inner: Any, d_model: int) -> int:
    """GPT-2's MLP width: ``n_inner``, or ``4 * n_embd`` when it is ``None``."""
    if n_inner is None:
        return 4 * d_model
    if isinstance(n_inner, bool) or not isinstance(n_inner, int) or n_inner < 1:
        raise _refusal("GPT-2", [f"n_inner={n_inner!r} (supported: None or a positive int)"])
    return n_inner


def gpt2_config(hf: Mapping[str, Any]) -> ModelConfig:
    """Our :class:`ModelConfig` for a GPT-2 config resolved by :func:`resolve_options`.

    Args:
        hf: Every mapped attribute of :data:`GPT2_OPTIONS` present (``resolve_options`` output).

    Raises:
        ValueError: a mapped attribute whose value we cannot represent, named with its value
            and what is supported.
    """
    act = hf["activation_function"]
    if act not in _GPT2_ACTIVATIONS:
        raise _refusal(
            "GPT-2", [f"activation_function={act!r} (supported: {sorted(_GPT2_ACTIVATIONS)})"]
        )
    d_model = positive_int("GPT-2 config n_embd", hf["n_embd"])
    n_heads = positive_int("GPT-2 config n_head", hf["n_head"])
    if d_model % n_heads:
        raise _refusal("GPT-2", [f"n_embd={d_model} (supported: a multiple of n_head={n_heads})"])
    eps, tied = hf["layer_norm_epsilon"], hf["tie_word_embeddings"]
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not eps > 0:
        raise _refusal("GPT-2", [f"layer_norm_epsilon={eps!r} (supported: a number > 0)"])
    if not isinstance(tied, bool):
        raise _refusal("GPT-2", [f"tie_word_embeddings={tied!r} (supported: True or False)"])
    return ModelConfig(
        n_layers=positive_int("GPT-2 config n_layer", hf["n_layer"]),
        n_heads=n_heads,
        d_model=d_model,
        d_head=d_model // n_heads,
        d_mlp=_gpt2_mlp_width(hf["n_inner"], d_model),
        vocab_size=positive_int("GPT-2 config vocab_size", hf["vocab_size"]),
        n_ctx=positive_int("GPT-2 config n_positions", hf["n_positions"]),
        act_fn=_GPT2_ACTIVATIONS[act],
        layer_norm_eps=float(eps),
        tie_embeddings=tied,
    )


@dataclass(frozen=True)
class Architecture:
    """How to read one family.

    Attributes:
        family: Its name in messages (``"GPT-2"``).
        options: ``{attribute: rule}`` for every config attribute (see :class:`ConfigRule`).
        config: Maps a config resolved against ``options`` to our :class:`ModelConfig`.
        rules: The weight-conversion table.
        ignored: Non-parameter buffers in checkpoints (``{i}`` is the layer index).
        prefixes: Prefixes stripped from checkpoint tensor names.
    """

    family: str
    options: Mapping[str, ConfigRule]
    config: Callable[[Mapping[str, Any]], ModelConfig]
    rules: tuple[Rule, ...]
    ignored: tuple[str, ...]
    prefixes: tuple[str, ...]


ARCHITECTURES: dict[str, Architecture] = {
    "gpt2": Architecture(
        "GPT-2", GPT2_OPTIONS, gpt2_config, GPT2_RULES, GPT2_IGNORED, ("transformer.",)
    ),
}


def model_config(
    hf_config: Mapping[str, Any], *, library_defaults: Mapping[str, Any] | None = None
) -> ModelConfig:
    """Our :class:`ModelConfig` for a HF config dict, every attribute of which is checked.

    Args:
        hf_config: ``config.json`` as a dict, or ``PretrainedConfig.to_dict()``.
        library_defaults: ``to_dict()`` of a default-constructed config of the same class, if
            transformers is at hand; attributes our tables do not know pass at these values.

    Raises:
        ValueError: unknown architecture, or an attribute that is unknown or unsupported at its
            value (named, with its value and what is supported).
    """
    model_type = hf_config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ValueError(
            f"unsupported architecture model_type={model_type!r} "
            f"(architectures={hf_config.get('architectures')}); supported: {sorted(ARCHITECTURES)}"
        )
    arch = ARCHITECTURES[model_type]
    return arch.config(resolve_options(hf_config, arch.options, arch.family, library_defaults))


def convert(
    tensors: Mapping[str, np.ndarray],
    hf_config: Mapping[str, Any],
    *,
    dtype: str = "float32",
    library_defaults: Mapping[str, Any] | None = None,
) -> Transformer:
    """Build a :class:`Transformer` from checkpoint tensors and a HF config dict.

    Args:
        tensors: Checkpoint tensors by name.
        hf_config: The HF config as a dict (checked by :func:`model_config`).
        dtype: Dtype of our weights.
        library_defaults: See :func:`model_config`.

    Raises:
        ValueError: unknown architecture, an unknown or unsupported config attribute (named),
            or tensors missing from / unexpected in the checkpoint (both listed in the message).
    """
    cfg = model_config(hf_config, library_defaults=library_defaults).replace(dtype=dtype)
    model_type = hf_config["model_type"]
    arch = ARCHITECTURES[model_type]
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
        ValueError: unsupported architecture; a config attribute that is unknown, or that we
            cannot honour at its value (the message names it, its value and what is supported);
            a non-directory path; or a checkpoint whose tensors do not match the architecture
            (missing and unexpected names are listed).
    """
    library_defaults = None
    if isinstance(source, str | os.PathLike):
        tensors, hf_config = read_directory(source)
    elif hasattr(source, "state_dict") and hasattr(source, "config"):
        hf_config = source.config.to_dict()
        library_defaults = _default_config_dict(source.config)
        tensors = {k: v.detach().float().cpu().numpy() for k, v in source.state_dict().items()}
    else:
        raise ValueError(
            "from_hf needs a transformers model or a local directory path, "
            f"got {type(source).__name__}"
        )
    return convert(tensors, hf_config, dtype=dtype, library_defaults=library_defaults)


def _default_config_dict(config: Any) -> dict[str, Any] | None:
    """``to_dict()`` of a default-constructed config of ``config``'s class, if it has one."""
    try:
        return type(config)().to_dict()
    except Exception:  # a config class that needs arguments: unknown attributes are refused
        return None
