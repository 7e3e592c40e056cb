"""What the forward pass consumes besides weights: mask values, replacements, token checks.

This is the model's bottom floor: the transformer, the evaluator and everything above import
these from here, and this module imports only the config.

- :class:`Masks`: mask values of every maskable component (1 = kept, 0 = replaced).
- :class:`Ablation`: what a removed component is replaced by, one pytree of arrays per kind of
  maskable output (``z``: per-head outputs ``[layer, b, s, head, d_head]``; ``attn`` / ``mlp``:
  whole block outputs ``[layer, b, s, d_model]``), where ``b`` is 1 (shared by every example) or
  the batch size, and ``s`` is 1 (shared by every position), the sequence length, or longer for
  per-position means (sliced to the sequence). A masked component's output ``c`` becomes
  ``m * c + (1 - m) * r``.
- :func:`check_tokens`: a token batch validated against a config.
"""

import functools
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from jaxablate._checks import is_tracer
from jaxablate.models.config import ModelConfig


def take_positions(x: Float[Array, "b seq *rest"], queries: np.ndarray | None) -> jax.Array:
    """``x`` at static ``queries``: ``[k]`` (the same positions for every example) or
    ``[batch, k]`` (each example's own); a leading axis of 1 broadcasts over the batch.

    Returns:
        ``x[:, queries]`` (``[b, k, ...]``), or each example's positions (``[batch, k, ...]``).
    """
    if queries is None:
        return x
    if queries.ndim == 1:
        return x[:, queries]
    if x.shape[0] == 1:
        return x[0][queries]
    return x[np.arange(queries.shape[0])[:, None], queries]


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["heads", "attn", "mlp"],
    meta_fields=["positional"],
)
@dataclass(frozen=True)
class Masks:
    """Mask values of every maskable component (1 = kept, 0 = replaced).

    Leaves may carry leading axes (e.g. a mask axis ``n_masks``) in front of the shapes below;
    the model itself takes masks without them, and ``jax.vmap`` maps over them.

    Attributes:
        heads: One value per attention head, ``[..., layer, head]``; positional masks:
            ``[..., layer, b, seq, head]``, one value per example (``b`` is 1 or the batch) and
            position.
        attn: One value per attention block, ``[..., layer]`` (positional: ``[..., layer, b,
            seq]``).
        mlp: One value per MLP block, likewise (unused by attention-only models).
        positional: Whether the leaves carry the ``[b, seq]`` axes (masks of position-level
            components, see :func:`jaxablate.heads`).
    """

    heads: Float[Array, "*n_masks layer head"]
    attn: Float[Array, "*n_masks layer"]
    mlp: Float[Array, "*n_masks layer"]
    positional: bool = field(default=False)

    @classmethod
    def ones(cls, cfg: ModelConfig, lead: tuple[int, ...] = ()) -> "Masks":
        """All components kept."""
        return cls(
            heads=jnp.ones((*lead, cfg.n_layers, cfg.n_heads), jnp.float32),
            attn=jnp.ones((*lead, cfg.n_layers), jnp.float32),
            mlp=jnp.ones((*lead, cfg.n_layers), jnp.float32),
        )

    @property
    def lead(self) -> tuple[int, ...]:
        """The leading (mask) axes in front of ``[layer, head]`` (or ``[layer, b, seq, head]``)."""
        return tuple(self.heads.shape[: -4 if self.positional else -2])

    def check(
        self,
        cfg: ModelConfig,
        lead: tuple[int, ...] | None = None,
        tokens_shape: tuple[int, int] | None = None,
    ) -> None:
        """Raise ``ValueError`` unless the leaves fit ``cfg`` (and ``lead``, when given; and, for
        positional masks, tokens of ``tokens_shape``)."""
        lead = self.lead if lead is None else lead
        pos: tuple[int, ...] = ()
        if self.positional:
            b, s = self.heads.shape[-3:-1] if self.heads.ndim >= 4 else (0, 0)
            if tokens_shape is not None and (b not in (1, tokens_shape[0]) or s != tokens_shape[1]):
                raise ValueError(
                    f"positional masks were built for [batch, seq] = [{b}, {s}], but the tokens "
                    f"have shape {list(tokens_shape)}; build them from the same tokens"
                )
            pos = (b, s)
        want = {
            "heads": (*lead, cfg.n_layers, *pos, cfg.n_heads),
            "attn": (*lead, cfg.n_layers, *pos),
            "mlp": (*lead, cfg.n_layers, *pos),
        }
        for name, shape in want.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(
                    f"Masks.{name} must have shape {shape}, got {got}"
                    + (" (vmap over the leading mask axis)" if len(got) > len(shape) else "")
                )

    def at_layer(
        self, name: str, layer: int, seq: int, queries: np.ndarray | None
    ) -> Float[Array, "..."]:
        """Layer ``layer``'s values of leaf ``name`` for a block over ``seq`` positions computed
        at ``queries`` (position-free masks: unchanged; positional ones: ``[b, q, ...]``)."""
        m = getattr(self, name)[layer]
        if not self.positional:
            return m
        return take_positions(m[:, :seq], queries)


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["z", "attn", "mlp"],
    meta_fields=["kind", "prefix_positions"],
)
@dataclass(frozen=True)
class Ablation:
    """Replacement activations for removed components.

    Attributes:
        z: Replacement head outputs, ``[layer, b, s, head, d_head]``; ``None`` means zeros.
        attn: Replacement attention-block outputs, ``[layer, b, s, d_model]``; ``None``: zeros.
        mlp: Replacement MLP-block outputs, ``[layer, b, s, d_model]``; ``None``: zeros.
        kind: A label (``"zero"``, ``"mean"``, ``"resample"``, ...), recorded in sweep manifests.
        prefix_positions: The position axis holds per-position values that may be cut to a
            shorter sequence (per-position means; valid because attention is causal).
    """

    z: Float[Array, "layer b s head d_head"] | None = None
    attn: Float[Array, "layer b s d_model"] | None = None
    mlp: Float[Array, "layer b s d_model"] | None = None
    kind: str = field(default="zero")
    prefix_positions: bool = field(default=False)

    def fit(self, cfg: ModelConfig, *, batch: int, seq: int) -> "Ablation":
        """The replacements for tokens of shape ``[batch, seq]``, checked against ``cfg``.

        Raises:
            ValueError: a replacement's shape does not fit the model or the tokens.
        """
        L, H, E, D = cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.d_model
        out = {}
        for name, feat in (("z", (H, E)), ("attn", (D,)), ("mlp", (D,))):
            r = getattr(self, name)
            if r is None:
                # host zeros: an eager jnp.zeros compiles two programs in a fresh process
                out[name] = np.zeros((L, 1, 1, *feat), jnp.dtype(cfg.dtype))
                continue
            shape = tuple(r.shape)
            expected = f"[{L}, 1 or {batch}, 1 or {seq}, {', '.join(map(str, feat))}]"
            if len(shape) != 3 + len(feat) or shape[0] != L or shape[3:] != feat:
                raise ValueError(
                    f"{self.kind} ablation: replacement {name!r} must have shape {expected} "
                    f"for this model, got {list(shape)}"
                )
            b, s = shape[1], shape[2]
            if b not in (1, batch):
                raise ValueError(
                    f"{self.kind} ablation: replacement {name!r} was built for a batch of {b} "
                    f"but the tokens have batch {batch}; build it from tokens of the same batch "
                    "size"
                )
            if self.prefix_positions and s >= seq:
                r = r[:, :, :seq]
            elif s not in (1, seq):
                raise ValueError(
                    f"{self.kind} ablation: replacement {name!r} was built for sequences of {s} "
                    f"tokens but the tokens have {seq}; build it from tokens of the same length"
                )
            out[name] = r
        return Ablation(**out, kind=self.kind, prefix_positions=self.prefix_positions)


def zero() -> Ablation:
    """Replace removed components by zero (zero ablation)."""
    return Ablation(kind="zero")


def check_ablation(ablation: object) -> Ablation:
    """``ablation`` if it is an :class:`Ablation` (``None``: zero ablation), else ``ValueError``."""
    if ablation is None:
        return zero()
    if not isinstance(ablation, Ablation):
        shown = repr(ablation) if isinstance(ablation, str) else type(ablation).__name__
        raise ValueError(
            "ablation must be a ja.Ablation (ja.ablation.zero(), mean(model, tokens), "
            f"resample(model, tokens), optimal(...)) or None, got {shown}"
        )
    return ablation


def check_tokens(cfg: ModelConfig, tokens: object) -> jax.Array:
    """Validate a token batch against ``cfg`` and return it as an int32 array.

    Range checks run only when the values are concrete (not under ``jax.jit``).

    Raises:
        ValueError: wrong rank or dtype, an empty batch, too long sequences or ids outside the
            vocabulary.
    """
    if tokens is None or isinstance(tokens, str | bytes | dict):
        raise ValueError(
            f"tokens must be an int array [batch, seq] (or ja.Prompts), got {type(tokens).__name__}"
        )
    tokens = tokens if is_tracer(tokens) else np.asarray(tokens)
    assert isinstance(tokens, jax.Array | np.ndarray)
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be 2-D [batch, seq], got shape {tuple(tokens.shape)}")
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"tokens must have an integer dtype, got {tokens.dtype}")
    batch, seq = tokens.shape
    if batch == 0 or seq == 0:
        raise ValueError(f"tokens must be non-empty, got shape {tuple(tokens.shape)}")
    if seq > cfg.n_ctx:
        raise ValueError(
            f"sequences of {seq} tokens exceed the model's context n_ctx={cfg.n_ctx}; "
            "truncate them or use a model with a longer context"
        )
    if isinstance(tokens, np.ndarray):
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= cfg.vocab_size:
            raise ValueError(
                f"token ids must lie in [0, {cfg.vocab_size}) (vocab_size), "
                f"got values in [{lo}, {hi}]"
            )
    return jnp.asarray(tokens, jnp.int32)
