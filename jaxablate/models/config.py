"""Model configuration: a frozen, keyword-only, validated dataclass."""

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, get_args

Activation = Literal["gelu_new", "gelu", "relu", "silu"]
DType = Literal["float32", "bfloat16", "float16"]


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Shape and behaviour of a GPT-2-family transformer.

    Attributes:
        n_layers: Number of transformer blocks.
        n_heads: Attention heads per block.
        d_model: Width of the residual stream.
        d_head: Width of one head's query, key, value and output ``z``.
        d_mlp: Hidden width of the MLP; ignored (and may be 0) when ``attn_only``.
        vocab_size: Number of token ids; tokens must lie in ``[0, vocab_size)``.
        n_ctx: Longest sequence the learned positional embedding covers.
        attn_only: Blocks without MLPs (toy models).
        act_fn: MLP nonlinearity. ``gelu_new`` is GPT-2's tanh approximation.
        layer_norm_eps: Epsilon inside every LayerNorm.
        tie_embeddings: Unembed with the transpose of the token embedding (GPT-2's default).
        dtype: Dtype of weights and activations. Masks and metrics stay float32.
        init_std: Standard deviation of the normal initialisation of weight matrices.
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

    def __post_init__(self) -> None:
        for name in ("n_layers", "n_heads", "d_model", "d_head", "vocab_size", "n_ctx"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}")
        if not isinstance(self.d_mlp, int) or isinstance(self.d_mlp, bool) or self.d_mlp < 0:
            raise ValueError(f"ModelConfig.d_mlp must be a non-negative int, got {self.d_mlp!r}")
        if not self.attn_only and self.d_mlp == 0:
            raise ValueError("ModelConfig.d_mlp must be positive unless attn_only=True")
        if self.act_fn not in get_args(Activation):
            raise ValueError(
                f"ModelConfig.act_fn must be one of {get_args(Activation)}, got {self.act_fn!r}"
            )
        if self.dtype not in get_args(DType):
            raise ValueError(
                f"ModelConfig.dtype must be one of {get_args(DType)}, got {self.dtype!r}"
            )
        if not self.layer_norm_eps > 0:
            raise ValueError(f"ModelConfig.layer_norm_eps must be > 0, got {self.layer_norm_eps!r}")
        if not self.init_std > 0:
            raise ValueError(f"ModelConfig.init_std must be > 0, got {self.init_std!r}")

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form, for manifests and checkpoints."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"unknown ModelConfig fields {unknown}; known fields are {sorted(names)}"
            )
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
