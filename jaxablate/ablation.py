"""What a removed component is replaced by: zero, mean or resampled activations.

An :class:`Ablation` is a pytree of replacement arrays, one per kind of maskable output:

- ``z``: per-head outputs ``[layer, b, s, head, d_head]``,
- ``attn`` / ``mlp``: whole block outputs ``[layer, b, s, d_model]``,

where ``b`` is 1 (shared by every example) or the batch size, and ``s`` is 1 (shared by every
position), the sequence length, or longer for per-position means (sliced to the sequence). A
masked component's output ``c`` becomes ``m * c + (1 - m) * r``. Mean and resample replacements
come from the *clean* (unablated) model's activations.
"""

import functools
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float, Int

from jaxablate.models.config import ModelConfig


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
                out[name] = jnp.zeros((L, 1, 1, *feat), jnp.dtype(cfg.dtype))
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


@functools.partial(jax.jit, static_argnums=0)
def _activations(graphdef: nnx.GraphDef, state: nnx.State, tokens: jax.Array):
    return nnx.merge(graphdef, state).activations(tokens)


def _reference_tokens(model: nnx.Module, tokens: object, what: str) -> jax.Array:
    from jaxablate.models.transformer import check_tokens

    try:
        return check_tokens(model.config, tokens)
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from None


def mean(
    model: nnx.Module,
    ref_tokens: Int[Array, "batch seq"],
    *,
    per_position: bool = False,
    batch_size: int = 64,
) -> Ablation:
    """Replace removed components by their mean output over a reference set (mean ablation).

    Args:
        model: The clean model whose activations are averaged.
        ref_tokens: Reference sequences.
        per_position: Average over examples only, keeping one mean per position (usable for
            tokens no longer than ``ref_tokens``); else also over positions.
        batch_size: Reference sequences per forward pass (bounds memory).

    Returns:
        An :class:`Ablation` of kind ``"mean"``.
    """
    tokens = _reference_tokens(model, ref_tokens, "mean ablation reference tokens")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    graphdef, state = nnx.split(model)
    axes = (1,) if per_position else (1, 2)
    sums = None
    for start in range(0, tokens.shape[0], batch_size):
        acts = _activations(graphdef, state, tokens[start : start + batch_size])
        part = [np.asarray(a, np.float64).sum(axis=axes, keepdims=True) for a in acts]
        sums = part if sums is None else [s + p for s, p in zip(sums, part, strict=True)]
    count = tokens.shape[0] * (1 if per_position else tokens.shape[1])
    dtype = jnp.dtype(model.config.dtype)
    z, attn, mlp = (jnp.asarray(s / count, dtype) for s in sums)
    if model.config.attn_only:
        mlp = None
    return Ablation(z=z, attn=attn, mlp=mlp, kind="mean", prefix_positions=per_position)


def resample(model: nnx.Module, source_tokens: Int[Array, "batch seq"]) -> Ablation:
    """Replace each removed component by its clean activation on a paired source input.

    Example ``i`` of the evaluated tokens takes the activations of ``source_tokens[i]``
    (resample / interchange ablation), so ``source_tokens`` must have the evaluated tokens'
    shape. Shuffle or draw the sources yourself to choose the pairing.
    """
    tokens = _reference_tokens(model, source_tokens, "resample ablation source tokens")
    graphdef, state = nnx.split(model)
    acts = _activations(graphdef, state, tokens)
    mlp = None if model.config.attn_only else acts.mlp
    return Ablation(z=acts.z, attn=acts.attn, mlp=mlp, kind="resample")


def optimal(model: nnx.Module, comps: object, tokens: object, **kwargs: object) -> Ablation:
    """Learned constant replacements that minimise the loss (optimal ablation).

    See :func:`jaxablate.optimal.optimal_ablation` for the arguments.
    """
    from jaxablate.optimal import optimal_ablation

    return optimal_ablation(model, comps, tokens, **kwargs)
