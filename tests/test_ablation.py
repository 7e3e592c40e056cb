"""Mean and resample ablation against a two-pass torch-hook reference on transformers' GPT-2."""

import numpy as np
import pytest
import torch

import jaxablate as ja
from tests._hf import hf_logits, tiny_gpt2

N_HEAD, N_LAYER, D, V = 4, 3, 32, 40
E = D // N_HEAD


def _record(hf, tokens):
    """Clean activations: per layer z [b, s, H*E], attn out [b, s, D], mlp out [b, s, D]."""
    acts = {"z": {}, "attn": {}, "mlp": {}}
    handles = []
    for layer, block in enumerate(hf.transformer.h):
        handles.append(
            block.attn.c_proj.register_forward_pre_hook(
                lambda mod, args, layer=layer: acts["z"].__setitem__(layer, args[0].clone())
            )
        )
        handles.append(
            block.attn.register_forward_hook(
                lambda mod, args, out, layer=layer: acts["attn"].__setitem__(layer, out[0].clone())
            )
        )
        handles.append(
            block.mlp.register_forward_hook(
                lambda mod, args, out, layer=layer: acts["mlp"].__setitem__(layer, out.clone())
            )
        )
    hf_logits(hf, tokens)
    for h in handles:
        h.remove()
    return acts


def _patched_logits(hf, tokens, removed, replacement):
    """Logits with each removed component's output overwritten by ``replacement`` (torch hooks)."""
    handles = []
    for comp in removed:
        block = hf.transformer.h[comp.layer]
        if comp.kind == "head":
            sl = slice(comp.head * E, (comp.head + 1) * E)
            r = replacement["z"][comp.layer][..., sl]

            def pre(mod, args, sl=sl, r=r):
                z = args[0].clone()
                z[..., sl] = r.expand_as(z[..., sl])
                return (z,)

            handles.append(block.attn.c_proj.register_forward_pre_hook(pre))
        elif comp.kind == "attn":
            r = replacement["attn"][comp.layer]
            handles.append(
                block.attn.register_forward_hook(
                    lambda mod, args, out, r=r: (r.expand_as(out[0]).clone(), *out[1:])
                )
            )
        else:
            r = replacement["mlp"][comp.layer]
            handles.append(
                block.mlp.register_forward_hook(
                    lambda mod, args, out, r=r: r.expand_as(out).clone()
                )
            )
    try:
        return hf_logits(hf, tokens)
    finally:
        for h in handles:
            h.remove()


def _setup():
    hf = tiny_gpt2(n_embd=D, n_head=N_HEAD, n_layer=N_LAYER, vocab_size=V, seed=3)
    model = ja.from_hf(hf)
    comps = ja.heads(model.config, layers=[0, 2]) + ja.blocks(model.config, "attn", layers=[1])
    comps = comps + ja.blocks(model.config, "mlp")
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, V, (4, 10)).astype(np.int32)
    other = rng.integers(0, V, (4, 10)).astype(np.int32)
    rows = rng.random((5, len(comps))) < 0.5
    rows[0] = False  # everything removed at once
    return hf, model, comps, tokens, other, rows


def _check(hf, model, comps, tokens, rows, abl, replacement):
    for row in rows:
        ours = np.asarray(model(tokens, masks=comps.masks(row), ablation=abl))
        removed = [c for c, keep in zip(comps, row, strict=True) if not keep]
        ref = _patched_logits(hf, tokens, removed, replacement)
        np.testing.assert_allclose(ours, ref, atol=2e-4, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("per_position", [False, True])
def test_mean_ablation_matches_hook_reference(per_position):
    hf, model, comps, tokens, other, rows = _setup()
    abl = ja.ablation.mean(model, other, per_position=per_position, batch_size=3)
    acts = _record(hf, other)
    dims = (0,) if per_position else (0, 1)
    replacement = {
        k: {i: v.mean(dim=dims, keepdim=True) for i, v in d.items()} for k, d in acts.items()
    }
    _check(hf, model, comps, tokens, rows, abl, replacement)


@pytest.mark.slow
def test_per_position_mean_applies_to_shorter_sequences():
    hf, model, comps, tokens, other, rows = _setup()
    abl = ja.ablation.mean(model, other, per_position=True)
    acts = _record(hf, other)
    replacement = {
        k: {i: v.mean(dim=0, keepdim=True)[:, :6] for i, v in d.items()} for k, d in acts.items()
    }
    _check(hf, model, comps, tokens[:, :6], rows[:2], abl, replacement)


@pytest.mark.slow
def test_resample_ablation_matches_hook_reference():
    hf, model, comps, tokens, other, rows = _setup()
    abl = ja.ablation.resample(model, other)
    replacement = _record(hf, other)
    _check(hf, model, comps, tokens, rows, abl, replacement)
    # and through the batched path
    batched = ja.evaluate(model, comps, rows, tokens, ablation=abl)
    looped = [
        float(ja.metrics.loss(model(tokens, comps.masks(r), abl), tokens).mean()) for r in rows
    ]
    np.testing.assert_allclose(batched, looped, rtol=1e-5, atol=1e-5)


def test_zero_ablation_of_blocks_matches_hook_reference():
    hf, model, comps, tokens, _, rows = _setup()
    zeros = {
        "z": {i: torch.zeros(1, 1, D) for i in range(N_LAYER)},
        "attn": {i: torch.zeros(1, 1, D) for i in range(N_LAYER)},
        "mlp": {i: torch.zeros(1, 1, D) for i in range(N_LAYER)},
    }
    _check(hf, model, comps, tokens, rows, ja.ablation.zero(), zeros)
    _check(hf, model, comps, tokens, rows, None, zeros)
