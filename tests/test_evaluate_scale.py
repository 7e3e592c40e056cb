"""Prefix sharing, memory-bounded and probed chunk sizes, and device sharding equal the naive path."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from flax import nnx

import jaxablate as ja
from jaxablate import _chunking
from jaxablate._evaluate import run
from tests._xla import subprocess_xla_flags

CFG = ja.ModelConfig(
    n_layers=4, n_heads=3, d_model=24, d_head=8, d_mlp=40, vocab_size=31, n_ctx=12, init_std=0.3
)


@pytest.fixture(scope="module")
def model():
    return ja.Transformer(CFG, rngs=nnx.Rngs(11))


@pytest.fixture(scope="module")
def tokens():
    return np.random.default_rng(5).integers(0, 31, (3, 8)).astype(np.int32)


COMPONENT_SETS = {
    "last_layer_heads": lambda: ja.heads(CFG, layers=[3]),
    "heads_three_layers": lambda: ja.heads(CFG, layers=[0, 2, 3]),
    "mixed_blocks": lambda: (
        ja.heads(CFG, layers=[1])
        + ja.blocks(CFG, "mlp", layers=[1, 3])
        + ja.blocks(CFG, "attn", layers=[2])
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "kind"),
    [(name, "zero") for name in sorted(COMPONENT_SETS)]
    + [("mixed_blocks", "mean"), ("heads_three_layers", "resample")],
)
def test_prefix_shared_equals_naive(model, tokens, name, kind):
    comps = COMPONENT_SETS[name]()
    other = (tokens * 7 + 3) % 31
    abl = {
        "zero": ja.ablation.zero(),
        "mean": ja.ablation.mean(model, other),
        "resample": ja.ablation.resample(model, other),
    }[kind]
    rows = ja.subsets.all(len(comps))
    rng = np.random.default_rng(0)
    rows = rows[rng.permutation(len(rows))]  # arbitrary order: results come back in row order
    naive = ja.evaluate(model, comps, rows, tokens, ablation=abl, share_prefix=False, chunk_size=64)
    shared = ja.evaluate(model, comps, rows, tokens, ablation=abl, chunk_size=48)
    np.testing.assert_allclose(shared, naive, rtol=2e-5, atol=2e-5)
    assert np.ptp(naive) > 1e-3


@pytest.mark.slow
def test_prefix_sharing_handles_duplicates_and_arbitrary_rows(model, tokens):
    comps = ja.heads(CFG, layers=[0, 1]) + ja.blocks(CFG, "mlp", layers=[2])
    rng = np.random.default_rng(1)
    rows = rng.random((50, len(comps))) < 0.5
    rows = np.concatenate([rows, rows[:10]])
    per_example = ja.evaluate_per_example(model, comps, rows, tokens, chunk_size=16)
    looped = [
        np.asarray(ja.metrics.loss(model(tokens, masks=comps.masks(r)), tokens)) for r in rows[:12]
    ]
    np.testing.assert_allclose(per_example[:12], np.stack(looped), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(per_example[50:], per_example[:10])


@pytest.mark.slow
def test_memory_budget_bounds_the_chunk(model, tokens):
    comps = ja.heads(CFG, layers=[1, 2])
    rows = ja.subsets.all(len(comps))
    per_row = _chunking.bytes_per_row(CFG, *tokens.shape)
    budget = 20 * per_row
    bounded = run(model, comps, rows, tokens, memory_budget=budget)
    auto = run(model, comps, rows, tokens, memory_budget=budget, chunk_size="auto")
    assert bounded.plan.chunk <= 20 and auto.plan.chunk <= 20
    bounded, auto = bounded.per_example.mean(1), auto.per_example.mean(1)
    whole = ja.evaluate(model, comps, rows, tokens)
    np.testing.assert_allclose(bounded, whole, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(auto, whole, rtol=2e-5, atol=2e-5)
    with pytest.raises(ValueError, match=r"memory_budget=10 bytes fits 0 rows"):
        ja.evaluate(model, comps, rows, tokens, memory_budget=10)


class _Reads:
    """What :func:`_chunking.choose` reads of a runner for a rule-based plan."""

    groups = 1
    reads = (None, None)


@pytest.mark.slow
def test_auto_chunk_size_probes_and_remembers(model, tokens):
    comps = ja.heads(CFG, layers=[3])
    rows = np.repeat(ja.subsets.all(len(comps)), 40, axis=0)  # 320 rows: several candidates
    _chunking.forget_probed_plans()
    first = run(model, comps, rows, tokens, chunk_size="auto")
    chosen, inner = first.plan.chunk, first.plan.inner
    # the chunk is the rule's (the largest that fits, balanced); only the inner width is timed
    rule_plan = _chunking.choose(
        _Reads(), rows, CFG, tokens.shape, chunk_size=None, budget=None, probe_key=()
    )
    assert chosen == rule_plan.chunk
    rule = _chunking.inner_width(CFG, tokens.shape, chosen)
    assert inner in (None, 4 * rule)
    again = run(model, comps, rows, tokens, chunk_size="auto")  # remembered: no second probe
    assert again.plan == first.plan
    assert _chunking.forget_probed_plans() == 1
    np.testing.assert_allclose(
        first.per_example.mean(1), ja.evaluate(model, comps, rows, tokens), rtol=2e-5, atol=2e-5
    )


@pytest.mark.slow
def test_sharded_over_four_cpu_devices_equals_one(tmp_path, model, tokens):
    ja.save_model(model, tmp_path / "model")
    np.save(tmp_path / "tokens.npy", tokens)
    comps_expr = (
        "ja.heads(model.config, layers=[0, 2]) + ja.blocks(model.config, 'mlp', layers=[3])"
    )
    script = textwrap.dedent(
        f"""
        import json, numpy as np, jax
        import jaxablate as ja
        assert len(jax.devices()) == 4, jax.devices()
        model = ja.load_model({str(tmp_path / "model")!r})
        tokens = np.load({str(tmp_path / "tokens.npy")!r})
        comps = {comps_expr}
        rows = ja.subsets.all(len(comps))[::-1]
        abl = ja.ablation.mean(model, tokens)
        out = {{
            "sharded": ja.evaluate(model, comps, rows, tokens, ablation=abl, chunk_size=50).tolist(),
            "naive_sharded": ja.evaluate(model, comps, rows, tokens, ablation=abl, chunk_size=64,
                                         share_prefix=False).tolist(),
        }}
        print(json.dumps(out))
        """
    )
    flags = subprocess_xla_flags("--xla_force_host_platform_device_count=4")
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    comps = ja.heads(CFG, layers=[0, 2]) + ja.blocks(CFG, "mlp", layers=[3])
    rows = ja.subsets.all(len(comps))[::-1]
    one = ja.evaluate(
        model, comps, rows, tokens, ablation=ja.ablation.mean(model, tokens), share_prefix=False
    )
    assert len(jax.devices()) == 1
    np.testing.assert_allclose(out["sharded"], one, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(out["naive_sharded"], one, rtol=2e-5, atol=2e-5)


def test_balanced_chunks_pad_least_with_as_many_chunks():
    """Against brute force: the smallest multiple of groups with no more chunks."""
    rng = np.random.default_rng(0)
    for _ in range(500):
        groups = int(rng.choice([1, 2, 4]))
        chunk = groups * int(rng.integers(1, 50))
        n_rows = int(rng.integers(1, 400))
        got = _chunking.balanced(n_rows, chunk, groups)
        n_chunks = -(-n_rows // chunk)
        best = min(c for c in range(groups, chunk + 1, groups) if -(-n_rows // c) <= n_chunks)
        assert got == best, (n_rows, chunk, groups, got, best)


class _FakeAccelerator:
    platform = "gpu"

    def __init__(self, limit: int, in_use: int):
        self.stats = {"bytes_limit": limit, "bytes_in_use": in_use}

    def memory_stats(self):
        return self.stats


@pytest.mark.parametrize(
    ("limit", "in_use", "budget"),
    [
        (80 * 2**30, 0, 40 * 2**30),  # an empty device: half of it
        (80 * 2**30, 30 * 2**30, 25 * 2**30),  # weights and buffers already there are not planned
        (80 * 2**30, 79 * 2**30, 5 * 2**29),  # nearly full: a sixteenth, halved (not refused)
    ],
)
def test_default_budget_plans_over_the_free_device_memory(monkeypatch, limit, in_use, budget):
    monkeypatch.setattr(jax, "local_devices", lambda: [_FakeAccelerator(limit, in_use)])
    assert _chunking.default_budget() == budget


def test_default_budget_on_cpu_is_a_quarter_of_ram_capped():
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert _chunking.default_budget() == min(ram // 4, _chunking.MAX_DEFAULT_BUDGET)
