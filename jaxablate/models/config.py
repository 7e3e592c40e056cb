"""Model configuration: a frozen, keyword-only, validated dataclass.

The defaults describe a GPT-2-family model (learned positions, pre-LayerNorm blocks, multi-head
attention, a two-layer MLP); the other fields switch on what Llama, GPT-NeoX, Qwen and Gemma
models differ by (rotary positions, RMSNorm, grouped-query attention, gated MLPs, parallel
residuals, sandwich norms, sliding windows, softcaps).
"""

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

from jaxablate._checks import one_of, positive_int

Activation = Literal["gelu_new", "gelu", "relu", "silu"]
DType = Literal["float32", "bfloat16", "float16"]
Norm = Literal["layernorm", "rmsnorm"]
Positions = Literal["learned", "rotary"]
RopeScaling = Literal["none", "linear", "llama3"]

#: Rotary knobs and their defaults: with ``positions="learned"`` they must keep these values.
_ROPE_DEFAULTS: dict[str, Any] = {
    "rotary_dim": None,
    "rope_theta": 10000.0,
    "rope_local_theta": None,
    "rope_scaling": "none",
    "rope_factor": 1.0,
    "rope_low_freq_factor": 1.0,
    "rope_high_freq_factor": 4.0,
    "rope_original_context": 8192,
}
#: Knobs read only by Llama-3 rope scaling (they must keep their defaults otherwise).
_LLAMA3_KNOBS = ("rope_low_freq_factor", "rope_high_freq_factor", "rope_original_context")
_BOOLS = ("attn_only", "tie_embeddings", "gated_mlp", "parallel_residual", "qk_norm", "post_norms")


def _positive_float(name: str, value: object, *, optional: bool = False) -> None:
    """Raise ``ValueError`` naming ``ModelConfig.{name}`` unless ``value`` is a finite number > 0
    (or ``None`` when ``optional``)."""
    if optional and value is None:
        return
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (number and isinstance(value, int | float) and math.isfinite(value) and value > 0):
        extra = " or None" if optional else ""
        raise ValueError(f"ModelConfig.{name} must be a finite number > 0{extra}, got {value!r}")


def _check_names(fields: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the keys of ``fields`` that are no :class:`ModelConfig` field."""
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(str(k) for k in set(fields) - names)
    if unknown:
        raise ValueError(f"unknown ModelConfig fields {unknown}; known fields are {sorted(names)}")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Shape and behaviour of a decoder-only transformer (GPT-2 by default).

    Attributes:
        n_layers: Number of transformer blocks.
        n_heads: Attention (query) heads per block.
        d_model: Width of the residual stream.
        d_head: Width of one head's query, key, value and output ``z``.
        d_mlp: Hidden width of the MLP; ignored (and may be 0) when ``attn_only``.
        vocab_size: Number of token ids; tokens must lie in ``[0, vocab_size)``.
        n_ctx: Longest sequence: what the learned positional embedding covers, or a rotary
            model's ``max_position_embeddings``.
        attn_only: Blocks without MLPs (toy models).
        act_fn: MLP nonlinearity. ``gelu_new`` is GPT-2's tanh approximation.
        layer_norm_eps: Epsilon inside every norm (LayerNorm or RMSNorm, qk norms included).
        tie_embeddings: Unembed with the transpose of the token embedding (GPT-2's default).
        dtype: Dtype of weights and activations. Norm statistics, softmax, logits, masks and
            metrics stay float32.
        init_std: Standard deviation of the normal initialisation of weight matrices.
        n_kv_heads: Key/value heads; ``None``: ``n_heads`` (multi-head attention). It must
            divide ``n_heads``: groups of ``n_heads // n_kv_heads`` query heads share one
            key/value head (grouped-query attention; 1 is multi-query attention).
        norm: ``"layernorm"`` (weight and bias) or ``"rmsnorm"`` (weight only).
        norm_offset: Every norm multiplies by ``norm_offset + w`` (Gemma: 1.0).
        positions: ``"learned"`` (a ``W_pos`` table) or ``"rotary"`` (RoPE on queries/keys).
        rotary_dim: Rotary only: how many leading dims of each head are rotated (even,
            ``<= d_head``); ``None``: all ``d_head``.
        rope_theta: Rotary base frequency.
        rope_local_theta: Base frequency of the sliding-window layers (Gemma 3), which use no
            rope scaling; ``None``: ``rope_theta`` (and the scaling) everywhere.
        rope_scaling: ``"none"``, ``"linear"`` (frequencies divided by ``rope_factor``) or
            ``"llama3"`` (Llama 3.1's frequency-dependent scaling).
        rope_factor: Scaling factor of linear and Llama-3 scaling.
        rope_low_freq_factor: Llama-3 scaling's ``low_freq_factor``.
        rope_high_freq_factor: Llama-3 scaling's ``high_freq_factor``.
        rope_original_context: Llama-3 scaling's ``original_max_position_embeddings``.
        gated_mlp: ``MLP(x) = (act(x W_gate + b_gate) * (x W_in + b_in)) W_out + b_out``.
        parallel_residual: GPT-NeoX blocks: ``resid + attn(ln1(resid)) + mlp(ln2(resid))``.
        qk_norm: RMS-normalise each head's query and key over ``d_head`` (weights
            ``attn.q_norm.w`` / ``attn.k_norm.w``, with ``norm_offset``) before rotary.
        post_norms: Gemma 2/3 sandwich norms: ``ln1_post`` on the attention block's output and
            ``ln2_post`` on the MLP's, before each joins the residual stream.
        sliding_window: A query at position ``q`` attends keys ``k`` with
            ``q - sliding_window < k <= q`` (on the layers ``sliding_layers`` picks).
        sliding_layers: One flag per layer: whether it uses the window; ``None``: every layer
            (when ``sliding_window`` is set).
        attn_softcap: Attention scores become ``cap * tanh(scores / cap)`` (after scaling,
            before the causal mask; Gemma 2).
        final_softcap: Logits become ``cap * tanh(logits / cap)`` (Gemma 2).
        attn_scale: Multiplier of the attention scores; ``None``: ``1 / sqrt(d_head)``.
        embed_scale: Token embeddings are multiplied by this, in the model dtype (Gemma:
            ``sqrt(d_model)``); ``None``: no scaling.
    """

    n_layers: int
    n_heads: int
    d_model: int
    d_head: int
    d_mlp: int = 0
    vocab_size: int
    n_ctx: int
    attn_only: bool = False
    act_fn: Activation = "gelu_new"
    layer_norm_eps: float = 1e-5
    tie_embeddings: bool = True
    dtype: DType = "float32"
    init_std: float = 0.02
    n_kv_heads: int | None = None
    norm: Norm = "layernorm"
    norm_offset: float = 0.0
    positions: Positions = "learned"
    rotary_dim: int | None = None
    rope_theta: float = 10000.0
    rope_local_theta: float | None = None
    rope_scaling: RopeScaling = "none"
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_context: int = 8192
    gated_mlp: bool = False
    parallel_residual: bool = False
    qk_norm: bool = False
    post_norms: bool = False
    sliding_window: int | None = None
    sliding_layers: tuple[bool, ...] | None = None
    attn_softcap: float | None = None
    final_softcap: float | None = None
    attn_scale: float | None = None
    embed_scale: float | None = None

    def __post_init__(self) -> None:
        self._check_shapes()
        self._check_choices()
        self._check_attention()
        self._check_rope()

    def _check_shapes(self) -> None:
        for name in ("n_layers", "n_heads", "d_model", "d_head", "vocab_size", "n_ctx"):
            positive_int(f"ModelConfig.{name}", getattr(self, name))
        if not isinstance(self.d_mlp, int) or isinstance(self.d_mlp, bool) or self.d_mlp < 0:
            raise ValueError(f"ModelConfig.d_mlp must be a non-negative int, got {self.d_mlp!r}")
        if not self.attn_only and self.d_mlp == 0:
            raise ValueError("ModelConfig.d_mlp must be positive unless attn_only=True")
        for name in _BOOLS:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"ModelConfig.{name} must be a bool, got {getattr(self, name)!r}")
        for name in ("gated_mlp", "parallel_residual"):
            if self.attn_only and getattr(self, name):
                raise ValueError(f"ModelConfig.{name}=True needs an MLP, but attn_only=True")

    def _check_choices(self) -> None:
        one_of("ModelConfig.act_fn", self.act_fn, get_args(Activation))
        one_of("ModelConfig.dtype", self.dtype, get_args(DType))
        one_of("ModelConfig.norm", self.norm, get_args(Norm))
        one_of("ModelConfig.positions", self.positions, get_args(Positions))
        one_of("ModelConfig.rope_scaling", self.rope_scaling, get_args(RopeScaling))
        _positive_float("layer_norm_eps", self.layer_norm_eps)
        _positive_float("init_std", self.init_std)
        offset = self.norm_offset
        if isinstance(offset, bool) or not isinstance(offset, int | float):
            raise ValueError(f"ModelConfig.norm_offset must be a number, got {offset!r}")
        if not math.isfinite(offset):
            raise ValueError(f"ModelConfig.norm_offset must be finite, got {offset!r}")
        for name in ("attn_softcap", "final_softcap", "attn_scale", "embed_scale"):
            _positive_float(name, getattr(self, name), optional=True)

    def _check_attention(self) -> None:
        kv = self.n_kv_heads
        if kv is not None:
            positive_int("ModelConfig.n_kv_heads", kv)
            if self.n_heads % kv:
                raise ValueError(
                    f"ModelConfig.n_kv_heads={kv} must divide n_heads={self.n_heads} "
                    "(each key/value head serves an equal group of query heads)"
                )
        if self.sliding_window is not None:
            positive_int("ModelConfig.sliding_window", self.sliding_window)
        layers = self.sliding_layers
        if layers is None:
            return
        if not isinstance(layers, tuple | list) or not all(isinstance(f, bool) for f in layers):
            raise ValueError(
                f"ModelConfig.sliding_layers must be a tuple of bools or None, got {layers!r}"
            )
        object.__setattr__(self, "sliding_layers", tuple(layers))  # JSON gives lists
        if len(layers) != self.n_layers:
            raise ValueError(
                f"ModelConfig.sliding_layers must have one flag per layer ({self.n_layers}), "
                f"got {len(layers)}"
            )
        if self.sliding_window is None:
            raise ValueError("ModelConfig.sliding_layers is set but sliding_window is None")

    def _check_rope(self) -> None:
        if self.positions == "learned":
            changed = [k for k, v in _ROPE_DEFAULTS.items() if getattr(self, k) != v]
            if changed:
                raise ValueError(
                    f"ModelConfig.{changed[0]} is a rotary knob but positions='learned'; "
                    "set positions='rotary' or leave the rope fields at their defaults"
                )
            return
        r = self.rotary_dim
        if r is not None:
            positive_int("ModelConfig.rotary_dim", r)
            if r % 2 or r > self.d_head:
                raise ValueError(
                    f"ModelConfig.rotary_dim must be even and <= d_head={self.d_head}, got {r}"
                )
        _positive_float("rope_theta", self.rope_theta)
        _positive_float("rope_local_theta", self.rope_local_theta, optional=True)
        if self.rope_local_theta is not None and self.sliding_window is None:
            raise ValueError(
                "ModelConfig.rope_local_theta applies to sliding-window layers, "
                "but sliding_window is None"
            )
        _positive_float("rope_factor", self.rope_factor)
        if self.rope_scaling == "none" and self.rope_factor != 1.0:
            raise ValueError(
                f"ModelConfig.rope_factor={self.rope_factor} needs rope_scaling 'linear' or "
                "'llama3' (it is 'none')"
            )
        if self.rope_scaling != "llama3":
            for name in _LLAMA3_KNOBS:
                if getattr(self, name) != _ROPE_DEFAULTS[name]:
                    raise ValueError(
                        f"ModelConfig.{name} is read only by rope_scaling='llama3', "
                        f"got rope_scaling={self.rope_scaling!r}"
                    )
            return
        _positive_float("rope_low_freq_factor", self.rope_low_freq_factor)
        _positive_float("rope_high_freq_factor", self.rope_high_freq_factor)
        positive_int("ModelConfig.rope_original_context", self.rope_original_context)
        if not self.rope_high_freq_factor > self.rope_low_freq_factor:
            raise ValueError(
                "ModelConfig.rope_high_freq_factor must exceed rope_low_freq_factor, got "
                f"{self.rope_high_freq_factor} <= {self.rope_low_freq_factor}"
            )

    @property
    def kv_heads(self) -> int:
        """Key/value heads per block (``n_kv_heads``, or ``n_heads`` when it is ``None``)."""
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    def is_sliding(self, layer: int) -> bool:
        """Whether ``layer`` attends through the sliding window."""
        if self.sliding_window is None:
            return False
        return self.sliding_layers is None or self.sliding_layers[layer]

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with some fields changed (validated again)."""
        _check_names(changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form, for manifests and checkpoints."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """Inverse of :meth:`to_dict` (also after JSON); unknown or missing keys are an error."""
        if not isinstance(data, dict):
            raise ValueError(
                f"ModelConfig.from_dict needs a dict of fields, got {type(data).__name__}"
            )
        _check_names(data)
        required = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [name for name in required if name not in data]
        if missing:
            raise ValueError(f"ModelConfig is missing required fields {missing}")
        data = dict(data)
        if isinstance(data.get("sliding_layers"), list):
            data["sliding_layers"] = tuple(data["sliding_layers"])
        return cls(**data)

    @classmethod
    def gpt2_small(cls) -> "ModelConfig":
        """The shape of GPT-2 small (124M parameters)."""
        return cls(
            n_layers=12,
            n_heads=12,
            d_model=768,
            d_head=64,
            d_mlp=3072,
            vocab_size=50257,
            n_ctx=1024,
        )
