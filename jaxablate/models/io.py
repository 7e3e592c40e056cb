"""Save and load jaxablate models: ``config.json`` plus ``model.safetensors`` (numpy, no torch).

The directory layout is our own (``"format": "jaxablate"`` in the config) and distinct from a
Hugging Face checkpoint; :func:`load_model` reads both, handing HF directories to ``from_hf``.
"""

import json
import os
from pathlib import Path
from typing import get_args

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxablate._checks import one_of
from jaxablate._files import atomic_write, atomic_write_text
from jaxablate.models._hf_load import check_finite, read_json_object
from jaxablate.models.config import DType, ModelConfig
from jaxablate.models.transformer import Transformer

FORMAT = "jaxablate"


def _path_name(path: tuple) -> str:
    """``attn.W_Q`` for the pytree path of a parameter (the Variable's ``value`` dropped)."""
    return ".".join(str(p.key) for p in path if isinstance(p, jax.tree_util.DictKey))


def model_arrays(model: Transformer) -> dict[str, np.ndarray]:
    """Every parameter of ``model`` as ``{"attn.W_Q": array, ...}`` (numpy)."""
    state = nnx.state(model, nnx.Param)
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    return {_path_name(path): np.asarray(leaf) for path, leaf in flat}


def save_model(model: Transformer, directory: str | os.PathLike) -> Path:
    """Write ``model`` to ``directory`` (created if needed); files are replaced atomically."""
    from safetensors.numpy import save

    if not isinstance(model, Transformer):
        raise ValueError(f"model must be a ja.Transformer, got {type(model).__name__}")
    root = _path(directory)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.ascontiguousarray(v) for k, v in model_arrays(model).items()}
    meta = {"format": FORMAT, "config": model.config.to_dict()}
    atomic_write(root / "model.safetensors", lambda f: f.write(save(arrays)))
    atomic_write_text(root / "config.json", json.dumps(meta, indent=2))
    return root


def load_model(directory: str | os.PathLike, *, dtype: str | None = None) -> Transformer:
    """Load a model saved by :func:`save_model`, or a local Hugging Face directory.

    Raises:
        ValueError: the directory is missing, or missing files; a damaged ``config.json`` or
            ``model.safetensors`` (named, with what is wrong); tensors that do not match the
            config, or hold NaN or inf (the tensor is named).
    """
    root = _path(directory)
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a directory"
        raise ValueError(f"{root} {what}: load_model needs a saved model directory")
    config_file = root / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{root} holds no config.json: not a saved model directory")
    meta = read_json_object(config_file)
    if meta.get("format") != FORMAT:
        from jaxablate.models.hf import from_hf

        return from_hf(root, dtype=dtype or "float32")
    if not isinstance(meta.get("config"), dict):
        raise ValueError(
            f"{config_file} has no 'config' object (a saved model's config.json holds "
            '{"format": "jaxablate", "config": {...}})'
        )
    try:
        cfg = ModelConfig.from_dict(meta["config"])
    except ValueError as err:
        raise ValueError(f"{config_file}: {err}") from None
    if dtype is not None:
        cfg = cfg.replace(dtype=one_of("load_model dtype", dtype, get_args(DType)))
    arrays = _read_weights(root / "model.safetensors")
    model = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
    expected = model_arrays_shapes(model)
    missing = sorted(set(expected) - set(arrays))
    unexpected = sorted(set(arrays) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{root}: tensors do not match the config: missing {missing}, unexpected {unexpected}"
        )
    state = nnx.state(model, nnx.Param)
    flat, treedef = jax.tree_util.tree_flatten_with_path(state)
    leaves = []
    for path, leaf in flat:
        name = _path_name(path)
        value = arrays[name]
        if tuple(value.shape) != tuple(leaf.shape):
            raise ValueError(
                f"{root}: tensor {name} has shape {value.shape}, expected {leaf.shape}"
            )
        check_finite(str(root / "model.safetensors"), name, value)
        leaves.append(jnp.asarray(value, jnp.dtype(cfg.dtype)))
    nnx.update(model, jax.tree_util.tree_unflatten(treedef, leaves))
    return model


def _path(directory: object) -> Path:
    """``directory`` as a :class:`Path`, else ``ValueError``."""
    if not isinstance(directory, str | os.PathLike):
        raise ValueError(
            f"directory must be a path (str or os.PathLike), got {type(directory).__name__}"
        )
    return Path(directory)


def _read_weights(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a saved model's safetensors file, else ``ValueError`` naming it."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    if not path.is_file():
        raise ValueError(f"{path} is missing: a saved model directory holds model.safetensors")
    try:
        return load_file(str(path))
    except SafetensorError as err:
        raise ValueError(f"{path} is not a safetensors file ({err}); the file is damaged") from None


def model_arrays_shapes(model: Transformer) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes (works on abstract models from ``nnx.eval_shape``)."""
    state = nnx.state(model, nnx.Param)
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    return {_path_name(path): tuple(leaf.shape) for path, leaf in flat}
