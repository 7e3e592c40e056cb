"""A model's initial weights: seeded draws in a fixed order, built by one compiled program."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxablate as ja

CFG = dict(n_layers=2, n_heads=2, d_model=16, d_head=8, d_mlp=32, vocab_size=40, n_ctx=8)


def _draw(key: jax.Array, index: int, shape: tuple[int, ...], std: float, dtype) -> np.ndarray:
    """Draw ``index`` of ``nnx.Rngs(key)``'s stream, scaled and cast, computed by hand."""
    x = std * jax.random.normal(jax.random.fold_in(key, index), shape, jnp.float32)
    return np.asarray(x.astype(dtype))


# every draw is cut from one of MIN_DRAW values (see transformer._normal); d_mlp 48: 1536 values
@pytest.mark.parametrize(("dtype", "F"), [("float32", 32), ("bfloat16", 32), ("float32", 48)])
def test_weights_are_the_seeded_draws_in_order(dtype, F):
    cfg = ja.ModelConfig(**{**CFG, "d_mlp": F}, dtype=dtype)
    rngs = nnx.Rngs(7)
    model = ja.Transformer(cfg, rngs=rngs)
    key, std, (L, H, D, E, V) = jax.random.key(7), cfg.init_std, (2, 2, 16, 8, 40)
    expected = {  # GPT-2 defaults: learned positions, tied embeddings; the order of the draws
        "W_E": ((V, D), std),
        "W_pos": ((8, D), std / 2),
        "attn.W_Q": ((L, H, D, E), std),
        "attn.W_K": ((L, H, D, E), std),
        "attn.W_V": ((L, H, D, E), std),
        "attn.W_O": ((L, H, E, D), std),
        "mlp.W_in": ((L, D, F), std),
        "mlp.W_out": ((L, F, D), std),
    }
    for index, (path, (shape, scale)) in enumerate(expected.items()):
        leaf = model
        for part in path.split("."):
            leaf = getattr(leaf, part)
        got = np.asarray(leaf[...])
        assert got.dtype == jnp.dtype(dtype)
        np.testing.assert_array_equal(got, _draw(key, index, shape, scale, dtype), err_msg=path)
    assert int(rngs.params.count[...]) == len(expected)  # the stream advanced as many draws
    np.testing.assert_array_equal(np.asarray(model.ln1.w[...]), np.ones((L, D), dtype))
    np.testing.assert_array_equal(np.asarray(model.attn.b_Q[...]), np.zeros((L, H, E), dtype))


def test_without_partitionable_threefry_the_draws_are_made_at_their_own_size():
    cfg = ja.ModelConfig(**CFG)
    with jax.threefry_partitionable(False):  # a draw's first values are then not a short draw
        model = ja.Transformer(cfg, rngs=nnx.Rngs(7))
        want = _draw(jax.random.key(7), 0, (40, 16), cfg.init_std, "float32")  # 640 values
    np.testing.assert_array_equal(np.asarray(model.W_E[...]), want)


def test_a_second_model_of_a_config_compiles_nothing(caplog):
    cfg = ja.ModelConfig(**{**CFG, "d_mlp": 24})  # a config no other test builds
    first = ja.Transformer(cfg, rngs=nnx.Rngs(0))
    rngs = nnx.Rngs(1)
    with caplog.at_level(logging.WARNING, logger="jax"), jax.log_compiles():
        second = ja.Transformer(cfg, rngs=rngs)
    compiled = [
        r.getMessage() for r in caplog.records if "Finished XLA compilation" in r.getMessage()
    ]
    assert not compiled, compiled
    assert not np.array_equal(np.asarray(first.W_E[...]), np.asarray(second.W_E[...]))


def test_abstract_models_build_without_computing():
    cfg = ja.ModelConfig(**CFG, positions="rotary", tie_embeddings=False, gated_mlp=True)
    model = nnx.eval_shape(lambda: ja.Transformer(cfg, rngs=nnx.Rngs(0)))
    assert isinstance(model.W_U.get_value(), jax.ShapeDtypeStruct)
    assert model.W_pos is None and model.mlp is not None and model.mlp.W_gate is not None
