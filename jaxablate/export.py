"""Results as tables, in the one sign convention every printed table uses: **removal cost**.

The library's functions return raw values of the presence game (``values[r]`` = metric with
coalition ``r`` kept; :func:`jaxablate.interactions.loco` is ``v(N) - v(N \\ {i})``, negative
for a useful component under a loss; see docs/conventions.md). Printed tables (``jaxablate
demo``, ``jaxablate show``, the HTML report, the notebook) show instead how much *worse* the
metric gets when components are removed, so that higher always means more important whatever
the metric's direction::

    cost(S) = v(N \\ S) - v(N)     for a loss (lower is better)
    cost(S) = v(N) - v(N \\ S)     for a logit difference or an accuracy (higher is better)

:func:`removal_costs` turns a table of ``2^n`` values into LOCO, Shapley, pair and interaction
costs; :func:`sweep_frame` turns a finished sweep into a pandas DataFrame holding both the raw
values and the costs (pandas is optional: only this function needs it).
"""

from typing import Any

import numpy as np
from jaxtyping import ArrayLike, Real

from jaxablate import interactions, subsets

__all__ = ["cost_label", "loss_like", "metric_unit", "removal_costs", "sweep_frame"]

_LOWER = ("loss", "kl_to_clean")
_HIGHER = ("accuracy", "logit_diff")


def loss_like(metric_name: str) -> bool | None:
    """The direction of a metric, from the name a sweep manifest records it under.

    Names ending in ``loss`` (``loss``, ``repeat_loss``, ``answer_loss``, ...) and
    ``kl_to_clean`` are losses; names ending in ``accuracy`` and ``logit_diff`` are
    higher-is-better.

    Args:
        metric_name: ``meta["metric"]["name"]`` of :func:`jaxablate.load_sweep`.

    Returns:
        ``True`` (lower is better), ``False`` (higher is better) or ``None`` (unknown name).
    """
    if metric_name.endswith(_LOWER):
        return True
    if metric_name.endswith(_HIGHER):
        return False
    return None


def metric_unit(metric_name: str) -> str:
    """The unit of a metric's values in printed tables (``"nats"`` for losses and KL)."""
    if metric_name.endswith(_LOWER):
        return "nats"
    if metric_name.endswith("logit_diff"):
        return "logits"
    if metric_name.endswith("accuracy"):
        return "accuracy"
    return "metric units"


def cost_label(unit: str) -> str:
    """The label of every cost column: ``removal cost (nats, higher = more important)``."""
    return f"removal cost ({unit}, higher = more important)"


def removal_costs(
    values: Real[ArrayLike, " n_coalitions"], *, lower_is_better: bool
) -> dict[str, np.ndarray]:
    """LOCO, Shapley, pair costs, pair excess, SII pairs and spectrum in cost sign.

    Args:
        values: ``[2^n]`` metric of each coalition of the presence game (bit order).
        lower_is_better: Whether the metric is a loss.

    Returns:
        float64 arrays by name: ``"sign"`` (0-d: ``+1`` for a loss, else ``-1``),
        ``"loco_cost"`` ``[n]`` (cost of removing each component alone), ``"shapley_cost"``
        ``[n]`` (sums to the cost of removing all), ``"pair_cost"`` ``[n, n]`` (cost of removing
        each pair; diagonal: single costs), ``"pair_excess"`` ``[n, n]`` (``pair_cost - loco_i -
        loco_j``, zero diagonal; :func:`jaxablate.interactions.removal_pairs` in cost sign),
        ``"sii_cost"`` ``[n, n]`` (pairwise Shapley interaction index in cost sign) and
        ``"spectrum"`` ``[n + 1]`` (share of variance per interaction degree, sign-free).
    """
    v = np.asarray(values, np.float64)
    n = interactions.n_players(v)
    sign = 1.0 if lower_is_better else -1.0
    full = 2**n - 1
    bit = 1 << np.arange(n)
    pair_cost = sign * (v[full & ~(bit[:, None] | bit[None, :])] - v[full])
    out = {
        "loco_cost": -sign * np.asarray(interactions.loco(v), np.float64),
        "shapley_cost": -sign * np.asarray(interactions.shapley(v), np.float64),
        "pair_cost": pair_cost,
        "pair_excess": sign * np.asarray(interactions.removal_pairs(v), np.float64),
        "sii_cost": sign
        * np.asarray(interactions.pairs(interactions.shapley_interaction(v)), np.float64),
        "spectrum": np.asarray(interactions.spectrum(v), np.float64),
    }
    out = {k: x + 0.0 for k, x in out.items()}  # no "-0.000" in printed costs
    return {"sign": np.asarray(sign, np.float64), **out}


def _rows(meta: dict[str, Any], n_values: int) -> np.ndarray:
    """The ``bool [M, n]`` rows of a sweep's values (bit order for ``rows="all"``)."""
    n = len(meta["components"])
    if meta["rows"] == "all":
        rows = subsets.bits(range(n_values), n)
    else:
        if "rows_array" not in meta:
            raise ValueError(
                "meta of a sweep over explicit rows must hold 'rows_array' (as load_sweep "
                f"returns it), got the keys {sorted(meta)}"
            )
        rows = np.asarray(meta["rows_array"], bool)
    if rows.shape != (n_values, n):
        raise ValueError(
            f"values of shape ({n_values},) do not fit the sweep's rows of shape {rows.shape} "
            f"({n} components {meta['components']})"
        )
    return rows


def sweep_frame(
    values: Real[ArrayLike, " n_masks"],
    meta: dict[str, Any],
    *,
    lower_is_better: bool | None = None,
) -> Any:
    """A finished sweep as a pandas DataFrame: one row per evaluated subset.

    Columns: one ``bool`` column per component (``True`` = kept), ``value`` (the raw metric,
    presence game) and ``cost`` (how much worse than the full model: ``value - v(N)`` for a
    loss, ``v(N) - value`` otherwise; NaN when the sweep has no row with every component kept).
    The index is the row number (the coalition's bitmask for ``rows="all"``).
    ``frame.attrs`` records ``metric``, ``lower_is_better``, ``ablation`` and ``cost_label``.

    Args:
        values: ``[M]`` values, as :func:`jaxablate.load_sweep` returns them.
        meta: The manifest :func:`jaxablate.load_sweep` returns with them.
        lower_is_better: The metric's direction; default: read from its recorded name
            (:func:`loss_like`).

    Returns:
        A ``pandas.DataFrame``.

    Raises:
        ImportError: pandas is not installed (it is optional: ``pip install pandas``).
        ValueError: values and rows disagree, or the metric's direction is unknown and not
            given.
    """
    try:
        import pandas as pd
    except ImportError:
        raise ImportError(
            "sweep_frame needs pandas, an optional dependency of jaxablate: pip install pandas"
        ) from None
    v = np.asarray(values, np.float64)
    if v.ndim != 1:
        raise ValueError(f"values must be 1-D [M] (as load_sweep returns), got shape {v.shape}")
    rows = _rows(meta, v.shape[0])
    name = str(meta["metric"]["name"])
    lower = loss_like(name) if lower_is_better is None else lower_is_better
    if lower is None:
        raise ValueError(
            f"the direction of metric {name!r} is unknown; pass lower_is_better=True (a loss) "
            "or False (higher is better)"
        )
    full = np.flatnonzero(rows.all(axis=1))
    v_full = v[full[0]] if full.size else np.nan
    frame = pd.DataFrame(rows, columns=list(meta["components"]))
    frame["value"] = v
    frame["cost"] = (v - v_full) if lower else (v_full - v)
    frame.index.name = "coalition" if meta["rows"] == "all" else "row"
    frame.attrs.update(
        metric=name,
        lower_is_better=bool(lower),
        ablation=meta["ablation"]["kind"],
        cost_label=cost_label(metric_unit(name)),
    )
    return frame
