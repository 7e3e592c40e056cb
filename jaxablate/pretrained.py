"""Toy models shipped with the package: ``model, task = load_pretrained("induction-2l")``.

Weights live in ``jaxablate/models/pretrained_data/<name>/`` (``config.json`` and
``model.safetensors`` written by :func:`jaxablate.save_model`, plus ``metrics.json`` with the
training recipe and the metrics measured right after training). Every model is reproducible
with a fixed seed::

    python scripts/train_toy.py induction-2l --out jaxablate/models/pretrained_data/induction-2l

Retraining reproduces the weights bit for bit on the same machine and jax version only: over
thousands of steps, last-bit differences between CPUs grow into visibly different weights
(metrics of the same quality, not the same digits; see ``tests/test_pretrained.py``).

The zoo:

- ``induction-2l``: attention-only, 2 layers x 4 heads, trained on repeated random segments of
  random length with per-head dropout (in half of the examples one random head is
  zero-ablated), so heads back each other up: single heads look nearly dispensable, some pairs
  do not.
- ``modadd-1l``: one layer (4 heads and an MLP) trained on ``a + b mod 23``.
"""

import functools
import importlib.resources
import inspect
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Int, Key

from jaxablate._checks import check_key, non_negative_int, one_of, positive_int
from jaxablate.models.config import ModelConfig
from jaxablate.models.io import load_model
from jaxablate.models.transformer import Transformer
from jaxablate.tasks import TASKS, Task

TrainLoss = Literal["lm", "metric"]
HeadDropoutMode = Literal["independent", "one"]

__all__ = [
    "RECIPES",
    "HeadDropoutMode",
    "Recipe",
    "Task",
    "TrainLoss",
    "data_dir",
    "list_pretrained",
    "load_pretrained",
    "shipped_metrics",
    "task_metrics",
]


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """How a shipped toy model is trained (read by ``scripts/train_toy.py``).

    Attributes:
        name: Zoo name.
        description: One sentence for ``list_pretrained`` and reports.
        config: The model's shape.
        task: Key of :data:`jaxablate.tasks.TASKS`.
        task_kwargs: Keyword arguments of that task factory.
        train_loss: ``"lm"`` (next-token loss at every position) or ``"metric"`` (the task's
            headline metric only).
        steps: Optimiser steps.
        batch_size: Sequences per step.
        lr: Peak learning rate (linear warm-up, cosine decay to 10%).
        warmup: Warm-up steps.
        weight_decay: AdamW weight decay.
        head_dropout: Per-head dropout rate (zero ablation during training), drawn per example
            and step from the step's key.
        head_dropout_mode: ``"independent"``: every head is dropped with probability
            ``head_dropout``; ``"one"``: with probability ``head_dropout`` one uniformly chosen
            head is dropped (so single heads get backups, but pairs need not).
        seed: Seeds the initial weights and the data/dropout key stream.
        eval_seed: Key of the fixed evaluation batch recorded in ``metrics.json``.
        eval_batch: Size of that batch.

    Raises:
        ValueError: A field is invalid (the message names it, e.g. ``Recipe.task``), the task
            factory rejects ``task_kwargs``, or the task does not fit ``config`` (its tokens
            must lie below ``config.vocab_size``, its sequences within ``config.n_ctx``).
    """

    name: str
    description: str
    config: ModelConfig
    task: str
    task_kwargs: dict[str, Any] = field(default_factory=dict)
    train_loss: TrainLoss = "lm"
    steps: int
    batch_size: int
    lr: float
    warmup: int = 200
    weight_decay: float = 0.01
    head_dropout: float = 0.0
    head_dropout_mode: HeadDropoutMode = "independent"
    seed: int = 0
    eval_seed: int = 12345
    eval_batch: int = 512

    def __post_init__(self) -> None:
        try:
            _check_fields(self)
            _check_task_fits(self, _task_of(self))
        except ValueError as err:
            raise ValueError(f"recipe {self.name!r}: {err}") from None

    def make_task(self) -> Task:
        """The task this model was trained on."""
        return TASKS[self.task](**self.task_kwargs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (stored in ``metrics.json``)."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "config"}
        out["config"] = self.config.to_dict()
        return out


def _real(name: str, value: object, *, low: float, high: float, what: str) -> float:
    """``value`` as a finite float in ``[low, high)``, else ``ValueError`` naming ``name``.

    Args:
        name: The field, for the message.
        value: The caller's value.
        low: Smallest value allowed.
        high: Values from here up are rejected.
        what: The allowed range in words, e.g. ``"a number in [0, 1)"``.
    """
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or not low <= value < high
    ):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return float(value)


def _check_fields(recipe: Recipe) -> None:
    """Type and range of every field of ``recipe`` (``ValueError`` naming the first bad one)."""
    for name in ("name", "description"):
        value = getattr(recipe, name)
        if not isinstance(value, str) or not value:
            raise ValueError(f"Recipe.{name} must be a non-empty str, got {value!r}")
    if not isinstance(recipe.config, ModelConfig):
        raise ValueError(f"Recipe.config must be a ModelConfig, got {type(recipe.config).__name__}")
    one_of("Recipe.task", recipe.task, tuple(TASKS))
    if not isinstance(recipe.task_kwargs, Mapping):
        raise ValueError(f"Recipe.task_kwargs must be a dict, got {recipe.task_kwargs!r}")
    one_of("Recipe.train_loss", recipe.train_loss, get_args(TrainLoss))
    one_of("Recipe.head_dropout_mode", recipe.head_dropout_mode, get_args(HeadDropoutMode))
    for name in ("steps", "batch_size", "eval_batch"):
        positive_int(f"Recipe.{name}", getattr(recipe, name))
    for name in ("warmup", "seed", "eval_seed"):
        non_negative_int(f"Recipe.{name}", getattr(recipe, name))
    _real("Recipe.lr", recipe.lr, low=math.ulp(0.0), high=math.inf, what="a positive number")
    _real("Recipe.weight_decay", recipe.weight_decay, low=0.0, high=math.inf, what="a number >= 0")
    _real("Recipe.head_dropout", recipe.head_dropout, low=0.0, high=1.0, what="in [0, 1)")


def _task_of(recipe: Recipe) -> Task:
    """``recipe``'s task, with a bad ``task_kwargs`` reported as such."""
    factory = TASKS[recipe.task]
    try:
        inspect.signature(factory).bind(**recipe.task_kwargs)
    except TypeError as err:
        raise ValueError(
            f"Recipe.task_kwargs {dict(recipe.task_kwargs)} do not fit {recipe.task!r} ({err})"
        ) from None
    try:
        return factory(**recipe.task_kwargs)
    except ValueError as err:
        raise ValueError(f"Recipe.task_kwargs of {recipe.task!r}: {err}") from None


def _check_task_fits(recipe: Recipe, task: Task) -> None:
    """``ValueError`` unless the model of ``recipe.config`` can read ``task``'s sequences."""
    cfg = recipe.config
    if task.vocab_size > cfg.vocab_size:
        raise ValueError(
            f"task {recipe.task!r} uses {task.vocab_size} token ids, more than "
            f"Recipe.config.vocab_size = {cfg.vocab_size}"
        )
    if task.seq_len > cfg.n_ctx:
        raise ValueError(
            f"task {recipe.task!r} draws sequences of {task.seq_len} tokens, longer than "
            f"Recipe.config.n_ctx = {cfg.n_ctx}"
        )


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            name="induction-2l",
            description=(
                "2-layer attention-only transformer (4 heads per layer) that does induction on "
                "repeated random segments; trained with per-head dropout, so heads back each "
                "other up"
            ),
            config=ModelConfig(
                n_layers=2,
                n_heads=4,
                d_model=64,
                d_head=16,
                vocab_size=48,
                n_ctx=32,
                attn_only=True,
            ),
            task="induction",
            task_kwargs={"vocab_size": 48, "min_segment": 6, "max_segment": 12},
            train_loss="lm",
            steps=6000,
            batch_size=64,
            lr=3e-3,
            warmup=200,
            weight_decay=0.3,
            head_dropout=0.5,
            head_dropout_mode="one",
            seed=0,
        ),
        Recipe(
            name="modadd-1l",
            description="1-layer transformer (4 heads and an MLP) that computes a + b mod 23",
            config=ModelConfig(
                n_layers=1,
                n_heads=4,
                d_model=64,
                d_head=16,
                d_mlp=256,
                vocab_size=24,
                n_ctx=4,
            ),
            task="modular_addition",
            task_kwargs={"p": 23},
            train_loss="metric",
            steps=3000,
            batch_size=256,
            lr=3e-3,
            warmup=200,
            weight_decay=0.5,
            head_dropout=0.0,
            seed=0,
        ),
    )
}
"""Training recipes of the shipped models, by name."""


def data_dir(name: str) -> Path:
    """Directory of the shipped model ``name`` inside the installed package."""
    _check_name(name)
    root = importlib.resources.files("jaxablate") / "models" / "pretrained_data" / name
    return Path(str(root))


def _check_name(name: object) -> str:
    if name not in RECIPES:
        raise ValueError(
            f"unknown pretrained model {name!r}; available: {', '.join(sorted(RECIPES))}"
        )
    return name  # type: ignore[return-value]


def list_pretrained() -> list[str]:
    """Names of the shipped toy models (those whose weights are installed)."""
    return sorted(n for n in RECIPES if (data_dir(n) / "model.safetensors").is_file())


def load_pretrained(name: str) -> tuple[Transformer, Task]:
    """A shipped toy model and the task it was trained on; nothing is downloaded.

    Args:
        name: One of :func:`list_pretrained`, e.g. ``"induction-2l"``.

    Returns:
        ``(model, task)``: ``task.batch(key, batch_size)`` draws ``int32 [batch, seq]`` tokens
        and ``task.metric(logits, tokens) -> [batch]`` scores them (see :mod:`jaxablate.tasks`).

    Raises:
        ValueError: ``name`` is unknown (the message lists the available models) or its
            weights are missing from the installation.
    """
    _check_name(name)
    root = data_dir(name)
    if not (root / "model.safetensors").is_file():
        raise ValueError(
            f"the weights of {name!r} are not installed (looked in {root}); reinstall jaxablate "
            f"or train them: python scripts/train_toy.py {name} --out {root}"
        )
    model = load_model(root)
    recipe = RECIPES[name]
    if model.config != recipe.config:
        raise ValueError(f"{root}: config {model.config} does not match the recipe {recipe.config}")
    return model, recipe.make_task()


def shipped_metrics(name: str) -> dict[str, Any]:
    """The ``metrics.json`` stored next to a shipped model (recipe and measured metrics)."""
    _check_name(name)
    return json.loads((data_dir(name) / "metrics.json").read_text())


@functools.partial(jax.jit, static_argnums=(0, 3))
def _task_values(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    tokens: Int[Array, "batch seq"],
    metrics: tuple[tuple[str, Any], ...],
) -> dict[str, jax.Array]:
    logits = nnx.merge(graphdef, state)(tokens)
    return {name: f(logits, tokens).mean() for name, f in metrics}


def task_metrics(
    model: Transformer, task: Task, *, key: Key[Array, ""], batch_size: int = 512
) -> dict[str, float]:
    """Every metric of ``task`` on one batch drawn from ``key``.

    Args:
        model: The model to score.
        task: Draws the batch and holds the metrics.
        key: ``jax.random`` key of the batch (same key, same batch).
        batch_size: Sequences in the batch.

    Returns:
        The mean of every metric over the batch, by name; the headline one under ``"metric"``.
    """
    tokens = task.batch(check_key(key), positive_int("batch_size", batch_size))
    graphdef, state = nnx.split(model)
    out = _task_values(graphdef, state, jnp.asarray(tokens), tuple(task.metrics.items()))
    return {k: float(np.asarray(v)) for k, v in out.items()}
