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
from jaxablate._prompts import Prompts
from jaxablate.models.config import ModelConfig
from jaxablate.models.inputs import Masks as Masks
from jaxablate.models.transformer import Transformer

Kind = Literal["head", "attn", "mlp"]


@dataclass(frozen=True)
class Component:
    """One maskable part of a model.

    Attributes:
        kind: ``"head"`` (one attention head), ``"attn"`` or ``"mlp"`` (a whole block).
        layer: Its layer.
        head: The head index for ``kind == "head"``, else ``None``.
        position: ``None``: the component at every position. Else a position spec (an int,
            negative ones counted back from each prompt's end; ``"last"``; or a named position
            of :class:`~jaxablate.Prompts`): the component's output is masked there alone, so
            "head 9.6 at the END token" is one player.
    """

    kind: Kind
    layer: int
    head: int | None = None
    position: int | str | None = None

    @property
    def name(self) -> str:
        """``L{layer}H{head}``, ``L{layer}.attn`` or ``L{layer}.mlp``, plus ``@{position}`` for a
        position-level component (``L9H6@last``)."""
        base = f"L{self.layer}H{self.head}" if self.kind == "head" else f"L{self.layer}.{self.kind}"
        return base if self.position is None else f"{base}@{self.position}"


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
            raise ValueError(
                f"can only add ja.Components to Components (ja.heads / ja.blocks), got {other!r}"
            )
        if other.config != self.config:
            raise ValueError("cannot add Components of models with different configs")
        return Components(self.config, self.items + other.items)

    def __repr__(self) -> str:
        shown = ", ".join(self.names[:8]) + (", ..." if len(self) > 8 else "")
        return f"Components(n={len(self)}: {shown})"

    @property
    def position_specs(self) -> tuple[int | str, ...]:
        """Distinct positions of the position-level components, in order of appearance."""
        out: list[int | str] = []
        for c in self.items:
            if c.position is not None and c.position not in out:
                out.append(c.position)
        return tuple(out)

    @property
    def positional(self) -> bool:
        """Whether some component is masked at chosen positions only."""
        return any(c.position is not None for c in self.items)

    def selectors(self, tokens: object) -> Float[np.ndarray, "n_specs batch seq"]:
        """Where each of :attr:`position_specs` lies: ``float32 [n_specs, batch, seq]``, 1 at
        the chosen position of each example (``tokens``: an int array or Prompts).

        Raises:
            ValueError: a position outside a prompt, or a name the prompts lack.
        """
        ids = np.asarray(tokens.tokens if isinstance(tokens, Prompts) else tokens)
        if ids.ndim != 2:
            raise ValueError(f"tokens must be 2-D [batch, seq], got shape {ids.shape}")
        batch, seq = ids.shape
        prompts = tokens if isinstance(tokens, Prompts) else Prompts(ids, np.full(batch, seq))
        out = np.zeros((len(self.position_specs), batch, seq), np.float32)
        for j, spec in enumerate(self.position_specs):
            try:
                pos = prompts.position(spec)
            except ValueError as err:
                raise ValueError(f"position-level components @{spec}: {err}") from None
            out[j, np.arange(batch), pos] = 1.0
        return out

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
        self,
        rows: Bool[Array, "*n_masks n_players"] | Float[Array, "*n_masks n_players"],
        tokens: object = None,
    ) -> Masks:
        """Turn rows (one value per component; 1 = kept) into :class:`Masks`.

        Components not listed here get mask 1. Rows may be bool or float in ``[0, 1]``
        (continuous masks); a 2-D ``rows`` gives masks with a leading mask axis.

        Args:
            rows: One value per component.
            tokens: The tokens (or Prompts) the masks are for; needed, and only used, when
                some component is position-level (:attr:`positional`): the masks then carry
                ``[batch, seq]`` axes.

        Raises:
            ValueError: the last axis is not ``len(self)`` wide, values fall outside ``[0, 1]``,
                or position-level components without ``tokens``.
        """
        checked = jnp.asarray(check_rows(rows, len(self), binary=False))
        if not self.positional:
            return self.masks_unchecked(checked)
        if tokens is None:
            raise ValueError(
                f"components {[c.name for c in self.items if c.position is not None]} are "
                "masked at chosen positions: pass the tokens (or Prompts) to masks(rows, tokens)"
            )
        return self.masks_unchecked(checked, jnp.asarray(self.selectors(tokens)))

    def masks_unchecked(self, rows: jax.Array, selectors: jax.Array | None = None) -> Masks:
        """:meth:`masks` without validation (for use inside ``jax.jit``); ``selectors`` as
        :meth:`selectors` returns them, for position-level components."""
        cfg = self.config
        lead = tuple(rows.shape[:-1])
        rows = jnp.asarray(rows, jnp.float32)
        out = Masks.ones(cfg, lead)
        heads, attn, mlp = out.heads, out.attn, out.mlp
        for kind in ("head", "attn", "mlp"):
            cols = [i for i, c in enumerate(self.items) if c.kind == kind and c.position is None]
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
        if not self.positional:
            return Masks(heads=heads, attn=attn, mlp=mlp)
        if selectors is None:
            raise ValueError("position-level components need selectors (Components.selectors)")
        return self._positional(Masks(heads=heads, attn=attn, mlp=mlp), rows, selectors)

    def _positional(self, base: Masks, rows: jax.Array, selectors: jax.Array) -> Masks:
        """``base`` spread over ``[batch, seq]``, times each position-level component's value
        at its selected positions (1 elsewhere)."""
        _, batch, seq = selectors.shape
        lead = tuple(rows.shape[:-1])
        heads = jnp.broadcast_to(
            base.heads[..., :, None, None, :],
            (*base.heads.shape[:-1], batch, seq, base.heads.shape[-1]),
        )
        attn = jnp.broadcast_to(base.attn[..., None, None], (*base.attn.shape, batch, seq))
        mlp = jnp.broadcast_to(base.mlp[..., None, None], (*base.mlp.shape, batch, seq))
        specs = self.position_specs
        for i, c in enumerate(self.items):
            if c.position is None:
                continue
            sel = selectors[specs.index(c.position)]  # [batch, seq]
            sel = sel.reshape((1,) * len(lead) + sel.shape)
            value = rows[..., i].reshape(*lead, 1, 1)
            factor = sel * value + (1.0 - sel)
            if c.kind == "head":
                heads = heads.at[..., c.layer, :, :, c.head].multiply(factor)
            elif c.kind == "attn":
                attn = attn.at[..., c.layer, :, :].multiply(factor)
            else:
                mlp = mlp.at[..., c.layer, :, :].multiply(factor)
        return Masks(heads=heads, attn=attn, mlp=mlp, positional=True)


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
    try:
        arr = np.asarray(rows)
    except (TypeError, ValueError) as err:  # ragged lists, objects numpy cannot stack
        raise ValueError(f"rows must be a bool or numeric array [..., {n}]: {err}") from None
    # jnp.issubdtype, unlike np.issubdtype, counts bfloat16 (ml_dtypes) as a float
    kinds = (jnp.bool_, jnp.integer, jnp.floating)
    if not any(jnp.issubdtype(arr.dtype, kind) for kind in kinds):
        raise ValueError(f"rows must be bool or numeric, got dtype {arr.dtype}")
    if arr.ndim < 1 or arr.shape[-1] != n:
        raise ValueError(
            f"rows must have shape [..., {n}] (one column per component), got {arr.shape}"
        )
    if arr.size == 0:
        raise ValueError(f"rows must hold at least one row, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        bad = int((~np.isfinite(arr)).sum())
        raise ValueError(f"rows must be finite, but rows contain NaN or inf ({bad} values)")
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


def _ints(name: str, values: object) -> list[int]:
    """A list of ints (no floats, bools or strings), else ``ValueError`` naming ``name``."""
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise ValueError(f"{name} must be a list of ints, got {values!r}")
    out = list(values)
    bad = [v for v in out if not isinstance(v, int | np.integer) or isinstance(v, bool | np.bool_)]
    if bad:
        raise ValueError(f"{name} must be ints, got {bad[0]!r} in {out!r}")
    return [int(v) for v in out]


def _layers(cfg: ModelConfig, layers: Iterable[int] | None) -> list[int]:
    if layers is None:
        return list(range(cfg.n_layers))
    out = _ints("layers", layers)
    bad = [layer for layer in out if not 0 <= layer < cfg.n_layers]
    if bad:
        raise ValueError(f"layers {bad} out of range: the model has layers 0..{cfg.n_layers - 1}")
    if not out:
        raise ValueError("layers must not be empty")
    return out


Positions = int | str | Sequence[int | str] | None


def _positions(positions: Positions) -> list[int | str | None]:
    """``None`` (every position) or a list of position specs, checked."""
    if positions is None:
        return [None]
    single = isinstance(positions, int | str | np.integer) or not isinstance(positions, Iterable)
    specs = [positions] if single else list(positions)  # pyright: ignore[reportArgumentType]
    if not specs:
        raise ValueError("positions must not be empty (None means every position)")
    out: list[int | str | None] = []
    for p in specs:
        if isinstance(p, str) and p and "@" not in p:
            out.append(p)
        elif isinstance(p, int | np.integer) and not isinstance(p, bool | np.bool_):
            out.append(int(p))
        else:
            raise ValueError(
                f"a position must be an int, 'last' or a position name (see ja.Prompts), got {p!r}"
            )
    return out


def heads(
    cfg: ModelConfig,
    layers: Sequence[int] | None = None,
    *,
    heads: Sequence[int] | None = None,
    positions: Positions = None,
) -> Components:
    """Attention heads of ``layers`` (all by default), layer-major.

    Args:
        cfg: The model's config.
        layers: Which layers (default: all).
        heads: Which head indices within each layer (default: all).
        positions: ``None``: each head at every position. A position spec or a list of them
            (ints, negative ones counted back from each prompt's end; ``"last"``; names of
            :attr:`jaxablate.Prompts.positions`): one position-level component per head and
            position (``L9H6@last``), masked there alone.
    """
    check_config(cfg)
    if heads is None:
        chosen = list(range(cfg.n_heads))
    else:
        chosen = _ints("heads", heads)
        bad = [h for h in chosen if not 0 <= h < cfg.n_heads]
        if bad or not chosen:
            raise ValueError(
                f"heads {chosen} invalid: need a non-empty list in 0..{cfg.n_heads - 1}"
            )
    specs = _positions(positions)
    return Components(
        cfg,
        tuple(
            Component("head", layer, h, p)
            for layer in _layers(cfg, layers)
            for h in chosen
            for p in specs
        ),
    )


def blocks(
    cfg: ModelConfig,
    kind: Literal["attn", "mlp"],
    layers: Sequence[int] | None = None,
    *,
    positions: Positions = None,
) -> Components:
    """Whole attention or MLP blocks of ``layers`` (all layers by default); ``positions`` as in
    :func:`heads`."""
    check_config(cfg)
    if kind not in ("attn", "mlp"):
        raise ValueError(f"blocks kind must be 'attn' or 'mlp', got {kind!r}")
    if kind == "mlp" and cfg.attn_only:
        raise ValueError("this model is attention-only: it has no MLP blocks to mask")
    specs = _positions(positions)
    return Components(
        cfg, tuple(Component(kind, layer, None, p) for layer in _layers(cfg, layers) for p in specs)
    )


def check_config(cfg: object) -> ModelConfig:
    """``cfg`` if it is a :class:`ModelConfig`, else ``ValueError`` (a model, ``None``, ...)."""
    if not isinstance(cfg, ModelConfig):
        hint = " (pass model.config, not the model)" if isinstance(cfg, Transformer) else ""
        raise ValueError(
            f"cfg must be a ja.ModelConfig (model.config), got {type(cfg).__name__}{hint}"
        )
    return cfg


def check_model(model: object, name: str = "model") -> Transformer:
    """``model`` if it is a :class:`~jaxablate.Transformer`, else ``ValueError`` naming ``name``."""
    if not isinstance(model, Transformer):
        raise ValueError(
            f"{name} must be a ja.Transformer (ja.from_hf, ja.load_model, ja.load_pretrained or "
            f"ja.Transformer(cfg, rngs=...)), got {type(model).__name__}"
        )
    return model


def check_components(cfg: ModelConfig, comps: object, *, where: str | None = None) -> "Components":
    """``comps`` if it is a :class:`Components` built for ``cfg``, else ``ValueError``.

    Args:
        cfg: The model's config.
        comps: What was given.
        where: The caller's name when it does not support position-level components.
    """
    if not isinstance(comps, Components):
        raise ValueError(f"comps must be ja.Components (ja.heads / ja.blocks), got {comps!r}")
    if comps.config != cfg:
        raise ValueError("comps were built for a different ModelConfig than the model's")
    if where is not None and comps.positional:
        raise ValueError(
            f"{where} does not support position-level components "
            f"({[c.name for c in comps if c.position is not None]}); ja.evaluate, ja.sweep and "
            "ja.Game do"
        )
    return comps
