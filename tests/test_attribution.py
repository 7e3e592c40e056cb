"""attribution: mask gradients against finite differences and against exact LOCO effects."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxablate as ja
from jaxablate import _attribution
from jaxablate._attribution import attribution
from tests._compile import no_new_compilations


@pytest.fixture(scope="module")
def setup():
    cfg = ja.ModelConfig(
        n_layers=2,
        n_heads=3,
        d_model=16,
        d_head=4,
        d_mlp=32,
        vocab_size=16,
        n_ctx=8,
        init_std=0.1,
    )
    model = ja.Transformer(cfg, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(10), (8, 8), 0, cfg.vocab_size)
    comps = ja.heads(cfg) + ja.blocks(cfg, "attn", layers=[1]) + ja.blocks(cfg, "mlp")
    return model, tokens, comps


def _ranks(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x)).astype(np.float64)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["zero", "mean"])
def test_attribution_equals_finite_difference_of_the_mask(setup, kind):
    model, tokens, comps = setup
    n = len(comps)
    abl = None if kind == "zero" else ja.ablation.mean(model, tokens)
    got = attribution(model, comps, tokens, ablation=abl)
    assert got.shape == (n,) and got.dtype == np.float32

    # Reference: central differences of the plain model call w.r.t. each mask at all ones.
    @jax.jit
    def metric_at(rows):
        logits = model(tokens, masks=comps.masks_unchecked(rows), ablation=abl)
        return ja.metrics.loss(logits, tokens).mean()

    eps = 1e-2
    fd = np.array(
        [
            (metric_at(jnp.ones(n).at[i].add(eps)) - metric_at(jnp.ones(n).at[i].add(-eps)))
            / (2 * eps)
            for i in range(n)
        ]
    )
    np.testing.assert_allclose(got, fd, rtol=2e-2, atol=2e-4)
    assert np.abs(fd).max() > 1e-2  # the effects are not all ~0


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["zero", "mean"])
def test_attribution_ranks_components_like_exact_loco(setup, kind):
    model, tokens, comps = setup
    n = len(comps)
    abl = None if kind == "zero" else ja.ablation.mean(model, tokens)
    estimate = attribution(model, comps, tokens, ablation=abl)
    values = ja.evaluate(model, comps, ja.subsets.loco(n), tokens, ablation=abl)
    exact = values[0] - values[1:]  # v(N) - v(N \ i), the sign of interactions.loco
    rho = np.corrcoef(_ranks(estimate), _ranks(exact))[0, 1]
    print(f"\n{kind} ablation: attribution vs exact LOCO, Spearman rho = {rho:.3f}")
    for name, a, e in zip(comps.names, estimate, exact, strict=True):
        print(f"  {name:8s} attribution {a:+.4f}   exact {e:+.4f}")
    assert rho > 0.8
    # Same sign convention: the component with the largest effect agrees in sign.
    top = np.argmax(np.abs(exact))
    assert np.sign(estimate[top]) == np.sign(exact[top])


@pytest.mark.slow
def test_kl_to_clean_is_stationary_so_its_attribution_is_zero(setup):
    model, tokens, comps = setup
    got = attribution(model, comps, tokens, metric=ja.metrics.kl_to_clean(model, tokens))
    np.testing.assert_allclose(got, 0.0, atol=1e-5)


def test_second_call_does_not_recompile(setup):
    model, tokens, comps = setup
    attribution(model, comps, tokens)
    other = jax.random.randint(jax.random.key(11), tokens.shape, 0, model.config.vocab_size)
    with no_new_compilations(_attribution._mask_grad):
        attribution(model, comps, other)


def test_bad_input_raises(setup):
    model, tokens, comps = setup
    other = ja.ModelConfig(
        n_layers=1, n_heads=2, d_model=8, d_head=4, vocab_size=16, n_ctx=8, attn_only=True
    )
    with pytest.raises(ValueError, match="ModelConfig"):
        attribution(model, ja.heads(other), tokens)
    with pytest.raises(ValueError, match="vocab"):
        attribution(model, comps, tokens + 100)
    bad = ja.Ablation(z=jnp.zeros((2, 1, 1, 3, 5)), kind="mean")
    with pytest.raises(ValueError, match="replacement 'z'"):
        attribution(model, comps, tokens, ablation=bad)
