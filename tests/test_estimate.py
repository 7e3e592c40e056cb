"""``ja.Game`` and ``ja.estimate``: budgets, reproducibility, unbiasedness and coverage.

References are independent of the estimators: closed-form values of AND/OR games
(:mod:`tests._games`), exact transforms of full tables from real sweeps
(``ja.interactions`` on ``ja.evaluate`` over every subset), and shapiq's approximators.
Every random draw comes from a fixed key, so each statistical check is deterministic.
"""

import argparse
import json
import warnings

import jax
import numpy as np
import pytest
from flax import nnx

import jaxablate as ja
from jaxablate import _pair_estimates, _sampling, estimate_cli
from jaxablate import estimate as est
from jaxablate import interactions as ia
from jaxablate.games import Budget
from tests._games import TableGame, and_or_game

SEEDS = 40


class Counting:
    """A game that records every call and refuses rows past a limit."""

    def __init__(self, game, limit: int | None = None):
        self.game, self.n, self.limit = game, game.n, limit
        self.calls: list[int] = []

    def __call__(self, rows):
        self.calls.append(len(rows))
        if self.limit is not None and sum(self.calls) > self.limit:
            raise AssertionError(f"asked for {sum(self.calls)} rows, limit {self.limit}")
        return self.game(rows)


def exact_of(values):
    with jax.enable_x64(True):
        v = np.asarray(values, np.float64)
        return {
            "shapley": np.asarray(ia.shapley(v)),
            "banzhaf": np.asarray(ia.banzhaf(v)),
            "sii": np.asarray(ia.pairs(ia.shapley_interaction(v))),
            "removal": np.asarray(ia.removal_pairs(v)),
        }


ESTIMATORS = {
    "kernel": lambda g, b, k: est.shapley(g, budget=b, key=k),
    "permutation": lambda g, b, k: est.shapley(g, budget=b, key=k, method="permutation"),
    "regression": lambda g, b, k: est.banzhaf(g, budget=b, key=k),
    "msr": lambda g, b, k: est.banzhaf(g, budget=b, key=k, method="msr"),
    "sii": lambda g, b, k: est.pairs(g, budget=b, key=k),
}
TARGET = {"kernel": "shapley", "permutation": "shapley", "regression": "banzhaf", "msr": "banzhaf"}


def statistics(name, game, exact, budget, seeds=SEEDS):
    """Coverage of ``value ± 2 stderr`` and the largest |bias| / stderr-of-the-mean."""
    runs = [ESTIMATORS[name](game, budget, jax.random.key(s)) for s in range(seeds)]
    values = np.stack([r.values for r in runs])
    stderr = np.stack([r.stderr for r in runs])
    if values.ndim == 3:  # pairs: the upper triangle
        iu, ju = np.triu_indices(game.n, k=1)
        values, stderr, exact = values[:, iu, ju], stderr[:, iu, ju], exact[iu, ju]
    coverage = float(np.mean(np.abs(values - exact) <= 2 * stderr))
    spread = values.std(0, ddof=1) / np.sqrt(seeds) + 1e-12
    bias_z = float(np.max(np.abs(values.mean(0) - exact) / spread))
    rmse = float(np.sqrt(np.mean((values - exact) ** 2)))
    return coverage, bias_z, rmse, runs


# ------------------------------------------------------------------------------ Game


def test_game_batches_counts_and_caches():
    seen = []
    table = np.random.default_rng(0).normal(size=2**5)
    base = TableGame(table)
    game = ja.Game.from_value_fn(lambda rows: seen.append(rows.copy()) or base(rows), 5)
    rows = ja.subsets.bits([3, 7, 3, 0, 7], 5)
    np.testing.assert_array_equal(game(rows), table[[3, 7, 3, 0, 7]])
    assert len(seen) == 1 and len(seen[0]) == 3  # one call, each distinct row once
    assert (game.evaluations, game.hits, game.calls, game.n, game.n_players) == (3, 2, 1, 5, 5)
    np.testing.assert_array_equal(game(ja.subsets.bits([7, 1], 5)), table[[7, 1]])
    assert len(seen[1]) == 1 and (game.evaluations, game.hits, game.calls) == (4, 3, 2)
    game(ja.subsets.bits([7], 5))  # all cached: no call
    assert game.calls == 2
    plain = ja.Game.from_value_fn(lambda rows: seen.append(rows) or base(rows), 5, cache=False)
    plain(rows)
    assert len(seen[-1]) == 5 and plain.evaluations == 5 and plain.hits == 0
    assert ja.interactions.ShapiqGame is ja.Game  # one class for shapiq and the estimators


@pytest.fixture(scope="module")
def small_model():
    cfg = ja.ModelConfig(
        n_layers=2, n_heads=3, d_model=12, d_head=4, d_mlp=24, vocab_size=19, n_ctx=8,
        init_std=0.5,
    )  # fmt: skip
    model = ja.Transformer(cfg, rngs=nnx.Rngs(5))
    tokens = np.random.default_rng(1).integers(0, 19, (3, 6)).astype(np.int32)
    return model, ja.heads(cfg), tokens


@pytest.mark.slow
def test_model_game_is_evaluate_and_writes_through_a_resumable_sweep(small_model, tmp_path):
    model, comps, tokens = small_model
    table = ja.evaluate(model, comps, ja.subsets.all(6), tokens, chunk_size=16)
    game = ja.Game(model, comps, tokens, chunk_size=16, out=tmp_path / "run")
    first = est.shapley(game, budget=40, key=jax.random.key(0))
    assert game.calls == 1 and game.evaluations == first.evaluations <= 40
    same = est.shapley(TableGame(table), budget=40, key=jax.random.key(0))
    np.testing.assert_allclose(first.values, same.values, atol=1e-5)
    np.testing.assert_allclose(first.stderr, same.stderr, atol=1e-5)
    status = ja.sweep_status(tmp_path / "run" / "call_000000")
    assert status.complete and status.n_rows % 16 == 0 and status.n_rows >= first.evaluations
    # a killed run: one chunk lost; the rerun reads the rest and gets the same estimate
    next((tmp_path / "run" / "call_000000" / "chunks").glob("chunk_*.npz")).unlink()
    again = est.shapley(ja.Game(model, comps, tokens, chunk_size=16, out=tmp_path / "run"),
                        budget=40, key=jax.random.key(0))  # fmt: skip
    np.testing.assert_array_equal(again.values, first.values)
    other = ja.Game(model, comps, tokens, chunk_size=16, out=tmp_path / "run")
    with pytest.raises(ValueError, match="different arguments"):  # other rows: refused
        est.shapley(other, budget=40, key=jax.random.key(1))


# ------------------------------------------------------------------------------ budgets, keys


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_budget_is_a_hard_limit_and_keys_reproduce(name):
    game = and_or_game(24, 3)
    for budget in (100, 301, 1000):
        counting = Counting(game, limit=budget)
        a = ESTIMATORS[name](counting, budget, jax.random.key(7))
        assert a.evaluations == sum(counting.calls) <= budget
        assert a.evaluations >= budget - 2 * 24  # at most one draw's rows unspent
        b = ESTIMATORS[name](game, budget, jax.random.key(7))
        np.testing.assert_array_equal(a.values, b.values)
        np.testing.assert_array_equal(a.stderr, b.stderr)
        c = ESTIMATORS[name](game, budget, jax.random.PRNGKey(8))
        assert not np.array_equal(a.values, c.values)
    assert max(counting.calls) <= est.ROUND_ROWS


def test_more_players_than_bits_in_an_int64():
    game = and_or_game(70, 1)  # rows are packed, never int64 bitmasks; size 1 is enumerated
    for name, exact in (("kernel", game.shapley()), ("sii", game.sii_pairs())):
        e = ESTIMATORS[name](game, 2000, jax.random.key(0))
        assert e.evaluations <= 2000 and np.isfinite(e.values).all()
        err = np.abs(e.values - exact)[np.triu_indices(70, 1) if exact.ndim == 2 else ...]
        se = e.stderr[np.triu_indices(70, 1) if exact.ndim == 2 else ...]
        assert np.mean(err <= 2 * se) > 0.85, name


def test_bad_budgets_keys_and_games_raise():
    game = and_or_game(10, 0)
    key = jax.random.key(0)
    for bad in (0, -5, 2.5, True, "100", None):
        with pytest.raises(ValueError, match="budget must be a positive int"):
            est.shapley(game, budget=bad, key=key)  # type: ignore[arg-type]
    for bad in (0, None, np.zeros(3, np.uint32), jax.random.split(key, 2)):
        with pytest.raises(ValueError, match=r"key must be a single jax\.random key"):
            est.banzhaf(game, budget=100, key=bad)  # type: ignore[arg-type]
    for bad in (lambda rows: rows.sum(1), object(), TableGame(np.zeros(1))):
        with pytest.raises(ValueError, match="attribute n"):
            est.pairs(bad, budget=100, key=key)
    with pytest.raises(ValueError, match=r"at least 22 evaluations for n = 10"):
        est.shapley(game, budget=21, key=key)
    with pytest.raises(ValueError, match=r"at least 38 evaluations"):
        est.shapley(game, budget=37, key=key, method="permutation")
    with pytest.raises(ValueError, match=r"at least 56 evaluations"):
        est.pairs(game, budget=55, key=key, index="removal")
    with pytest.raises(ValueError, match=r"method must be one of \['kernel', 'permutation'\]"):
        est.shapley(game, budget=100, key=key, method="svarm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"index must be one of"):
        est.pairs(game, budget=100, key=key, index="bii")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 2 players"):
        est.pairs(TableGame(np.zeros(2)), budget=100, key=key)
    nan_game = ja.Game.from_value_fn(lambda rows: np.full(len(rows), np.nan), 30)
    with pytest.raises(ValueError, match="NaN"):
        est.shapley(nan_game, budget=100, key=key)
    with pytest.raises(ValueError, match="one shape"):
        ja.Estimate(np.zeros(3), np.zeros(2), 1)


@pytest.mark.slow  # compiles four exact transforms in float64
def test_a_budget_covering_the_game_is_exact_and_removal_pairs_are_exact():
    table = np.random.default_rng(3).normal(size=2**7)
    exact = exact_of(table)
    for name, target in [*TARGET.items(), ("sii", "sii")]:
        e = ESTIMATORS[name](TableGame(table), 2**7, jax.random.key(0))
        np.testing.assert_allclose(e.values, exact[target], atol=1e-12)
        assert not e.stderr.any() and e.evaluations == 2**7
    e = est.pairs(TableGame(table), budget=10**6, key=jax.random.key(0), index="removal")
    np.testing.assert_allclose(e.values, exact["removal"], atol=1e-12)
    assert e.evaluations == 1 + 7 + 21 and not e.stderr.any()


# ------------------------------------------------------------------------------ accuracy


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_unbiased_with_honest_error_bars_on_and_or_games(name):
    game = and_or_game(30, 11)  # no table: closed-form values of AND/OR terms up to order 5
    exact = {"shapley": game.shapley(), "banzhaf": game.banzhaf(), "sii": game.sii_pairs()}
    coverage, bias_z, _, _ = statistics(name, game, exact[TARGET.get(name, "sii")], 1500)
    assert coverage >= 0.88, coverage
    assert bias_z < 4.5, bias_z  # the largest of n (or n(n-1)/2) z-scores of the mean


def test_kernel_values_are_efficient_and_error_falls_like_one_over_sqrt_budget():
    game = and_or_game(40, 2)
    exact = game.shapley()
    full, empty = game(np.ones((1, 40), bool))[0], game(np.zeros((1, 40), bool))[0]
    rmse = {}
    for budget in (1000, 4000):
        _, _, rmse[budget], runs = statistics("kernel", game, exact, budget, seeds=12)
        for r in runs:
            np.testing.assert_allclose(r.values.sum(), full - empty, rtol=1e-9, atol=1e-9)
    assert 0.35 < rmse[4000] / rmse[1000] < 0.65, rmse  # 1/sqrt(4) = 0.5; curve: benchmarks


@pytest.fixture(scope="module")
def sweep_tables():
    """Exact tables of real sweeps: a random 2-layer model's 12 heads and the shipped
    induction model's 8 heads."""
    cfg = ja.ModelConfig(
        n_layers=2, n_heads=6, d_model=24, d_head=4, d_mlp=48, vocab_size=31, n_ctx=8,
        init_std=0.5,
    )  # fmt: skip
    model = ja.Transformer(cfg, rngs=nnx.Rngs(0))
    tokens = np.random.default_rng(0).integers(0, 31, (4, 8)).astype(np.int32)
    random_table = ja.Game(model, ja.heads(cfg), tokens).table()
    toy, task = ja.load_pretrained("induction-2l")
    toy_game = ja.Game(toy, ja.heads(toy.config), task.batch(jax.random.key(0), 8),
                       metric=task.metric)  # fmt: skip
    return {"random-12": random_table, "induction-2l": toy_game.table()}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_unbiased_with_honest_error_bars_on_sweep_tables(name, sweep_tables):
    for label, table in sweep_tables.items():
        n = int(np.log2(len(table)))
        exact = exact_of(table)[TARGET.get(name, "sii")]
        budget = 2 ** (n - 2) if n > 8 else 100
        coverage, bias_z, _, _ = statistics(name, TableGame(table), exact, budget, seeds=30)
        assert coverage >= 0.85, (label, coverage)
        assert bias_z < 4.5, (label, bias_z)


@pytest.mark.slow
def test_as_accurate_as_shapiq_at_equal_budgets(sweep_tables):
    """Against shapiq's best Shapley approximator on these games (KernelSHAP with pairing;
    ``benchmarks/estimate.py`` compares all of them). 60 seeds: each pooled RMSE is known to
    ~3%, and the two agree within ~5% (parity), so a 10% margin fails only on a real loss."""
    shapiq = pytest.importorskip("shapiq")
    game = TableGame(sweep_tables["random-12"])
    exact = exact_of(game.values)["shapley"]
    for budget in (300, 1000):
        ours = statistics("kernel", game, exact, budget, seeds=60)[2]
        theirs = []
        for s in range(60):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                approx = shapiq.KernelSHAP(game.n, pairing_trick=True, random_state=s)
                d = approx.approximate(budget, game).dict_values
            phi = np.array([d.get((i,), 0.0) for i in range(game.n)])
            theirs.append(np.mean((phi - exact) ** 2))
        assert ours <= 1.1 * np.sqrt(np.mean(theirs)), (budget, ours, np.sqrt(np.mean(theirs)))


# ------------------------------------------------------------------------------ pairs (SII)


def _smooth_table(n: int, seed: int) -> np.ndarray:
    """A real-ish game: a saturating score of a random 2-additive logit (all orders of
    interaction, the larger ones small), as the table of every subset."""
    rng = np.random.default_rng(seed)
    rows = np.asarray(ja.subsets.all(n), np.float64)
    w, b = rng.normal(size=n), rng.normal(size=(n, n)) / n
    return np.tanh(0.5 * (rows @ w + np.einsum("mi,ij,mj->m", rows, b, rows) - 1.0))


def test_sii_regression_is_exact_on_a_2_additive_game():
    game = and_or_game(12, 5, max_order=2)  # AND/OR of pairs: a 2-additive game
    e = est.pairs(game, budget=400, key=jax.random.key(0))
    np.testing.assert_allclose(e.values, game.sii_pairs(), atol=1e-8)
    np.testing.assert_allclose(e.stderr, 0.0, atol=1e-8)  # the residual is zero
    assert e.evaluations <= 400


def test_sii_regression_agrees_with_exact_sii_within_stderr_and_beats_the_centred_one():
    table = _smooth_table(10, 0)
    with jax.enable_x64(True):
        exact = np.asarray(ia.pairs(ia.shapley_interaction(np.asarray(table, np.float64))))
    game, (iu, ju) = TableGame(table), np.triu_indices(10, k=1)
    err, z, plain = [], [], []
    for s in range(10):
        e = est.pairs(game, budget=150, key=jax.random.key(s))
        err.append(e.values[iu, ju] - exact[iu, ju])
        z.append(np.abs(err[-1]) / np.maximum(e.stderr[iu, ju], 1e-300))
        old = _pair_estimates.sii_pairs(Budget(game, 150), _sampling.rng_of(jax.random.key(s)))
        plain.append(old.values[iu, ju] - exact[iu, ju])
    assert np.mean(np.stack(z) <= 2) >= 0.88
    bias_z = np.mean(err, axis=0) / (np.std(err, axis=0, ddof=1) / np.sqrt(10))
    assert np.mean(bias_z**2) < 2.5  # t-scores of the mean (E t_9^2 = 1.29): no visible bias
    assert np.sqrt(np.mean(np.square(err))) < 0.8 * np.sqrt(np.mean(np.square(plain)))


def test_sii_regression_respects_the_budget_near_the_whole_table():
    game = and_or_game(10, 4)
    for budget in (26, 60, 1000, 1020, 1023):  # from the least budget to nearly 2^n
        counting = Counting(game, limit=budget)
        a = est.pairs(counting, budget=budget, key=jax.random.key(3))
        assert a.evaluations == sum(counting.calls) <= budget
        assert np.isfinite(a.values).all() and np.isfinite(a.stderr).all()
        b = est.pairs(game, budget=budget, key=jax.random.key(3))
        np.testing.assert_array_equal(a.values, b.values)
        np.testing.assert_array_equal(a.stderr, b.stderr)


def test_sii_uses_the_centred_estimator_beyond_the_pair_limit(monkeypatch):
    game = and_or_game(12, 2)
    monkeypatch.setattr(est, "SII_MAX_PAIRS", 65)  # 66 pairs at n = 12: the plain estimator
    a = est.pairs(game, budget=300, key=jax.random.key(1))
    b = _pair_estimates.sii_pairs(Budget(game, 300), _sampling.rng_of(jax.random.key(1)))
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.stderr, b.stderr)


# ------------------------------------------------------------------------------ tables, CLI


def test_summary_rows_and_format_table():
    e = ja.Estimate(np.array([0.1, -2.0, 0.5]), np.array([0.01, 0.1, 0.0]), 42)
    head, rows = est.summary_rows(e, ["a", "b", "c"], top=2)
    assert head[0] == "component" and [r[0] for r in rows] == ["b", "c"]
    assert rows[0][3] == "[-2.2, -1.8]"
    text = est.format_table(e, ["a", "b", "c"])
    lines = text.splitlines()
    assert [line.split()[0] for line in lines[1:4]] == ["b", "c", "a"]
    assert lines[-1] == "(42 evaluations)"
    p = ja.Estimate(np.array([[0, 1.0], [1.0, 0]]), np.zeros((2, 2)), 4)
    assert est.summary_rows(p, ["x", "y"])[1][0][0] == "x x y"
    with pytest.raises(ValueError, match="names"):
        est.summary_rows(e, ["a"])
    html = estimate_cli.report_section(e, ["a", "b", "c"], title="Shapley")
    assert "<h2>Shapley</h2>" in html and "42 evaluations" in html


@pytest.mark.slow
def test_cli_estimates_and_writes_json(small_model, tmp_path, capsys):
    model, _, tokens = small_model
    ja.save_model(model, tmp_path / "model")
    np.save(tmp_path / "tokens.npy", tokens)
    parser = argparse.ArgumentParser()
    estimate_cli.add_estimate_arguments(parser)
    common = ["--model", str(tmp_path / "model"), "--tokens", str(tmp_path / "tokens.npy")]
    args = parser.parse_args([*common, "--budget", "30", "--json", str(tmp_path / "e.json")])
    assert estimate_cli.run_estimate(args) == 0
    out = capsys.readouterr().out
    assert "Shapley value of 6 components" in out and "L0H0" in out
    record = json.loads((tmp_path / "e.json").read_text())
    table = ja.evaluate(model, ja.heads(model.config), ja.subsets.all(6), tokens)
    direct = est.shapley(TableGame(table), budget=30, key=jax.random.key(0))
    np.testing.assert_allclose(record["values"], direct.values, atol=1e-5)
    args = parser.parse_args([*common, "--budget", "3", "--index", "removal"])
    assert estimate_cli.run_estimate(args) == 2
    assert "at least 22 evaluations" in capsys.readouterr().err


def test_budget_helper_refuses_overspending():
    b = Budget(and_or_game(4, 0), 5)
    b(np.ones((3, 4), bool))
    assert (b.used, b.left) == (3, 2)
    with pytest.raises(RuntimeError, match="exceed the budget of 5"):
        b(np.ones((3, 4), bool))
