"""Tiny random Hugging Face GPT-2 models for reference tests (offline, built from a config)."""

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel


def tiny_gpt2(
    *,
    n_embd: int = 32,
    n_head: int = 4,
    n_layer: int = 2,
    n_positions: int = 16,
    vocab_size: int = 50,
    seed: int = 0,
    scale: float = 3.0,
    **kwargs: object,
) -> GPT2LMHeadModel:
    """A random GPT-2 in eval mode (dropout off unless ``kwargs`` say otherwise; eval mode
    disables it anyway); matrices scaled so ablations matter. ``kwargs`` go to ``GPT2Config``."""
    torch.manual_seed(seed)
    options: dict[str, object] = {
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "bos_token_id": 0,
        "eos_token_id": 0,
        **kwargs,  # may override the above
    }
    cfg = GPT2Config(
        n_embd=n_embd,
        n_head=n_head,
        n_layer=n_layer,
        n_positions=n_positions,
        vocab_size=vocab_size,
        **options,
    )
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2 and "wte" not in name and "wpe" not in name:
                p.mul_(scale)
            elif p.ndim == 1 and name.endswith("bias"):
                p.add_(0.05 * torch.randn_like(p))  # non-zero biases exercise the conversion
    return model


def hf_logits(model: GPT2LMHeadModel, tokens: np.ndarray) -> np.ndarray:
    """float32 logits of the torch model."""
    with torch.no_grad():
        return model(torch.tensor(np.asarray(tokens), dtype=torch.long)).logits.float().numpy()


def randomise(model: torch.nn.Module, *, seed: int = 0, offset_norms: bool = False) -> None:
    """Random weights everywhere (HF initialises norms to 1 or 0 and biases to 0, which would
    hide a mis-mapped norm or bias): matrices ``N(0, 1 / fan_in)``, embeddings ``N(0, 1)``,
    norm weights around 1 (around 0 when ``offset_norms``: Gemma's ``1 + w``), biases ``~0.1``."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if "norm" in name and name.endswith("weight"):
                value = 0.3 * noise + (0.0 if offset_norms else 1.0)
            elif name.endswith("bias"):
                value = 0.1 * noise
            elif "embed" in name or "wte" in name or "wpe" in name:
                value = noise
            else:
                value = noise / p.shape[-1] ** 0.5
            p.copy_(value.to(p.dtype))


def tiny_causal_lm(config_class: str, model_class: str, seed: int = 0, **kwargs: object):
    """A random ``transformers.<model_class>`` from ``<config_class>(**kwargs)``, eager, eval."""
    import transformers

    torch.manual_seed(seed)
    cfg = getattr(transformers, config_class)(**kwargs)
    cfg._attn_implementation = "eager"
    model = getattr(transformers, model_class)(cfg).eval()
    randomise(model, seed=seed, offset_norms=cfg.model_type.startswith("gemma"))
    return model


def hf_logits_with_pre_hooks(model, tokens: np.ndarray, hooks: dict) -> np.ndarray:
    """float32 logits with forward pre-hooks ``{module: fn(module, args) -> args}`` attached."""
    handles = [m.register_forward_pre_hook(fn) for m, fn in hooks.items()]
    try:
        return hf_logits(model, tokens)
    finally:
        for h in handles:
            h.remove()
