"""The chunk plan's per-row estimate follows what a row computes; planned == naive values."""

import numpy as np
import pytest
from flax import nnx

import jaxablate as ja
from jaxablate import _chunking
from jaxablate._evaluate import run

CFG = ja.ModelConfig(
    n_layers=3, n_heads=3, d_model=24, d_head=8, d_mlp=40, vocab_size=301, n_ctx=12, init_std=0.3
)


def test_estimate_without_reads_is_the_whole_model():
    # 8 x d_model + 2 x d_mlp + 2 x heads x seq + 3 x vocab float32 values per token
    per_token = 8 * 24 + 2 * 40 + 2 * 3 * 10 + 3 * 301
    assert _chunking.bytes_per_row(CFG, 4, 10) == 4 * 4 * 10 * per_token


def test_estimate_counts_read_positions_and_columns():
    full = _chunking.bytes_per_row(CFG, 4, 10)
    # logits at one position, over 2 columns; the model runs the 10 positions up to it
    body = 8 * 24 + 2 * 40 + 2 * 3 * 10
    last = _chunking.bytes_per_row(CFG, 4, 10, queries=(9,), columns=2)
    assert last == 4 * 4 * (10 * body + 1 * 3 * 2)
    # a read position earlier in the sequence cuts the sequence there (attention is causal)
    early = _chunking.bytes_per_row(CFG, 4, 10, queries=(4,), columns=2)
    assert early == 4 * 4 * (5 * (8 * 24 + 2 * 40 + 2 * 3 * 5) + 3 * 2)
    # per-example positions: the latest one bounds the sequence, k positions are read
    ragged = _chunking.bytes_per_row(CFG, 4, 10, queries=((3, 6), (2, 9)), columns=None)
    assert ragged == 4 * 4 * (10 * body + 2 * 3 * 301)
    assert early < last < full


def test_inner_width_uses_the_last_stage(monkeypatch):
    monkeypatch.setattr(_chunking, "CPU_CACHE_BYTES", 64 * 2**10)
    monkeypatch.setattr(_chunking.jax, "default_backend", lambda: "cpu")
    plain = _chunking.inner_width(CFG, (4, 10), 256)
    read = _chunking.inner_width(CFG, (4, 10), 256, queries=(9,), columns=2)
    assert plain == 1  # 4 x 10 tokens of the whole model: more than 64 KiB a row
    per_row = 4 * 4 * 1 * (8 * 24 + 2 * 40 + 2 * 3 * 10 + 3 * 2)  # one position, 2 columns
    assert read == 1 << ((64 * 2**10 // per_row).bit_length() - 1)
    assert _chunking.inner_width(CFG, (4, 10), 8, queries=(9,), columns=2) == min(8, read)


@pytest.fixture(scope="module")
def model():
    return ja.Transformer(CFG, rngs=nnx.Rngs(3))


@pytest.mark.parametrize(
    ("layers", "metric"),
    [
        ([2], ja.metrics.logit_diff(3, 4)),
        ([0, 2], ja.metrics.logit_diff(3, 4, position=5)),
        ([1, 2], ja.metrics.loss),
    ],
)
def test_planned_equals_naive(model, layers, metric):
    """Default (read-aware inner width) and a forced wide inner width equal the naive path."""
    comps = ja.heads(CFG, layers=layers)
    rows = ja.subsets.all(len(comps))
    tokens = np.random.default_rng(0).integers(0, 301, (4, 10)).astype(np.int32)
    naive = ja.evaluate(model, comps, rows, tokens, metric=metric, share_prefix=False)
    planned = ja.evaluate(model, comps, rows, tokens, metric=metric)
    np.testing.assert_allclose(planned, naive, rtol=2e-5, atol=2e-5)
    wide = run(
        model, comps, rows, tokens, metric=metric, plan=_chunking.Plan(len(rows), len(rows))
    ).per_example.mean(axis=1)
    np.testing.assert_allclose(wide, naive, rtol=2e-5, atol=2e-5)
    assert np.ptp(naive) > 1e-3
