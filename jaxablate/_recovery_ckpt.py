"""Checkpoints of :func:`jaxablate.recover`: orbax storage plus a configuration fingerprint.

A checkpoint directory holds ``recover_config.json`` (what the run is: hashes of the model,
rows, tokens, the optimizer's behaviour, ...) and orbax step directories ``<step>/`` with the
training state of every run, the step and the curves so far. A directory written for another
configuration is refused with the list of fields that differ.
"""

import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from jaxablate._files import atomic_write_text
from jaxablate._fingerprint import field_diff, hash_arrays

CONFIG_FILE = "recover_config.json"
FORMAT = "jaxablate.recover/1"


def array_hash(*arrays: Any) -> str:
    """sha256 over the dtypes, shapes and bytes of ``arrays`` (any pytrees of arrays)."""
    leaves = [
        jax.random.key_data(leaf)
        if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)
        else leaf
        for leaf in jax.tree.leaves(arrays)
    ]
    return hash_arrays([(str(i), leaf) for i, leaf in enumerate(leaves)])[:32]


def optimizer_fingerprint(tx: optax.GradientTransformation) -> str:
    """A fingerprint of what ``tx`` does: its updates on a fixed probe problem.

    ``repr(tx)`` holds function addresses that change between processes, so the optimizer is
    identified by behaviour instead: three updates of a small fixed parameter pytree, rounded to
    7 significant digits (learning rate, betas, weight decay and schedules all show up).
    """
    params = {"a": jnp.linspace(-1.0, 1.0, 5, dtype=jnp.float32), "b": jnp.full((2,), 0.5)}
    try:
        state = tx.init(params)
        text = [str(jax.tree.structure(state))]
        for i in range(3):
            grads = jax.tree.map(lambda x, i=i: jnp.sin(x * (i + 1) * 1.7) + 0.1, params)
            updates, state = tx.update(grads, state, params)
            params = optax.apply_updates(params, updates)
            text += [f"{float(v):.7g}" for v in jax.tree.leaves(updates) for v in np.ravel(v)]
    except Exception as err:  # an optimizer that needs extra update arguments
        return f"unprobed:{type(tx).__name__}:{type(err).__name__}"
    return hashlib.sha256("|".join(text).encode()).hexdigest()[:32]


def check_directory(directory: str, fingerprint: dict[str, Any]) -> None:
    """Create ``directory`` for this configuration, or check that it was made for it.

    Args:
        directory: The checkpoint directory (created when missing).
        fingerprint: What this call records (see :func:`fingerprint_fields`).

    Raises:
        ValueError: the directory holds a checkpoint of a different configuration, or files
            that are not a recover checkpoint.
    """
    path = os.path.join(directory, CONFIG_FILE)
    if os.path.exists(path):
        with open(path) as f:
            stored = json.load(f)
        diff = field_diff(stored, fingerprint, stored_as="checkpoint", current_as="this call")
        if diff:
            fields = [line.partition(":")[0] for line in diff]  # field names hold no colon
            raise ValueError(
                f"checkpoint_dir {directory!r} holds a recover run of a different configuration "
                f"(differing fields: {', '.join(fields)}). {'; '.join(diff)}. Use a new "
                "directory, or call recover with the original arguments to resume."
            )
        return
    if os.path.isdir(directory) and os.listdir(directory):
        raise ValueError(
            f"checkpoint_dir {directory!r} is not empty and holds no {CONFIG_FILE}: it is not a "
            "recover checkpoint directory; pass an empty or new directory"
        )
    os.makedirs(directory, exist_ok=True)
    atomic_write_text(path, json.dumps(fingerprint, indent=1, sort_keys=True))


class Store:
    """Orbax step checkpoints of the flattened training state, the step, the key and curves."""

    def __init__(self, directory: str):
        options = ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

    def latest(self) -> int | None:
        """The newest complete step, or ``None``."""
        return self.manager.latest_step()

    def save(
        self, step: int, leaves: Sequence[jax.Array], key: jax.Array, curves: np.ndarray
    ) -> None:
        """Write the checkpoint of ``step`` (synchronously; atomic on completion)."""
        item = {
            "state": {f"{i:05d}": leaf for i, leaf in enumerate(leaves)},
            "step": np.asarray(step, np.int64),
            "key": np.asarray(key),
            "curves": np.asarray(curves),
        }
        self.manager.save(step, args=ocp.args.StandardSave(item))
        self.manager.wait_until_finished()

    def restore(
        self, step: int, like: Sequence[jax.Array], key: jax.Array, curves: np.ndarray
    ) -> tuple[list[jax.Array], jax.Array, np.ndarray]:
        """Read the checkpoint of ``step`` into arrays shaped like ``like``, ``key``, ``curves``."""

        def abstract(x: Any) -> jax.ShapeDtypeStruct:
            return jax.ShapeDtypeStruct(np.shape(x), x.dtype)

        target = {
            "state": {f"{i:05d}": abstract(leaf) for i, leaf in enumerate(like)},
            "step": abstract(np.asarray(step, np.int64)),
            "key": abstract(np.asarray(key)),
            "curves": abstract(curves),
        }
        out = self.manager.restore(step, args=ocp.args.StandardRestore(target))
        if int(out["step"]) != step:
            raise ValueError(f"checkpoint of step {step} records step {int(out['step'])}")
        leaves = [jnp.asarray(out["state"][f"{i:05d}"]) for i in range(len(like))]
        return leaves, jnp.asarray(out["key"]), np.asarray(out["curves"])

    def close(self) -> None:
        """Release the manager."""
        self.manager.close()


def fingerprint_fields(**fields: Any) -> dict[str, Any]:
    """The JSON-able fingerprint (adds the format tag)."""
    return {"format": FORMAT, **fields}
