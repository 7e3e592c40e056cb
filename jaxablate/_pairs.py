"""Regression adjustment for the pairwise Shapley interaction estimator (SII, order 2).

The paired estimator of :func:`jaxablate.estimate.pairs` sees a game through
``y(T) = v(T) + v(N \\ T) - v(∅) - v(N)``. For a 2-additive game
``g(S) = m_0 + sum_i m_i [i ∈ S] + sum_{i<j} m_ij [i, j ∈ S]`` this is
``y_g(T) = -sum_{i<j} m_ij [T splits i, j]`` (main effects cancel in the pair) and the SII of
pair ``i, j`` is ``m_ij``. So a least-squares fit of ``y`` on the "split" features gives a
surrogate whose SII is known in closed form; the sampling estimator then only has to estimate
the SII of the residual, which is small when the game is nearly 2-additive.

A constant per coalition size (for sizes ``2 .. n - 2``) has zero SII, so the fit also carries
one intercept per size pair ``{t, n - t}`` with ``t >= 2`` (the residual is then centred per
size, as the sampling estimator does anyway).

Pure float64 numpy; the callers own the sampling and the budget.
"""

import numpy as np


def split_features(rows: np.ndarray) -> np.ndarray:
    """``-[T splits i, j]`` for every pair ``i < j`` (``np.triu_indices`` order): ``[M, P]``."""
    iu, ju = np.triu_indices(rows.shape[1], k=1)
    return -(rows[:, iu] != rows[:, ju]).astype(np.float64)


def design(rows: np.ndarray, unit: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The regression design: split features, then one intercept per unit with ``t >= 2``.

    Args:
        rows: ``bool [M, n]`` coalitions (the smaller member of each pair ``T, N \\ T``).
        unit: Unit (size pair) of every row ``[M]``.
        t: Smaller size of every unit.

    Returns:
        ``[M, P + U]`` with ``P = n (n - 1) / 2`` and ``U`` the units with ``t >= 2``.
    """
    inner = np.flatnonzero(t >= 2)
    dummies = (unit[:, None] == inner[None, :]).astype(np.float64)
    return np.concatenate([split_features(rows), dummies], axis=1)


#: Rows of the design built at once (bounds the memory at ``CHUNK x (P + U)`` floats).
CHUNK = 2048


def normal_equations(
    rows: np.ndarray, unit: np.ndarray, t: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(Z^T Z, Z^T y)`` of the :func:`design` ``Z`` of ``rows``, built in chunks."""
    width = rows.shape[1] * (rows.shape[1] - 1) // 2 + int((t >= 2).sum())
    gram, moment = np.zeros((width, width)), np.zeros(width)
    for s in range(0, len(rows), CHUNK):
        z = design(rows[s : s + CHUNK], unit[s : s + CHUNK], t)
        gram += z.T @ z
        moment += z.T @ y[s : s + CHUNK]
    return gram, moment


def predict(rows: np.ndarray, unit: np.ndarray, t: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """``Z beta`` for coefficients ``beta [P + U]`` or ``[P + U, R]``, built in chunks."""
    parts = [
        design(rows[s : s + CHUNK], unit[s : s + CHUNK], t) @ beta
        for s in range(0, len(rows), CHUNK)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, *beta.shape[1:]))


#: Ridge penalties tried, relative to the mean diagonal of the normal equations.
RIDGES = (0.0, 1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0)


def ridge_paths(gram: np.ndarray, moment: np.ndarray, ridges=RIDGES) -> np.ndarray:
    """``[R, P]``: the ridge solutions of ``(gram + r s I) beta = moment`` for every relative
    penalty ``r`` (``s`` the mean diagonal of ``gram``), from one eigendecomposition. The
    unpenalised one (``r = 0``) is the minimum-norm least-squares solution."""
    scale = float(np.trace(gram)) / max(len(gram), 1) or 1.0
    vals, vecs = np.linalg.eigh(gram)
    vals = np.clip(vals, 0.0, None)
    proj = vecs.T @ moment
    keep = vals > 1e-10 * max(float(vals[-1]), 1e-300)
    out = []
    for r in ridges:
        denom = vals + r * scale
        inv = np.where(keep | (r > 0), 1.0 / np.where(denom > 0, denom, 1.0), 0.0)
        out.append(vecs @ (inv * proj))
    return np.array(out)


def to_matrix(beta: np.ndarray, n: int) -> np.ndarray:
    """The pair coefficients (the first ``n (n - 1) / 2`` entries of ``beta``) as a symmetric
    ``[n, n]`` matrix with a zero diagonal."""
    iu, ju = np.triu_indices(n, k=1)
    out = np.zeros((n, n))
    out[iu, ju] = beta[: len(iu)]
    return out + out.T
