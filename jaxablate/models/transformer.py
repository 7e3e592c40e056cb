"""A configurable decoder-only transformer in flax NNX whose ablation masks are ordinary inputs.

One class covers GPT-2 (its defaults), Llama, GPT-NeoX, Qwen and Gemma 2/3 models through
:class:`~jaxablate.models.config.ModelConfig`: learned or rotary positions, LayerNorm or RMSNorm,
grouped-query attention, gated MLPs, parallel residuals, sandwich (post) norms, sliding windows
and softcaps.

Weights of every block are stacked along a leading ``layer`` axis, so a block is "layer ``l`` of
the stack" and a whole model is a handful of arrays. The forward pass is written as small stages
(:meth:`Transformer.embed`, :meth:`Transformer.attn_z`, :meth:`Transformer.mix_heads`,
:meth:`Transformer.mlp_out`, :meth:`Transformer.unembed`) so that evaluation code can reuse work
that does not depend on the masks. Every stage that reads positions takes ``queries``: static
positions to compute at, ``[k]`` for every example or ``[batch, k]`` for each its own (a query
at position ``p`` uses rotary angle ``p`` and the window ending at ``p``; all positions still
serve as keys and values).

Masks act as ``m * c + (1 - m) * r`` on each query head's output ``z`` (before the output
projection) and on each block's whole output (attention or MLP, after its post norm) before it
joins the residual stream; ``r`` comes from an :class:`~jaxablate.models.inputs.Ablation`.

Everything is computed in the model dtype except norm statistics, the attention softmax and the
logits, which are float32.
"""

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.core import Tracer
from jaxtyping import Array, Float, Int

from jaxablate import _compile_cache
from jaxablate._prompts import Prompts
from jaxablate.models.cache import Cache
from jaxablate.models.cache import run_with_cache as _run_with_cache
from jaxablate.models.config import ModelConfig
from jaxablate.models.inputs import (
    Ablation,
    Masks,
    check_ablation,
    check_tokens,
    take_positions,
)

_ACTIVATIONS = {
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


class Activations(NamedTuple):
    """Clean activations of every maskable component, stacked over layers.

    Attributes:
        z: Query-head outputs before the output projection.
        attn: Whole attention-block outputs (after the output projection, its bias and the
            post norm, if any).
        mlp: Whole MLP-block outputs (after the post norm, if any; zeros for attention-only
            models).
    """

    z: Float[Array, "layer batch seq head d_head"]
    attn: Float[Array, "layer batch seq d_model"]
    mlp: Float[Array, "layer batch seq d_model"]


#: Smallest draw, in elements: weights are drawn in powers of two from here up (see _normal).
#: A draw of 2^20 values (4 MB) takes about as long as a tiny one on a CPU (18 ms, mostly fixed
#: costs), so every weight up to it, of every config, shares one compiled program.
MIN_DRAW = 2**20


@functools.partial(jax.jit, static_argnums=1)
def _standard_normal(key: jax.Array, size: int) -> Float[Array, " size"]:
    return jax.random.normal(key, (size,), jnp.float32)


def _draw_size(n: int) -> int:
    """The draw that holds ``n`` values: ``n`` rounded up to a power of two, at least
    :data:`MIN_DRAW` (``n`` itself without threefry's partitionable counters)."""
    if not _compile_cache.config_flag("jax_threefry_partitionable"):
        return n
    return max(MIN_DRAW, 1 << (n - 1).bit_length())


def _normal(rngs: nnx.Rngs, shape: tuple[int, ...], std: float, dtype: jnp.dtype) -> jax.Array:
    """``std`` times a standard normal draw of ``shape`` from ``rngs.params()``, cast to
    ``dtype``: bit for bit ``(std * jax.random.normal(key, shape)).astype(dtype)``.

    XLA's CPU compiler spends about a quarter of a second on each size of draw, whatever the
    size, so a draw compiled per weight shape costs a fresh process seconds per config. Here
    the draw is flat and of a power-of-two size (one compiled program per size, shared by every
    weight of every config, and kept by the persistent compilation cache), cut to the weight's
    values: with threefry's partitionable counters (jax's default) the first ``n`` values of a
    draw are the draw of ``n``, and a flat draw reshaped is the draw of the shape (threefry
    counts elements in row-major order). The scale and cast run on the host (one IEEE multiply
    and a round to nearest even, as on the device). Under a trace (``nnx.eval_shape``) the
    draw is traced at its own size.
    """
    key = rngs.params()
    n = math.prod(shape)
    if isinstance(key, Tracer):
        flat = jax.lax.optimization_barrier(jax.random.normal(key, (n,), jnp.float32))
        return (std * flat.reshape(shape)).astype(dtype)
    flat = np.asarray(_standard_normal(key, _draw_size(n)))[:n]
    return jax.device_put((np.float32(std) * flat.reshape(shape)).astype(dtype))


def _full(shape: tuple[int, ...], value: float, dtype: jnp.dtype) -> jax.Array:
    """A constant weight, made on the host and put on the device (an eager ``jnp.full`` or
    ``jnp.asarray`` compiles a program per shape)."""
    return jax.device_put(np.full(shape, value, dtype))


class Norm(nnx.Module):
    """LayerNorm (weight ``w``, bias ``b``) or RMSNorm (weight ``w``; ``b`` is ``None``) over the
    last axis, optionally stacked over leading axes; the weight applies as ``offset + w``.

    Weights start at ``1 - offset`` (an identity scale). Statistics are float32.
    """

    def __init__(
        self,
        lead: tuple[int, ...],
        width: int,
        *,
        kind: str,
        eps: float,
        offset: float,
        dtype: jnp.dtype,
    ):
        self.kind = kind
        self.eps = eps
        self.offset = offset
        self.w = nnx.Param(_full((*lead, width), 1.0 - offset, dtype))
        self.b = nnx.Param(_full((*lead, width), 0.0, dtype)) if kind == "layernorm" else None

    def apply(
        self, x: Float[Array, "*batch width"], *index: int | jax.Array
    ) -> Float[Array, "*batch width"]:
        """Normalise ``x`` over its last axis with the parameters at ``index`` of the stack."""
        x32 = x.astype(jnp.float32)
        lead = (1,) * (x.ndim - 1)
        w = self.w[index].astype(jnp.float32).reshape(*lead, -1)
        if self.offset != 0.0:
            w = self.offset + w
        if self.b is None:
            ms = jnp.square(x32).mean(-1, keepdims=True)
            return (x32 * jax.lax.rsqrt(ms + self.eps) * w).astype(x.dtype)
        mean = x32.mean(-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(-1, keepdims=True)
        b = self.b[index].astype(jnp.float32).reshape(*lead, -1)
        return ((x32 - mean) * jax.lax.rsqrt(var + self.eps) * w + b).astype(x.dtype)


def _norm(cfg: ModelConfig, lead: tuple[int, ...], width: int, dtype: jnp.dtype) -> Norm:
    """The config's norm (kind, epsilon, offset) over ``width``."""
    return Norm(
        lead, width, kind=cfg.norm, eps=cfg.layer_norm_eps, offset=cfg.norm_offset, dtype=dtype
    )


class Attention(nnx.Module):
    """Causal self-attention weights for all layers (TransformerLens naming).

    ``W_K``, ``W_V``, ``b_K`` and ``b_V`` have one entry per key/value head; query head ``h``
    reads key/value head ``h // (n_heads // n_kv_heads)``.
    """

    def __init__(self, cfg: ModelConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        L, H, KV, D, E = cfg.n_layers, cfg.n_heads, cfg.kv_heads, cfg.d_model, cfg.d_head
        std = cfg.init_std
        self.W_Q = nnx.Param(_normal(rngs, (L, H, D, E), std, dtype))
        self.W_K = nnx.Param(_normal(rngs, (L, KV, D, E), std, dtype))
        self.W_V = nnx.Param(_normal(rngs, (L, KV, D, E), std, dtype))
        self.W_O = nnx.Param(_normal(rngs, (L, H, E, D), std, dtype))
        self.b_Q = nnx.Param(_full((L, H, E), 0.0, dtype))
        self.b_K = nnx.Param(_full((L, KV, E), 0.0, dtype))
        self.b_V = nnx.Param(_full((L, KV, E), 0.0, dtype))
        self.b_O = nnx.Param(_full((L, D), 0.0, dtype))
        if cfg.qk_norm:  # always RMS norms (with the config's offset), over each head
            eps, offset = cfg.layer_norm_eps, cfg.norm_offset
            self.q_norm = Norm((L,), E, kind="rmsnorm", eps=eps, offset=offset, dtype=dtype)
            self.k_norm = Norm((L,), E, kind="rmsnorm", eps=eps, offset=offset, dtype=dtype)
        else:
            self.q_norm = None
            self.k_norm = None


class MLP(nnx.Module):
    """MLP weights for all layers (two-layer, or gated with ``W_gate`` / ``b_gate``)."""

    def __init__(self, cfg: ModelConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        L, D, F = cfg.n_layers, cfg.d_model, cfg.d_mlp
        self.W_in = nnx.Param(_normal(rngs, (L, D, F), cfg.init_std, dtype))
        self.b_in = nnx.Param(_full((L, F), 0.0, dtype))
        self.W_out = nnx.Param(_normal(rngs, (L, F, D), cfg.init_std, dtype))
        self.b_out = nnx.Param(_full((L, D), 0.0, dtype))
        if cfg.gated_mlp:
            self.W_gate = nnx.Param(_normal(rngs, (L, D, F), cfg.init_std, dtype))
            self.b_gate = nnx.Param(_full((L, F), 0.0, dtype))
        else:
            self.W_gate = None
            self.b_gate = None


def rope_inv_freq(cfg: ModelConfig, layer: int) -> Float[np.ndarray, " half"]:
    """Rotary inverse frequencies of ``layer`` (float32, as ``transformers`` computes them).

    Sliding-window layers of a model with ``rope_local_theta`` use that base and no scaling;
    the others use ``rope_theta`` with the config's ``rope_scaling``.
    """
    r = cfg.rotary_dim or cfg.d_head
    local = cfg.rope_local_theta is not None and cfg.is_sliding(layer)
    theta = np.float32(cfg.rope_local_theta if local else cfg.rope_theta)
    exponent = np.arange(0, r, 2, dtype=np.int64).astype(np.float32) / np.float32(r)
    inv = (np.float32(1.0) / theta**exponent).astype(np.float32)
    if local or cfg.rope_scaling == "none":
        return inv
    factor = np.float32(cfg.rope_factor)
    if cfg.rope_scaling == "linear":
        return (inv / factor).astype(np.float32)
    low, high = cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
    old = cfg.rope_original_context
    wavelen = np.float32(2 * math.pi) / inv
    scaled = np.where(wavelen > old / low, inv / factor, inv).astype(np.float32)
    smooth = ((old / wavelen - low) / (high - low)).astype(np.float32)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old / high) & ~(wavelen > old / low)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def _rotate(
    x: Float[Array, "batch seq head d_head"], positions: np.ndarray, inv_freq: np.ndarray
) -> Float[Array, "batch seq head d_head"]:
    """RoPE ("rotate_half" form) on the first ``2 * len(inv_freq)`` dims of each head.

    ``positions`` are static: ``[seq]`` shared by every example, or ``[batch, seq]``.
    """
    angles = positions.astype(np.float32)[..., None] * inv_freq  # float32, static
    if angles.ndim == 2:
        angles = angles[None]
    cos = jnp.asarray(np.cos(angles), x.dtype)[:, :, None, :]
    sin = jnp.asarray(np.sin(angles), x.dtype)[:, :, None, :]
    half = inv_freq.shape[0]
    x1, x2, rest = x[..., :half], x[..., half : 2 * half], x[..., 2 * half :]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], axis=-1)


def _allowed(seq: int, queries: np.ndarray | None, window: int | None) -> np.ndarray:
    """Static causal (and sliding-window) mask ``[q, seq]``, or ``[batch, 1, k, seq]`` for
    per-example queries (broadcasting against scores ``[batch, head, q, seq]``)."""
    q_pos = np.arange(seq) if queries is None else np.asarray(queries)
    keys = np.arange(seq)
    allowed = q_pos[..., :, None] >= keys
    if window is not None:
        allowed &= keys > q_pos[..., :, None] - window
    return allowed if allowed.ndim == 2 else allowed[:, None]


class Transformer(nnx.Module):
    """Decoder-only transformer: pre-norm blocks, causal attention, MLPs (see :class:`ModelConfig`).

    Args:
        cfg: The model's shape and architecture; see :class:`ModelConfig`.
        rngs: Randomness for the initial weights.

    Call it as ``model(tokens, masks=None, ablation=None)`` to get logits.
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        if not isinstance(cfg, ModelConfig):
            raise ValueError(f"Transformer needs a ModelConfig, got {type(cfg).__name__}")
        if not isinstance(rngs, nnx.Rngs):
            raise ValueError(f"rngs must be a flax.nnx.Rngs (e.g. nnx.Rngs(0)), got {rngs!r}")
        _compile_cache.enable()
        self.config = cfg
        # the weights in the order of their draws; each draw goes through a compiled program
        # shared by all configs and the rest is made on the host (see _normal): a new config
        # compiles nothing
        dtype = jnp.dtype(cfg.dtype)
        L, D = cfg.n_layers, cfg.d_model
        self.W_E = nnx.Param(_normal(rngs, (cfg.vocab_size, D), cfg.init_std, dtype))
        if cfg.positions == "learned":
            self.W_pos = nnx.Param(_normal(rngs, (cfg.n_ctx, D), cfg.init_std / 2, dtype))
        else:
            self.W_pos = None
        self.ln1 = _norm(cfg, (L,), D, dtype)
        self.ln1_post = _norm(cfg, (L,), D, dtype) if cfg.post_norms else None
        self.attn = Attention(cfg, dtype, rngs)
        if cfg.attn_only:
            self.ln2 = self.ln2_post = self.mlp = None
        else:
            self.ln2 = _norm(cfg, (L,), D, dtype)
            self.ln2_post = _norm(cfg, (L,), D, dtype) if cfg.post_norms else None
            self.mlp = MLP(cfg, dtype, rngs)
        self.ln_final = _norm(cfg, (), D, dtype)
        if cfg.tie_embeddings:
            self.W_U = None
        else:
            self.W_U = nnx.Param(_normal(rngs, (D, cfg.vocab_size), cfg.init_std, dtype))

    # ----------------------------------------------------------------------------- stages
    def embed(
        self, tokens: Int[Array, "batch seq"], *, one_hot: bool = False
    ) -> Float[Array, "batch seq d_model"]:
        """Token embedding (times ``embed_scale``) plus learned positions, if any: the residual
        stream entering layer 0.

        Args:
            tokens: Token ids.
            one_hot: Embed with a one-hot matmul instead of a gather (same values: a one-hot
                row picks its embedding exactly, in float32). Under ``vmap`` over parameter
                copies the gather's gradient is a batched scatter, which XLA runs slowly on
                CPU; training many runs side by side passes ``True`` for small vocabularies.
        """
        seq = tokens.shape[-1]
        w_e = self.W_E[...]
        if one_hot:
            hot = jax.nn.one_hot(tokens, self.config.vocab_size, dtype=w_e.dtype)
            tok = jnp.einsum("bsv,vd->bsd", hot, w_e, precision=jax.lax.Precision.HIGHEST)
        else:
            tok = w_e[tokens]
        if self.config.embed_scale is not None:
            tok = tok * jnp.asarray(self.config.embed_scale, tok.dtype)
        if self.W_pos is None:
            return tok
        return tok + self.W_pos[...][None, :seq]

    def _qkv(
        self,
        layer: int | jax.Array,
        x: Float[Array, "batch seq d_model"],
        queries: np.ndarray | None,
        like: int,
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Queries ``[b, q, H, E]`` at ``queries``, keys and values ``[b, s, H, E]`` (key/value
        heads repeated to their query heads), qk-normed and rotated where configured (with the
        rotary frequencies of layer ``like``, see :meth:`attn_z`)."""
        cfg, a = self.config, self.attn
        x_q = take_positions(x, queries)
        q = jnp.einsum("bsd,hde->bshe", x_q, a.W_Q[layer]) + a.b_Q[layer][None, None]
        k = jnp.einsum("bsd,hde->bshe", x, a.W_K[layer]) + a.b_K[layer][None, None]
        v = jnp.einsum("bsd,hde->bshe", x, a.W_V[layer]) + a.b_V[layer][None, None]
        if a.q_norm is not None and a.k_norm is not None:
            q, k = a.q_norm.apply(q, layer), a.k_norm.apply(k, layer)
        if cfg.positions == "rotary":
            inv_freq = rope_inv_freq(cfg, like)
            keys = np.arange(x.shape[1])
            q = _rotate(q, keys if queries is None else np.asarray(queries), inv_freq)
            k = _rotate(k, keys, inv_freq)
        group = cfg.n_heads // cfg.kv_heads
        if group > 1:
            k, v = jnp.repeat(k, group, axis=2), jnp.repeat(v, group, axis=2)
        return q, k, v

    def attn_z(
        self,
        layer: int | jax.Array,
        resid: Float[Array, "batch seq d_model"],
        queries: np.ndarray | None = None,
        *,
        patterns: list[jax.Array] | None = None,
        like: int | None = None,
    ) -> Float[Array, "batch query head d_head"]:
        """Each query head's output ``z`` at ``layer`` (attention-weighted values).

        Args:
            layer: Which layer.
            resid: Residual stream entering it.
            queries: Static positions to compute ``z`` at, ``[k]`` or per example
                ``[batch, k]`` (all positions still serve as keys and values); ``None``: every
                position.
            patterns: A list to append the attention pattern to: the softmax probabilities
                ``[batch, head, query, key]`` (in the model dtype) that mix the values.
            like: A layer whose sliding window and rotary frequencies ``layer`` shares, for a
                traced ``layer`` (under ``jax.lax.scan``, see :meth:`unmasked_blocks`);
                ``None``: ``layer`` itself (then a Python int).
        """
        cfg = self.config
        if like is None:
            assert isinstance(layer, int), "a traced layer needs a static `like` layer"
            like = layer
        q, k, v = self._qkv(layer, self.ln1.apply(resid, layer), queries, like)
        scale = 1.0 / math.sqrt(cfg.d_head) if cfg.attn_scale is None else cfg.attn_scale
        scores = jnp.einsum("bqhe,bkhe->bhqk", q, k).astype(jnp.float32) * scale
        if cfg.attn_softcap is not None:
            scores = cfg.attn_softcap * jnp.tanh(scores / cfg.attn_softcap)
        sliding = cfg.sliding_window is not None and cfg.is_sliding(like)
        allowed = _allowed(resid.shape[1], queries, cfg.sliding_window if sliding else None)
        scores = jnp.where(allowed, scores, jnp.finfo(jnp.float32).min)
        pattern = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        if patterns is not None:
            patterns.append(pattern)
        return jnp.einsum("bhqk,bkhe->bqhe", pattern, v)

    def mix_heads(
        self, layer: int | jax.Array, z: Float[Array, "batch seq head d_head"]
    ) -> Float[Array, "batch seq d_model"]:
        """The attention block's output from (possibly masked) head outputs: the output
        projection plus its bias, then ``ln1_post`` when the config has post norms."""
        out = (
            jnp.einsum("bshe,hed->bsd", z, self.attn.W_O[layer]) + self.attn.b_O[layer][None, None]
        )
        return out if self.ln1_post is None else self.ln1_post.apply(out, layer)

    def mlp_out(
        self, layer: int | jax.Array, resid_mid: Float[Array, "batch seq d_model"]
    ) -> Float[Array, "batch seq d_model"]:
        """The MLP block's output at ``layer`` (before it joins the residual stream).

        Args:
            layer: Which layer.
            resid_mid: The MLP's input before ``ln2``: the residual stream after the attention
                block, or (parallel residual) the one entering the layer.
        """
        if self.mlp is None or self.ln2 is None:
            raise ValueError("this model is attention-only: it has no MLP blocks")
        m = self.mlp
        act = _ACTIVATIONS[self.config.act_fn]
        x = self.ln2.apply(resid_mid, layer)
        hidden = jnp.einsum("bsd,df->bsf", x, m.W_in[layer]) + m.b_in[layer][None, None]
        if m.W_gate is not None and m.b_gate is not None:
            gate = jnp.einsum("bsd,df->bsf", x, m.W_gate[layer]) + m.b_gate[layer][None, None]
            hidden = act(gate) * hidden
        else:
            hidden = act(hidden)
        out = jnp.einsum("bsf,fd->bsd", hidden, m.W_out[layer]) + m.b_out[layer][None, None]
        return out if self.ln2_post is None else self.ln2_post.apply(out, layer)

    def unembed(
        self,
        resid: Float[Array, "batch seq d_model"],
        columns: Int[Array, " k"] | None = None,
    ) -> Float[Array, "batch seq vocab"]:
        """Final norm, unembedding and ``final_softcap``, if any; logits are float32.

        Args:
            resid: The residual stream after the last block.
            columns: Vocabulary ids to compute the logits of (a ``[d_model, k]`` slice of the
                unembedding; the result's last axis is ``k``); ``None``: the whole vocabulary.
        """
        x = self.ln_final.apply(resid)
        if self.W_U is None:
            w_e = self.W_E[...]
            w_u = (w_e if columns is None else w_e[columns]).T
        else:
            w_u = self.W_U[...] if columns is None else self.W_U[...][:, columns]
        logits = jnp.einsum("bsd,dv->bsv", x, w_u).astype(jnp.float32)
        cap = self.config.final_softcap
        return logits if cap is None else cap * jnp.tanh(logits / cap)

    def block(
        self,
        layer: int | jax.Array,
        resid: Float[Array, "batch seq d_model"],
        masks: Masks | None,
        replacement: Ablation | None,
        z: Float[Array, "batch query head d_head"] | None = None,
        queries: np.ndarray | None = None,
        record: list[tuple[jax.Array, jax.Array, jax.Array]] | None = None,
        *,
        like: int | None = None,
    ) -> Float[Array, "batch query d_model"]:
        """One block with its components masked.

        Sequential blocks add the attention output to the residual stream and feed that to the
        MLP; parallel-residual blocks feed the MLP the stream entering the block and add both.

        Args:
            layer: Which block.
            resid: Residual stream entering it.
            masks: Mask values (only ``layer``'s entries are read); ``None`` runs the block
                unmasked, skipping the blend (same result as all-ones masks).
            replacement: Fitted replacements (see :meth:`Ablation.fit`); unused without masks.
            z: The query heads' outputs at ``layer`` (at ``queries``) when they were computed
                (shared) already.
            queries: Static positions to compute the block's output at (its input at every
                position still feeds attention); ``None``: every position.
            record: A list to append the block's ``(z, attn, mlp)`` outputs to (after masking;
                ``mlp`` is zeros for attention-only models).
            like: See :meth:`attn_z` (a traced ``layer`` runs unmasked only).
        """
        if z is None:
            z = self.attn_z(layer, resid, queries, like=like)
        seq = resid.shape[1]
        resid = take_positions(resid, queries)
        mix = None if masks is None or replacement is None else (masks, replacement)
        assert mix is None or isinstance(layer, int), "masked blocks take a static layer"

        def blend(name: str, c: jax.Array, r: jax.Array | None) -> jax.Array:
            assert mix is not None and isinstance(layer, int)
            return _blend(c, mix[0].at_layer(name, layer, seq, queries), _at(r, layer, queries))

        if mix is not None:
            z = blend("heads", z, mix[1].z)
        attn = self.mix_heads(layer, z)
        if mix is not None:
            attn = blend("attn", attn, mix[1].attn)
        mid = resid + attn
        if self.mlp is not None:
            mlp = self.mlp_out(layer, resid if self.config.parallel_residual else mid)
            if mix is not None:
                mlp = blend("mlp", mlp, mix[1].mlp)
            resid = mid + mlp
        else:
            mlp = jnp.zeros_like(attn)
            resid = mid
        if record is not None:
            record.append((z, attn, mlp))
        return resid

    def unmasked_blocks(
        self, start: int, stop: int, resid: Float[Array, "batch seq d_model"]
    ) -> Float[Array, "batch seq d_model"]:
        """Blocks ``start .. stop - 1`` unmasked at every position: what
        ``block(layer, resid, None, None)`` for each layer in turn gives.

        Each run of two or more consecutive alike layers (the same sliding-window setting, so the
        same attention mask and rotary frequencies) goes through one ``jax.lax.scan`` over the
        stacked weights, so a compiled program holds one copy of the block per run instead of
        one per layer: XLA's compile time grows with the copies (on CPU, about 0.1-0.2 s per
        block of a d256 model and more for wider ones), and a study of the last layers of a
        deep model would otherwise compile every earlier layer.
        """
        cfg, layer = self.config, start
        while layer < stop:
            end = layer + 1
            while end < stop and cfg.is_sliding(end) == cfg.is_sliding(layer):
                end += 1
            if end - layer == 1:
                resid = self.block(layer, resid, None, None)
            else:

                def step(r: jax.Array, i: jax.Array, like: int = layer) -> tuple[jax.Array, None]:
                    return self.block(i, r, None, None, like=like), None

                resid, _ = jax.lax.scan(step, resid, jnp.arange(layer, end))
            layer = end
        return resid

    # ----------------------------------------------------------------------------- forward
    def __call__(
        self,
        tokens: Int[Array, "batch seq"],
        masks: Masks | None = None,
        ablation: Ablation | None = None,
    ) -> Float[Array, "batch seq vocab"]:
        """Logits of ``tokens`` with the masked components replaced.

        Args:
            tokens: Token ids in ``[0, vocab_size)``, at most ``n_ctx`` per sequence.
            masks: Per-head ``[layer, head]`` and per-block ``[layer]`` mask values (1 = kept),
                without a leading mask axis (``jax.vmap`` over one instead). ``None``: all ones.
            ablation: What removed components are replaced by; ``None`` means zero ablation.

        Returns:
            float32 logits.
        """
        tokens = check_tokens(self.config, tokens)
        masks, replacement = self.prepare(tokens.shape, masks, ablation)
        return self.forward(tokens, masks, replacement)

    def forward(
        self,
        tokens: Int[Array, "batch seq"],
        masks: Masks | None,
        replacement: Ablation | None,
        *,
        one_hot_embed: bool = False,
    ) -> Float[Array, "batch seq vocab"]:
        """Logits, with no checks: the one forward loop every caller shares.

        Args:
            tokens: Checked token ids (see :func:`~jaxablate.models.inputs.check_tokens`).
            masks: Mask values without a leading mask axis; ``None`` runs unmasked.
            replacement: Replacements already fitted to ``tokens`` (:meth:`Ablation.fit`).
            one_hot_embed: See :meth:`embed`.
        """
        return self.unembed(self.residual(tokens, masks, replacement, one_hot_embed=one_hot_embed))

    def residual(
        self,
        tokens: Int[Array, "batch seq"],
        masks: Masks | None,
        replacement: Ablation | None,
        *,
        one_hot_embed: bool = False,
        record: list[tuple[jax.Array, jax.Array, jax.Array]] | None = None,
        streams: list[jax.Array] | None = None,
        patterns: list[jax.Array] | None = None,
    ) -> Float[Array, "batch seq d_model"]:
        """The residual stream after the last block (the layer loop; see :meth:`forward`).

        Args:
            record: See :meth:`block` (one entry per layer).
            streams: A list to append the residual stream entering each block to.
            patterns: A list to append each layer's attention pattern to (see :meth:`attn_z`).
        """
        resid = self.embed(tokens, one_hot=one_hot_embed)
        for layer in range(self.config.n_layers):
            if streams is not None:
                streams.append(resid)
            z = None if patterns is None else self.attn_z(layer, resid, patterns=patterns)
            resid = self.block(layer, resid, masks, replacement, z=z, record=record)
        return resid

    def prepare(
        self, shape: tuple[int, ...], masks: Masks | None, ablation: Ablation | None
    ) -> tuple[Masks, Ablation]:
        """Default and validate ``masks`` and ``ablation`` for tokens of ``shape``."""
        cfg = self.config
        if masks is None:
            masks = Masks.ones(cfg)
        elif not isinstance(masks, Masks):
            raise ValueError(
                f"masks must be ja.Masks (comps.masks(row)) or None, got {type(masks).__name__}"
            )
        else:
            masks.check(cfg, lead=(), tokens_shape=(int(shape[0]), int(shape[1])))
        return masks, check_ablation(ablation).fit(cfg, batch=shape[0], seq=shape[1])

    def activations(self, tokens: Int[Array, "batch seq"]) -> Activations:
        """Clean (unmasked) activations of every component, for mean/resample ablation."""
        tokens = check_tokens(self.config, tokens)
        record: list[tuple[jax.Array, jax.Array, jax.Array]] = []
        self.residual(tokens, None, None, record=record)
        zs, attns, mlps = zip(*record, strict=True)
        return Activations(jnp.stack(zs), jnp.stack(attns), jnp.stack(mlps))

    def run_with_cache(
        self,
        tokens: Int[Array, "batch seq"] | Prompts,
        *,
        names: str | Sequence[str] | None = None,
        masks: Masks | None = None,
        ablation: Ablation | None = None,
    ) -> Cache:
        """Logits and a look inside: the residual stream, attention patterns, head and block
        outputs of one forward pass, stacked over layers (no hooks; one compiled program per
        shape and set of names).

        Args:
            tokens: Token ids, or :class:`~jaxablate.Prompts` (their padded ``tokens``; under
                right padding pad positions hold values, but no real position ever reads them).
            names: What to record (see :data:`jaxablate.models.cache.NAMES` and
                ``docs/conventions.md``); ``None``: everything.
            masks: Mask values as for :meth:`__call__`; the cache then holds the values after
                masking (what :meth:`block` records). ``None`` (and no ``ablation``): the clean
                model.
            ablation: What removed components are replaced by; ``None``: zero ablation.

        Returns:
            A :class:`~jaxablate.Cache` (``cache.logits``, ``cache["resid_pre"]``, ...).

        Raises:
            ValueError: unknown names, or tokens, masks or an ablation that do not fit.
        """
        return _run_with_cache(self, tokens, names=names, masks=masks, ablation=ablation)


def _at(r: jax.Array | None, layer: int, queries: np.ndarray | None) -> jax.Array:
    """Layer ``layer``'s replacement ``[b, s, ...]`` at ``queries`` (unchanged when shared by all
    positions)."""
    if r is None:
        raise ValueError("replacements must be fitted (Ablation.fit) before the forward pass")
    r = r[layer]
    return r if r.shape[1] == 1 else take_positions(r, queries)


def _blend(c: jax.Array, m: jax.Array, r: jax.Array) -> jax.Array:
    """``m * c + (1 - m) * r``; ``m`` covers axes of ``c`` before its trailing feature axis."""
    m = m.reshape((1,) * (c.ndim - m.ndim - 1) + m.shape + (1,)).astype(jnp.float32)
    out = m * c.astype(jnp.float32) + (1.0 - m) * r.astype(jnp.float32)
    return out.astype(c.dtype)
