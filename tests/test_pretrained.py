"""Shipped toy models, their tasks, and the training script that reproduces them."""

import dataclasses
import json
import math
import runpy
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

import jaxablate as ja
from jaxablate import pretrained, tasks

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def train_toy():
    return runpy.run_path(str(ROOT / "scripts" / "train_toy.py"))


@pytest.fixture(scope="module")
def induction():
    return pretrained.load_pretrained("induction-2l")


def test_list_and_unknown_name():
    names = pretrained.list_pretrained()
    assert names == ["induction-2l", "modadd-1l"]
    with pytest.raises(ValueError, match="available: induction-2l, modadd-1l"):
        pretrained.load_pretrained("gpt-5")


def test_package_data_is_small():
    data = Path(pretrained.__file__).parent / "models" / "pretrained_data"
    total = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
    assert 0 < total < 10 * 2**20
    for name in pretrained.list_pretrained():
        files = {p.name for p in (data / name).iterdir()}
        assert {"config.json", "model.safetensors", "metrics.json"} <= files


def _np_next_token_ce(logits: np.ndarray, tokens: np.ndarray, b: int, p: int) -> float:
    z = logits[b, p].astype(np.float64)
    return float(np.log(np.exp(z - z.max()).sum()) + z.max() - z[tokens[b, p + 1]])


def test_induction_batches_and_metric_against_a_loop():
    task = tasks.induction(vocab_size=20, min_segment=3, max_segment=6)
    toks = np.asarray(task.batch(jax.random.key(3), 16))
    assert toks.shape == (16, 13) and toks.dtype == np.int32
    np.testing.assert_array_equal(toks, np.asarray(task.batch(jax.random.key(3), 16)))
    logits = np.asarray(jax.random.normal(jax.random.key(4), (16, 13, 20)))
    got = {k: np.asarray(f(logits, toks)) for k, f in task.metrics.items()}
    for b in range(16):
        row = toks[b]
        assert row[0] == tasks.BOS
        k = next(p for p in range(2, 13) if row[p] == row[1]) - 1  # segment length
        assert 3 <= k <= 6 and len(set(row[1 : k + 1])) == k and tasks.BOS not in row[1:]
        assert all(row[p] == row[p - k] for p in range(k + 1, 13))
        rep = [p for p in range(12) if row[p] in row[:p]]
        new = [p for p in range(12) if row[p] not in row[:p]]
        assert rep == list(range(k + 1, 12))
        ce_rep = np.mean([_np_next_token_ce(logits, toks, b, p) for p in rep])
        ce_new = np.mean([_np_next_token_ce(logits, toks, b, p) for p in new])
        acc = np.mean([logits[b, p].argmax() == row[p + 1] for p in rep])
        np.testing.assert_allclose(got["metric"][b], ce_rep, rtol=1e-5)
        np.testing.assert_allclose(got["first_half_loss"][b], ce_new, rtol=1e-5)
        np.testing.assert_allclose(got["repeat_accuracy"][b], acc, rtol=1e-6)


def test_modular_addition_batches_and_metric():
    task = tasks.modular_addition(p=7)
    toks = np.asarray(task.batch(jax.random.key(0), 32))
    np.testing.assert_array_equal(toks[:, 3], (toks[:, 0] + toks[:, 1]) % 7)
    assert (toks[:, 2] == 7).all() and toks.max() < task.vocab_size
    logits = np.asarray(jax.random.normal(jax.random.key(1), (32, 4, 8)))
    want = [_np_next_token_ce(logits, toks, b, 2) for b in range(32)]
    np.testing.assert_allclose(np.asarray(task.metric(logits, toks)), want, rtol=1e-5)


def test_bad_task_arguments():
    with pytest.raises(ValueError, match="max_segment"):
        tasks.induction(min_segment=8, max_segment=4)
    with pytest.raises(ValueError, match="vocab_size"):
        tasks.induction(vocab_size=5, max_segment=12)
    with pytest.raises(ValueError, match="batch_size"):
        tasks.modular_addition().batch(jax.random.key(0), 0)


def test_induction_model_really_does_induction(induction):
    model, task = induction
    assert model.config == pretrained.RECIPES["induction-2l"].config
    m = pretrained.task_metrics(model, task, key=jax.random.key(7), batch_size=128)
    # the first copy is random: no model beats log(vocab - 1) by much; the repeats are learned
    assert m["first_half_loss"] > 0.9 * math.log(task.vocab_size - 1)
    assert m["metric"] < 0.1 * m["first_half_loss"]
    assert m["repeat_accuracy"] > 0.9


def test_induction_heads_back_each_other_up(induction):
    """Some pair's joint removal costs clearly more than the sum of its single removals."""
    model, task = induction
    comps = ja.heads(model.config)
    n = len(comps)
    tokens = task.batch(jax.random.key(11), 64)
    v = ja.evaluate(model, comps, ja.subsets.all(n), tokens, metric=task.metric).astype(np.float64)
    full = 2**n - 1
    excess = {}
    for i in range(n):  # plain loop over the table, independent of jaxablate.interactions
        for j in range(i + 1, n):
            ci = v[full & ~(1 << i)] - v[full]
            cj = v[full & ~(1 << j)] - v[full]
            cij = v[full & ~((1 << i) | (1 << j))] - v[full]
            excess[(i, j)] = (cij - ci - cj, ci, cj, cij)
    (i, j), (ex, ci, cj, cij) = max(excess.items(), key=lambda kv: kv[1][0])
    assert ex > 1.0, (comps.names[i], comps.names[j], ci, cj, cij)
    assert cij > 3 * (ci + cj)


def test_shipped_metrics_match_the_weights(induction):
    for name in pretrained.list_pretrained():
        model, task = induction if name == "induction-2l" else pretrained.load_pretrained(name)
        shipped = pretrained.shipped_metrics(name)
        recipe = pretrained.RECIPES[name]
        assert shipped["recipe"]["steps"] == recipe.steps
        assert shipped["recipe"]["config"] == recipe.config.to_dict()
        got = pretrained.task_metrics(
            model, task, key=jax.random.key(recipe.eval_seed), batch_size=recipe.eval_batch
        )
        for k, v in shipped["eval"].items():
            np.testing.assert_allclose(got[k], v, rtol=1e-4, atol=1e-6, err_msg=f"{name} {k}")


def test_modadd_model_adds():
    model, task = pretrained.load_pretrained("modadd-1l")
    m = pretrained.task_metrics(model, task, key=jax.random.key(5), batch_size=256)
    assert m["accuracy"] > 0.95


def test_training_is_deterministic(train_toy):
    recipe = dataclasses.replace(pretrained.RECIPES["induction-2l"], batch_size=8, eval_batch=16)
    a, ma = train_toy["train"](recipe, steps=6, verbose=False)
    b, mb = train_toy["train"](recipe, steps=6, verbose=False)
    arrays_a = ja.models.io.model_arrays(a)
    arrays_b = ja.models.io.model_arrays(b)
    init = ja.models.io.model_arrays(ja.Transformer(recipe.config, rngs=nnx.Rngs(recipe.seed)))
    for k in arrays_a:
        np.testing.assert_array_equal(arrays_a[k], arrays_b[k], err_msg=k)
    assert any(not np.array_equal(arrays_a[k], init[k]) for k in arrays_a)  # it did train
    assert ma["eval"] == mb["eval"]


@pytest.mark.slow
def test_training_script_reproduces_shipped_modadd(train_toy, tmp_path):
    """Full retrain of the cheaper model from the command line; the metrics match metrics.json.

    For ``induction-2l`` run ``python scripts/train_toy.py induction-2l --check`` (minutes).
    """
    assert train_toy["main"](["modadd-1l", "--out", str(tmp_path), "--quiet"]) == 0
    fresh = json.loads((tmp_path / "metrics.json").read_text())
    shipped = pretrained.shipped_metrics("modadd-1l")
    for k, v in shipped["eval"].items():
        np.testing.assert_allclose(fresh["eval"][k], v, rtol=1e-4, atol=1e-6, err_msg=k)
