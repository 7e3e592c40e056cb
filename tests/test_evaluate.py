"""Batched evaluation against independent references: a float64 numpy forward, a Python loop."""

import numpy as np
import pytest
from flax import nnx

import jaxablate as ja
from jaxablate._evaluate import _naive_chunk, _tree_chunk
from tests._compile import compilations
from tests._reference import reference_logits


@pytest.fixture(scope="module")
def setup():
    cfg = ja.ModelConfig(
        n_layers=2, n_heads=3, d_model=24, d_head=8, d_mlp=48, vocab_size=29, n_ctx=16, init_std=0.3
    )
    model = ja.Transformer(cfg, rngs=nnx.Rngs(7))
    tokens = np.random.default_rng(1).integers(0, 29, (3, 9)).astype(np.int32)
    comps = ja.heads(cfg) + ja.blocks(cfg, "mlp", layers=[0])
    return model, comps, tokens


@pytest.mark.slow
def test_batched_equals_python_loop(setup):
    model, comps, tokens = setup
    rows = ja.subsets.all(len(comps))
    batched = ja.evaluate_per_example(model, comps, rows, tokens)
    assert batched.shape == (len(rows), 3)
    idx = np.random.default_rng(0).choice(len(rows), 12, replace=False)
    for i in idx:
        logits = model(tokens, masks=comps.masks(rows[i]))
        np.testing.assert_allclose(
            batched[i], np.asarray(ja.metrics.loss(logits, tokens)), rtol=1e-5, atol=1e-5
        )
    assert np.ptp(batched.mean(-1)) > 0.05  # the masks matter


@pytest.mark.slow
def test_forward_equals_float64_numpy_reference(setup):
    model, comps, tokens = setup
    reference = reference_logits(model, tokens)
    np.testing.assert_allclose(np.asarray(model(tokens)), reference, rtol=1e-4, atol=1e-4)
    ones = np.ones(len(comps), bool)
    np.testing.assert_allclose(
        np.asarray(model(tokens, masks=comps.masks(ones))), reference, rtol=1e-4, atol=1e-4
    )
    value = ja.evaluate(model, comps, ones[None], tokens)
    logp = reference - np.log(np.exp(reference).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp[:, :-1], tokens[:, 1:, None], -1)[..., 0].mean()
    np.testing.assert_allclose(value, [nll], rtol=1e-5)


def test_masked_forward_equals_float64_numpy_reference(setup):
    model, comps, tokens = setup
    cfg = model.config
    rng = np.random.default_rng(4)
    for _ in range(4):
        row = rng.random(len(comps)) < 0.5
        masks = comps.masks(row)
        reference = reference_logits(
            model,
            tokens,
            head_mask=np.asarray(masks.heads),
            mlp_mask=np.asarray(masks.mlp),
            attn_mask=np.asarray(masks.attn),
        )
        np.testing.assert_allclose(
            np.asarray(model(tokens, masks=masks)), reference, rtol=1e-4, atol=1e-4
        )
    # a continuous mask scales the head's output z (zero ablation: m * z)
    heads = np.full((cfg.n_layers, cfg.n_heads), 0.25)
    continuous = ja.Masks(
        heads=heads.astype(np.float32),
        attn=np.ones(cfg.n_layers, np.float32),
        mlp=np.ones(cfg.n_layers, np.float32),
    )
    np.testing.assert_allclose(
        np.asarray(model(tokens, masks=continuous)),
        reference_logits(model, tokens, head_mask=heads),
        rtol=1e-4,
        atol=1e-4,
    )


@pytest.mark.slow
@pytest.mark.parametrize("chunk_size", [1, 5, 64])
def test_chunked_equals_unchunked(setup, chunk_size):
    model, comps, tokens = setup
    rows = ja.subsets.all(len(comps))[:37]
    whole = ja.evaluate(model, comps, rows, tokens)
    chunked = ja.evaluate(model, comps, rows, tokens, chunk_size=chunk_size)
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("share_prefix", [True, False])
def test_second_call_does_not_recompile(setup, share_prefix):
    model, comps, tokens = setup
    jitted = _tree_chunk if share_prefix else _naive_chunk
    rows = ja.subsets.all(len(comps))[::3]
    kwargs = dict(chunk_size=16, share_prefix=share_prefix)
    ja.evaluate(model, comps, rows, tokens, **kwargs)  # several chunks, the last one padded
    before = compilations(jitted)
    other_tokens = (tokens + 1) % 29
    ja.evaluate(model, comps, rows, other_tokens, **kwargs)
    ja.evaluate(model, comps, rows[::-1], tokens, **kwargs)
    ja.evaluate(model, comps, rows, tokens, metric=ja.metrics.kl_to_clean(model, tokens), **kwargs)
    after_kl = compilations(jitted)
    ja.evaluate(
        model,
        comps,
        rows,
        other_tokens,
        metric=ja.metrics.kl_to_clean(model, other_tokens),
        **kwargs,
    )
    assert compilations(jitted) == after_kl == before + 1


def test_metrics_against_numpy(setup):
    model, comps, tokens = setup
    logits = np.asarray(model(tokens), np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp[:, :-1], tokens[:, 1:, None], -1)[..., 0].mean(-1)
    np.testing.assert_allclose(ja.metrics.loss(logits, tokens), nll, rtol=1e-5)
    acc = (logits[:, :-1].argmax(-1) == tokens[:, 1:]).mean(-1)
    np.testing.assert_allclose(ja.metrics.accuracy(logits, tokens), acc)
    correct, wrong = np.array([1, 2, 3]), np.array([4, 5, 6])
    diff = logits[np.arange(3), -1, correct] - logits[np.arange(3), -1, wrong]
    np.testing.assert_allclose(
        ja.metrics.logit_diff(correct, wrong)(logits, tokens), diff, rtol=1e-5
    )
    kl = ja.metrics.kl_to_clean(model, tokens)
    np.testing.assert_allclose(kl(logits, tokens), np.zeros(3), atol=1e-5)
    masked = np.asarray(model(tokens, masks=comps.masks(np.zeros(len(comps)))), np.float64)
    logq = masked - np.log(np.exp(masked).sum(-1, keepdims=True))
    ref = (np.exp(logp) * (logp - logq)).sum(-1).mean(-1)
    np.testing.assert_allclose(kl(masked, tokens), ref, rtol=1e-4)


def test_subsets_bit_order():
    rows = ja.subsets.all(3)
    assert rows.shape == (8, 3) and rows.dtype == bool
    for r in range(8):
        assert [bool((r >> i) & 1) for i in range(3)] == list(rows[r])
    np.testing.assert_array_equal(ja.subsets.codes(rows), np.arange(8))
    loco = ja.subsets.loco(4)
    assert (
        loco[0].all() and (loco[1:].sum(1) == 3).all() and not loco[1:][np.eye(4, dtype=bool)].any()
    )
    k2 = ja.subsets.k_subsets(5, 2)
    expected = [r for r in range(32) if bin(r).count("1") == 2]
    np.testing.assert_array_equal(ja.subsets.codes(k2), expected)
    assert ja.subsets.k_subsets(4, 0).shape == (1, 4)
    s = ja.subsets.sample(__import__("jax").random.key(3), 6, 500)
    assert s.shape == (500, 6) and s.dtype == bool and 0.4 < s.mean() < 0.6


def test_components_names_and_masks(setup):
    model, comps, _ = setup
    assert comps.names == ["L0H0", "L0H1", "L0H2", "L1H0", "L1H1", "L1H2", "L0.mlp"]
    assert len(comps) == 7
    masks = comps.masks(np.array([[1, 0, 1, 1, 1, 0, 0]], bool))
    np.testing.assert_array_equal(masks.heads, [[[1, 0, 1], [1, 1, 0]]])
    np.testing.assert_array_equal(masks.mlp, [[0, 1]])
    np.testing.assert_array_equal(masks.attn, [[1, 1]])
    attn = ja.blocks(model.config, "attn", layers=[1])
    assert attn.names == ["L1.attn"]
