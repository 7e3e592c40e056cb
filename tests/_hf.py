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
