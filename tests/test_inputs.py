"""Bad input is refused with a ValueError that names what was expected and what came."""

import jax
import numpy as np
import pytest
from flax import nnx

import jaxablate as ja

CFG = ja.ModelConfig(n_layers=2, n_heads=2, d_model=8, d_head=4, d_mlp=16, vocab_size=10, n_ctx=6)


@pytest.fixture(scope="module")
def model():
    return ja.Transformer(CFG, rngs=nnx.Rngs(0))


TOKENS = np.zeros((2, 5), np.int32)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("tokens", "pattern"),
    [
        (np.array([[0, 1, 10]]), r"token ids must lie in \[0, 10\).*got values in \[0, 10\]"),
        (np.array([[-1, 1, 2]]), r"token ids must lie in \[0, 10\)"),
        (np.zeros((1, 7), np.int32), r"sequences of 7 tokens exceed the model's context n_ctx=6"),
        (np.zeros((0, 3), np.int32), r"tokens must be non-empty, got shape \(0, 3\)"),
        (np.zeros((2, 0), np.int32), r"tokens must be non-empty"),
        (np.zeros(4, np.int32), r"tokens must be 2-D \[batch, seq\], got shape \(4,\)"),
        (np.zeros((1, 3), np.float32), r"tokens must have an integer dtype, got float32"),
    ],
)
def test_bad_tokens(model, tokens, pattern):
    with pytest.raises(ValueError, match=pattern):
        model(tokens)
    with pytest.raises(ValueError, match=pattern):
        ja.evaluate(model, ja.heads(CFG), ja.subsets.loco(4), tokens)


@pytest.mark.parametrize(
    ("rows", "pattern"),
    [
        (np.ones((3, 5), bool), r"rows must have shape \[\.\.\., 4\].*got \(3, 5\)"),
        (np.full((2, 4), 0.5), r"rows must be binary \(bool or 0/1\) here, got value 0\.5"),
        (np.full((2, 4), 2), r"rows must be binary"),
        (np.ones((0, 4), bool), r"rows must hold at least one row"),
        (np.ones(4, bool), r"rows must be 2-D \[n_masks, 4\], got shape \(4,\)"),
        (np.array([[1, 0, np.nan, 1]]), r"rows contain NaN or inf"),
    ],
)
def test_bad_rows(model, rows, pattern):
    with pytest.raises(ValueError, match=pattern):
        ja.evaluate(model, ja.heads(CFG), rows, TOKENS)


def test_bad_continuous_masks():
    comps = ja.heads(CFG)
    with pytest.raises(
        ValueError, match=r"mask values must lie in \[0, 1\], got range \[-0\.5, 1\.0\]"
    ):
        comps.masks(np.array([1.0, -0.5, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"rows must have shape \[\.\.\., 4\]"):
        comps.masks(np.ones(3))
    masks = comps.masks(np.ones((2, 4)))  # a leading mask axis is fine for masks...
    model = ja.Transformer(CFG, rngs=nnx.Rngs(0))
    with pytest.raises(
        ValueError, match=r"Masks.heads must have shape \(2, 2\), got \(2, 2, 2\).*vmap"
    ):
        model(TOKENS, masks=masks)  # ...but the model takes one mask set: vmap over the axis


@pytest.mark.slow
def test_bad_ablation_references(model):
    with pytest.raises(ValueError, match=r"mean ablation reference tokens: token ids must lie"):
        ja.ablation.mean(model, np.array([[0, 12]]))
    with pytest.raises(
        ValueError, match=r"resample ablation source tokens: tokens must be non-empty"
    ):
        ja.ablation.resample(model, np.zeros((0, 5), np.int32))
    abl = ja.ablation.resample(model, np.zeros((3, 5), np.int32))
    with pytest.raises(ValueError, match=r"built for a batch of 3 but the tokens have batch 2"):
        model(TOKENS, ablation=abl)
    abl = ja.ablation.resample(model, np.zeros((2, 4), np.int32))
    with pytest.raises(ValueError, match=r"built for sequences of 4 tokens but the tokens have 5"):
        ja.evaluate(model, ja.heads(CFG), ja.subsets.loco(4), TOKENS, ablation=abl)
    abl = ja.ablation.mean(model, np.zeros((2, 3), np.int32), per_position=True)
    with pytest.raises(ValueError, match=r"built for sequences of 3 tokens but the tokens have 5"):
        model(TOKENS, ablation=abl)
    wrong = ja.Ablation(z=np.zeros((2, 1, 1, 3, 4), np.float32), kind="custom")
    with pytest.raises(
        ValueError,
        match=r"custom ablation: replacement 'z' must have shape \[2, 1 or 2, 1 or 5, 2, 4\].*got \[2, 1, 1, 3, 4\]",
    ):
        model(TOKENS, ablation=wrong)


def test_bad_config_and_components():
    with pytest.raises(ValueError, match=r"ModelConfig.n_heads must be a positive int, got 0"):
        ja.ModelConfig(n_layers=1, n_heads=0, d_model=8, d_head=4, d_mlp=8, vocab_size=5, n_ctx=4)
    with pytest.raises(ValueError, match=r"d_mlp must be positive unless attn_only=True"):
        ja.ModelConfig(n_layers=1, n_heads=1, d_model=8, d_head=4, vocab_size=5, n_ctx=4)
    with pytest.raises(ValueError, match=r"act_fn must be one of"):
        CFG.replace(act_fn="swish")
    with pytest.raises(TypeError):
        ja.ModelConfig(1, 1, 8, 4, 8, 5, 4)  # keyword-only
    with pytest.raises(ValueError, match=r"layers \[2\] out of range: the model has layers 0\.\.1"):
        ja.heads(CFG, layers=[2])
    with pytest.raises(ValueError, match=r"blocks kind must be 'attn' or 'mlp', got 'heads'"):
        ja.blocks(CFG, "heads")
    with pytest.raises(ValueError, match=r"lists \['L0H0', 'L0H1'\] more than once"):
        ja.heads(CFG) + ja.heads(CFG, layers=[0])
    attn_only = CFG.replace(attn_only=True, d_mlp=0)
    with pytest.raises(ValueError, match=r"attention-only: it has no MLP blocks"):
        ja.blocks(attn_only, "mlp")
    with pytest.raises(ValueError, match=r"comps were built for a different ModelConfig"):
        ja.evaluate(
            ja.Transformer(attn_only, rngs=nnx.Rngs(0)), ja.heads(CFG), ja.subsets.loco(4), TOKENS
        )


def test_subsets_limits():
    with pytest.raises(
        ValueError, match=r"subsets.all\(30\) would materialise 2\^30 rows x 30 columns = 30.0 GiB"
    ):
        ja.subsets.all(30)
    with pytest.raises(
        ValueError, match=r"n \(number of components\) must be a positive int, got 0"
    ):
        ja.subsets.all(0)
    with pytest.raises(ValueError, match=r"k must be an int in \[0, 3\], got 4"):
        ja.subsets.k_subsets(3, 4)
    with pytest.raises(ValueError, match=r"m \(number of rows\) must be a positive int"):
        ja.subsets.sample(jax.random.key(0), 3, 0)


def test_bad_evaluate_arguments(model):
    with pytest.raises(
        ValueError, match=r"chunk_size must be a positive int, 'auto' or None, got 0"
    ):
        ja.evaluate(model, ja.heads(CFG), ja.subsets.loco(4), TOKENS, chunk_size=0)
    with pytest.raises(
        ValueError, match=r"metric 'bad' must return shape \[batch\]=\(2,\), got \(2, 5\)"
    ):

        def bad(logits, tokens):
            return logits[:, :, 0]

        ja.evaluate(model, ja.heads(CFG), ja.subsets.loco(4), TOKENS, metric=bad)
