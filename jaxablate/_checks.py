"""Input checks shared by the whole package, and its size limits (one per concept).

Every public function validates its arguments with these helpers, so a bad input gets the same
clear message wherever it enters: what was expected, and what was given. This module imports
nothing from the package (it is on the ground floor).
"""

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

#: Largest ``n`` for which a ``bool [2^n, n]`` array of rows is materialised in memory
#: (``subsets.all``, ``k_subsets``): 2^24 x 24 bytes = 384 MiB.
MAX_ROWS_PLAYERS = 24
#: Largest ``n`` accepted by the interaction transforms over a table of ``2^n`` values: a
#: float32 table over 26 players is 256 MiB and a transform keeps a few such buffers alive.
MAX_TABLE_PLAYERS = 26
#: Largest ``n`` for an exhaustive sweep (rows are streamed, never materialised; the returned
#: table of 2^30 float32 values is 4 GiB).
MAX_SWEEP_PLAYERS = 30


def is_tracer(value: object) -> bool:
    """Whether ``value`` is an abstract value under a jax transformation (no concrete data)."""
    return isinstance(value, jax.core.Tracer)  # pyright: ignore[reportAttributeAccessIssue]


def positive_int(name: str, value: object, alternatives: str = "") -> int:
    """``value`` as a positive int, else ``ValueError`` naming ``name``.

    Args:
        name: The argument, for the message.
        value: What was given.
        alternatives: The other values the caller accepts and has handled already, for the
            message (e.g. ``" or 'auto'"``).
    """
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int{alternatives}, got {value!r}")
    return int(value)


def non_negative_int(name: str, value: object) -> int:
    """``value`` as an int ``>= 0``, else ``ValueError`` naming ``name``."""
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return int(value)


def check_key(key: object, name: str = "key") -> jax.Array:
    """``key`` if it is one ``jax.random`` key (typed, or a raw ``uint32 [2]``), else
    ``ValueError`` naming ``name``."""
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape == ():
            return key
    elif isinstance(key, jax.Array | np.ndarray) and key.shape == (2,) and key.dtype == np.uint32:
        return jnp.asarray(key)
    seed = isinstance(key, int | np.integer) and not isinstance(key, bool)
    hint = "; an int seed is not a key: use jax.random.key(seed)" if seed else ""
    raise ValueError(
        f"{name} must be a single jax.random key (jax.random.key(0) or jax.random.PRNGKey(0)), "
        f"got {_short(key)}{hint}"
    )


def _short(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters; arrays by their shape and dtype."""
    if isinstance(value, jax.Array | np.ndarray):
        return f"an array of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_bool(name: str, value: object) -> bool:
    """``value`` if it is a bool, else ``ValueError`` naming ``name``."""
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be a bool (True or False), got {_short(value)}")
    return bool(value)


def finite_number(
    name: str, value: object, *, low: float = -math.inf, high: float = math.inf, what: str = ""
) -> float:
    """``value`` as a float if it is a finite real number in ``[low, high]``, else
    ``ValueError`` naming ``name`` (``what`` describes the range for the message)."""
    number = isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)
    x = float(value) if number else math.nan  # pyright: ignore[reportArgumentType]
    if not (math.isfinite(x) and low <= x <= high):
        expected = what or (
            "a finite number"
            + ("" if low == -math.inf else f" >= {low}")
            + ("" if high == math.inf else f" <= {high}")
        )
        raise ValueError(f"{name} must be {expected}, got {_short(value)}")
    return x


def rows_2d(rows: np.ndarray | jax.Array, n: int, what: str = "rows") -> None:
    """Raise ``ValueError`` unless ``rows`` is 2-D ``[M, n]`` (one row per subset)."""
    if rows.ndim != 2:
        raise ValueError(f"{what} must be 2-D [n_masks, {n}], got shape {tuple(rows.shape)}")


def one_axis_mesh(mesh: object, purpose: str) -> Mesh:
    """``mesh`` if it is a 1-D ``jax.sharding.Mesh``, else ``ValueError``.

    Args:
        mesh: The caller's mesh.
        purpose: What its one axis splits (``"masks"``, ``"runs"``), for the message.
    """
    if not isinstance(mesh, Mesh):
        raise ValueError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if len(mesh.axis_names) != 1:
        raise ValueError(
            f"mesh must be 1-D (one axis for the {purpose}), got axes {mesh.axis_names}"
        )
    return mesh


def local_mesh(axis: str, limit: int | None = None) -> Mesh:
    """A 1-D mesh named ``axis`` over the local devices (the first ``limit`` of them)."""
    devices = jax.local_devices()
    if limit is not None:
        devices = devices[: max(1, min(int(limit), len(devices)))]
    return Mesh(np.array(devices), (axis,))


def check_optimizer(optimizer: object, default: Any) -> Any:
    """``optimizer`` (or ``default`` for ``None``) if it is a hashable optax transformation."""
    if optimizer is None:
        return default
    if not (
        callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))
    ):
        raise ValueError(
            f"optimizer must be an optax.GradientTransformation (e.g. optax.adam(0.1)), "
            f"got {optimizer!r}"
        )
    try:
        hash(optimizer)
    except TypeError:
        raise ValueError("optimizer must be hashable (a plain optax transformation)") from None
    _probe_optimizer(optimizer)
    return optimizer


def _probe_optimizer(optimizer: Any) -> None:
    """Refuse an optimizer whose first update of a unit gradient is NaN or inf (a NaN or
    infinite learning rate), which would train to NaN curves or all-False masks."""
    params = {"probe": jnp.ones((2,), jnp.float32)}
    try:
        state = optimizer.init(params)
        updates, _ = optimizer.update(params, state, params)
        leaves = jax.tree.leaves(updates)
    except Exception:  # an optimizer that needs more (extra arguments, a value): not probed
        return
    if not all(bool(jnp.all(jnp.isfinite(u))) for u in leaves):
        raise ValueError(
            "optimizer must give finite updates, but its first update of a unit gradient is "
            "NaN or inf: its learning rate (or another hyperparameter) is NaN or infinite; "
            "pass a finite positive learning rate, e.g. optax.adam(0.1)"
        )


def one_of(name: str, value: object, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else ``ValueError`` listing them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value
