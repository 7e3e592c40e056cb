"""jaxablate: ablation studies of transformers at scale, in JAX.

Masks are model inputs, so ``jax.vmap`` evaluates thousands of component subsets in one
compiled program; the resulting tables decompose exactly into interaction terms.

Public names are imported on first use (PEP 562 module ``__getattr__``), so ``import jaxablate``
and ``jaxablate --help`` load neither jax nor flax. The imports under ``TYPE_CHECKING`` below are
the one list of public names: type checkers read them, and :func:`__getattr__` reads the same
lines from this file (the "stub" idea of scientific-python's lazy_loader, SPEC 1). Add a public
name by adding one line there.
"""

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from jaxablate import ablation as ablation
    from jaxablate import datasets as datasets
    from jaxablate import estimate as estimate
    from jaxablate import interactions as interactions
    from jaxablate import metrics as metrics
    from jaxablate import subsets as subsets
    from jaxablate._attribution import attribution as attribution
    from jaxablate._evaluate import evaluate as evaluate
    from jaxablate._evaluate import evaluate_per_example as evaluate_per_example
    from jaxablate._prompts import Prompts as Prompts
    from jaxablate._sweep import SweepStatus as SweepStatus
    from jaxablate._sweep import load_sweep as load_sweep
    from jaxablate._sweep import sweep as sweep
    from jaxablate._sweep import sweep_chunks as sweep_chunks
    from jaxablate._sweep import sweep_status as sweep_status
    from jaxablate.components import Component as Component
    from jaxablate.components import Components as Components
    from jaxablate.components import blocks as blocks
    from jaxablate.components import heads as heads
    from jaxablate.export import sweep_frame as sweep_frame
    from jaxablate.games import Estimate as Estimate
    from jaxablate.games import Game as Game
    from jaxablate.learned import LearnedMasks as LearnedMasks
    from jaxablate.learned import learn_masks as learn_masks
    from jaxablate.models.cache import Cache as Cache
    from jaxablate.models.config import ModelConfig as ModelConfig
    from jaxablate.models.hf import from_hf as from_hf
    from jaxablate.models.inputs import Ablation as Ablation
    from jaxablate.models.inputs import Masks as Masks
    from jaxablate.models.io import load_model as load_model
    from jaxablate.models.io import save_model as save_model
    from jaxablate.models.transformer import Transformer as Transformer
    from jaxablate.pretrained import list_pretrained as list_pretrained
    from jaxablate.pretrained import load_pretrained as load_pretrained
    from jaxablate.recovery import RecoveryResult as RecoveryResult
    from jaxablate.recovery import recover as recover
    from jaxablate.text import Tokenizer as Tokenizer
    from jaxablate.text import load_tokenizer as load_tokenizer
    from jaxablate.text import prompts as prompts
    from jaxablate.text import tokenizer_of as tokenizer_of


def _exports() -> dict[str, tuple[str, str]]:
    """``name -> (module, attribute)`` of every import under ``TYPE_CHECKING`` in this file."""
    import ast

    with open(__file__, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    (block,) = [
        node
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
    ]
    return {
        alias.asname or alias.name: (node.module or "", alias.name)
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }


_EXPORTS = _exports()
__all__ = sorted(_EXPORTS)  # pyright: ignore[reportUnsupportedDunderAll]


def __getattr__(name: str) -> Any:
    """Import the public name ``name`` on first use (then it is an ordinary attribute)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    if module == __name__:  # a submodule: from jaxablate import interactions
        value = importlib.import_module(f"{__name__}.{attribute}")
    else:
        value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
