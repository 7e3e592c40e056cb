"""An independent float64 numpy forward pass of our GPT-2-family model, with masks.

Written from the model's definition (pre-LayerNorm blocks, learned positions, causal softmax
attention, GELU MLP), not from :mod:`jaxablate.models.transformer`: it reads only the parameter
arrays (``ja.models.io.model_arrays``), so a test that compares the two can fail.
"""

import math

import numpy as np

from jaxablate.models.io import model_arrays


def _layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def _gelu(x, kind):
    if kind == "gelu_new":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    if kind == "gelu":
        return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    if kind == "relu":
        return np.maximum(x, 0)
    if kind == "silu":
        return x / (1 + np.exp(-x))
    raise ValueError(kind)


def reference_logits(model, tokens, head_mask=None, mlp_mask=None, attn_mask=None):
    """float64 logits ``[batch, seq, vocab]``; masks (1 = kept) zero-ablate what they remove.

    Args:
        model: A ``ja.Transformer``.
        tokens: int ``[batch, seq]``.
        head_mask: ``[layer, head]`` multipliers of each head's output ``z``.
        mlp_mask: ``[layer]`` multipliers of each MLP block's output.
        attn_mask: ``[layer]`` multipliers of each attention block's output.
    """
    cfg = model.config
    p = {k: np.asarray(v, np.float64) for k, v in model_arrays(model).items()}
    L, H = cfg.n_layers, cfg.n_heads
    head_mask = np.ones((L, H)) if head_mask is None else np.asarray(head_mask, np.float64)
    mlp_mask = np.ones(L) if mlp_mask is None else np.asarray(mlp_mask, np.float64)
    attn_mask = np.ones(L) if attn_mask is None else np.asarray(attn_mask, np.float64)
    tokens = np.asarray(tokens)
    seq = tokens.shape[1]
    x = p["W_E"][tokens] + p["W_pos"][:seq][None]
    causal = np.tril(np.ones((seq, seq), bool))
    eps = cfg.layer_norm_eps
    for layer in range(L):
        h = _layer_norm(x, p["ln1.w"][layer], p["ln1.b"][layer], eps)
        out = np.zeros_like(x)
        for head in range(H):
            q = h @ p["attn.W_Q"][layer, head] + p["attn.b_Q"][layer, head]
            k = h @ p["attn.W_K"][layer, head] + p["attn.b_K"][layer, head]
            v = h @ p["attn.W_V"][layer, head] + p["attn.b_V"][layer, head]
            scores = q @ k.transpose(0, 2, 1) / math.sqrt(cfg.d_head)
            scores = np.where(causal, scores, -np.inf)
            pattern = np.exp(scores - scores.max(-1, keepdims=True))
            pattern /= pattern.sum(-1, keepdims=True)
            z = (pattern @ v) * head_mask[layer, head]
            out += z @ p["attn.W_O"][layer, head]
        x = x + attn_mask[layer] * (out + p["attn.b_O"][layer])
        if not cfg.attn_only:
            h = _layer_norm(x, p["ln2.w"][layer], p["ln2.b"][layer], eps)
            hidden = _gelu(h @ p["mlp.W_in"][layer] + p["mlp.b_in"][layer], cfg.act_fn)
            x = x + mlp_mask[layer] * (hidden @ p["mlp.W_out"][layer] + p["mlp.b_out"][layer])
    x = _layer_norm(x, p["ln_final.w"], p["ln_final.b"], eps)
    w_u = p["W_E"].T if cfg.tie_embeddings else p["W_U"]
    return x @ w_u
