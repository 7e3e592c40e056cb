"""Every architecture knob of ModelConfig against the float64 numpy reference and the evaluator.

Models get random weights everywhere (norm weights and biases included), odd sizes, and
grouped-query / multi-query attention, so a knob that is silently ignored shows up.
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxablate as ja
from jaxablate.models.io import load_model, model_arrays, model_arrays_shapes, save_model
from tests._reference import reference_logits

BASE = dict(n_layers=2, n_heads=4, d_model=18, d_head=6, d_mlp=22, vocab_size=29, n_ctx=16)
ROPE = dict(positions="rotary")
GEMMA = dict(norm="rmsnorm", norm_offset=1.0, gated_mlp=True, post_norms=True, **ROPE)
FAMILIES = {
    "llama": dict(
        norm="rmsnorm",
        act_fn="silu",
        gated_mlp=True,
        n_kv_heads=2,
        tie_embeddings=False,
        rope_theta=500.0,
        rope_scaling="llama3",
        rope_factor=8.0,
        rope_original_context=256,
        **ROPE,
    ),
    "neox": dict(rotary_dim=4, parallel_residual=True, act_fn="gelu", tie_embeddings=False, **ROPE),
    "gemma2": dict(
        GEMMA,
        n_layers=3,
        n_kv_heads=2,
        sliding_window=4,
        sliding_layers=(True, False, True),
        attn_softcap=5.0,
        final_softcap=3.0,
        attn_scale=0.35,
        embed_scale=math.sqrt(18),
    ),
    "gemma3": dict(
        GEMMA,
        n_layers=3,
        n_kv_heads=1,
        qk_norm=True,
        sliding_window=3,
        sliding_layers=(True, True, False),
        rope_local_theta=100.0,
        rope_scaling="linear",
        rope_factor=2.0,
        attn_scale=0.3,
        embed_scale=math.sqrt(18),
    ),
}
KNOBS = {
    "gpt2": {},
    "gqa": dict(n_kv_heads=2),
    "mqa": dict(n_kv_heads=1),
    "rmsnorm": dict(norm="rmsnorm"),
    "rmsnorm_offset": dict(norm="rmsnorm", norm_offset=1.0),
    "layernorm_offset": dict(norm_offset=0.5),
    "rotary": dict(ROPE),
    "rotary_partial": dict(rotary_dim=2, rope_theta=50.0, **ROPE),
    "rope_linear": dict(rope_scaling="linear", rope_factor=3.0, **ROPE),
    # d_head 6, theta 1e4: wavelengths 6.3 (kept), 135 (smoothed), 2916 (divided)
    "rope_llama3": dict(rope_scaling="llama3", rope_factor=8.0, rope_original_context=256, **ROPE),
    "gated_mlp": dict(gated_mlp=True, act_fn="silu"),
    "parallel_residual": dict(parallel_residual=True),
    "qk_norm": dict(qk_norm=True),
    "qk_norm_rotary_offset": dict(qk_norm=True, norm="rmsnorm", norm_offset=1.0, **ROPE),
    "post_norms": dict(post_norms=True),
    "sliding_all": dict(sliding_window=3),
    "sliding_some": dict(sliding_window=2, sliding_layers=(False, True), **ROPE),
    "rope_local_theta": dict(
        sliding_window=4, sliding_layers=(True, False), rope_local_theta=30.0, **ROPE
    ),
    "attn_softcap": dict(attn_softcap=1.5),
    "final_softcap": dict(final_softcap=2.0),
    "attn_scale": dict(attn_scale=0.7),
    "embed_scale": dict(embed_scale=2.5),
    "untied": dict(tie_embeddings=False),
    "attn_only_rotary_gqa": dict(attn_only=True, n_kv_heads=2, norm="rmsnorm", **ROPE),
    **FAMILIES,
}
SEQ = 11


def make(name: str, seed: int = 0, **extra) -> ja.Transformer:
    """A model of config ``name`` with every parameter random (norm weights around 1)."""
    cfg = ja.ModelConfig(**{**BASE, **KNOBS[name], **extra})
    model = ja.Transformer(cfg, rngs=nnx.Rngs(seed))
    rng = np.random.default_rng(seed + 100)
    state = nnx.state(model, nnx.Param)
    flat, treedef = jax.tree_util.tree_flatten_with_path(state)
    leaves = []
    for path, leaf in flat:
        key = ".".join(str(p.key) for p in path if isinstance(p, jax.tree_util.DictKey))
        if key.endswith(".w"):  # a norm weight: effective scale 1 +- 0.3
            value = 1.0 - cfg.norm_offset + 0.3 * rng.standard_normal(leaf.shape)
        elif key.split(".")[-1].startswith("b"):
            value = 0.2 * rng.standard_normal(leaf.shape)
        else:
            value = 0.35 * rng.standard_normal(leaf.shape)
        leaves.append(jnp.asarray(value, leaf.dtype))
    nnx.update(model, jax.tree_util.tree_unflatten(treedef, leaves))
    return model


def tokens_for(model: ja.Transformer, seed: int = 1, batch: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, model.config.vocab_size, (batch, SEQ)).astype(np.int32)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(KNOBS))
def test_logits_equal_float64_reference(name):
    model = make(name)
    tokens = tokens_for(model)
    logits = np.asarray(model(tokens))
    reference = reference_logits(model, tokens)
    assert np.abs(reference).max() > 0.5  # not a degenerate model
    np.testing.assert_allclose(logits, reference, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", [*FAMILIES, "post_norms", "parallel_residual", "mqa", "attn_only_rotary_gqa"]
)
def test_masked_logits_equal_float64_reference(name):
    model = make(name, seed=2)
    cfg = model.config
    tokens = tokens_for(model, seed=3)
    rng = np.random.default_rng(5)
    for _ in range(2):
        heads = (rng.random((cfg.n_layers, cfg.n_heads)) < 0.6).astype(np.float32)
        attn = (rng.random(cfg.n_layers) < 0.7).astype(np.float32)
        mlp = (rng.random(cfg.n_layers) < 0.7).astype(np.float32)
        masks = ja.Masks(heads=jnp.asarray(heads), attn=jnp.asarray(attn), mlp=jnp.asarray(mlp))
        logits = np.asarray(model(tokens, masks=masks))
        mlp_mask = None if cfg.attn_only else mlp
        reference = reference_logits(model, tokens, heads, mlp_mask, attn)
        np.testing.assert_allclose(logits, reference, rtol=1e-4, atol=1e-4)


def _numpy_metric(name: str, logits: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    if name == "logit_diff":
        return logits[:, -1, 3] - logits[:, -1, 4]
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return -np.take_along_axis(logp[:, :-1], tokens[:, 1:, None], -1)[..., 0].mean(-1)


@pytest.mark.slow
@pytest.mark.parametrize("name", [*FAMILIES, "sliding_all", "rope_local_theta"])
def test_evaluate_prefix_sharing_equals_naive_and_loop(name):
    """Includes a last-position metric (``queries``) on layers whose window is shorter than
    the sequence."""
    model = make(name, seed=4)
    cfg = model.config
    tokens = tokens_for(model, seed=6, batch=2)
    comps = ja.heads(cfg) + ja.blocks(cfg, "mlp", layers=[0]) + ja.blocks(cfg, "attn", layers=[1])
    rows = np.random.default_rng(7).random((9, len(comps))) < 0.6
    rows[0] = True
    metrics = (("logit_diff", ja.metrics.logit_diff(3, 4)), ("loss", ja.metrics.loss))
    for metric_name, metric in metrics:
        shared = ja.evaluate_per_example(model, comps, rows, tokens, metric=metric)
        naive = ja.evaluate_per_example(
            model, comps, rows, tokens, metric=metric, share_prefix=False
        )
        np.testing.assert_allclose(shared, naive, rtol=1e-5, atol=1e-5)
        for i in (0, 3, 8):
            logits = np.asarray(model(tokens, masks=comps.masks(rows[i])))
            expected = _numpy_metric(metric_name, logits, tokens)
            np.testing.assert_allclose(shared[i], expected, rtol=1e-5, atol=1e-5)
        full = reference_logits(model, tokens)
        np.testing.assert_allclose(shared[0], _numpy_metric(metric_name, full, tokens), atol=2e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gemma2", "gemma3", "neox", "rope_llama3"])
def test_attn_z_at_queries_equals_full(name):
    model = make(name)
    tokens = jnp.asarray(tokens_for(model))
    resid = model.embed(tokens)
    queries = np.array([2, 7, SEQ - 1])
    for layer in range(model.config.n_layers):
        full = np.asarray(model.attn_z(layer, resid))
        at = np.asarray(model.attn_z(layer, resid, queries))
        np.testing.assert_allclose(at, full[:, queries], rtol=1e-6, atol=1e-6)
        resid = model.block(layer, resid, None, None)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gemma3", "llama"])
def test_mean_and_resample_ablation(name):
    model = make(name, seed=8)
    cfg = model.config
    tokens = tokens_for(model, seed=9, batch=4)
    acts = model.activations(tokens)
    assert acts.z.shape == (cfg.n_layers, 4, SEQ, cfg.n_heads, cfg.d_head)  # per query head
    assert acts.attn.shape == acts.mlp.shape == (cfg.n_layers, 4, SEQ, cfg.d_model)
    comps = ja.heads(cfg) + ja.blocks(cfg, "mlp")
    rows = np.random.default_rng(1).random((5, len(comps))) < 0.5
    # each removed component replaced by its own clean activation: the clean logits again
    same = ja.ablation.resample(model, tokens)
    clean = np.asarray(model(tokens))
    for row in rows:
        logits = np.asarray(model(tokens, masks=comps.masks(row), ablation=same))
        np.testing.assert_allclose(logits, clean, rtol=1e-5, atol=1e-5)
    for ablation in (
        ja.ablation.mean(model, tokens),
        ja.ablation.mean(model, tokens, per_position=True),
    ):
        shared = ja.evaluate_per_example(model, comps, rows, tokens, ablation=ablation)
        naive = ja.evaluate_per_example(
            model, comps, rows, tokens, ablation=ablation, share_prefix=False
        )
        np.testing.assert_allclose(shared, naive, rtol=1e-5, atol=1e-5)
        assert not np.allclose(shared[1:], shared[:1])  # the ablation matters


@pytest.mark.slow
@pytest.mark.parametrize("name", [*FAMILIES, "layernorm_offset"])
def test_save_load_round_trip(name, tmp_path):
    model = make(name, seed=10)
    save_model(model, tmp_path / name)
    meta = json.loads((tmp_path / name / "config.json").read_text())
    assert ja.ModelConfig.from_dict(meta["config"]) == model.config
    loaded = load_model(tmp_path / name)
    assert loaded.config == model.config
    a, b = model_arrays(model), model_arrays(loaded)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    tokens = tokens_for(model)
    np.testing.assert_array_equal(np.asarray(loaded(tokens)), np.asarray(model(tokens)))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["llama", "gemma2", "neox"])
def test_bfloat16_is_close_to_float32(name):
    model = make(name, seed=11)
    tokens = tokens_for(model)
    low = ja.Transformer(model.config.replace(dtype="bfloat16"), rngs=nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    nnx.update(low, jax.tree.map(lambda x: x.astype(jnp.bfloat16), state))
    logits = low(tokens)
    assert logits.dtype == jnp.float32
    assert model_arrays(low)["W_E"].dtype == jnp.bfloat16
    reference = np.asarray(model(tokens))
    error = np.abs(np.asarray(logits) - reference).max()
    assert error < 0.1 * np.abs(reference).max(), error


def test_parameter_names_and_shapes_follow_the_spec():
    L, H, D, E, F, V, C = 3, 4, 18, 6, 22, 29, 16
    got = model_arrays_shapes(make("gemma3"))
    kv = 1
    assert got == {
        "W_E": (V, D),
        "ln1.w": (L, D),
        "ln1_post.w": (L, D),
        "ln2.w": (L, D),
        "ln2_post.w": (L, D),
        "ln_final.w": (D,),
        "attn.W_Q": (L, H, D, E),
        "attn.W_K": (L, kv, D, E),
        "attn.W_V": (L, kv, D, E),
        "attn.W_O": (L, H, E, D),
        "attn.b_Q": (L, H, E),
        "attn.b_K": (L, kv, E),
        "attn.b_V": (L, kv, E),
        "attn.b_O": (L, D),
        "attn.q_norm.w": (L, E),
        "attn.k_norm.w": (L, E),
        "mlp.W_in": (L, D, F),
        "mlp.b_in": (L, F),
        "mlp.W_gate": (L, D, F),
        "mlp.b_gate": (L, F),
        "mlp.W_out": (L, F, D),
        "mlp.b_out": (L, D),
    }
    gpt2 = model_arrays_shapes(make("untied"))
    assert set(gpt2) == {
        "W_E", "W_pos", "W_U", "ln1.w", "ln1.b", "ln2.w", "ln2.b", "ln_final.w", "ln_final.b",
        "attn.W_Q", "attn.W_K", "attn.W_V", "attn.W_O", "attn.b_Q", "attn.b_K", "attn.b_V",
        "attn.b_O", "mlp.W_in", "mlp.b_in", "mlp.W_out", "mlp.b_out",
    }  # fmt: skip
    assert gpt2["W_pos"] == (C, D) and gpt2["W_U"] == (D, V)


def test_fresh_models_start_with_identity_norms():
    for name in ("gemma3", "gpt2", "rmsnorm"):
        model = make(name)
        fresh = ja.Transformer(model.config, rngs=nnx.Rngs(0))
        arrays = model_arrays(fresh)
        for key, value in arrays.items():
            if key.endswith(".w"):
                np.testing.assert_array_equal(model.config.norm_offset + value, 1.0)


def test_config_json_round_trip_and_defaults():
    cfg = ja.ModelConfig(**{**BASE, **FAMILIES["gemma3"]})
    again = ja.ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.sliding_layers == (True, True, False)
    assert hash(again) == hash(cfg)
    gpt2 = ja.ModelConfig(**BASE)
    assert gpt2.kv_heads == 4 and not gpt2.is_sliding(0)
    assert cfg.kv_heads == 1 and cfg.is_sliding(1) and not cfg.is_sliding(2)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(n_kv_heads=3), r"n_kv_heads=3 must divide n_heads=4"),
        (dict(n_kv_heads=0), r"ModelConfig.n_kv_heads must be a positive int"),
        (dict(norm="batchnorm"), r"ModelConfig.norm must be one of"),
        (dict(positions="alibi"), r"ModelConfig.positions must be one of"),
        (dict(positions="rotary", rotary_dim=3), r"rotary_dim must be even and <= d_head=6"),
        (dict(positions="rotary", rotary_dim=8), r"rotary_dim must be even and <= d_head=6"),
        (dict(rope_theta=500.0), r"rope_theta is a rotary knob but positions='learned'"),
        (dict(rotary_dim=4), r"rotary_dim is a rotary knob"),
        (dict(positions="rotary", rope_theta=0.0), r"rope_theta must be a finite number > 0"),
        (dict(positions="rotary", rope_scaling="yarn"), r"rope_scaling must be one of"),
        (dict(positions="rotary", rope_factor=2.0), r"rope_factor=2.0 needs rope_scaling"),
        (
            dict(
                positions="rotary", rope_scaling="linear", rope_factor=2.0, rope_low_freq_factor=2.0
            ),
            r"rope_low_freq_factor is read only by rope_scaling='llama3'",
        ),
        (
            dict(positions="rotary", rope_scaling="llama3", rope_high_freq_factor=1.0),
            r"rope_high_freq_factor must exceed rope_low_freq_factor",
        ),
        (dict(positions="rotary", rope_local_theta=10.0), r"rope_local_theta applies to sliding"),
        (dict(sliding_window=0), r"ModelConfig.sliding_window must be a positive int"),
        (dict(sliding_window=4, sliding_layers=(True,)), r"one flag per layer \(2\), got 1"),
        (dict(sliding_layers=(True, False)), r"sliding_layers is set but sliding_window is None"),
        (dict(sliding_window=4, sliding_layers=(1, 0)), r"sliding_layers must be a tuple of bools"),
        (dict(attn_softcap=0.0), r"ModelConfig.attn_softcap must be a finite number > 0"),
        (dict(final_softcap=-1.0), r"ModelConfig.final_softcap must be"),
        (dict(attn_scale=float("nan")), r"ModelConfig.attn_scale must be"),
        (dict(embed_scale="2"), r"ModelConfig.embed_scale must be"),
        (dict(norm_offset=float("inf")), r"ModelConfig.norm_offset must be finite"),
        (dict(gated_mlp=1), r"ModelConfig.gated_mlp must be a bool"),
        (dict(attn_only=True, gated_mlp=True), r"gated_mlp=True needs an MLP"),
        (dict(attn_only=True, parallel_residual=True), r"parallel_residual=True needs an MLP"),
    ],
)
def test_config_refuses_inconsistent_knobs(changes, message):
    with pytest.raises(ValueError, match=message):
        ja.ModelConfig(**{**BASE, **changes})
