"""A look inside one forward pass: the residual stream, attention patterns and block outputs.

:meth:`Transformer.run_with_cache <jaxablate.models.transformer.Transformer.run_with_cache>`
runs the model once and returns a :class:`Cache`: the logits and the activations named in
:data:`NAMES`, each stacked over layers. Nothing is addressed by hook strings: the names only
select what is returned, and masks and ablations are the same inputs the model always takes, so
the cache of an ablated model shows the values after masking (what :meth:`Transformer.block`
records), as the masked model computes them.

How the names map to ``transformers`` (``output_hidden_states=True, output_attentions=True``)
for a model of ``L`` layers::

    hidden_states[i] == cache["resid_pre"][i]     for i < L
    hidden_states[L] == cache["resid_final"]      (after the final norm, the unembedding's input)
    attentions[i]    == cache["pattern"][i]       (per query head under grouped-query attention)

This module sits below the transformer (it imports nothing from it): the model hands itself in,
and the compiled program merges it back from ``(graphdef, state)``.
"""

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float, Int

from jaxablate._prompts import Prompts
from jaxablate.models.config import ModelConfig
from jaxablate.models.inputs import Ablation, Masks, check_tokens

__all__ = ["NAMES", "Cache", "run_with_cache"]

#: Every name a :class:`Cache` can hold, in its canonical order, with its shape and meaning.
NAMES: dict[str, str] = {
    "resid_pre": "[layer, batch, seq, d_model] the residual stream entering each block",
    "resid_mid": (
        "[layer, batch, seq, d_model] resid_pre + attn_out: the stream after the attention "
        "block (the MLP's input before its norm in sequential blocks)"
    ),
    "resid_post": (
        "[layer, batch, seq, d_model] the stream leaving each block "
        "(resid_post[l] == resid_pre[l + 1])"
    ),
    "resid_final": (
        "[batch, seq, d_model] the final norm of resid_post[-1]: what the unembedding reads"
    ),
    "pattern": (
        "[layer, batch, head, query, key] attention probabilities (softmax), per query head"
    ),
    "z": "[layer, batch, seq, head, d_head] each query head's output before the projection",
    "attn_out": "[layer, batch, seq, d_model] each attention block's output (after post norm)",
    "mlp_out": (
        "[layer, batch, seq, d_model] each MLP block's output (after post norm; zeros for "
        "attention-only models)"
    ),
}


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=["logits", "activations"], meta_fields=[]
)
@dataclass(frozen=True, eq=False, repr=False)
class Cache:
    """The logits of one forward pass and the activations recorded on the way.

    Index it by name (``cache["pattern"]``); see :data:`NAMES` for what each holds. A cache
    is a pytree (``jax.device_get(cache)`` gives one of numpy arrays).

    Attributes:
        logits: float32 logits of the (masked) model.
        activations: ``name -> array`` for the recorded names.
    """

    logits: Float[Array, "batch seq vocab"]
    activations: dict[str, jax.Array]

    @property
    def names(self) -> tuple[str, ...]:
        """The recorded names, in :data:`NAMES` order."""
        return tuple(name for name in NAMES if name in self.activations)

    def __getitem__(self, name: str) -> jax.Array:
        """The activation ``name``, stacked over layers (see :data:`NAMES`).

        Raises:
            KeyError: ``name`` was not recorded (or is no name at all).
        """
        if name not in self.activations:
            why = "is not a cache name" if name not in NAMES else "was not recorded"
            raise KeyError(
                f"{name!r} {why}; this cache holds {list(self.names)}. Pass it in "
                f"names= to run_with_cache (valid names: {list(NAMES)})"
            )
        return self.activations[name]

    def __contains__(self, name: object) -> bool:
        return name in self.activations

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.activations)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{name}={list(self[name].shape)}" for name in self.names)
        return f"Cache(logits={list(self.logits.shape)}, {shapes})"


class _Model(Protocol):
    """What :func:`run_with_cache` needs of a model (a :class:`Transformer`)."""

    config: ModelConfig

    def prepare(
        self, shape: tuple[int, ...], masks: Masks | None, ablation: Ablation | None
    ) -> tuple[Masks, Ablation]: ...


def check_names(names: str | Sequence[str] | None) -> tuple[str, ...]:
    """The requested names in :data:`NAMES` order (a static jit argument).

    Raises:
        ValueError: an unknown name, or no name at all.
    """
    if names is None:
        return tuple(NAMES)
    wanted = {names} if isinstance(names, str) else set(names)
    unknown = sorted(str(n) for n in wanted - set(NAMES))
    if unknown:
        raise ValueError(f"unknown cache names {unknown}; valid names are {list(NAMES)}")
    if not wanted:
        raise ValueError(f"names must hold at least one of {list(NAMES)} (or be None: all)")
    return tuple(n for n in NAMES if n in wanted)


def run_with_cache(
    model: _Model,
    tokens: Int[Array, "batch seq"] | Prompts,
    *,
    names: str | Sequence[str] | None = None,
    masks: Masks | None = None,
    ablation: Ablation | None = None,
) -> Cache:
    """The logits of ``tokens`` and the activations ``names``; see
    :meth:`Transformer.run_with_cache <jaxablate.models.transformer.Transformer.run_with_cache>`.
    """
    ids = tokens.tokens if isinstance(tokens, Prompts) else tokens
    checked = check_tokens(model.config, ids)
    wanted = check_names(names)
    if masks is None and ablation is None:
        prepared: tuple[Masks | None, Ablation | None] = (None, None)
    else:
        prepared = model.prepare(checked.shape, masks, ablation)
    graphdef, state = nnx.split(model)
    logits, values = _run(state, checked, *prepared, graphdef=graphdef, names=wanted)
    return Cache(logits=logits, activations=values)


@functools.partial(jax.jit, static_argnames=("graphdef", "names"))
def _run(
    state: nnx.State,
    tokens: Int[Array, "batch seq"],
    masks: Masks | None,
    replacement: Ablation | None,
    *,
    graphdef: nnx.GraphDef,
    names: tuple[str, ...],
) -> tuple[Float[Array, "batch seq vocab"], dict[str, jax.Array]]:
    """One recorded forward pass: the model's own layer loop with its record lists."""
    model: Any = nnx.merge(graphdef, state)
    record: list[tuple[jax.Array, jax.Array, jax.Array]] = []
    streams: list[jax.Array] = []
    patterns: list[jax.Array] | None = [] if "pattern" in names else None
    final = model.residual(
        tokens, masks, replacement, record=record, streams=streams, patterns=patterns
    )
    z, attn, mlp = (jnp.stack(x) for x in zip(*record, strict=True))
    pre = jnp.stack(streams)
    values = {
        "resid_pre": lambda: pre,
        "resid_mid": lambda: pre + attn,
        "resid_post": lambda: jnp.concatenate([pre[1:], final[None]]),
        "resid_final": lambda: model.ln_final.apply(final),
        "pattern": lambda: jnp.stack(patterns or []),
        "z": lambda: z,
        "attn_out": lambda: attn,
        "mlp_out": lambda: mlp,
    }
    return model.unembed(final), {name: values[name]() for name in names}
