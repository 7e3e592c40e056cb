"""run_with_cache against transformers' hidden states and attentions (tiny random models, offline),
under masks, over prompts, without recompiling; and the attention-pattern plot."""

import jax
import numpy as np
import pytest
import torch
from flax import nnx
from matplotlib.figure import Figure

import jaxablate as ja
from jaxablate import plots
from jaxablate.models import cache as cache_module
from tests._compile import no_new_compilations
from tests._hf import tiny_gpt2
from tests.test_families import _build, _o_proj

CASES = ["gpt2", "llama-gqa-llama3", "gemma2-softcap-window"]
ATOL = 1e-4


def _tokens(vocab: int, batch: int = 2, seq: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, (batch, seq)).astype(np.int32)


@pytest.fixture(scope="module")
def models():
    """``case -> (transformers model with eager attention, our model)``."""
    out = {}
    for case in CASES:
        hf = tiny_gpt2() if case == "gpt2" else _build(case)
        hf.config._attn_implementation = "eager"  # attention probabilities come back
        out[case] = (hf, ja.from_hf(hf))
    return out


def _mlp_norm(hf, layer: int):
    """The norm in front of ``layer``'s MLP: its input is the stream after attention."""
    if hasattr(hf, "transformer"):
        return hf.transformer.h[layer].ln_2
    block = hf.model.layers[layer]
    return getattr(block, "pre_feedforward_layernorm", None) or block.post_attention_layernorm


def _hf_run(hf, tokens: np.ndarray, head_off: tuple[int, int] | None = None) -> dict:
    """transformers' hidden states, attentions and logits, the inputs of every output
    projection (``z``) and MLP norm (the stream after attention); ``head_off`` zeroes one
    head's slice of its layer's output-projection input (zero ablation)."""
    n_layers, n_heads = hf.config.num_hidden_layers, hf.config.num_attention_heads
    z, mid = {}, {}

    def grab(store, layer, off=None):
        def hook(module, args):
            x = args[0].clone()
            if off is not None:
                d_head = x.shape[-1] // n_heads
                x[..., off * d_head : (off + 1) * d_head] = 0.0
            store[layer] = x.numpy()
            return (x, *args[1:])

        return hook

    handles = []
    for layer in range(n_layers):
        off = head_off[1] if head_off is not None and head_off[0] == layer else None
        handles.append(_o_proj(hf, layer).register_forward_pre_hook(grab(z, layer, off)))
        handles.append(_mlp_norm(hf, layer).register_forward_pre_hook(grab(mid, layer)))
    try:
        with torch.no_grad():
            out = hf(
                torch.tensor(tokens, dtype=torch.long),
                output_hidden_states=True,
                output_attentions=True,
            )
    finally:
        for h in handles:
            h.remove()
    b, s = tokens.shape
    return {
        "hidden": [h.numpy() for h in out.hidden_states],
        "pattern": np.stack([a.numpy() for a in out.attentions]),
        "logits": out.logits.numpy(),
        "z": np.stack([z[layer].reshape(b, s, n_heads, -1) for layer in range(n_layers)]),
        "resid_mid": np.stack([mid[layer] for layer in range(n_layers)]),
    }


def _cache(model, tokens, **kwargs) -> ja.Cache:
    """``model.run_with_cache`` with the arrays on the host (numpy: no eager jax ops here)."""
    return jax.device_get(model.run_with_cache(tokens, **kwargs))


def _close(ours, ref, atol: float = ATOL) -> None:
    np.testing.assert_allclose(np.asarray(ours), ref, atol=atol, rtol=0)


@pytest.mark.parametrize("case", CASES)
def test_cache_matches_transformers_hidden_states_and_attentions(models, case):
    hf, model = models[case]
    L = model.config.n_layers
    tokens = _tokens(model.config.vocab_size)
    ref = _hf_run(hf, tokens)
    cache = _cache(model, tokens)
    assert isinstance(cache, ja.Cache) and cache.names == tuple(cache_module.NAMES)
    assert len(ref["hidden"]) == L + 1
    # hidden_states[i] == resid_pre[i] (i < L); hidden_states[L] is after the final norm
    _close(cache["resid_pre"], np.stack(ref["hidden"][:L]))
    _close(cache["resid_final"], ref["hidden"][L])
    _close(cache["pattern"], ref["pattern"], atol=1e-5)  # per query head under GQA
    _close(cache["z"], ref["z"])
    _close(cache["resid_mid"], ref["resid_mid"])
    _close(cache.logits, ref["logits"])
    # the stream leaving a block enters the next one, and is what its two outputs added
    np.testing.assert_array_equal(cache["resid_post"][:-1], cache["resid_pre"][1:])
    _close(cache["resid_mid"], cache["resid_pre"] + cache["attn_out"], atol=1e-5)
    _close(cache["resid_post"], cache["resid_mid"] + cache["mlp_out"], atol=1e-5)


@nnx.jit
def _activations(model, tokens):
    return model.activations(tokens)


def test_block_outputs_equal_activations(models):
    _, model = models["gemma2-softcap-window"]
    tokens = _tokens(model.config.vocab_size, seed=1)
    acts = _activations(model, tokens)
    cache = _cache(model, tokens)
    _close(cache["z"], acts.z, atol=1e-6)
    _close(cache["attn_out"], acts.attn, atol=1e-6)
    _close(cache["mlp_out"], acts.mlp, atol=1e-6)


def _one_head_off(cfg, layer: int, head: int) -> ja.Masks:
    heads = np.ones((cfg.n_layers, cfg.n_heads), np.float32)
    heads[layer, head] = 0.0
    ones = ja.Masks.ones(cfg)
    return ja.Masks(heads=jax.numpy.asarray(heads), attn=ones.attn, mlp=ones.mlp)


@pytest.mark.parametrize("case", CASES[:2])
def test_masked_cache_matches_transformers_with_a_zeroed_head(models, case):
    hf, model = models[case]
    cfg = model.config
    tokens = _tokens(cfg.vocab_size, seed=2)
    layer, head = 0, 1
    ref = _hf_run(hf, tokens, head_off=(layer, head))
    cache = _cache(model, tokens, masks=_one_head_off(cfg, layer, head))
    assert np.all(np.asarray(cache["z"][layer, :, :, head]) == 0.0)
    _close(cache["z"], ref["z"])
    _close(cache["resid_pre"], np.stack(ref["hidden"][: cfg.n_layers]))
    _close(cache["resid_mid"], ref["resid_mid"])
    _close(cache["pattern"], ref["pattern"], atol=1e-5)
    _close(cache.logits, ref["logits"])
    clean = _hf_run(hf, tokens)["hidden"][1]
    assert np.abs(clean - np.asarray(cache["resid_pre"][1])).max() > 1e-3  # it mattered


@nnx.jit
def _block_loop(model, tokens, masks, replacement):
    """The layers one by one through ``block(record=)``: streams entering them, records."""
    record, streams = [], []
    resid = model.embed(tokens)
    for layer in range(model.config.n_layers):
        streams.append(resid)
        resid = model.block(layer, resid, masks, replacement, record=record)
    z, attn, mlp = (jax.numpy.stack(x) for x in zip(*record, strict=True))
    return jax.numpy.stack(streams), z, attn, mlp, model.unembed(resid)


@pytest.mark.slow  # two programs for a Gemma 2 model: ~6 s
def test_masked_cache_equals_block_records(models):
    _, model = models["gemma2-softcap-window"]  # post norms: block masks act after them
    cfg = model.config
    L, H, E, D = cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.d_model
    rng = np.random.default_rng(3)
    masks = ja.Masks(
        heads=jax.numpy.asarray(rng.random((L, H)), jax.numpy.float32),
        attn=jax.numpy.asarray(rng.random(L), jax.numpy.float32),
        mlp=jax.numpy.asarray(rng.random(L), jax.numpy.float32),
    )
    abl = ja.Ablation(
        z=jax.numpy.asarray(rng.normal(size=(L, 1, 1, H, E)), jax.numpy.float32),
        attn=jax.numpy.asarray(rng.normal(size=(L, 1, 1, D)), jax.numpy.float32),
        mlp=jax.numpy.asarray(rng.normal(size=(L, 1, 1, D)), jax.numpy.float32),
        kind="constant",
    )
    tokens = _tokens(cfg.vocab_size, seed=4)
    cache = _cache(model, tokens, masks=masks, ablation=abl)
    prepared = model.prepare(tokens.shape, masks, abl)
    pre, z, attn, mlp, logits = _block_loop(model, tokens, *prepared)
    for name, want in [("resid_pre", pre), ("z", z), ("attn_out", attn), ("mlp_out", mlp)]:
        _close(cache[name], np.asarray(want), atol=1e-6)
    _close(cache.logits, np.asarray(logits), atol=1e-6)
    clean = _cache(model, tokens)
    assert np.abs(np.asarray(clean["mlp_out"] - cache["mlp_out"])).max() > 1e-2


def test_prompts_pads_are_never_read(models):
    _, model = models["gpt2"]
    tokens = _tokens(model.config.vocab_size, seed=5)
    p = ja.Prompts(tokens=tokens, lengths=np.array([10, 6], np.int32))
    cache = _cache(model, p)
    same = _cache(model, p.tokens)
    np.testing.assert_array_equal(cache["pattern"], same["pattern"])
    alone = _cache(model, tokens[1:, :6])
    for name in ["resid_pre", "resid_post", "z", "attn_out", "mlp_out"]:
        _close(cache[name][:, 1:, :6], alone[name], atol=1e-5)
    _close(cache["pattern"][:, 1:, :, :6, :6], alone["pattern"], atol=1e-6)
    assert np.all(np.asarray(cache["pattern"][:, 1, :, :6, 6:]) == 0.0)  # pads never attended


def test_names_are_validated_and_a_second_call_does_not_recompile(models):
    _, model = models["gpt2"]
    tokens = _tokens(model.config.vocab_size, seed=6)
    with pytest.raises(ValueError, match=r"unknown cache names \['hook_z'\]; valid names.*'z'"):
        _cache(model, tokens, names=["z", "hook_z"])
    with pytest.raises(ValueError, match="at least one"):
        _cache(model, tokens, names=[])
    cache = _cache(model, tokens, names=["pattern", "z", "pattern"])
    assert cache.names == ("pattern", "z") and "z" in cache and len(cache) == 2
    with no_new_compilations(cache_module._run):  # new tokens, names in another order
        again = _cache(model, _tokens(model.config.vocab_size, seed=7), names=["z", "pattern"])
    assert again.names == ("pattern", "z") and not np.array_equal(again["z"], cache["z"])
    assert list(cache) == ["pattern", "z"]
    with pytest.raises(KeyError, match=r"'resid_pre' was not recorded.*names="):
        cache["resid_pre"]
    with pytest.raises(KeyError, match="is not a cache name"):
        cache["blocks.0.hook_z"]
    with pytest.raises(ValueError, match=r"Masks\.heads must have shape"):
        _cache(model, tokens, masks=ja.Masks.ones(model.config, lead=(3,)))
    assert isinstance(cache, ja.Cache) and isinstance(cache["z"], np.ndarray)  # a pytree
    assert repr(cache).startswith("Cache(logits=[2, 10, 50], pattern=[2, 2, 4, 10, 10]")


def test_attention_pattern_plot():
    rng = np.random.default_rng(0)
    L, B, H, S = 2, 2, 3, 5
    raw = np.tril(rng.random((L, B, H, S, S))) + 1e-3 * np.eye(S)
    stacked = raw / raw.sum(-1, keepdims=True)
    labels = ["The", " cat", " sat", "<pad>", "<pad>"]
    fig = plots.attention_pattern(
        stacked, layer=1, head=2, example=1, token_labels=labels, lengths=[5, 3]
    )
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_xlabel() and ax.get_ylabel() and "L1H2" in ax.get_title()
    assert [t.get_text() for t in ax.get_xticklabels()] == labels[:3]  # pads left out
    assert [t.get_text() for t in ax.get_yticklabels()] == labels[:3]
    np.testing.assert_array_equal(ax.get_images()[0].get_array(), stacked[1, 1, 2, :3, :3])
    into = Figure().subplots()
    assert plots.attention_pattern(stacked[0, 0, 0], ax=into, lengths=4) is into.figure
    with pytest.raises(ValueError, match="needs layer= and head="):
        plots.attention_pattern(stacked)
    with pytest.raises(ValueError, match="leave them out"):
        plots.attention_pattern(stacked[0, 0, 0], head=1)
    with pytest.raises(ValueError, match="2 token labels"):
        plots.attention_pattern(stacked[0, 0, 0], token_labels=["a", "b"])
    with pytest.raises(ValueError, match=r"lie in \[1, 5\]"):
        plots.attention_pattern(stacked[0, 0, 0], lengths=9)
