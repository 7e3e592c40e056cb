"""Stand-ins for inputs recomputed on another machine: the same values, other last bits."""

import jax
import numpy as np
import optax

import jaxablate as ja


def recomputed_elsewhere(abl: ja.Ablation) -> ja.Ablation:
    """``abl`` as another machine recomputes it: every replacement value one ulp up."""

    def ulp(x):
        return None if x is None else np.nextafter(np.asarray(x), np.inf).astype(x.dtype)

    return ja.Ablation(
        z=ulp(abl.z), attn=ulp(abl.attn), mlp=ulp(abl.mlp), kind=abl.kind,
        prefix_positions=abl.prefix_positions,
    )  # fmt: skip


def optimizer_elsewhere(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """``tx`` as another device runs it: every update two float32 ulps larger (same state)."""

    def update(updates, state, params=None):
        updates, state = tx.update(updates, state, params)
        return jax.tree.map(lambda u: u * np.float32(1 + 2.4e-7), updates), state

    return optax.GradientTransformation(tx.init, update)
