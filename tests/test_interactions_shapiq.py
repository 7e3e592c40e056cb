"""jaxablate.interactions against shapiq's ExactComputer (code we did not write), and interop.

Coalitions are mapped explicitly: shapiq reports ``tuple of players -> value`` through
``InteractionValues.dict_values``; here ``(i, j, ...)`` becomes the bitmask ``2^i + 2^j + ...``.
"""

import functools

import jax
import numpy as np
import pytest

from jaxablate import _shapiq
from jaxablate import interactions as ia

shapiq = pytest.importorskip("shapiq")


def bitmask(players: tuple[int, ...]) -> int:
    return sum(1 << int(i) for i in players)


def as_table(iv, n: int) -> tuple[np.ndarray, np.ndarray]:
    """shapiq result -> (values [2^n] in bit order, bool mask of the coalitions it reports)."""
    values, seen = np.zeros(2**n), np.zeros(2**n, dtype=bool)
    for players, value in iv.dict_values.items():
        values[bitmask(players)] = value
        seen[bitmask(players)] = True
    return values, seen


def make_game(kind: str, n: int) -> np.ndarray:
    codes = np.arange(2**n)
    bits = (codes[:, None] >> np.arange(n)[None, :]) & 1
    if kind == "random":
        return np.random.default_rng(100 + n).normal(size=2**n)
    if kind == "additive":
        return 0.5 + bits @ np.linspace(-1.0, 2.0, n)
    if kind == "and":  # pure pairwise AND of players 0 and the last one
        return (bits[:, 0] & bits[:, -1]).astype(float)
    if kind == "or":  # redundant OR: either of players 0 and the last one suffices
        return (bits[:, 0] | bits[:, -1]).astype(float) + 0.25
    raise AssertionError(kind)


@functools.cache
def computer(kind: str, n: int):
    table = make_game(kind, n)

    def game(coalitions: np.ndarray) -> np.ndarray:
        coalitions = np.asarray(coalitions, dtype=bool)
        return table[(coalitions * (1 << np.arange(n))[None, :]).sum(axis=1)]

    return shapiq.ExactComputer(game, n_players=n), table


def compare(ours: jax.Array, iv, n: int, atol: float, skip_empty: bool = False) -> None:
    expected, seen = as_table(iv, n)
    if skip_empty:
        seen[0] = False
    ours = np.asarray(ours)
    np.testing.assert_allclose(ours[seen], expected[seen], rtol=0, atol=atol)
    if iv.index not in ("SII", "BII", "Moebius"):  # order-limited: the rest must be zero
        unseen = ~seen
        unseen[0] = False
        np.testing.assert_allclose(ours[unseen], 0, atol=atol)


def orders(n: int, kind: str) -> list[int]:
    """Orders compared: 1, 2, 3 and n up to n = 8; above, shapiq's Python loops grow as 4^n
    (order-n SII ~1.3 s at n = 10), so 1, 2, 3 on the random game and 1, 2 on the others."""
    if n <= 8:
        return sorted({k for k in (1, 2, 3, n) if k <= n})
    return [1, 2, 3] if kind == "random" else [1, 2]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["random", "additive", "and", "or"])
@pytest.mark.parametrize("n", range(1, 11))
def test_matches_shapiq_exact_computer(n: int, kind: str) -> None:
    ec, v = computer(kind, n)
    bits = 1 << np.arange(n)
    tol = 1e-9 * max(1.0, float(np.abs(v).max()))
    with jax.enable_x64(True):
        compare(ia.mobius(v), ec("Moebius"), n, tol)
        np.testing.assert_allclose(
            np.asarray(ia.shapley(v)), as_table(ec("SV"), n)[0][bits], rtol=0, atol=tol
        )
        np.testing.assert_allclose(
            np.asarray(ia.banzhaf(v)), as_table(ec("BV"), n)[0][bits], rtol=0, atol=tol
        )
        order = n if n <= 8 else max(orders(n, kind))
        # shapiq's SII at n = 1 puts v(∅) at () instead of SII(∅) = v(∅) + m({0}) / 2.
        compare(ia.shapley_interaction(v), ec("SII", order), n, tol, skip_empty=n == 1)
        compare(ia.banzhaf_interaction(v), ec("BII", order), n, tol)
        for k in orders(n, kind):
            compare(ia.k_sii(v, k), ec("k-SII", k), n, tol)
            compare(ia.shapley_taylor(v, k), ec("STII", k), n, tol)
        for k in orders(n, kind) if n <= 8 else [1, 2]:  # shapiq's FSII: dense lstsq, O(4^n k)
            # shapiq's FSII is a least-squares solve with a 1e8 constraint weight (~1e-8 accurate)
            compare(ia.faith_shapley(v, k), ec("FSII", k), n, 1e-6 * max(1.0, tol / 1e-9))


def test_to_shapiq_round_trip() -> None:
    n = 5
    ec, v = computer("random", n)
    with jax.enable_x64(True):
        cases = [
            (ia.k_sii(v, 2), "k-SII", 2, None),
            (ia.shapley_taylor(v, 3), "STII", 3, None),
            (ia.faith_shapley(v, 2), "FSII", 2, None),
            (ia.mobius(v), "Moebius", n, None),
            (ia.shapley_interaction(v), "SII", n, v[0]),
            (ia.banzhaf_interaction(v), "BII", 2, v[0]),
            (ia.shapley_interaction(v), "SV", 1, v[0]),
        ]
        for per_coalition, index, order, baseline in cases:
            iv = ia.to_shapiq(per_coalition, index, order, baseline_value=baseline)
            assert isinstance(iv, shapiq.InteractionValues)
            assert (iv.index, iv.max_order, iv.min_order, iv.n_players) == (index, order, 0, n)
            assert iv.baseline_value == pytest.approx(v[0])
            assert not iv.estimated
            ref = ec(index, order)
            expected, seen = as_table(ref, n)
            got, got_seen = as_table(iv, n)
            assert not (seen & ~got_seen).any()  # shapiq may drop exact zeros; we keep all
            atol = 1e-6 if index == "FSII" else 1e-9
            np.testing.assert_allclose(got[seen], expected[seen], atol=atol)
            back = ia.from_shapiq(iv)
            kept = np.asarray(ia.coalition_sizes(n)) <= order
            want = np.where(kept, np.asarray(per_coalition), 0)
            if index == "SV":
                want[0] = v[0]
            np.testing.assert_allclose(back, want, atol=1e-12)
            if order >= 2:  # shapiq's own lookup reads the same numbers
                assert iv[(0, 1)] == pytest.approx(np.asarray(per_coalition)[3])


def test_to_shapiq_min_order_and_errors() -> None:
    v = make_game("random", 3)
    with jax.enable_x64(True):
        iv = ia.to_shapiq(ia.k_sii(v, 2), "k-SII", 2, min_order=1)
        assert () not in iv.interaction_lookup and len(iv.interaction_lookup) == 6
        sii = ia.shapley_interaction(v)
        with pytest.raises(ValueError, match="baseline_value"):
            ia.to_shapiq(sii, "SII", 2)
        with pytest.raises(ValueError, match="index must be one of"):
            ia.to_shapiq(sii, "Shapley", 2)
        with pytest.raises(ValueError, match="order"):
            ia.to_shapiq(sii, "k-SII", 4)
        with pytest.raises(ValueError, match="order = 1"):
            ia.to_shapiq(sii, "SV", 2, baseline_value=0.0)
        with pytest.raises(ValueError, match="batch"):
            ia.to_shapiq(np.zeros((2, 8)), "k-SII", 2)
        with pytest.raises(ValueError, match="min_order"):
            ia.to_shapiq(sii, "k-SII", 2, min_order=3)
        with pytest.raises(ValueError, match="min_order must be a non-negative int"):
            ia.to_shapiq(sii, "k-SII", 2, min_order=-1)


def test_interop_is_reexported_from_its_module() -> None:
    assert ia.to_shapiq is _shapiq.to_shapiq
    assert ia.from_shapiq is _shapiq.from_shapiq
    assert ia.SHAPIQ_INDICES is _shapiq.SHAPIQ_INDICES


def test_shapiq_game_drives_shapiq() -> None:
    n = 4
    v = make_game("random", n)
    game = ia.ShapiqGame.from_value_fn(
        lambda rows: v[(rows * (1 << np.arange(n))[None, :]).sum(axis=1)], n_players=n
    )
    np.testing.assert_array_equal(game.table(), v)
    ec = shapiq.ExactComputer(game, n_players=game.n_players)
    with jax.enable_x64(True):
        compare(ia.k_sii(game.table(), 2), ec("k-SII", 2), n, 1e-9)
