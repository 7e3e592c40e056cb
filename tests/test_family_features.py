"""The study tools on models loaded from Hugging Face families with ``ja.from_hf``.

Prefix sharing runs on every family; the rest (sweep, learned masks, recovery, attribution,
optimal ablation) on the GQA Llama case, whose query heads share key/value heads.
"""

import jax
import numpy as np
import pytest

import jaxablate as ja
from jaxablate.models.io import model_arrays
from tests.test_families import CASES, SEQ
from tests.test_families import _build as build_case

GQA = "llama-gqa-llama3"


def _tokens(vocab: int, batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, (batch, SEQ)).astype(np.int32)


@pytest.fixture(scope="module")
def llama():
    model = ja.from_hf(build_case(GQA))
    cfg = model.config
    assert 1 < cfg.kv_heads < cfg.n_heads  # grouped-query attention
    return model


def _prefix_rows(comps: ja.Components, n_rows: int, seed: int) -> np.ndarray:
    """Random rows whose layer-0 columns take two patterns only, so prefixes are shared."""
    rng = np.random.default_rng(seed)
    rows = rng.random((n_rows, len(comps))) < 0.6
    first = np.array([c.layer == 0 for c in comps])
    patterns = rng.random((2, int(first.sum()))) < 0.5
    rows[:, first] = patterns[np.arange(n_rows) % 2]
    rows[0] = True
    return rows


#: About 10 s per family on two loaded cores (four compilations each): all but GQA are slow.
PREFIX_CASES = [pytest.param(case, marks=() if case == GQA else pytest.mark.slow) for case in CASES]


@pytest.mark.slow
@pytest.mark.parametrize("case", PREFIX_CASES)
def test_prefix_sharing_equals_naive_on_every_family(case):
    model = ja.from_hf(build_case(case))
    cfg = model.config
    comps = ja.heads(cfg) + ja.blocks(cfg, "mlp")
    rows = _prefix_rows(comps, 6, seed=len(case))
    tokens = _tokens(cfg.vocab_size, 2, seed=1)
    ablation = ja.ablation.mean(model, _tokens(cfg.vocab_size, 3, seed=2))
    for metric in (ja.metrics.loss, ja.metrics.logit_diff(3, 4)):
        shared = ja.evaluate(model, comps, rows, tokens, metric=metric, ablation=ablation)
        naive = ja.evaluate(
            model, comps, rows, tokens, metric=metric, ablation=ablation, share_prefix=False
        )
        assert shared.shape == (len(rows),)
        np.testing.assert_allclose(shared, naive, atol=1e-5, rtol=1e-5)
        assert np.ptp(naive) > 1e-3  # the rows differ


@pytest.mark.slow
def test_sweep_all_equals_evaluate(llama, tmp_path):
    cfg = llama.config
    comps = ja.heads(cfg, [1]) + ja.blocks(cfg, "mlp")
    n = len(comps)
    tokens = _tokens(cfg.vocab_size, 2, seed=3)
    values = ja.sweep(llama, comps, "all", tokens, tmp_path / "s", progress=False)
    expected = ja.evaluate(llama, comps, ja.subsets.all(n), tokens)
    assert values.shape == (2**n,)
    np.testing.assert_allclose(values, expected, atol=1e-6, rtol=1e-6)
    again, _ = ja.load_sweep(tmp_path / "s")
    np.testing.assert_array_equal(again, values)


@pytest.mark.slow
def test_learn_masks_rows_and_metric(llama):
    cfg = llama.config
    comps = ja.heads(cfg) + ja.blocks(cfg, "mlp")
    tokens = _tokens(cfg.vocab_size, 2, seed=4)
    sparsity = [0.0, 0.5, 50.0]
    learned = ja.learn_masks(
        llama, comps, tokens, sparsity=sparsity, steps=4, key=jax.random.key(0)
    )
    P, n = len(sparsity), len(comps)
    assert learned.rows.shape == (P, n) and learned.rows.dtype == np.bool_
    assert learned.probs.shape == learned.logits.shape == learned.mask.shape == (P, n)
    assert learned.metric.shape == learned.n_kept.shape == (P,)
    assert learned.history.loss.shape == (4, P)
    assert tuple(learned.names) == tuple(comps.names)
    np.testing.assert_array_equal(learned.n_kept, learned.rows.sum(1))
    exact = ja.evaluate(
        llama, comps, learned.rows, tokens, metric=ja.metrics.kl_to_clean(llama, tokens)
    )
    np.testing.assert_allclose(learned.metric, exact, atol=1e-5, rtol=1e-4)
    # a stronger penalty never keeps more in expectation
    assert learned.probs[2].sum() <= learned.probs[0].sum()


_KV = ("W_K", "W_V", "b_K", "b_V")


@pytest.mark.slow
def test_recover_freezes_the_params_of_a_removed_kv_group(llama):
    cfg = llama.config
    group = cfg.n_heads // cfg.kv_heads
    assert group == 2
    comps = ja.heads(cfg)
    removed = ["L0H0", "L0H1", "L1H2"]  # layer 0's KV head 0 loses both query heads
    rows = np.array([[name not in removed for name in comps.names], [True] * len(comps)])
    train = _tokens(cfg.vocab_size, 4, seed=5)
    ev = _tokens(cfg.vocab_size, 2, seed=6)
    result = ja.recover(
        llama,
        comps,
        rows,
        train,
        steps=3,
        eval_tokens=ev,
        eval_every=1,
        batch_size=2,
        key=jax.random.key(1),
        return_params=True,
        progress=False,
    )
    assert isinstance(result, ja.RecoveryResult)
    np.testing.assert_array_equal(result.steps, np.arange(4))
    assert result.metric.shape == result.recovered_fraction.shape == (2, 4)
    np.testing.assert_array_equal(result.rows, rows)
    assert result.names == tuple(comps.names)
    # step 0 is before any update: the intact row is the baseline, the ablated one differs
    # (on a random model an ablation may lower the loss too)
    np.testing.assert_allclose(result.metric[1, 0], result.baseline, atol=1e-5, rtol=1e-5)
    assert abs(result.metric[0, 0] - result.baseline) > 1e-3
    assert result.recovered_fraction[0, 0] == 0.0
    assert np.all(np.isnan(result.recovered_fraction[1]))  # no damage to recover from

    before = {k: np.asarray(v) for k, v in model_arrays(llama).items()}
    ablated = {k: np.asarray(v) for k, v in model_arrays(result.model(0)).items()}
    intact = {k: np.asarray(v) for k, v in model_arrays(result.model(1)).items()}
    for p in _KV:
        name = f"attn.{p}"
        # fully removed group (layer 0, KV head 0): bit-identical
        np.testing.assert_array_equal(ablated[name][0, 0], before[name][0, 0], err_msg=name)
        # its neighbour group and the half-removed group of layer 1 train
        assert not np.array_equal(ablated[name][0, 1], before[name][0, 1]), name
        assert not np.array_equal(ablated[name][1, 1], before[name][1, 1]), name
        # with nothing removed, every group trains
        assert not np.array_equal(intact[name][0, 0], before[name][0, 0]), name
    for p in ("W_Q", "b_Q", "W_O"):
        name = f"attn.{p}"
        for layer, head in [(0, 0), (0, 1), (1, 2)]:  # each removed query head: frozen
            np.testing.assert_array_equal(
                ablated[name][layer, head], before[name][layer, head], err_msg=name
            )
        assert not np.array_equal(ablated[name][1, 3], before[name][1, 3]), name
    assert not np.array_equal(ablated["mlp.W_in"], before["mlp.W_in"])


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["zero-logit_diff", "mean-loss"])
def test_attribution_equals_mask_gradient(llama, kind):
    cfg = llama.config
    comps = ja.heads(cfg) + ja.blocks(cfg, "attn") + ja.blocks(cfg, "mlp")
    tokens = _tokens(cfg.vocab_size, 2, seed=7)
    if kind == "zero-logit_diff":
        ablation, metric = ja.ablation.zero(), ja.metrics.logit_diff(3, 4)
    else:
        ablation, metric = ja.ablation.mean(llama, _tokens(cfg.vocab_size, 3, 8)), ja.metrics.loss
    got = ja.attribution(llama, comps, tokens, metric=metric, ablation=ablation)

    def value(row: jax.Array) -> jax.Array:
        logits = llama(tokens, masks=comps.masks(row), ablation=ablation)
        return metric(logits, tokens).mean()

    ones = np.ones(len(comps), np.float32)
    grad = np.asarray(jax.jit(jax.grad(value))(ones))
    assert got.shape == (len(comps),)
    np.testing.assert_allclose(got, grad, atol=1e-5, rtol=1e-4)
    assert np.abs(got).max() > 1e-3
    if kind == "mean-loss":  # and without autodiff: a second-order one-sided difference at 1
        h = 1e-2
        f = jax.jit(jax.vmap(value))
        basis = np.eye(len(comps), dtype=np.float32)
        f0, f1, f2 = (np.asarray(f(ones - k * h * basis), np.float64) for k in (0, 1, 2))
        fd = (3 * f0 - 4 * f1 + f2) / (2 * h)
        np.testing.assert_allclose(got, fd, atol=2e-3 * max(1.0, np.abs(fd).max()), rtol=1e-2)


@pytest.mark.slow
def test_optimal_ablation_runs_and_beats_mean(llama):
    cfg = llama.config
    comps = ja.heads(cfg, [1]) + ja.blocks(cfg, "mlp")
    tokens = _tokens(cfg.vocab_size, 2, seed=9)
    opt = ja.ablation.optimal(llama, comps, tokens, steps=3, key=jax.random.key(2))
    assert isinstance(opt, ja.Ablation) and opt.kind == "optimal"
    L, H, E, D = cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.d_model
    assert opt.z.shape == (L, 1, 1, H, E)
    assert opt.attn.shape == opt.mlp.shape == (L, 1, 1, D)
    rows = ja.subsets.loco(len(comps))
    with_opt = ja.evaluate(llama, comps, rows, tokens, ablation=opt)
    mean = ja.ablation.mean(llama, tokens)
    # the starting point, relabelled so that the compiled evaluation above is reused
    mean = ja.Ablation(z=mean.z, attn=mean.attn, mlp=mean.mlp, kind="optimal")
    with_mean = ja.evaluate(llama, comps, rows, tokens, ablation=mean)
    assert np.all(np.isfinite(with_opt))
    np.testing.assert_allclose(with_opt[0], with_mean[0], atol=1e-6)  # nothing removed
    assert np.all(with_opt[1:] <= with_mean[1:] + 1e-5)  # single removals: never worse
    assert np.any(with_opt[1:] < with_mean[1:] - 1e-6)  # and the constants moved
