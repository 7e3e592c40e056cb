"""A GPT-2-family transformer in flax NNX whose ablation masks are ordinary inputs.

Weights of every block are stacked along a leading ``layer`` axis, so a block is "layer ``l`` of
the stack" and a whole model is a handful of arrays. The forward pass is written as small stages
(:meth:`Transformer.embed`, :meth:`Transformer.attn_z`, :meth:`Transformer.mix_heads`,
:meth:`Transformer.mlp_out`, :meth:`Transformer.unembed`) so that evaluation code can reuse work
that does not depend on the masks.

Masks act as ``m * c + (1 - m) * r`` on each head's output ``z`` (before the output projection)
and on each block's whole output (attention or MLP) before it joins the residual stream; ``r``
comes from an :class:`~jaxablate.models.inputs.Ablation`.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float, Int

from jaxablate.models.config import ModelConfig
from jaxablate.models.inputs import Ablation, Masks, check_tokens, zero

_ACTIVATIONS = {
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


class Activations(NamedTuple):
    """Clean activations of every maskable component, stacked over layers.

    Attributes:
        z: Head outputs before the output projection.
        attn: Whole attention-block outputs (after the output projection and its bias).
        mlp: Whole MLP-block outputs (zeros for attention-only models).
    """

    z: Float[Array, "layer batch seq head d_head"]
    attn: Float[Array, "layer batch seq d_model"]
    mlp: Float[Array, "layer batch seq d_model"]


def _normal(rngs: nnx.Rngs, shape: tuple[int, ...], std: float, dtype: jnp.dtype) -> jax.Array:
    return (std * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype)


class LayerNorm(nnx.Module):
    """LayerNorm with weight ``w`` and bias ``b``, optionally stacked over leading axes."""

    def __init__(self, lead: tuple[int, ...], d_model: int, eps: float, dtype: jnp.dtype):
        self.eps = eps
        self.w = nnx.Param(jnp.ones((*lead, d_model), dtype))
        self.b = nnx.Param(jnp.zeros((*lead, d_model), dtype))

    def apply(self, x: Float[Array, "batch seq d_model"], *index: int) -> jax.Array:
        """Normalise ``x`` with the parameters at ``index`` of the stack."""
        x32 = x.astype(jnp.float32)
        mean = x32.mean(-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(-1, keepdims=True)
        w = self.w[index].astype(jnp.float32)[None, None]
        b = self.b[index].astype(jnp.float32)[None, None]
        return ((x32 - mean) * jax.lax.rsqrt(var + self.eps) * w + b).astype(x.dtype)


class Attention(nnx.Module):
    """Multi-head causal self-attention weights for all layers (TransformerLens naming)."""

    def __init__(self, cfg: ModelConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        L, H, D, E = cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head
        std = cfg.init_std
        self.W_Q = nnx.Param(_normal(rngs, (L, H, D, E), std, dtype))
        self.W_K = nnx.Param(_normal(rngs, (L, H, D, E), std, dtype))
        self.W_V = nnx.Param(_normal(rngs, (L, H, D, E), std, dtype))
        self.W_O = nnx.Param(_normal(rngs, (L, H, E, D), std, dtype))
        self.b_Q = nnx.Param(jnp.zeros((L, H, E), dtype))
        self.b_K = nnx.Param(jnp.zeros((L, H, E), dtype))
        self.b_V = nnx.Param(jnp.zeros((L, H, E), dtype))
        self.b_O = nnx.Param(jnp.zeros((L, D), dtype))


class MLP(nnx.Module):
    """Two-layer MLP weights for all layers."""

    def __init__(self, cfg: ModelConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        L, D, F = cfg.n_layers, cfg.d_model, cfg.d_mlp
        self.W_in = nnx.Param(_normal(rngs, (L, D, F), cfg.init_std, dtype))
        self.b_in = nnx.Param(jnp.zeros((L, F), dtype))
        self.W_out = nnx.Param(_normal(rngs, (L, F, D), cfg.init_std, dtype))
        self.b_out = nnx.Param(jnp.zeros((L, D), dtype))


class Transformer(nnx.Module):
    """GPT-2-family decoder: learned positions, pre-LayerNorm blocks, GELU MLPs.

    Args:
        cfg: The model's shape; see :class:`ModelConfig`.
        rngs: Randomness for the initial weights.

    Call it as ``model(tokens, masks=None, ablation=None)`` to get logits.
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        if not isinstance(cfg, ModelConfig):
            raise ValueError(f"Transformer needs a ModelConfig, got {type(cfg).__name__}")
        self.config = cfg
        dtype = jnp.dtype(cfg.dtype)
        L, D = cfg.n_layers, cfg.d_model
        self.W_E = nnx.Param(_normal(rngs, (cfg.vocab_size, D), cfg.init_std, dtype))
        self.W_pos = nnx.Param(_normal(rngs, (cfg.n_ctx, D), cfg.init_std / 2, dtype))
        self.ln1 = LayerNorm((L,), D, cfg.layer_norm_eps, dtype)
        self.attn = Attention(cfg, dtype, rngs)
        if cfg.attn_only:
            self.ln2 = None
            self.mlp = None
        else:
            self.ln2 = LayerNorm((L,), D, cfg.layer_norm_eps, dtype)
            self.mlp = MLP(cfg, dtype, rngs)
        self.ln_final = LayerNorm((), D, cfg.layer_norm_eps, dtype)
        if cfg.tie_embeddings:
            self.W_U = None
        else:
            self.W_U = nnx.Param(_normal(rngs, (D, cfg.vocab_size), cfg.init_std, dtype))

    # ----------------------------------------------------------------------------- stages
    def embed(
        self, tokens: Int[Array, "batch seq"], *, one_hot: bool = False
    ) -> Float[Array, "batch seq d_model"]:
        """Token plus position embedding: the residual stream entering layer 0.

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
        return tok + self.W_pos[...][None, :seq]

    def attn_z(
        self,
        layer: int,
        resid: Float[Array, "batch seq d_model"],
        queries: np.ndarray | None = None,
    ) -> Float[Array, "batch query head d_head"]:
        """Each head's output ``z`` at ``layer`` (attention-weighted values).

        Args:
            layer: Which layer.
            resid: Residual stream entering it.
            queries: Static positions to compute ``z`` at (all positions still serve as keys
                and values); ``None``: every position.
        """
        a = self.attn
        x = self.ln1.apply(resid, layer)
        x_q = x if queries is None else x[:, queries]
        q = jnp.einsum("bsd,hde->bshe", x_q, a.W_Q[layer]) + a.b_Q[layer][None, None]
        k = jnp.einsum("bsd,hde->bshe", x, a.W_K[layer]) + a.b_K[layer][None, None]
        v = jnp.einsum("bsd,hde->bshe", x, a.W_V[layer]) + a.b_V[layer][None, None]
        scale = 1.0 / math.sqrt(self.config.d_head)
        scores = jnp.einsum("bqhe,bkhe->bhqk", q, k).astype(jnp.float32) * scale
        seq = resid.shape[1]
        if queries is None:
            causal = np.tril(np.ones((seq, seq), dtype=bool))
        else:
            causal = np.asarray(queries)[:, None] >= np.arange(seq)[None, :]
        scores = jnp.where(causal, scores, jnp.finfo(jnp.float32).min)
        pattern = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        return jnp.einsum("bhqk,bkhe->bqhe", pattern, v)

    def mix_heads(
        self, layer: int, z: Float[Array, "batch seq head d_head"]
    ) -> Float[Array, "batch seq d_model"]:
        """Output projection of (possibly masked) head outputs, plus its bias."""
        return (
            jnp.einsum("bshe,hed->bsd", z, self.attn.W_O[layer]) + self.attn.b_O[layer][None, None]
        )

    def mlp_out(
        self, layer: int, resid_mid: Float[Array, "batch seq d_model"]
    ) -> Float[Array, "batch seq d_model"]:
        """The MLP block's output at ``layer`` (before it joins the residual stream)."""
        if self.mlp is None or self.ln2 is None:
            raise ValueError("this model is attention-only: it has no MLP blocks")
        m = self.mlp
        x = self.ln2.apply(resid_mid, layer)
        hidden = jnp.einsum("bsd,df->bsf", x, m.W_in[layer]) + m.b_in[layer][None, None]
        hidden = _ACTIVATIONS[self.config.act_fn](hidden)
        return jnp.einsum("bsf,fd->bsd", hidden, m.W_out[layer]) + m.b_out[layer][None, None]

    def unembed(self, resid: Float[Array, "batch seq d_model"]) -> Float[Array, "batch seq vocab"]:
        """Final LayerNorm and unembedding; logits are float32."""
        x = self.ln_final.apply(resid)
        w_u = self.W_E[...].T if self.W_U is None else self.W_U[...]
        return jnp.einsum("bsd,dv->bsv", x, w_u).astype(jnp.float32)

    def block(
        self,
        layer: int,
        resid: Float[Array, "batch seq d_model"],
        masks: Masks | None,
        replacement: Ablation | None,
        z: Float[Array, "batch query head d_head"] | None = None,
        queries: np.ndarray | None = None,
        record: list[tuple[jax.Array, jax.Array, jax.Array]] | None = None,
    ) -> Float[Array, "batch query d_model"]:
        """One block with its components masked.

        Args:
            layer: Which block.
            resid: Residual stream entering it.
            masks: Mask values (only ``layer``'s entries are read); ``None`` runs the block
                unmasked, skipping the blend (same result as all-ones masks).
            replacement: Fitted replacements (see :meth:`Ablation.fit`); unused without masks.
            z: The heads' outputs at ``layer`` (at ``queries``) when they were computed
                (shared) already.
            queries: Static positions to compute the block's output at (its input at every
                position still feeds attention); ``None``: every position.
            record: A list to append the block's ``(z, attn, mlp)`` outputs to (after masking;
                ``mlp`` is zeros for attention-only models).
        """
        if z is None:
            z = self.attn_z(layer, resid, queries)
        if queries is not None:
            resid = resid[:, queries]
        mix = None if masks is None or replacement is None else (masks, replacement)
        if mix is not None:
            z = _blend(z, mix[0].heads[layer], _at(mix[1].z, layer, queries))
        attn = self.mix_heads(layer, z)
        if mix is not None:
            attn = _blend(attn, mix[0].attn[layer], _at(mix[1].attn, layer, queries))
        resid = resid + attn
        if self.mlp is not None:
            mlp = self.mlp_out(layer, resid)
            if mix is not None:
                mlp = _blend(mlp, mix[0].mlp[layer], _at(mix[1].mlp, layer, queries))
            resid = resid + mlp
        else:
            mlp = jnp.zeros_like(attn)
        if record is not None:
            record.append((z, attn, mlp))
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
    ) -> Float[Array, "batch seq d_model"]:
        """The residual stream after the last block (the layer loop; see :meth:`forward`)."""
        resid = self.embed(tokens, one_hot=one_hot_embed)
        for layer in range(self.config.n_layers):
            resid = self.block(layer, resid, masks, replacement, record=record)
        return resid

    def prepare(
        self, shape: tuple[int, ...], masks: Masks | None, ablation: Ablation | None
    ) -> tuple[Masks, Ablation]:
        """Default and validate ``masks`` and ``ablation`` for tokens of ``shape``."""
        cfg = self.config
        if masks is None:
            masks = Masks.ones(cfg)
        else:
            masks.check(cfg, lead=())
        if ablation is None:
            ablation = zero()
        return masks, ablation.fit(cfg, batch=shape[0], seq=shape[1])

    def activations(self, tokens: Int[Array, "batch seq"]) -> Activations:
        """Clean (unmasked) activations of every component, for mean/resample ablation."""
        tokens = check_tokens(self.config, tokens)
        record: list[tuple[jax.Array, jax.Array, jax.Array]] = []
        self.residual(tokens, None, None, record=record)
        zs, attns, mlps = zip(*record, strict=True)
        return Activations(jnp.stack(zs), jnp.stack(attns), jnp.stack(mlps))


def _at(r: jax.Array | None, layer: int, queries: np.ndarray | None) -> jax.Array:
    """Layer ``layer``'s replacement ``[b, s, ...]`` at ``queries`` (unchanged when shared by all
    positions)."""
    if r is None:
        raise ValueError("replacements must be fitted (Ablation.fit) before the forward pass")
    r = r[layer]
    return r if queries is None or r.shape[1] == 1 else r[:, queries]


def _blend(c: jax.Array, m: jax.Array, r: jax.Array) -> jax.Array:
    """``m * c + (1 - m) * r``; ``m`` covers axes of ``c`` before its trailing feature axis."""
    m = m.reshape((1,) * (c.ndim - m.ndim - 1) + m.shape + (1,)).astype(jnp.float32)
    out = m * c.astype(jnp.float32) + (1.0 - m) * r.astype(jnp.float32)
    return out.astype(c.dtype)
