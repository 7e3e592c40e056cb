"""Hugging Face checkpoints -> :class:`Transformer`, as tables of (source, destination, transform).

``from_hf`` takes a ``transformers`` model object, a local directory holding ``config.json`` and
``*.safetensors`` (one file, or shards with ``model.safetensors.index.json``), or a Hub repo id
(resolved through the local Hub cache with ``huggingface_hub``; ``HF_HUB_OFFLINE=1`` never
touches the network). A directory is read without torch or transformers.

Supported families (``model_type``): ``gpt2``, ``llama``, ``mistral``, ``qwen2``, ``qwen3``,
``gemma``, ``gemma2``, ``gemma3_text``, ``gpt_neox``. Every config attribute is checked against
the family's table of :class:`ConfigRule` (``_hf_options``): mapped into :class:`ModelConfig`,
ignored (no effect on eval-mode logits), fixed at its transformers default, or refused by name.
An attribute the table does not know is refused unless it equals the value of a
default-constructed transformers config.

Weights stream tensor by tensor: each stacked destination ``[n_layers, ...]`` is allocated once
in the target dtype, filled layer by layer, handed to jax and dropped, so peak host memory stays
near the checkpoint's size (``benchmarks/load_memory.py`` measures it). A bfloat16 checkpoint
loads as bfloat16 without a float32 copy.
"""

import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from jaxablate._checks import one_of
from jaxablate.models._hf_config import ACTIVATIONS as ACTIVATIONS
from jaxablate.models._hf_config import gpt2_config as gpt2_config
from jaxablate.models._hf_load import TorchStateDict, read_directory, resolve
from jaxablate.models._hf_options import GPT2_OPTIONS as GPT2_OPTIONS
from jaxablate.models._hf_options import PRETRAINED_OPTIONS as PRETRAINED_OPTIONS
from jaxablate.models._hf_options import ConfigRule as ConfigRule
from jaxablate.models._hf_options import resolve_options as resolve_options
from jaxablate.models._hf_tables import ARCHITECTURES as ARCHITECTURES
from jaxablate.models._hf_tables import Architecture as Architecture
from jaxablate.models._hf_tables import Rule as Rule
from jaxablate.models.config import ModelConfig
from jaxablate.models.transformer import Transformer

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "ConfigRule",
    "Rule",
    "convert",
    "from_hf",
    "model_config",
    "read_directory",
    "resolve_options",
]

DTYPES = ("float32", "bfloat16")

#: Parameters a checkpoint may lack (no bias in the family, or ``attention_bias=False``): zeros.
ZERO_BIASES = frozenset(
    {"attn.b_Q", "attn.b_K", "attn.b_V", "attn.b_O", "mlp.b_in", "mlp.b_gate", "mlp.b_out"}
)


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

    Tensors are looked up one at a time (``tensors`` may read lazily) and each destination is
    filled, handed to jax and its host copy dropped before the next.

    Args:
        tensors: Checkpoint tensors by name (numpy; bfloat16 as ``ml_dtypes.bfloat16``).
        hf_config: The HF config as a dict (checked by :func:`model_config`).
        dtype: Dtype of our weights (``"float32"`` or ``"bfloat16"``).
        library_defaults: See :func:`model_config`.

    Raises:
        ValueError: unknown architecture, an unknown or unsupported config attribute (named),
            tensors missing from / unexpected in the checkpoint (both listed in the message),
            or a tensor of the wrong shape (named, with its shape and the expected one).
    """
    dtype = one_of("from_hf dtype", dtype, DTYPES)
    cfg = model_config(hf_config, library_defaults=library_defaults).replace(dtype=dtype)
    arch = ARCHITECTURES[hf_config["model_type"]]
    resolved = resolve_options(hf_config, arch.options, arch.family, library_defaults)
    names = {_strip(k, arch.prefixes): k for k in tensors}
    if len(names) != len(tensors):
        raise ValueError("checkpoint holds the same tensor under several prefixes")
    model = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
    plan, missing, used = _plan(arch, cfg, resolved, names, model)
    ignored = {p.format(i=i) for p in arch.ignored for i in range(cfg.n_layers)}
    if cfg.tie_embeddings:
        ignored.add("lm_head.weight")  # a tied copy of the embedding
    unexpected = sorted(set(names) - used - ignored)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint does not match the {arch.family} ({hf_config['model_type']}) layout: "
            f"missing tensors {sorted(missing)}, unexpected tensors {unexpected}"
        )
    target = _numpy_dtype(cfg.dtype)
    for rule, dest, sources in plan:
        value = _gather(rule, tuple(dest.shape), sources, tensors, names, cfg, target)
        dest.set_value(jax.device_put(value))
        del value  # the host copy goes before the next destination is read
    _fill_zeros(model, {rule.dest for rule, _, _ in plan}, target)
    return model


def _numpy_dtype(name: str) -> Any:
    return ml_dtypes.bfloat16 if name == "bfloat16" else np.dtype(name)


def _plan(
    arch: Architecture,
    cfg: ModelConfig,
    hf: Mapping[str, Any],
    names: Mapping[str, str],
    model: Transformer,
) -> tuple[list[tuple[Rule, nnx.Param, list[str]]], list[str], set[str]]:
    """Which rules apply, with their destinations and source names (aliases resolved).

    Returns:
        ``(plan, missing, used)``: ``(rule, destination, sources)`` per rule to apply, the
        checkpoint names that are absent, and the stripped names the plan reads.
    """
    plan, missing, used = [], [], set()
    for rule in arch.rules:
        dest = _lookup(model, rule.dest)
        if dest is None:  # e.g. W_U of a tied model, MLP of an attention-only one
            continue
        if rule.when is not None and not hf[rule.when]:
            continue  # no such tensor in this configuration: zeros (a bias)
        layers = range(cfg.n_layers) if "{i}" in rule.source else [None]
        sources = []
        for i in layers:
            options = [n if i is None else n.format(i=i) for n in (rule.source, *rule.aliases)]
            found = [n for n in options if n in names]
            if found:
                sources.append(found[0])
                used.add(found[0])
            else:
                missing.append(options[0])
        if len(sources) == len(layers):
            plan.append((rule, dest, sources))
    return plan, missing, used


def _gather(
    rule: Rule,
    shape: tuple[int, ...],
    sources: list[str],
    tensors: Mapping[str, np.ndarray],
    names: Mapping[str, str],
    cfg: ModelConfig,
    target: Any,
) -> np.ndarray:
    """One destination in ``target`` dtype, filled from its sources one tensor at a time."""
    layered = "{i}" in rule.source
    out = np.empty(shape, target)
    # checkpoint matrices (Linear, Conv1D, embeddings) are 2-D, biases and norm weights 1-D
    ndim = 2 if rule.dest.split(".")[-1].startswith("W_") else 1
    for i, source in enumerate(sources):
        raw = tensors[names[source]]
        if raw.ndim != ndim:
            raise ValueError(
                f"tensor {source} has shape {tuple(raw.shape)}, expected {ndim}-D "
                f"({'a matrix' if ndim == 2 else 'a vector'}) for {rule.dest}"
            )
        try:
            part = rule.transform(raw, cfg)
        except ValueError as error:  # a reshape that cannot fit: the tensor's shape is wrong
            raise ValueError(
                f"tensor {source} has shape {tuple(raw.shape)}, which does not convert to "
                f"{rule.dest} {shape[1:] if layered else shape}: {error}"
            ) from None
        expected = shape[1:] if layered else shape
        if part.shape != expected:
            raise ValueError(
                f"tensor {source} has shape {tuple(raw.shape)} and converts to shape "
                f"{part.shape}, expected {expected} for {rule.dest}"
            )
        if layered:
            out[i] = part
        else:
            out[...] = part
        del raw, part
    return out


def _fill_zeros(model: Transformer, filled: set[str], target: Any) -> None:
    """Zeros for the biases no rule filled; any other unfilled parameter is a table bug."""
    state = nnx.state(model, nnx.Param)
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        name = ".".join(str(p.key) for p in path if isinstance(p, jax.tree_util.DictKey))
        if name in filled:
            continue
        if name not in ZERO_BIASES:
            raise ValueError(f"internal error: no conversion rule fills parameter {name}")
        dest = _lookup(model, name)
        assert dest is not None
        dest.set_value(jnp.zeros(leaf.shape, target))


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


def from_hf(source: Any, *, dtype: str = "float32", revision: str | None = None) -> Transformer:
    """A :class:`Transformer` with the weights of a Hugging Face causal language model.

    Args:
        source: A ``transformers`` model object (``GPT2LMHeadModel``, ``LlamaForCausalLM``,
            ...), a local directory with ``config.json`` and safetensors weights, or a Hub repo
            id such as ``"EleutherAI/pythia-70m"`` (fetched with
            ``huggingface_hub.snapshot_download``, which honours ``HF_HUB_CACHE`` and
            ``HF_HUB_OFFLINE``).
        dtype: Dtype of our weights (``"float32"`` or ``"bfloat16"``). A bfloat16 checkpoint
            loads as bfloat16 without a float32 copy; ``"float32"`` upcasts.
        revision: Branch, tag or commit of a Hub id (``None``: ``main``).

    The model records the directory it was read from (a Hub id's snapshot) as
    ``model.hf_dir`` (a string outside nnx state; ``None`` for a model object), so
    :func:`jaxablate.tokenizer_of` finds the tokenizer saved next to the weights.

    Raises:
        ValueError: unsupported architecture; a config attribute that is unknown, or that we
            cannot honour at its value (the message names it, its value and what is supported);
            a string that is neither a directory nor a repo id; a Hub id not in the cache while
            offline; or a checkpoint whose tensors do not match the architecture (missing and
            unexpected names are listed; a wrong shape is named).
    """
    dtype = one_of("from_hf dtype", dtype, DTYPES)
    library_defaults = None
    tensors: Mapping[str, np.ndarray]
    root = None
    if isinstance(source, str | os.PathLike):
        root = resolve(source, revision)
        tensors, hf_config = read_directory(root)
    elif hasattr(source, "state_dict") and hasattr(source, "config"):
        if revision is not None:
            raise ValueError("revision= applies to Hub ids, not to a model object")
        hf_config = source.config.to_dict()
        library_defaults = _default_config_dict(source.config)
        tensors = TorchStateDict(source)
    else:
        raise ValueError(
            "from_hf needs a transformers model, a local directory path or a Hub repo id, "
            f"got {type(source).__name__}"
        )
    try:
        model = convert(tensors, hf_config, dtype=dtype, library_defaults=library_defaults)
    except ValueError as err:
        if root is None or str(root) in str(err):
            raise
        raise ValueError(f"{root}: {err}") from None
    # a static attribute (in the graphdef, not the state): where tokenizer_of looks
    model.hf_dir = None if root is None else str(root)  # pyright: ignore[reportAttributeAccessIssue]
    return model


def _default_config_dict(config: Any) -> dict[str, Any] | None:
    """``to_dict()`` of a default-constructed config of ``config``'s class, if it has one."""
    try:
        return type(config)().to_dict()
    except Exception:  # a config class that needs arguments: unknown attributes are refused
        return None
