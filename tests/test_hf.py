"""Logits and head ablations against transformers' GPT-2 (tiny random models, offline)."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import jaxablate as ja
from tests._hf import hf_logits, tiny_gpt2

CONFIGS = [
    dict(n_embd=32, n_head=4, n_layer=2, vocab_size=50),
    dict(n_embd=24, n_head=3, n_layer=3, vocab_size=37, tie_word_embeddings=False),
    dict(n_embd=20, n_head=5, n_layer=1, vocab_size=11, n_inner=52, activation_function="relu"),
    dict(n_embd=16, n_head=2, n_layer=2, vocab_size=23, activation_function="gelu"),
]


def _tokens(vocab: int, batch: int = 3, seq: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, (batch, seq)).astype(np.int32)


@pytest.mark.slow
@pytest.mark.parametrize("kwargs", CONFIGS)
def test_logits_match_transformers(kwargs):
    hf = tiny_gpt2(**kwargs)
    model = ja.from_hf(hf)
    assert model.config.tie_embeddings == kwargs.get("tie_word_embeddings", True)
    tokens = _tokens(kwargs["vocab_size"])
    ours = np.asarray(model(tokens))
    np.testing.assert_allclose(ours, hf_logits(hf, tokens), atol=1e-4, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("kwargs", CONFIGS[:2])
def test_logits_from_saved_directory_without_torch(tmp_path, kwargs):
    hf = tiny_gpt2(**kwargs)
    hf.save_pretrained(tmp_path)
    tokens = _tokens(kwargs["vocab_size"])
    np.save(tmp_path / "tokens.npy", tokens)
    script = textwrap.dedent(
        f"""
        import sys, numpy as np
        import jaxablate as ja
        model = ja.from_hf({str(tmp_path)!r})
        np.save({str(tmp_path / "ours.npy")!r}, np.asarray(model(np.load({str(tmp_path / "tokens.npy")!r}))))
        assert "torch" not in sys.modules, "loading a directory imported torch"
        assert "transformers" not in sys.modules, "loading a directory imported transformers"
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    ours = np.load(tmp_path / "ours.npy")
    np.testing.assert_allclose(ours, hf_logits(hf, tokens), atol=1e-4, rtol=0)


def test_sharded_checkpoint(tmp_path):
    hf = tiny_gpt2(n_embd=32, n_head=4, n_layer=3, vocab_size=200)
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    model = ja.from_hf(tmp_path)
    tokens = _tokens(200)
    np.testing.assert_allclose(np.asarray(model(tokens)), hf_logits(hf, tokens), atol=1e-4, rtol=0)


@pytest.mark.slow
def test_zero_ablated_heads_match_zeroed_output_projection():
    hf = tiny_gpt2(n_embd=32, n_head=4, n_layer=3, vocab_size=40)
    model = ja.from_hf(hf)
    cfg = model.config
    comps = ja.heads(cfg)
    tokens = _tokens(40, batch=2, seq=10, seed=1)
    rng = np.random.default_rng(2)
    rows = rng.random((6, len(comps))) < 0.5
    ours = ja.evaluate_per_example(model, comps, rows, tokens)
    for row, got in zip(rows, ours, strict=True):
        ablated = tiny_gpt2(n_embd=32, n_head=4, n_layer=3, vocab_size=40)
        with torch.no_grad():
            for i in np.flatnonzero(~row):
                layer, head = divmod(int(i), cfg.n_heads)
                w = ablated.transformer.h[layer].attn.c_proj.weight  # [H * E, D]; bias kept
                w[head * cfg.d_head : (head + 1) * cfg.d_head] = 0.0
        logits = torch.tensor(hf_logits(ablated, tokens))
        ref = (
            torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, 40),
                torch.tensor(tokens[:, 1:]).reshape(-1).long(),
                reduction="none",
            )
            .reshape(2, -1)
            .mean(-1)
        )
        np.testing.assert_allclose(got, ref.numpy(), atol=1e-4, rtol=1e-5)
    # the ablations mattered: the subsets do not all give the same loss
    assert np.ptp(ours.mean(-1)) > 1e-2


def test_unknown_architecture_and_tensor_mismatch(tmp_path):
    hf = tiny_gpt2()
    hf.save_pretrained(tmp_path)
    cfg_file = tmp_path / "config.json"
    text = cfg_file.read_text()
    cfg_file.write_text(text.replace('"model_type": "gpt2"', '"model_type": "mamba"'))
    with pytest.raises(ValueError, match=r"unsupported architecture.*mamba.*supported: \[.*'gpt2'"):
        ja.from_hf(tmp_path)
    cfg_file.write_text(text)
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(tmp_path / "model.safetensors"))
    del tensors["transformer.h.1.mlp.c_fc.bias"]
    tensors["transformer.extra.weight"] = np.zeros(3, np.float32)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(
        ValueError,
        match=r"missing tensors \['h.1.mlp.c_fc.bias'\].*unexpected tensors \['extra.weight'\]",
    ):
        ja.from_hf(tmp_path)
    with pytest.raises(ValueError, match="not a directory"):
        ja.from_hf(tmp_path / "nowhere")
    with pytest.raises(
        ValueError, match="transformers model, a local directory path or a Hub repo id"
    ):
        ja.from_hf(42)


def test_save_and_load_roundtrip(tmp_path):
    model = ja.from_hf(tiny_gpt2(tie_word_embeddings=False))
    ja.save_model(model, tmp_path)
    again = ja.load_model(tmp_path)
    assert again.config == model.config
    tokens = _tokens(50)
    np.testing.assert_array_equal(np.asarray(again(tokens)), np.asarray(model(tokens)))
