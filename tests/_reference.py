"""An independent float64 numpy forward pass of our transformer, with masks, for every knob.

Written from the model's definition (:class:`~jaxablate.models.config.ModelConfig`'s fields and
the parameter layout), not from :mod:`jaxablate.models.transformer`: it reads only the parameter
arrays (``ja.models.io.model_arrays``), loops over query heads one at a time, and builds rotary
embeddings the way ``transformers`` writes them (``rotate_half`` on concatenated halves), so a
test that compares the two can fail.
"""

import math

import numpy as np

from jaxablate.models.io import model_arrays


def _norm(x, w, b, cfg):
    """LayerNorm (``b`` given) or RMSNorm (``b`` is None) over the last axis; weight
    ``norm_offset + w``."""
    w = cfg.norm_offset + w
    if b is None:
        return x / np.sqrt((x**2).mean(-1, keepdims=True) + cfg.layer_norm_eps) * w
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + cfg.layer_norm_eps) * w + b


def _rms(x, w, cfg):
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + cfg.layer_norm_eps) * (cfg.norm_offset + w)


def _act(x, kind):
    if kind == "gelu_new":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    if kind == "gelu":
        return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    if kind == "relu":
        return np.maximum(x, 0)
    if kind == "silu":
        return x / (1 + np.exp(-x))
    raise ValueError(kind)


def _sliding(cfg, layer):
    if cfg.sliding_window is None:
        return False
    return cfg.sliding_layers is None or bool(cfg.sliding_layers[layer])


def inv_freq(cfg, layer):
    """float64 rotary inverse frequencies of ``layer`` (transformers' default / linear / llama3)."""
    dim = cfg.d_head if cfg.rotary_dim is None else cfg.rotary_dim
    local = cfg.rope_local_theta is not None and _sliding(cfg, layer)
    base = cfg.rope_local_theta if local else cfg.rope_theta
    freq = 1.0 / base ** (np.arange(0, dim, 2) / dim)
    if local or cfg.rope_scaling == "none":
        return freq
    if cfg.rope_scaling == "linear":
        return freq / cfg.rope_factor
    factor, lo, hi = cfg.rope_factor, cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
    ctx = cfg.rope_original_context
    out = []
    for f in freq:
        wavelen = 2 * math.pi / f
        if wavelen < ctx / hi:
            out.append(f)
        elif wavelen > ctx / lo:
            out.append(f / factor)
        else:
            smooth = (ctx / wavelen - lo) / (hi - lo)
            out.append((1 - smooth) * f / factor + smooth * f)
    return np.array(out)


def _rope(x, cfg, layer):
    """Rotate ``x [batch, seq, d_head]`` (position = index) as transformers does."""
    dim = cfg.d_head if cfg.rotary_dim is None else cfg.rotary_dim
    freqs = np.arange(x.shape[1])[:, None] * inv_freq(cfg, layer)[None, :]
    emb = np.concatenate([freqs, freqs], -1)
    rot, rest = x[..., :dim], x[..., dim:]
    halves = np.concatenate([-rot[..., dim // 2 :], rot[..., : dim // 2]], -1)
    return np.concatenate([rot * np.cos(emb) + halves * np.sin(emb), rest], -1)


def _head(p, cfg, layer, head, h):
    """Query head ``head``'s output ``z [batch, seq, d_head]`` from normed input ``h``."""
    kv = head // (cfg.n_heads // (cfg.n_kv_heads or cfg.n_heads))
    a = lambda name, i: p[f"attn.{name}"][layer, i]  # noqa: E731
    q = h @ a("W_Q", head) + a("b_Q", head)
    k = h @ a("W_K", kv) + a("b_K", kv)
    v = h @ a("W_V", kv) + a("b_V", kv)
    if cfg.qk_norm:
        q = _rms(q, p["attn.q_norm.w"][layer], cfg)
        k = _rms(k, p["attn.k_norm.w"][layer], cfg)
    if cfg.positions == "rotary":
        q, k = _rope(q, cfg, layer), _rope(k, cfg, layer)
    scale = 1 / math.sqrt(cfg.d_head) if cfg.attn_scale is None else cfg.attn_scale
    scores = q @ k.transpose(0, 2, 1) * scale
    if cfg.attn_softcap is not None:
        scores = cfg.attn_softcap * np.tanh(scores / cfg.attn_softcap)
    seq = h.shape[1]
    qi, ki = np.arange(seq)[:, None], np.arange(seq)[None, :]
    allowed = ki <= qi
    if _sliding(cfg, layer):
        allowed = allowed & (qi - ki < cfg.sliding_window)
    scores = np.where(allowed, scores, -np.inf)
    pattern = np.exp(scores - scores.max(-1, keepdims=True))
    return (pattern / pattern.sum(-1, keepdims=True)) @ v


def _mlp(p, cfg, layer, h):
    hidden = h @ p["mlp.W_in"][layer] + p["mlp.b_in"][layer]
    if cfg.gated_mlp:
        hidden = _act(h @ p["mlp.W_gate"][layer] + p["mlp.b_gate"][layer], cfg.act_fn) * hidden
    else:
        hidden = _act(hidden, cfg.act_fn)
    return hidden @ p["mlp.W_out"][layer] + p["mlp.b_out"][layer]


def _per_position(m):
    """A mask value, or per-position values ``[batch, seq]``, broadcast against ``[b, s, d]``."""
    m = np.asarray(m, np.float64)
    return m[..., None] if m.ndim == 2 else m


def reference_logits(model, tokens, head_mask=None, mlp_mask=None, attn_mask=None):
    """float64 logits ``[batch, seq, vocab]``; masks (1 = kept) zero-ablate what they remove.

    Args:
        model: A ``ja.Transformer``.
        tokens: int ``[batch, seq]``.
        head_mask: ``[layer, head]`` multipliers of each query head's output ``z`` (or
            ``[layer, head, batch, seq]``: one per example and position).
        mlp_mask: ``[layer]`` multipliers of each MLP block's output (after its post norm), or
            ``[layer, batch, seq]``.
        attn_mask: ``[layer]`` multipliers of each attention block's output (after its post
            norm).
    """
    cfg = model.config
    p = {k: np.asarray(v, np.float64) for k, v in model_arrays(model).items()}
    b = lambda name, *i: p[name][i] if name in p else None  # noqa: E731 (None: RMSNorm)
    L, H = cfg.n_layers, cfg.n_heads
    head_mask = np.ones((L, H)) if head_mask is None else np.asarray(head_mask, np.float64)
    mlp_mask = np.ones(L) if mlp_mask is None else np.asarray(mlp_mask, np.float64)
    attn_mask = np.ones(L) if attn_mask is None else np.asarray(attn_mask, np.float64)
    tokens = np.asarray(tokens)
    x = p["W_E"][tokens] * (1.0 if cfg.embed_scale is None else cfg.embed_scale)
    if cfg.positions == "learned":
        x = x + p["W_pos"][: tokens.shape[1]][None]
    for layer in range(L):
        h = _norm(x, p["ln1.w"][layer], b("ln1.b", layer), cfg)
        out = sum(
            (_head(p, cfg, layer, i, h) * _per_position(head_mask[layer, i]))
            @ p["attn.W_O"][layer, i]
            for i in range(H)
        )
        attn = out + p["attn.b_O"][layer]
        if cfg.post_norms:
            attn = _norm(attn, p["ln1_post.w"][layer], b("ln1_post.b", layer), cfg)
        attn = _per_position(attn_mask[layer]) * attn
        if cfg.attn_only:
            x = x + attn
            continue
        mlp_in = x if cfg.parallel_residual else x + attn
        mlp = _mlp(p, cfg, layer, _norm(mlp_in, p["ln2.w"][layer], b("ln2.b", layer), cfg))
        if cfg.post_norms:
            mlp = _norm(mlp, p["ln2_post.w"][layer], b("ln2_post.b", layer), cfg)
        x = x + attn + _per_position(mlp_mask[layer]) * mlp
    x = _norm(x, p["ln_final.w"], b("ln_final.b"), cfg)
    logits = x @ (p["W_E"].T if cfg.tie_embeddings else p["W_U"])
    if cfg.final_softcap is not None:
        logits = cfg.final_softcap * np.tanh(logits / cfg.final_softcap)
    return logits
