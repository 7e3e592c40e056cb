"""Stand-ins for inputs recomputed on another machine: the same values, other last bits."""

import numpy as np

import jaxablate as ja


def recomputed_elsewhere(abl: ja.Ablation) -> ja.Ablation:
    """``abl`` as another machine recomputes it: every replacement value one ulp up."""

    def ulp(x):
        return None if x is None else np.nextafter(np.asarray(x), np.inf).astype(x.dtype)

    return ja.Ablation(
        z=ulp(abl.z), attn=ulp(abl.attn), mlp=ulp(abl.mlp), kind=abl.kind,
        prefix_positions=abl.prefix_positions,
    )  # fmt: skip
