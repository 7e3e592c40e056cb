"""What a removed component is replaced by: zero, mean, resampled or learned activations.

An :class:`Ablation` is a pytree of replacement arrays, one per kind of maskable output:

- ``z``: per-head outputs ``[layer, b, s, head, d_head]``,
- ``attn`` / ``mlp``: whole block outputs ``[layer, b, s, d_model]``,

where ``b`` is 1 (shared by every example) or the batch size, and ``s`` is 1 (shared by every
position), the sequence length, or longer for per-position means (sliced to the sequence). A
masked component's output ``c`` becomes ``m * c + (1 - m) * r``. Mean and resample replacements
come from the *clean* (unablated) model's activations.
"""

from jaxablate._replacements import mean as mean
from jaxablate._replacements import resample as resample
from jaxablate.models.inputs import Ablation as Ablation
from jaxablate.models.inputs import zero as zero
from jaxablate.optimal import optimal_ablation as optimal

__all__ = ["Ablation", "mean", "optimal", "resample", "zero"]
