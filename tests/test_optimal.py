"""Optimal ablation: never worse than mean ablation per component; training matches a hand loop."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxablate as ja
from jaxablate.optimal import optimal_ablation


def _model(attn_only: bool) -> ja.Transformer:
    cfg = ja.ModelConfig(
        n_layers=2,
        n_heads=3,
        d_model=16,
        d_head=4,
        d_mlp=0 if attn_only else 32,
        vocab_size=16,
        n_ctx=8,
        attn_only=attn_only,
        init_std=0.2,
    )
    return ja.Transformer(cfg, rngs=nnx.Rngs(0))


def _tokens(seed: int) -> jax.Array:
    return jax.random.randint(jax.random.key(seed), (8, 8), 0, 16)


@pytest.mark.slow
def test_single_removal_loss_is_never_above_mean_ablation():
    model = _model(attn_only=False)
    cfg = model.config
    tokens = _tokens(10)
    comps = ja.heads(cfg) + ja.blocks(cfg, "mlp")
    n = len(comps)
    opt = ja.ablation.optimal(model, comps, tokens, steps=100, key=jax.random.key(0))
    assert isinstance(opt, ja.Ablation) and opt.kind == "optimal"
    L, H, E, D = cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.d_model
    assert opt.z.shape == (L, 1, 1, H, E)
    assert opt.attn.shape == opt.mlp.shape == (L, 1, 1, D)
    for r in (opt.z, opt.attn, opt.mlp):
        assert np.all(np.isfinite(np.asarray(r)))
    rows = ja.subsets.loco(n)
    mean = ja.ablation.mean(model, tokens)
    with_mean = ja.evaluate(model, comps, rows, tokens, ablation=mean)[1:]
    with_opt = ja.evaluate(model, comps, rows, tokens, ablation=opt)[1:]
    print("\nsingle-removal loss, mean vs optimal:")
    for name, a, b in zip(comps.names, with_mean, with_opt, strict=True):
        print(f"  {name:8s} {a:.4f} {b:.4f}")
    # Properties of a 100-step run, not its exact numbers (those differ between CPUs in the last
    # bits, which training amplifies). Measured margins: every single-removal loss improves by
    # 0.038 to 0.195, several removals at once by 0.27, unchanged to 1e-6 when every weight is
    # moved by 8 ulp; the thresholds are 1e-3 and 0.
    assert np.all(with_opt <= with_mean + 1e-6)
    assert np.all(with_opt < with_mean - 1e-3)  # every constant actually improved
    # The constants also help when several components are removed at once.
    sample = np.asarray(jax.random.bernoulli(jax.random.key(7), 0.5, (32, n)))
    assert (
        ja.evaluate(model, comps, sample, tokens, ablation=opt).mean()
        < ja.evaluate(model, comps, sample, tokens, ablation=mean).mean()
    )


@pytest.mark.slow
def test_training_on_single_removals_matches_a_hand_written_loop():
    """SGD on the mean single-removal loss, keeping each component's best constant."""
    model = _model(attn_only=True)
    cfg = model.config
    tokens = _tokens(3)
    comps = ja.heads(cfg, layers=[1]) + ja.blocks(cfg, "attn", layers=[0])
    n, lr, steps = len(comps), 0.5, 6
    got = optimal_ablation(
        model,
        comps,
        tokens,
        steps=steps,
        key=jax.random.key(0),
        optimizer=optax.sgd(lr),
        random_subsets=0,
    )
    assert got.mlp is None

    mean = ja.ablation.mean(model, tokens)
    singles = 1.0 - np.eye(n, dtype=np.float32)

    def losses(params):
        abl = ja.Ablation(z=params["z"][:, None, None], attn=params["attn"][:, None, None])
        return jnp.stack(
            [
                ja.metrics.loss(model(tokens, masks=comps.masks(row), ablation=abl), tokens).mean()
                for row in singles
            ]
        )

    step = jax.jit(jax.value_and_grad(lambda p: (losses(p).mean(), losses(p)), has_aux=True))
    params = {"z": mean.z[:, 0, 0], "attn": mean.attn[:, 0, 0]}
    best = {k: np.array(v) for k, v in params.items()}
    best_loss = np.full(n, np.inf)

    def keep_best(params, current):
        for i, c in enumerate(comps):
            if current[i] < best_loss[i]:
                best_loss[i] = current[i]
                if c.kind == "head":
                    best["z"][c.layer, c.head] = np.asarray(params["z"][c.layer, c.head])
                else:
                    best["attn"][c.layer] = np.asarray(params["attn"][c.layer])

    for _ in range(steps):
        (_, current), grad = step(params)
        keep_best(params, np.asarray(current))
        params = jax.tree.map(lambda p, g: p - lr * g, params, grad)
    keep_best(params, np.asarray(step(params)[0][1]))
    assert np.all(
        best_loss < np.asarray(losses({"z": mean.z[:, 0, 0], "attn": mean.attn[:, 0, 0]}))
    )

    np.testing.assert_allclose(got.z[:, 0, 0], best["z"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got.attn[:, 0, 0], best["attn"], rtol=1e-4, atol=1e-5)
    # Components outside comps keep their mean: heads of layer 0 and the layer-1 attn block.
    np.testing.assert_array_equal(got.z[0], mean.z[0])
    np.testing.assert_array_equal(got.attn[1], mean.attn[1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(steps=0), "steps"),
        (dict(steps=-1), "steps"),
        (dict(key=None), "key"),
        (dict(optimizer=3), "optimizer"),
        (dict(random_subsets=-1), "random_subsets"),
        (dict(removal_prob=0.0), "removal_prob"),
        (dict(removal_prob=1.5), "removal_prob"),
        (dict(single_removals=False, random_subsets=0), "random_subsets"),
        (dict(metric=lambda logits, tokens: logits.mean()), "shape"),
    ],
)
def test_bad_input_raises(kwargs, match):
    model = _model(attn_only=True)
    comps = ja.heads(model.config)
    args = dict(steps=2, key=jax.random.key(0)) | kwargs
    with pytest.raises(ValueError, match=match):
        ja.ablation.optimal(model, comps, _tokens(0), **args)


@pytest.mark.slow
def test_random_subsets_only_still_never_worse_than_mean():
    model = _model(attn_only=True)
    cfg = model.config
    tokens = _tokens(5)
    comps = ja.heads(cfg) + ja.blocks(cfg, "attn")
    opt = optimal_ablation(
        model,
        comps,
        tokens,
        steps=30,
        key=jax.random.key(2),
        single_removals=False,
        random_subsets=4,
    )
    rows = ja.subsets.loco(len(comps))
    with_mean = ja.evaluate(model, comps, rows, tokens, ablation=ja.ablation.mean(model, tokens))
    with_opt = ja.evaluate(model, comps, rows, tokens, ablation=opt)
    # Measured: every component improves by 0.02 to 0.21 (to 1e-5 the same with every weight
    # moved by 8 ulp), far from the 1e-3 threshold.
    assert np.all(with_opt[1:] <= with_mean[1:] + 1e-6)
    assert np.any(with_opt[1:] < with_mean[1:] - 1e-3)
