"""Which parts of a model are players (:class:`Components`) and their mask values (:class:`Masks`).

Component order is fixed when a :class:`Components` is built: ``heads(cfg)`` is layer-major
(``layer * n_heads + head``), and ``a + b`` lists ``a``'s components first. Column ``i`` of a
``rows`` array refers to component ``i``; ``True`` (or 1.0) means kept.
"""

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from jaxablate._checks import is_tracer
from jaxablate.models.config import ModelConfig
from jaxablate.models.inputs import Masks as Masks

Kind = Literal["head", "attn", "mlp"]


@dataclass(frozen=True)
class Component:
    """One maskable part of a model.

    Attributes:
        kind: ``"head"`` (one attention head), ``"attn"`` or ``"mlp"`` (a whole block).
        layer: Its layer.
        head: The head index for ``kind == "head"``, else ``None``.
    """

    kind: Kind
    layer: int
    head: int | None = None

    @property
    def name(self) -> str:
        """``L{layer}H{head}``, ``L{layer}.attn`` or ``L{layer}.mlp``."""
        if self.kind == "head":
            return f"L{self.layer}H{self.head}"
        return f"L{self.layer}.{self.kind}"


@dataclass(frozen=True)
class Components:
    """An ordered set of components of one model shape: the players of an ablation study.

    Build it with :func:`heads` and :func:`blocks`, combine with ``+``.
    """

    config: ModelConfig
    items: tuple[Component, ...]

    def __post_init__(self) -> None:
        if not self.items:
            raise ValueError("Components must hold at least one component")
        names = [c.name for c in self.items]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"Components lists {dupes} more than once")

    @property
    def names(self) -> list[str]:
        """Component names in column order."""
        return [c.name for c in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Component]:
        return iter(self.items)

    def __getitem__(self, i: int) -> Component:
        return self.items[i]

    def __add__(self, other: "Components") -> "Components":
        if not isinstance(other, Components):
            return NotImplemented
        if other.config != self.config:
            raise ValueError("cannot add Components of models with different configs")
        return Components(self.config, self.items + other.items)

    def __repr__(self) -> str:
        shown = ", ".join(self.names[:8]) + (", ..." if len(self) > 8 else "")
        return f"Components(n={len(self)}: {shown})"

    @property
    def layers(self) -> tuple[int, ...]:
        """Sorted distinct layers that hold at least one component."""
        return tuple(sorted({c.layer for c in self.items}))

    def index(self, name: str) -> int:
        """Column of the component called ``name``."""
        try:
            return self.names.index(name)
        except ValueError:
            raise ValueError(f"no component named {name!r}; have {self.names}") from None

    def masks(
        self, rows: Bool[Array, "*n_masks n_players"] | Float[Array, "*n_masks n_players"]
    ) -> Masks:
        """Turn rows (one value per component; 1 = kept) into :class:`Masks`.

        Components not listed here get mask 1. Rows may be bool or float in ``[0, 1]``
        (continuous masks); a 2-D ``rows`` gives masks with a leading mask axis.

        Raises:
            ValueError: the last axis is not ``len(self)`` wide, or values fall outside ``[0, 1]``.
        """
        return self.masks_unchecked(jnp.asarray(check_rows(rows, len(self), binary=False)))

    def masks_unchecked(self, rows: jax.Array) -> Masks:
        """:meth:`masks` without validation (for use inside ``jax.jit``)."""
        cfg = self.config
        lead = tuple(rows.shape[:-1])
        rows = jnp.asarray(rows, jnp.float32)
        out = Masks.ones(cfg, lead)
        heads, attn, mlp = out.heads, out.attn, out.mlp
        for kind in ("head", "attn", "mlp"):
            cols = [i for i, c in enumerate(self.items) if c.kind == kind]
            if not cols:
                continue
            layer_idx = np.array([self.items[i].layer for i in cols])
            values = rows[..., np.array(cols)]
            if kind == "head":
                head_idx = np.array([self.items[i].head for i in cols])
                heads = heads.at[..., layer_idx, head_idx].set(values)
            elif kind == "attn":
                attn = attn.at[..., layer_idx].set(values)
            else:
                mlp = mlp.at[..., layer_idx].set(values)
        return Masks(heads=heads, attn=attn, mlp=mlp)


def check_rows(rows: object, n: int, *, binary: bool) -> np.ndarray | jax.Array:
    """Validate mask rows of width ``n``; concrete values are checked, tracers only by shape.

    Args:
        rows: bool or numeric array ``[..., n]``.
        n: Expected number of components.
        binary: Require values in ``{0, 1}`` (subset studies) instead of ``[0, 1]``.

    Returns:
        The rows as a float32 array (numpy when the input was concrete).
    """
    if is_tracer(rows):
        assert isinstance(rows, jax.Array)
        if rows.ndim < 1 or rows.shape[-1] != n:
            raise ValueError(
                f"rows must have shape [..., {n}] (one column per component), got {rows.shape}"
            )
        return rows.astype(jnp.float32)
    arr = np.asarray(rows)
    if arr.ndim < 1 or arr.shape[-1] != n:
        raise ValueError(
            f"rows must have shape [..., {n}] (one column per component), got {arr.shape}"
        )
    if arr.size == 0:
        raise ValueError(f"rows must hold at least one row, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"rows must be bool or numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError("rows contain NaN or inf")
    if binary:
        bad = ~np.isin(arr, (0.0, 1.0))
        if bad.any():
            example = float(arr[bad].flat[0])
            raise ValueError(
                f"rows must be binary (bool or 0/1) here, got value {example!r}; "
                "continuous masks go through Components.masks and the model call"
            )
    elif arr.min() < 0 or arr.max() > 1:
        raise ValueError(f"mask values must lie in [0, 1], got range [{arr.min()}, {arr.max()}]")
    return arr.astype(np.float32)


def _layers(cfg: ModelConfig, layers: Iterable[int] | None) -> list[int]:
    if layers is None:
        return list(range(cfg.n_layers))
    out = [int(layer) for layer in layers]
    bad = [layer for layer in out if not 0 <= layer < cfg.n_layers]
    if bad:
        raise ValueError(f"layers {bad} out of range: the model has layers 0..{cfg.n_layers - 1}")
    if not out:
        raise ValueError("layers must not be empty")
    return out


def heads(
    cfg: ModelConfig, layers: Sequence[int] | None = None, *, heads: Sequence[int] | None = None
) -> Components:
    """Attention heads of ``layers`` (all by default), layer-major.

    Args:
        cfg: The model's config.
        layers: Which layers (default: all).
        heads: Which head indices within each layer (default: all).
    """
    if heads is None:
        chosen = list(range(cfg.n_heads))
    else:
        chosen = [int(h) for h in heads]
        bad = [h for h in chosen if not 0 <= h < cfg.n_heads]
        if bad or not chosen:
            raise ValueError(
                f"heads {chosen} invalid: need a non-empty list in 0..{cfg.n_heads - 1}"
            )
    return Components(
        cfg,
        tuple(Component("head", layer, h) for layer in _layers(cfg, layers) for h in chosen),
    )


def blocks(
    cfg: ModelConfig, kind: Literal["attn", "mlp"], layers: Sequence[int] | None = None
) -> Components:
    """Whole attention or MLP blocks of ``layers`` (all layers by default)."""
    if kind not in ("attn", "mlp"):
        raise ValueError(f"blocks kind must be 'attn' or 'mlp', got {kind!r}")
    if kind == "mlp" and cfg.attn_only:
        raise ValueError("this model is attention-only: it has no MLP blocks to mask")
    return Components(cfg, tuple(Component(kind, layer) for layer in _layers(cfg, layers)))


def check_components(cfg: ModelConfig, comps: object) -> "Components":
    """``comps`` if it is a :class:`Components` built for ``cfg``, else ``ValueError``."""
    if not isinstance(comps, Components):
        raise ValueError(f"comps must be ja.Components (ja.heads / ja.blocks), got {comps!r}")
    if comps.config != cfg:
        raise ValueError("comps were built for a different ModelConfig than the model's")
    return comps
