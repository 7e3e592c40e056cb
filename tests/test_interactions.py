"""jaxablate.interactions against brute-force float64 definitions, and its properties.

Every fast transform has a slow twin here, written straight from the textbook definition as a
Python loop over subsets (n <= 6). x64 is switched on only inside each test.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.special
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import jaxablate as ja
from jaxablate import _transforms as tf
from jaxablate import interactions as ia
from jaxablate._checks import MAX_ROWS_PLAYERS, MAX_TABLE_PLAYERS
from jaxablate.games import ShapiqGame
from tests._compile import no_new_compilations

SETTINGS = settings(max_examples=20, deadline=None)

# ------------------------------------------------------------------ brute-force definitions


def members(r: int, n: int) -> list[int]:
    return [i for i in range(n) if (r >> i) & 1]


def subsets_of(r: int) -> list[int]:
    """All sub-bitmasks of ``r``."""
    out, s = [], r
    while True:
        out.append(s)
        if s == 0:
            return out
        s = (s - 1) & r


def popcount(r: int) -> int:
    return bin(r).count("1")


def derivative(v: np.ndarray, s: int, t: int) -> float:
    """Discrete derivative ``Δ_S v(T) = sum_{L ⊆ S} (-1)^{|S|-|L|} v(T ∪ L)`` (T ∩ S = ∅)."""
    return sum((-1) ** (popcount(s) - popcount(sub)) * v[t | sub] for sub in subsets_of(s))


def bf_mobius(v: np.ndarray, n: int) -> np.ndarray:
    return np.array([derivative(v, s, 0) for s in range(2**n)])


def bf_zeta(m: np.ndarray, n: int) -> np.ndarray:
    return np.array([sum(m[t] for t in subsets_of(s)) for s in range(2**n)])


def bf_shapley(v: np.ndarray, n: int) -> np.ndarray:
    """Average marginal contribution over all n! orderings."""
    phi = np.zeros(n)
    for order in itertools.permutations(range(n)):
        r = 0
        for i in order:
            phi[i] += v[r | (1 << i)] - v[r]
            r |= 1 << i
    return phi / math.factorial(n)


def bf_banzhaf(v: np.ndarray, n: int) -> np.ndarray:
    return np.array(
        [
            np.mean([v[r | (1 << i)] - v[r] for r in range(2**n) if not (r >> i) & 1])
            for i in range(n)
        ]
    )


def bf_sii(v: np.ndarray, n: int) -> np.ndarray:
    """Grabisch (1999): ``sum_{T ⊆ N∖S} (n-|T|-|S|)! |T|! / (n-|S|+1)! Δ_S v(T)``."""
    full, out = 2**n - 1, np.zeros(2**n)
    for s in range(2**n):
        k = popcount(s)
        for t in subsets_of(full & ~s):
            w = math.factorial(n - popcount(t) - k) * math.factorial(popcount(t))
            out[s] += w / math.factorial(n - k + 1) * derivative(v, s, t)
    return out


def bf_bii(v: np.ndarray, n: int) -> np.ndarray:
    full = 2**n - 1
    return np.array(
        [
            sum(derivative(v, s, t) for t in subsets_of(full & ~s)) / 2 ** (n - popcount(s))
            for s in range(2**n)
        ]
    )


def bf_k_sii(v: np.ndarray, n: int, k: int) -> np.ndarray:
    """Bordt & von Luxburg (2023): Bernoulli-weighted sums of SII over supersets of size <= k."""
    sii, b = bf_sii(v, n), scipy.special.bernoulli(k)
    out = np.zeros(2**n)
    out[0] = v[0]
    for s in range(1, 2**n):
        if popcount(s) <= k:
            for t in range(2**n):
                if t & s == s and popcount(t) <= k:
                    out[s] += b[popcount(t) - popcount(s)] * sii[t]
    return out


def bf_stii(v: np.ndarray, n: int, k: int) -> np.ndarray:
    """Sundararajan et al. (2020): ``Δ_S v(∅)`` below ``k``, Shapley-weighted ``Δ_S v`` at ``k``."""
    full, out = 2**n - 1, np.zeros(2**n)
    for s in range(2**n):
        if popcount(s) < k:
            out[s] = derivative(v, s, 0)
        elif popcount(s) == k:
            out[s] = (k / n) * sum(
                derivative(v, s, t) / math.comb(n - 1, popcount(t)) for t in subsets_of(full & ~s)
            )
    return out


def lsq_fsii(v: np.ndarray, n: int, k: int) -> np.ndarray:
    """Faith-Shap as its definition: the constrained weighted least-squares solution.

    Minimise ``sum_{0<|T|<n} mu(|T|) (v(T) - sum_{S ⊆ T, |S| <= k} E(S))^2`` with the Shapley
    kernel ``mu(t) = (n-1) / (C(n,t) t (n-t))`` subject to ``E(∅) = v(∅)`` and
    ``sum_S E(S) = v(N)``. Solved in the null space of the two constraints, by least squares on
    the square-root-weighted design (not the normal equations, whose condition number is the
    square of it: ~3e6 at n = 8, k = 7, enough to lose 1e-7 in float64).
    """
    basis = [s for s in range(2**n) if popcount(s) <= k]
    x = np.array([[float(s & t == s) for s in basis] for t in range(2**n)])
    inner = [t for t in range(2**n) if 0 < popcount(t) < n]
    root_mu = np.sqrt(
        [(n - 1) / (math.comb(n, popcount(t)) * popcount(t) * (n - popcount(t))) for t in inner]
    )
    xi = x[inner]
    a = np.stack([x[0], x[-1]])  # rows: E(∅) and the sum of all E
    x0 = np.linalg.lstsq(a, np.array([v[0], v[-1]]), rcond=None)[0]
    null = scipy.linalg.null_space(a)
    design = root_mu[:, None] * (xi @ null)
    z = np.linalg.lstsq(design, root_mu * (v[inner] - xi @ x0), rcond=None)[0]
    out = np.zeros(2**n)
    out[basis] = x0 + null @ z
    return out


def bf_spectrum(v: np.ndarray, n: int) -> np.ndarray:
    h = np.array([[(-1.0) ** popcount(s & t) for t in range(2**n)] for s in range(2**n)])
    f = h @ v / 2**n
    w = np.zeros(n + 1)
    for s in range(1, 2**n):
        w[popcount(s)] += f[s] ** 2
    return w / w.sum()


def bf_loco(v: np.ndarray, n: int) -> np.ndarray:
    full = 2**n - 1
    return np.array([v[full] - v[full & ~(1 << i)] for i in range(n)])


def bf_removal_pairs(v: np.ndarray, n: int) -> np.ndarray:
    full, out = 2**n - 1, np.zeros((n, n))
    for i, j in itertools.permutations(range(n), 2):
        wi, wj = full & ~(1 << i), full & ~(1 << j)
        out[i, j] = v[full] - v[wi] - v[wj] + v[wi & wj]
    return out


def bf_pairs(x: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((n, n))
    for i, j in itertools.permutations(range(n), 2):
        out[i, j] = x[(1 << i) | (1 << j)]
    return out


def random_game(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=2**n)


def close(actual: jax.Array, expected: np.ndarray, atol: float = 1e-10) -> None:
    actual = np.asarray(actual)
    assert actual.dtype == np.float64
    np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=atol)


# ------------------------------------------------------------------ fast == brute force


@pytest.mark.slow
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_matches_brute_force(n: int) -> None:
    v = random_game(n, seed=n)
    with jax.enable_x64(True):
        m = bf_mobius(v, n)
        close(ia.mobius(v), m)
        close(ia.zeta(m), bf_zeta(m, n))
        close(ia.shapley(v), bf_shapley(v, n))
        close(ia.banzhaf(v), bf_banzhaf(v, n))
        close(ia.loco(v), bf_loco(v, n))
        close(ia.removal_pairs(v), bf_removal_pairs(v, n))
        close(ia.shapley_interaction(v), bf_sii(v, n))
        close(ia.banzhaf_interaction(v), bf_bii(v, n))
        close(ia.spectrum(v), np.concatenate([[0.0], bf_spectrum(v, n)[1:]]))
        close(ia.pairs(v), bf_pairs(v, n))
        for k in range(1, n + 1):
            close(ia.k_sii(v, k), bf_k_sii(v, n, k))
            close(ia.shapley_taylor(v, k), bf_stii(v, n, k))
            close(ia.faith_shapley(v, k), lsq_fsii(v, n, k), atol=1e-9)


@pytest.mark.parametrize("n", [7, 8])
def test_faith_shapley_is_the_constrained_least_squares_solution(n: int) -> None:
    v = random_game(n, seed=10 + n)
    with jax.enable_x64(True):
        for k in (1, 2, 3, n - 1):
            close(ia.faith_shapley(v, k), lsq_fsii(v, n, k), atol=1e-9)


def test_removal_pairs_are_pair_derivatives_at_the_full_model() -> None:
    n = 6
    v = random_game(n, seed=3)
    with jax.enable_x64(True):
        m = np.asarray(ia.mobius(v))
        expected = np.zeros((n, n))
        for i, j in itertools.permutations(range(n), 2):
            pair = (1 << i) | (1 << j)
            expected[i, j] = sum(m[t] for t in range(2**n) if t & pair == pair)
        close(ia.removal_pairs(v), expected)


@pytest.mark.slow
def test_float32_by_default_and_documented_accuracy() -> None:
    n = 12
    v = random_game(n, seed=5)
    out = ia.shapley_interaction(v)  # x64 off: float64 input is computed in float32
    assert out.dtype == jnp.float32
    with jax.enable_x64(True):
        ref = np.asarray(ia.shapley_interaction(v))
        assert ia.shapley_interaction(v).dtype == jnp.float64
        assert ia.shapley(np.arange(2**n)).dtype == jnp.float64  # ints -> default float
    assert ia.shapley(np.arange(2**n)).dtype == jnp.float32
    scale = np.abs(v).max()
    np.testing.assert_allclose(np.asarray(out), ref, rtol=0, atol=1e-5 * n * scale)
    np.testing.assert_allclose(
        np.asarray(ia.shapley(v)), ref[1 << np.arange(n)], atol=1e-5 * n * scale
    )


# ------------------------------------------------------------------ jit, vmap, batching


FUNCTIONS = {
    "mobius": ia.mobius,
    "zeta": ia.zeta,
    "shapley": ia.shapley,
    "banzhaf": ia.banzhaf,
    "loco": ia.loco,
    "removal_pairs": ia.removal_pairs,
    "shapley_interaction": ia.shapley_interaction,
    "banzhaf_interaction": ia.banzhaf_interaction,
    "k_sii": lambda v: ia.k_sii(v, 2),
    "shapley_taylor": lambda v: ia.shapley_taylor(v, 2),
    "faith_shapley": lambda v: ia.faith_shapley(v, 2),
    "pairs": ia.pairs,
    "spectrum": ia.spectrum,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_jit_vmap_and_leading_axes(name: str) -> None:
    f = FUNCTIONS[name]
    n = 4
    batch = np.random.default_rng(0).normal(size=(2, 3, 2**n))
    with jax.enable_x64(True):
        rows = np.stack([np.stack([np.asarray(f(b)) for b in bb]) for bb in batch])
        np.testing.assert_allclose(np.asarray(f(batch)), rows, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(np.asarray(jax.jit(f)(batch)), rows, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(
            np.asarray(jax.vmap(jax.vmap(f))(jnp.asarray(batch))), rows, rtol=1e-12, atol=1e-12
        )


def test_second_call_and_other_orders_do_not_recompile() -> None:
    v = jnp.asarray(random_game(5, seed=0), dtype=jnp.float32)
    ia.k_sii(v, 3).block_until_ready()
    with no_new_compilations(tf.table_k_sii):
        ia.k_sii(v + 1, 3).block_until_ready()
        ia.k_sii(v, 1).block_until_ready()  # k is traced: its weights are array arguments


def test_grad_flows_through_shapley() -> None:
    v = jnp.asarray(random_game(3, seed=0), dtype=jnp.float32)
    g = jax.grad(lambda x: ia.shapley(x)[0])(v)
    # d phi_0 / d v(r) is +w(|r|-1) when 0 is in r, else -w(|r|); weights 1/3, 1/6, 1/6, 1/3.
    expected = np.array([-1 / 3, 1 / 3, -1 / 6, 1 / 6, -1 / 6, 1 / 6, -1 / 3, 1 / 3])
    np.testing.assert_allclose(np.asarray(g), expected, rtol=1e-6)


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("shape", [(), (3,), (2, 6), (1,), (0,)])
def test_last_axis_must_be_a_power_of_two(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="2\\^n"):
        ia.shapley(np.zeros(shape))
    with pytest.raises(ValueError, match="2\\^n"):
        ia.n_players(np.zeros(shape))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_rejected(bad: float) -> None:
    v = np.zeros((2, 8))
    v[1, 5] = bad
    for f in FUNCTIONS.values():
        with pytest.raises(ValueError, match=r"finite.*\(1, 5\)"):
            f(v)
    with pytest.raises(ValueError, match="finite"):
        ia.mobius(jnp.asarray(v, dtype=jnp.float32))


def test_non_finite_check_is_skipped_under_jit() -> None:
    v = np.full(8, np.nan, dtype=np.float32)
    assert np.isnan(np.asarray(jax.jit(ia.shapley)(v))).all()


def test_too_many_players_reports_memory() -> None:
    assert ia.MAX_PLAYERS == MAX_TABLE_PLAYERS == 26  # one limit, named in the messages
    n = ia.MAX_PLAYERS + 1
    huge = np.broadcast_to(np.zeros(1, dtype=np.float32), (2**n,))  # a view: no memory used
    with pytest.raises(ValueError, match=r"n = 27 players.*MAX_PLAYERS = 26.*GiB.*bytes"):
        ia.mobius(huge)
    with pytest.raises(ValueError, match=r"GiB"):
        ia.coalition_sizes(n)
    with pytest.raises(ValueError, match=r"n must be a non-negative int, got -1"):
        ia.coalition_sizes(-1)


@pytest.mark.parametrize("k", [0, 4, -1, True, 2.0])
def test_k_out_of_range(k: object) -> None:
    v = np.zeros(8)
    for f in (ia.k_sii, ia.shapley_taylor, ia.faith_shapley):
        with pytest.raises(ValueError, match="k"):
            f(v, k)  # type: ignore[arg-type]


def test_complex_values_are_rejected() -> None:
    with pytest.raises(ValueError, match="real numbers"):
        ia.mobius(np.zeros(4, dtype=np.complex64))


# ------------------------------------------------------------------ helpers


def test_helpers() -> None:
    assert ia.n_players(np.zeros((3, 32))) == 5
    np.testing.assert_array_equal(
        np.asarray(ia.coalition_sizes(3)), [popcount(r) for r in range(8)]
    )
    assert ia.coalition_sizes(3).dtype == jnp.int32
    x = np.arange(16.0)
    p = np.asarray(ia.pairs(x))
    np.testing.assert_array_equal(p, p.T)
    np.testing.assert_array_equal(np.diag(p), 0)
    assert p[0, 1] == 3 and p[2, 3] == 12 and p[1, 3] == 10


# ------------------------------------------------------------------ properties (hypothesis)


@st.composite
def games(draw: st.DrawFn, max_n: int = 6) -> tuple[np.ndarray, int]:
    n = draw(st.integers(1, max_n))
    v = draw(hnp.arrays(np.float64, 2**n, elements=st.floats(-10, 10, width=32)))
    return v, n


def permute_players(v: np.ndarray, n: int, perm: list[int]) -> np.ndarray:
    """``w(π S) = v(S)``: player ``i`` of ``v`` is player ``perm[i]`` of ``w``."""
    w = np.zeros_like(v)
    for r in range(2**n):
        w[sum(1 << perm[i] for i in members(r, n))] = v[r]
    return w


@pytest.mark.slow
@SETTINGS
@given(games(max_n=8))
def test_zeta_inverts_mobius(game: tuple[np.ndarray, int]) -> None:
    v, _ = game
    with jax.enable_x64(True):
        np.testing.assert_allclose(np.asarray(ia.zeta(ia.mobius(v))), v, atol=1e-9)
        np.testing.assert_allclose(np.asarray(ia.mobius(ia.zeta(v))), v, atol=1e-9)


@pytest.mark.slow
@SETTINGS
@given(games(), st.data())
def test_efficiency(game: tuple[np.ndarray, int], data: st.DataObject) -> None:
    v, n = game
    k = data.draw(st.integers(1, n))
    total = v[-1] - v[0]
    with jax.enable_x64(True):
        np.testing.assert_allclose(float(jnp.sum(ia.shapley(v))), total, atol=1e-9)
        assert float(ia.mobius(v).sum()) == pytest.approx(v[-1], abs=1e-9)
        for f in (ia.k_sii, ia.shapley_taylor, ia.faith_shapley):
            out = np.asarray(f(v, k))
            np.testing.assert_allclose(out[1:].sum(), total, atol=1e-8)
            assert out[0] == v[0]
            np.testing.assert_array_equal(out[np.asarray(ia.coalition_sizes(n)) > k], 0)


@pytest.mark.slow
@SETTINGS
@given(games(), st.randoms(use_true_random=False))
def test_symmetry_permuting_players_permutes_the_indices(game: tuple[np.ndarray, int], rnd) -> None:
    v, n = game
    perm = list(range(n))
    rnd.shuffle(perm)
    w = permute_players(v, n, perm)
    with jax.enable_x64(True):
        for f in (ia.shapley, ia.banzhaf, ia.loco):
            np.testing.assert_allclose(np.asarray(f(w))[perm], np.asarray(f(v)), atol=1e-9)
        for f in (ia.mobius, ia.shapley_interaction, ia.banzhaf_interaction, ia.spectrum):
            fv, fw = np.asarray(f(v)), np.asarray(f(w))
            if f is not ia.spectrum:
                fv = permute_players(fv, n, perm)
            np.testing.assert_allclose(fw, fv, atol=1e-9)
        k = min(2, n)
        for f in (ia.k_sii, ia.shapley_taylor, ia.faith_shapley):
            np.testing.assert_allclose(
                np.asarray(f(w, k)), permute_players(np.asarray(f(v, k)), n, perm), atol=1e-8
            )
        # a game symmetric in players 0 and 1 gives them equal values
        if n >= 2:
            swap = [1, 0, *range(2, n)]
            sym = (v + permute_players(v, n, swap)) / 2
            phi = np.asarray(ia.shapley(sym))
            assert phi[0] == pytest.approx(phi[1], abs=1e-9)


@SETTINGS
@given(games(max_n=5), st.data())
def test_dummy_player_gets_zero(game: tuple[np.ndarray, int], data: st.DataObject) -> None:
    g, m = game
    n = m + 1
    d = data.draw(st.integers(0, m))
    k = data.draw(st.integers(1, n))
    low = (1 << d) - 1
    v = np.array([g[(r & low) | ((r >> (d + 1)) << d)] for r in range(2**n)])
    has_d = (np.arange(2**n) >> d) & 1 == 1
    with jax.enable_x64(True):
        for f in (ia.shapley, ia.banzhaf, ia.loco):
            assert float(f(v)[d]) == pytest.approx(0, abs=1e-9)
        for f in (ia.mobius, ia.shapley_interaction, ia.banzhaf_interaction):
            np.testing.assert_allclose(np.asarray(f(v))[has_d], 0, atol=1e-9)
        for f in (ia.k_sii, ia.shapley_taylor, ia.faith_shapley):
            np.testing.assert_allclose(np.asarray(f(v, k))[has_d], 0, atol=1e-8)
        np.testing.assert_allclose(np.asarray(ia.removal_pairs(v))[d], 0, atol=1e-9)
        # the other players keep the values they had in the smaller game
        others = [i for i in range(n) if i != d]
        np.testing.assert_allclose(np.asarray(ia.shapley(v))[others], ia.shapley(g), atol=1e-9)


@SETTINGS
@given(games(), st.data())
def test_linearity(game: tuple[np.ndarray, int], data: st.DataObject) -> None:
    v, n = game
    w = data.draw(hnp.arrays(np.float64, 2**n, elements=st.floats(-10, 10, width=32)))
    a, b = data.draw(st.floats(-3, 3)), data.draw(st.floats(-3, 3))
    with jax.enable_x64(True):
        for f in FUNCTIONS.values():
            if n < 2 and f in (
                FUNCTIONS["k_sii"],
                FUNCTIONS["shapley_taylor"],
                FUNCTIONS["faith_shapley"],
            ):
                continue
            if f is ia.spectrum:
                continue  # not linear
            np.testing.assert_allclose(
                np.asarray(f(a * v + b * w)),
                a * np.asarray(f(v)) + b * np.asarray(f(w)),
                atol=1e-8,
            )


@SETTINGS
@given(games(max_n=8))
def test_spectrum_sums_to_one(game: tuple[np.ndarray, int]) -> None:
    v, n = game
    with jax.enable_x64(True):
        s = np.asarray(ia.spectrum(v))
    assert s.shape == (n + 1,)
    assert s.sum() == pytest.approx(1.0, abs=1e-12)
    assert (s >= 0).all()


@pytest.mark.slow
@SETTINGS
@given(st.integers(1, 8), st.data())
def test_spectrum_of_an_additive_game_sits_at_degree_one(n: int, data: st.DataObject) -> None:
    coef = st.integers(-50, 50).map(lambda i: i / 10)  # no subnormals: their squares vanish
    a = np.array(data.draw(st.lists(coef, min_size=n + 1, max_size=n + 1)))
    bits = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1
    v = a[0] + bits @ a[1:]
    with jax.enable_x64(True):
        s = np.asarray(ia.spectrum(v))
        np.testing.assert_allclose(s[2:], 0, atol=1e-12)
        if np.ptp(v) > 0:
            assert s[1] == pytest.approx(1.0, abs=1e-12)
        else:
            np.testing.assert_array_equal(s, np.eye(n + 1)[0])  # constant game
        # additive: Shapley == Banzhaf == LOCO == the coefficients, no interactions
        for f in (ia.shapley, ia.banzhaf, ia.loco):
            np.testing.assert_allclose(np.asarray(f(v)), a[1:], atol=1e-9)
        np.testing.assert_allclose(np.asarray(ia.removal_pairs(v)), 0, atol=1e-9)


# ------------------------------------------------------------------ ShapiqGame (no shapiq needed)


@pytest.fixture(scope="module")
def small_model():
    cfg = ja.ModelConfig(
        n_layers=2, n_heads=2, d_model=16, d_head=8, d_mlp=32, vocab_size=23, n_ctx=8, init_std=0.3
    )
    model = ja.Transformer(cfg, rngs=nnx.Rngs(3))
    tokens = np.random.default_rng(2).integers(0, 23, (2, 6)).astype(np.int32)
    comps = ja.heads(cfg, layers=[0]) + ja.blocks(cfg, "mlp", layers=[1])
    return model, comps, tokens


def loop_value(model, comps, tokens, row, metric, ablation) -> float:
    """The independent reference: one plain forward pass per coalition, then the metric."""
    logits = model(tokens, masks=comps.masks(np.asarray(row, dtype=bool)), ablation=ablation)
    return float(np.asarray(metric(logits, tokens), dtype=np.float64).mean())


def last_logit(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """A plain metric of our own: the logit of token 0 at the last position, per example."""
    return logits[:, -1, 0]


@pytest.mark.slow
def test_shapiq_game_matches_a_forward_pass_loop(small_model) -> None:
    # Neither the ablation nor the metric is evaluate's default, so both must reach it.
    model, comps, tokens = small_model
    n = len(comps)
    ablation = ja.ablation.mean(model, tokens)
    game = ShapiqGame(model, comps, tokens, metric=last_logit, ablation=ablation, chunk_size=4)
    assert ia.ShapiqGame is ShapiqGame  # the public path re-exports the game
    assert game.n_players == n == 3
    expected = np.array(
        [loop_value(model, comps, tokens, row, last_logit, ablation) for row in ja.subsets.all(n)]
    )
    table = game.table(chunk_rows=3)  # chunks that do not divide 2^n
    assert table.dtype == np.float64 and table.shape == (2**n,)
    np.testing.assert_allclose(table, expected, rtol=1e-5, atol=1e-5)
    assert np.ptp(table) > 0.01  # the coalitions matter
    rows = np.array([[True, False, True], [False, False, False]])
    np.testing.assert_allclose(game(rows), expected[[5, 0]], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(game(rows[0]), expected[[5]], rtol=1e-5, atol=1e-5)


def test_shapiq_game_rejects_bad_inputs(small_model) -> None:
    model, comps, tokens = small_model
    game = ShapiqGame(model, comps, tokens, metric=ja.metrics.loss, ablation=None)
    with pytest.raises(ValueError, match="n_players = 3"):
        game(np.zeros((2, 4), dtype=bool))
    with pytest.raises(ValueError, match="chunk_rows"):
        game.table(chunk_rows=0)
    with pytest.raises(ValueError, match="vocab_size"):
        ShapiqGame(model, comps, np.full((2, 6), 99), metric=ja.metrics.loss, ablation=None)


def test_shapiq_game_from_value_fn() -> None:
    game = ia.ShapiqGame.from_value_fn(lambda rows: rows.sum(axis=1), n_players=4)
    assert game.n_players == 4
    np.testing.assert_array_equal(game.table(), [popcount(r) for r in range(16)])
    np.testing.assert_array_equal(game.table(chunk_rows=5), [popcount(r) for r in range(16)])
    bad = ia.ShapiqGame.from_value_fn(lambda rows: np.zeros(3), n_players=2)
    with pytest.raises(ValueError, match=r"\[m\] = \[4\]"):
        bad.table()
    with pytest.raises(ValueError, match="n_players"):
        ia.ShapiqGame.from_value_fn(lambda rows: rows, n_players=0)
    huge = ia.ShapiqGame.from_value_fn(lambda rows: rows.sum(axis=1), n_players=ia.MAX_PLAYERS + 1)
    with pytest.raises(ValueError, match=r"MAX_PLAYERS = 26.*GiB"):
        huge.table()


def test_game_rows_come_from_subsets_bits_and_one_limit_per_concept() -> None:
    seen = []
    game = ia.ShapiqGame.from_value_fn(lambda rows: seen.append(rows) or rows.sum(1), n_players=3)
    game.table(chunk_rows=3)
    np.testing.assert_array_equal(np.concatenate(seen), ja.subsets.all(3))
    np.testing.assert_array_equal(ja.subsets.bits(range(2, 5), 3), ja.subsets.all(3)[2:5])
    assert ja.subsets.MAX_ALL == MAX_ROWS_PLAYERS == 24
    with pytest.raises(ValueError, match=r"limit n <= MAX_ALL = 24"):
        ja.subsets.all(25)
    with pytest.raises(ValueError, match=r"n \(number of components\) must be a positive int"):
        ja.subsets.loco(True)
