"""jaxablate: ablation studies of transformers at scale, in JAX.

Masks are model inputs, so ``jax.vmap`` evaluates thousands of component subsets in one
compiled program; the resulting tables decompose exactly into interaction terms.
"""

from jaxablate import ablation as ablation
from jaxablate import interactions as interactions
from jaxablate import metrics as metrics
from jaxablate import subsets as subsets
from jaxablate._attribution import attribution as attribution
from jaxablate._evaluate import evaluate as evaluate
from jaxablate._evaluate import evaluate_per_example as evaluate_per_example
from jaxablate._sweep import SweepStatus as SweepStatus
from jaxablate._sweep import load_sweep as load_sweep
from jaxablate._sweep import sweep as sweep
from jaxablate._sweep import sweep_chunks as sweep_chunks
from jaxablate._sweep import sweep_status as sweep_status
from jaxablate.components import Component as Component
from jaxablate.components import Components as Components
from jaxablate.components import blocks as blocks
from jaxablate.components import heads as heads
from jaxablate.learned import LearnedMasks as LearnedMasks
from jaxablate.learned import learn_masks as learn_masks
from jaxablate.models.config import ModelConfig as ModelConfig
from jaxablate.models.hf import from_hf as from_hf
from jaxablate.models.inputs import Ablation as Ablation
from jaxablate.models.inputs import Masks as Masks
from jaxablate.models.io import load_model as load_model
from jaxablate.models.io import save_model as save_model
from jaxablate.models.pretrained import list_pretrained as list_pretrained
from jaxablate.models.pretrained import load_pretrained as load_pretrained
from jaxablate.models.transformer import Transformer as Transformer
from jaxablate.recovery import RecoveryResult as RecoveryResult
from jaxablate.recovery import recover as recover

__version__ = "0.1.0"
