"""ja.estimate.sparse_mobius and ja.estimate.screen on planted games and a shipped toy model.

A planted game is ``v(S) = sum_T m(T) [T ⊆ S]`` over a few random terms, plus optional noise;
its terms are the ground truth. Small cases are checked against the full table's Möbius
transform (``ja.interactions.mobius``), the screen's table against direct evaluation of every
coalition. Every game counts the rows it is asked for, so budgets are checked from outside.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxablate as ja

KEY = jax.random.key(0)


class Planted:
    """A planted sparse presence game that counts the rows it is asked for.

    Terms: ``(): offset`` and ``n_terms`` random sets of 1..``max_degree`` players with values
    of magnitude 0.5-1.5 and random sign. Noise (uniform, sd ``noise``) is a deterministic hash
    of the row, so a row always gets the same value and two runs with the same rows agree.
    """

    def __init__(self, n, n_terms=20, *, max_degree=3, noise=0.01, seed=0, terms=None):
        rng = np.random.default_rng(seed)
        self.n = n
        self.noise = noise
        self.terms = {(): 0.3} if terms is None else dict(terms)
        while terms is None and len(self.terms) < n_terms + 1:
            d = int(rng.integers(1, max_degree + 1))
            t = tuple(sorted(rng.choice(n, d, replace=False).tolist()))
            self.terms[t] = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.5))
        self.asked = 0
        self.seen: list[np.ndarray] = []
        self._weights = np.random.default_rng(12345).uniform(1.0, 1000.0, n)

    def exact(self, rows):
        rows = np.asarray(rows, bool)
        out = np.zeros(rows.shape[0])
        for t, v in self.terms.items():
            out += v * (rows[:, list(t)].all(1) if t else 1.0)
        return out

    def __call__(self, rows):
        rows = np.asarray(rows, bool)
        self.asked += rows.shape[0]
        self.seen.append(rows.copy())
        h = rows @ self._weights  # distinct rows, distinct h (almost surely)
        uniform = np.modf(np.abs(np.sin(h) * 43758.5453))[0]
        return self.exact(rows) + self.noise * np.sqrt(12.0) * (uniform - 0.5)  # sd: noise


def assert_recovered(terms, planted, rtol=0.05):
    """Every planted term within ``rtol``, and no other term."""
    assert set(terms) == set(planted), (
        f"missing {sorted(set(planted) - set(terms))}, false {sorted(set(terms) - set(planted))}"
    )
    for t, v in planted.items():
        np.testing.assert_allclose(terms[t], v, rtol=rtol, err_msg=str(t))


# ------------------------------------------------------------------------------ recovery


@pytest.mark.parametrize("seed", [0, 1])
def test_recovers_planted_terms_at_n60(seed):
    game = Planted(60, 20, seed=seed)
    est = ja.estimate.sparse_mobius(game, budget=1000, key=jax.random.key(seed), max_degree=3)
    assert_recovered(est.terms, game.terms)
    assert est.evaluations == game.asked <= 1000
    assert est.r2_heldout > 0.999
    assert isinstance(est, ja.estimate.SparseMobius)
    assert all(t == tuple(sorted(t)) for t in est.terms)


@pytest.mark.slow
@pytest.mark.parametrize(("n", "budget"), [(120, 2000), (200, 3000)])
def test_recovers_planted_terms_at_large_n(n, budget):
    game = Planted(n, 20, seed=n)
    est = ja.estimate.sparse_mobius(game, budget=budget, key=KEY)
    assert_recovered(est.terms, game.terms)
    assert est.evaluations == game.asked <= budget


def test_matches_the_exact_mobius_table_of_a_sparse_game():
    n = 10
    game = Planted(n, 8, max_degree=3, noise=0.0, seed=3)
    with jax.enable_x64(True):
        m = np.asarray(ja.interactions.mobius(jnp.asarray(game.exact(ja.subsets.all(n)))))
    exact = {
        tuple(int(i) for i in np.flatnonzero(row)): float(m[r])
        for r, row in enumerate(ja.subsets.all(n))
        if abs(m[r]) > 1e-9
    }
    est = ja.estimate.sparse_mobius(game, budget=400, key=KEY, max_degree=3)
    assert_recovered(est.terms, exact, rtol=1e-9)
    assert est.r2_heldout == pytest.approx(1.0, abs=1e-12)
    rows = ja.subsets.all(n)
    np.testing.assert_allclose(est.predict(rows), game.exact(rows), atol=1e-9)
    with jax.enable_x64(True):
        shapley = np.asarray(ja.interactions.shapley(jnp.asarray(game.exact(rows))))
    np.testing.assert_allclose(est.shapley(), shapley, atol=1e-9)


def test_max_degree_limits_the_search():
    game = Planted(30, terms={(): 0.0, (1,): 1.0, (2, 3): -1.0, (4, 5, 6): 0.8}, noise=0.0)
    two = ja.estimate.sparse_mobius(game, budget=600, key=KEY, max_degree=2)
    assert max(len(t) for t in two.terms) <= 2
    assert two.r2_heldout < 0.99  # the triple is out of reach
    three = ja.estimate.sparse_mobius(game, budget=600, key=KEY, max_degree=3)
    assert_recovered(three.terms, game.terms, rtol=1e-9)


# ------------------------------------------------------------------------------ budget and keys


@pytest.mark.parametrize("budget", [69, 333, 1000])
def test_budget_is_a_hard_limit(budget):
    game = Planted(30, 5, seed=1)
    est = ja.estimate.sparse_mobius(game, budget=budget, key=KEY)
    assert game.asked == est.evaluations <= budget
    assert len(game.seen) == 1  # one call, all rows at once
    assert len(np.unique(game.seen[0], axis=0)) == game.asked  # distinct rows


def test_small_games_use_at_most_every_coalition():
    game = Planted(6, terms={(): 1.0, (0, 1): 2.0}, noise=0.0)
    est = ja.estimate.sparse_mobius(game, budget=10_000, key=KEY)
    assert est.evaluations == game.asked == 2**6
    assert_recovered(est.terms, game.terms, rtol=1e-9)


def test_ja_game_counts_the_same_rows():
    planted = Planted(40, 6, seed=2, noise=0.0)
    game = ja.Game.from_value_fn(planted, 40)
    est = ja.estimate.sparse_mobius(game, budget=500, key=KEY)
    assert est.evaluations == game.evaluations == planted.asked <= 500
    assert_recovered(est.terms, planted.terms, rtol=1e-9)


def test_same_key_same_result_other_key_other_rows():
    a, b, c = (Planted(40, 8, seed=4, noise=0.05) for _ in range(3))
    first = ja.estimate.sparse_mobius(a, budget=600, key=jax.random.key(7))
    again = ja.estimate.sparse_mobius(b, budget=600, key=jax.random.key(7))
    other = ja.estimate.sparse_mobius(c, budget=600, key=jax.random.key(8))
    assert first == again
    np.testing.assert_array_equal(a.seen[0], b.seen[0])
    assert not np.array_equal(a.seen[0], c.seen[0])
    assert first.terms != other.terms  # same support, other noise
    assert set(first.terms) == set(other.terms) == set(a.terms)
    raw = ja.estimate.sparse_mobius(b, budget=600, key=jax.random.PRNGKey(7))
    assert raw == first  # a raw uint32 key with the same bits draws the same rows


# ------------------------------------------------------------------------------ bad input


class _NoN:
    def __call__(self, rows):
        return np.zeros(len(rows))


class _WithN:
    def __init__(self, n, fn):
        self.n, self.fn = n, fn

    def __call__(self, rows):
        return self.fn(rows)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(budget=0), "budget"),
        (dict(budget=-5), "budget"),
        (dict(budget=100.0), "budget"),
        (dict(budget=True), "budget"),
        (dict(budget="500"), "budget"),
        (dict(budget=30), "at least 47"),
        (dict(key=0), "key"),
        (dict(key=None), "key"),
        (dict(key=jax.random.split(KEY)), "key"),
        (dict(max_degree=0), "max_degree"),
        (dict(max_degree=21), "max_degree"),
        (dict(max_degree=2.0), "max_degree"),
        (dict(holdout=0.0), "holdout"),
        (dict(holdout=0.6), "holdout"),
        (dict(holdout=True), "holdout"),
        (dict(z=0.0), "z"),
        (dict(z=float("nan")), "z"),
        (dict(z="4"), "z"),
        (dict(keep=0.3), "keep"),
        (dict(keep=0.95), "keep"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    game = Planted(20, 3)
    args = dict(budget=500, key=KEY) | kwargs
    with pytest.raises(ValueError, match=match):
        ja.estimate.sparse_mobius(game, **args)
    assert game.asked == 0  # nothing evaluated before the checks


@pytest.mark.parametrize(
    ("game", "match"),
    [
        (_NoN(), "attribute n"),
        (_WithN(0, np.zeros), "attribute n"),
        (_WithN("20", np.zeros), "attribute n"),
        (_WithN(True, np.zeros), "attribute n"),
        (np.zeros(3), "callable"),
        (_WithN(20, lambda rows: np.zeros(3)), "values"),
        (_WithN(20, lambda rows: np.zeros((len(rows), 2))), "values"),
        (_WithN(20, lambda rows: np.full(len(rows), np.nan)), "NaN"),
        (_WithN(3, lambda rows: np.zeros(len(rows))), "too few"),
    ],
)
def test_bad_games_raise(game, match):
    with pytest.raises(ValueError, match=match):
        ja.estimate.sparse_mobius(game, budget=500, key=KEY)


# ------------------------------------------------------------------------------ screen

STRONG = {(): 0.5, (3,): 2.0, (7,): -1.5, (3, 11): 1.2, (7, 11, 20): -1.0, (25,): 0.9}


def _restricted_mobius(terms, players, rest):
    """Möbius table of the game over ``players`` with the rest fixed, from the planted terms:
    a term ``T`` lands on ``T ∩ players`` when the rest is kept, on ``T`` when it lies inside
    ``players`` and the rest is ablated."""
    pos = {p: i for i, p in enumerate(players)}
    out = np.zeros(2 ** len(players))
    for t, v in terms.items():
        outside = [i for i in t if i not in pos]
        if outside and rest == "ablated":
            continue
        out[sum(1 << pos[i] for i in t if i in pos)] += v
    return out


@pytest.mark.parametrize("rest", ["kept", "ablated"])
def test_screen_finds_the_players_and_studies_them_exactly(rest):
    weak = {(i,): 0.01 * (-1) ** i for i in (30, 31, 32, 33)}
    game = Planted(40, terms=STRONG | weak, noise=0.0)
    s = ja.estimate.screen(game, k=5, budget=600, key=KEY, rest=rest)
    assert s.players == (3, 7, 11, 20, 25)
    assert game.asked == s.evaluations <= 600
    rows = np.full((2**5, 40), rest == "kept")
    rows[:, list(s.players)] = ja.subsets.all(5)
    np.testing.assert_allclose(s.table, game.exact(rows), atol=1e-12)
    np.testing.assert_allclose(s.mobius, _restricted_mobius(game.terms, s.players, rest), atol=1e-9)
    strong_mass = sum(abs(v) for t, v in STRONG.items() if t)
    np.testing.assert_allclose(s.mass_share, strong_mass / (strong_mass + 0.04), rtol=1e-6)
    full, empty = game.exact(np.ones((1, 40), bool))[0], game.terms[()]
    top = np.zeros((1, 40), bool)
    top[0, list(s.players)] = True
    if rest == "kept":  # v(N) - v(N without the k)
        covered = full - game.exact(~top)[0]
    else:  # v(the k alone) - v(∅)
        covered = game.exact(top)[0] - empty
    np.testing.assert_allclose(s.effect_share, covered / (full - empty), rtol=1e-9)
    assert s.rest == rest and s.scores.shape == (40,)
    assert np.argmax(s.scores) == 3


def test_screen_budget_and_bad_arguments():
    game = Planted(30, 5, seed=5)
    s = ja.estimate.screen(game, k=4, budget=200, key=KEY)
    assert game.asked == s.evaluations <= 200
    assert s.estimate.evaluations == 200 - (2**4 + 1)
    for kwargs, match in [
        (dict(k=0), "k must"),
        (dict(k=31), "k must"),
        (dict(k=25), "k must"),
        (dict(rest="dropped"), "rest"),
        (dict(budget=60), "at least"),
        (dict(key=1), "key"),
        (dict(max_degree=0), "max_degree"),
    ]:
        args = dict(k=4, budget=200, key=KEY) | kwargs
        with pytest.raises(ValueError, match=match):
            ja.estimate.screen(game, **args)


def _subset_sums_mobius(table):
    """``m(S) = sum_{Q ⊆ S} (-1)^{|S| - |Q|} v(Q)``, a loop over every pair of bitmasks."""
    size = len(table)
    return np.array(
        [
            sum(
                (-1) ** (r.bit_count() - q.bit_count()) * table[q]
                for q in range(size)
                if q & r == q
            )
            for r in range(size)
        ]
    )


@pytest.mark.slow
def test_screen_on_a_shipped_model_against_brute_force():
    model, task = ja.load_pretrained("induction-2l")
    tokens = task.batch(jax.random.key(1), 8)
    comps = ja.heads(model.config)
    n = len(comps)

    def value_fn(rows):  # padded to 64 rows: one compiled program serves every call
        padded = np.concatenate([rows, np.repeat(rows[-1:], -len(rows) % 64, axis=0)])
        values = ja.evaluate(
            model, comps, padded, tokens, metric=task.metric, share_prefix=False, chunk_size=64
        )
        return values[: len(rows)]

    game = ja.Game.from_value_fn(value_fn, n)
    s = ja.estimate.screen(game, k=3, budget=150, key=KEY, rest="kept")
    full = value_fn(ja.subsets.all(n))  # every coalition, brute force
    rows = np.ones((8, n), bool)
    rows[:, list(s.players)] = ja.subsets.all(3)
    sub = full[ja.subsets.codes(rows)].astype(np.float64)
    np.testing.assert_allclose(s.table, sub, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s.mobius, _subset_sums_mobius(sub), atol=1e-5)
    effect = (full[-1] - full[ja.subsets.codes(rows[:1])[0]]) / (full[-1] - full[0])
    np.testing.assert_allclose(s.effect_share, effect, rtol=1e-4)
    assert s.evaluations <= 150
    assert s.players == tuple(sorted(np.argsort(-s.scores, kind="stable")[:3].tolist()))


def test_terms_are_sorted_tuples_with_the_constant():
    game = Planted(25, terms={(): 2.0, (2, 4): 1.0}, noise=0.0)
    est = ja.estimate.sparse_mobius(game, budget=300, key=KEY, max_degree=2)
    assert list(est.terms) == [(), (2, 4)]
    assert set(est.stderr) == set(est.terms)
    assert est.noise_std < 1e-9 and est.n == 25 and est.max_degree == 2
