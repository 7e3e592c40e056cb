"""Checkpoints of :func:`jaxablate.recover`: orbax storage plus a configuration fingerprint.

A checkpoint directory holds ``recover_config.json`` (what the run is: hashes of the model,
rows, tokens, the optimizer's behaviour, ...) and orbax step directories ``<step>/`` with the
training state of every run, the step and the curves so far, and a checksum file
(:data:`CHECKSUMS`: the sha256 of every file of the step, of its arrays and of the
configuration). A directory written for another configuration is refused with the list of
fields that differ. A step whose files are damaged (truncated, deleted, bytes changed; or its
save never finished) is reported, removed, and the previous good step resumed instead.
"""

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from jaxablate import _files as files
from jaxablate._fingerprint import (
    field_diff,
    hash_arrays,
    hash_record,
    last_bits_warning,
    reconcile,
    sketch,
)

log = logging.getLogger("jaxablate.recover")

CONFIG_FILE = "recover_config.json"
#: 2: every step holds checksums of its files and arrays and the configuration's fingerprint.
FORMAT = "jaxablate.recover/2"


def array_hash(*arrays: Any) -> str:
    """sha256 over the dtypes, shapes and bytes of ``arrays`` (any pytrees of arrays)."""
    leaves = [
        jax.random.key_data(leaf)
        if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)
        else leaf
        for leaf in jax.tree.leaves(arrays)
    ]
    return hash_arrays([(str(i), leaf) for i, leaf in enumerate(leaves)])[:32]


#: ``(parameter scale, gradient scale)`` of the optimizer's probe problems: unit scales, large
#: parameters (where weight decay shows) and tiny gradients (where Adam's epsilon shows).
PROBES = ((1.0, 1.0), (1e3, 1.0), (1.0, 1e-6))
#: Relative tolerance within which an optimizer's probe updates recomputed on another device
#: (its own float32 rounding, about 1e-6 over the probe) agree: a change of ``b2`` from 0.999
#: to 0.9999, the smallest a probe saw among the usual hyperparameters, moves them by 2e-4.
OPTIMIZER_RTOL = 2e-5


def _probe(
    tx: optax.GradientTransformation, param_scale: float, grad_scale: float
) -> tuple[str, list[jax.Array]]:
    """The state structure of ``tx`` and its three updates of a fixed parameter pytree."""
    params = {
        "a": jnp.linspace(-1.0, 1.0, 5, dtype=jnp.float32) * param_scale,
        "b": jnp.full((2,), 0.5 * param_scale, dtype=jnp.float32),
    }
    state = tx.init(params)
    structure, updates_seen = str(jax.tree.structure(state)), []
    for i in range(3):
        grads = jax.tree.map(
            lambda x, i=i: (jnp.sin(x / param_scale * (i + 1) * 1.7) + 0.1) * grad_scale, params
        )
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        updates_seen += jax.tree.leaves(updates)
    return structure, updates_seen


def optimizer_fields(tx: optax.GradientTransformation) -> dict[str, Any]:
    """What a checkpoint records about ``tx``: its behaviour on fixed probe problems.

    ``repr(tx)`` holds function addresses that change between processes, so the optimizer is
    identified by behaviour instead (learning rate, betas, weight decay and schedules all show
    up in its updates).

    Returns:
        ``{"optimizer": digest, "optimizer_sketch": sketch}``. The digest hashes the state
        structure and three updates of the first of :data:`PROBES`, rounded to 7 significant
        digits (``"unprobed:..."`` for an optimizer that needs extra update arguments). On
        another device those digits can differ, so the sketch
        (:func:`jaxablate._fingerprint.sketch`, tolerance :data:`OPTIMIZER_RTOL`) of the updates
        on all of :data:`PROBES`, and of the state structure (exact), then decides; ``None``
        where the optimizer cannot be probed.
    """
    try:
        structure, updates = _probe(tx, *PROBES[0])
    except Exception as err:  # an optimizer that needs extra update arguments
        return {"optimizer": f"unprobed:{type(tx).__name__}:{type(err).__name__}",
                "optimizer_sketch": None}  # fmt: skip
    text = [structure] + [f"{float(v):.7g}" for u in updates for v in np.ravel(u)]
    digest = hashlib.sha256("|".join(text).encode()).hexdigest()[:32]
    try:
        probed = [updates] + [_probe(tx, *scales)[1] for scales in PROBES[1:]]
    except Exception:  # an optimizer that fails on the other probes: the digest decides
        return {"optimizer": digest, "optimizer_sketch": None}
    state = np.frombuffer(structure.encode(), np.uint8)
    return {
        "optimizer": digest,
        "optimizer_sketch": sketch({"state": state, "updates": probed}, rtol=OPTIMIZER_RTOL),
    }


def _read_config(path: str, directory: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            stored = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(
            f"{path} is unreadable ({type(err).__name__}: {err}), so the checkpoints in "
            f"{directory!r} cannot be matched to a run; restore the file, or delete the "
            "directory to start over"
        ) from None
    if not isinstance(stored, dict) or stored.get("format") != FORMAT:
        found = stored.get("format") if isinstance(stored, dict) else None
        raise ValueError(
            f"{path} is of checkpoint format {found!r}; this jaxablate reads and writes "
            f"{FORMAT!r} (checksummed steps), so it cannot resume it. Use a new checkpoint_dir, "
            "or delete this one to start over"
        )
    return stored


def check_directory(directory: str, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """Create ``directory`` for this configuration, or check that it was made for it.

    Temporary files (of the configuration file, left by a killed run or being written by
    another) do not count; those whose writer is gone are removed.

    Args:
        directory: The checkpoint directory (created when missing).
        fingerprint: What this call records (see :func:`fingerprint_fields`).

    Returns:
        The fingerprint the directory's steps are tied to: the stored one when the directory
        exists (equal to ``fingerprint`` up to last-bit differences of the
        :data:`jaxablate._fingerprint.SKETCHED` fields, which are logged), else ``fingerprint``.

    Raises:
        ValueError: the directory holds a checkpoint of a different configuration or format,
            an unreadable configuration file, or files that are not a recover checkpoint.
    """
    path = os.path.join(directory, CONFIG_FILE)
    if os.path.isdir(directory):
        files.remove_stale_temps(directory)
    if os.path.exists(path):
        stored = _read_config(path, directory)
        current, near = reconcile(stored, fingerprint)
        diff = field_diff(stored, current, stored_as="checkpoint", current_as="this call")
        if diff:
            fields = [line.partition(":")[0] for line in diff]  # field names hold no colon
            raise ValueError(
                f"checkpoint_dir {directory!r} holds a recover run of a different configuration "
                f"(differing fields: {', '.join(fields)}). {'; '.join(diff)}. Use a new "
                "directory, or call recover with the original arguments to resume."
            )
        if near:
            log.warning(
                "checkpoint_dir %r: %s", directory, last_bits_warning(near, "the checkpoint's")
            )
        return stored
    entries = (
        [e for e in os.listdir(directory) if not files.is_temp(e)]
        if os.path.isdir(directory)
        else []
    )
    steps = sorted(int(e) for e in entries if e.isdigit())
    if steps:
        raise ValueError(
            f"checkpoint_dir {directory!r} holds checkpoints (steps {steps}) but no "
            f"{CONFIG_FILE} (deleted?), so nothing says which run they belong to; restore "
            "the file, or delete the directory to start over"
        )
    if entries:
        raise ValueError(
            f"checkpoint_dir {directory!r} is not empty and holds no {CONFIG_FILE}: it is not a "
            "recover checkpoint directory; pass an empty or new directory"
        )
    os.makedirs(directory, exist_ok=True)
    files.atomic_write_text(path, json.dumps(fingerprint, indent=1, sort_keys=True))
    return fingerprint


def _item_digest(item: dict[str, Any]) -> str:
    flat = jax.tree_util.tree_flatten_with_path(item)[0]
    return hash_arrays([(jax.tree_util.keystr(p), np.asarray(leaf)) for p, leaf in flat])


#: The checksum file of a step, written into its directory once orbax has committed it.
CHECKSUMS = "jaxablate_checksums.json"


def _file_hashes(step_dir: str) -> dict[str, str]:
    """``relative path -> sha256`` of every file under ``step_dir`` (but the checksum file)."""
    out = {}
    for root, _, names in os.walk(step_dir):
        for name in names:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, step_dir)
            if rel != CHECKSUMS:
                with open(path, "rb") as f:
                    out[rel] = hashlib.file_digest(f, "sha256").hexdigest()
    return out


class Store:
    """Orbax step checkpoints of the flattened training state, the step, the key and curves.

    Each step directory also holds :data:`CHECKSUMS`: the sha256 of every file orbax wrote, of
    the arrays, and of the configuration. A step is read only after its files check out, so a
    damaged one never reaches orbax (which would fail with TensorStore errors, or not at all).
    """

    def __init__(self, directory: str, fingerprint: dict[str, Any]):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=2, enable_async_checkpointing=False, cleanup_tmp_directories=True
        )
        self.directory = os.path.abspath(directory)
        self.config_sha256 = hash_record(fingerprint)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def _step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def save(
        self, step: int, leaves: Sequence[jax.Array], key: jax.Array, curves: np.ndarray
    ) -> None:
        """Write the checkpoint of ``step`` (synchronously; atomic on completion), then its
        checksum file (a step without one is never used)."""
        item = {
            "state": {f"{i:05d}": np.asarray(leaf) for i, leaf in enumerate(leaves)},
            "step": np.asarray(step, np.int64),
            "key": np.asarray(key),
            "curves": np.asarray(curves),
        }
        self.manager.save(step, args=ocp.args.StandardSave(item))
        self.manager.wait_until_finished()
        record = {
            "config_sha256": self.config_sha256,
            "arrays_sha256": _item_digest(item),
            "files": _file_hashes(self._step_dir(step)),
        }
        path = os.path.join(self._step_dir(step), CHECKSUMS)
        files.atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True))

    def _checked_files(self, step: int) -> dict[str, Any]:
        """``step``'s checksum record once its files match it; else ``ValueError`` (why)."""
        try:
            with open(os.path.join(self._step_dir(step), CHECKSUMS)) as f:
                record = json.load(f)
            expected = dict(record["files"])
        except FileNotFoundError:
            raise ValueError(f"no {CHECKSUMS} (its save did not finish)") from None
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"unreadable {CHECKSUMS} ({type(err).__name__}: {err})") from None
        if record.get("config_sha256") != self.config_sha256:
            raise ValueError("it records another configuration's fingerprint (copied or changed)")
        found = _file_hashes(self._step_dir(step))
        missing = sorted(set(expected) - set(found))
        changed = sorted(k for k in expected if k in found and found[k] != expected[k])
        if missing or changed:
            what = [f"missing {missing[:3]}"] if missing else []
            what += [f"changed {changed[:3]}"] if changed else []
            raise ValueError(f"its files do not match their checksums: {', '.join(what)}")
        return record

    def _restore(self, step: int, target: dict[str, Any]) -> dict[str, Any]:
        """The item of ``step``, checked; ``ValueError`` saying what is wrong with it."""
        record = self._checked_files(step)
        try:
            item = dict(self.manager.restore(step, args=ocp.args.StandardRestore(target)))
        except Exception as err:  # checked files that orbax cannot read: not ours to judge
            first = (str(err).splitlines() or [""])[0][:200]
            raise ValueError(f"unreadable ({type(err).__name__}: {first})") from err
        if record.get("arrays_sha256") != _item_digest(item) or int(item["step"]) != step:
            raise ValueError("its arrays do not match their checksum")
        return item

    def restore_latest(
        self, like: Sequence[jax.Array], key: jax.Array, curves: np.ndarray
    ) -> tuple[int, list[jax.Array], jax.Array, np.ndarray] | None:
        """The newest good checkpoint as ``(step, leaves shaped like like, key, curves)``, or
        ``None`` when there is none. A damaged step is logged and removed (so that training
        writes it again), and the one before it tried."""

        def abstract(x: Any) -> jax.ShapeDtypeStruct:
            return jax.ShapeDtypeStruct(np.shape(x), x.dtype)

        target = {
            "state": {f"{i:05d}": abstract(leaf) for i, leaf in enumerate(like)},
            "step": abstract(np.asarray(0, np.int64)),
            "key": abstract(np.asarray(key)),
            "curves": abstract(curves),
        }
        steps = sorted(self.manager.all_steps(), reverse=True)
        for n, step in enumerate(steps):
            try:
                item = self._restore(step, target)
            except ValueError as err:
                after = f"resuming from step {steps[n + 1]}" if n + 1 < len(steps) else None
                log.warning(
                    "recover: checkpoint step %d in %r is bad (%s); deleting it and %s",
                    step, self.directory, err, after or "starting over from step 0",
                )  # fmt: skip
                self.manager.delete(step)
                continue
            leaves = [jnp.asarray(item["state"][f"{i:05d}"]) for i in range(len(like))]
            return step, leaves, jnp.asarray(item["key"]), np.asarray(item["curves"])
        return None

    def close(self) -> None:
        """Release the manager."""
        self.manager.close()


def fingerprint_fields(**fields: Any) -> dict[str, Any]:
    """The JSON-able fingerprint (adds the format tag)."""
    return {"format": FORMAT, **fields}
