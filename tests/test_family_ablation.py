"""Mean and resample ablation on Hugging Face families against hand-written torch hooks.

The reference runs the clean transformers model with forward hooks that capture each
component's output, builds the replacement from those captures (mean over every reference example
and position, per-position mean, or the paired source example), then runs the model again with
hooks that turn a masked component's output ``c`` into ``m * c + (1 - m) * r``:

- a head's output is its ``[d_head]`` slice of the input of the attention output projection
  (``o_proj``; NeoX ``attention.dense``), one slice per *query* head (also under GQA);
- an attention block's output is what the attention sub-layer adds to the residual stream: the
  ``o_proj`` output (Llama), ``post_attention_layernorm``'s output (Gemma2) and the attention
  branch ``post_attention_dropout`` (NeoX, parallel residual); an MLP block's output likewise:
  ``mlp`` (Llama), ``post_feedforward_layernorm`` (Gemma2), ``post_mlp_dropout`` (NeoX).
"""

import numpy as np
import pytest
import torch

import jaxablate as ja
from tests._hf import hf_logits
from tests.test_families import SEQ
from tests.test_families import _build as build_case

FAMILIES = ["llama-gqa-llama3", "gemma2-softcap-window", "neox-parallel-partial"]
BATCH, REF_BATCH = 2, 3


def _tokens(vocab: int, batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, (batch, SEQ)).astype(np.int32)


def _modules(hf, layer: int):
    """``(output projection, attention-block output, MLP-block output)`` modules of ``layer``."""
    family = hf.config.model_type
    if family == "gpt_neox":
        lay = hf.gpt_neox.layers[layer]
        return lay.attention.dense, lay.post_attention_dropout, lay.post_mlp_dropout
    lay = hf.model.layers[layer]
    if family == "gemma2":
        return lay.self_attn.o_proj, lay.post_attention_layernorm, lay.post_feedforward_layernorm
    assert family == "llama", family
    # LlamaAttention returns o_proj's output as is, and the decoder layer adds it (and mlp's).
    return lay.self_attn.o_proj, lay.self_attn.o_proj, lay.mlp


def _heads_view(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    return x.reshape(*x.shape[:-1], n_heads, x.shape[-1] // n_heads)


def capture(hf, tokens: np.ndarray) -> dict[tuple[str, int], np.ndarray]:
    """Clean activations ``{(kind, layer): [b, s, ...]}`` (``z`` as ``[b, s, head, d_head]``)."""
    n_heads = hf.config.num_attention_heads
    acts: dict[tuple[str, int], np.ndarray] = {}
    handles = []

    def keep(key, value):
        acts[key] = value.detach().float().numpy().copy()

    for layer in range(hf.config.num_hidden_layers):
        o_proj, attn, mlp = _modules(hf, layer)
        handles += [
            o_proj.register_forward_pre_hook(
                lambda m, args, layer=layer: keep(("z", layer), _heads_view(args[0], n_heads))
            ),
            attn.register_forward_hook(lambda m, a, out, layer=layer: keep(("attn", layer), out)),
            mlp.register_forward_hook(lambda m, a, out, layer=layer: keep(("mlp", layer), out)),
        ]
    try:
        hf_logits(hf, tokens)
    finally:
        for h in handles:
            h.remove()
    return acts


def replacements(hf, kind: str, ref: np.ndarray) -> dict:
    """``{(kind, layer): r}`` broadcastable to ``[b, s, ...]``, built from clean captures."""
    acts = capture(hf, ref)
    if kind == "resample":
        return acts
    axes = (0,) if kind == "mean_per_position" else (0, 1)
    return {k: v.astype(np.float64).mean(axis=axes, keepdims=True) for k, v in acts.items()}


def hooked_logits(hf, tokens: np.ndarray, masks: dict, repl: dict) -> np.ndarray:
    """Logits with every component's output blended as ``m * c + (1 - m) * r``.

    ``masks``: ``heads [layer, head]``, ``attn [layer]``, ``mlp [layer]`` mask values.
    """
    n_heads = hf.config.num_attention_heads
    handles = []

    def blend(c: torch.Tensor, m, r: np.ndarray) -> torch.Tensor:
        m = torch.tensor(np.array(m, np.float32))
        return m * c + (1 - m) * torch.tensor(np.array(r, np.float32))

    def heads_hook(module, args, layer):
        z = _heads_view(args[0], n_heads)
        m = masks["heads"][layer][:, None]  # [head, 1] against [b, s, head, d_head]
        z = blend(z, m, repl[("z", layer)])
        return (z.reshape(args[0].shape), *args[1:])

    for layer in range(hf.config.num_hidden_layers):
        o_proj, attn, mlp = _modules(hf, layer)
        handles += [
            o_proj.register_forward_pre_hook(lambda m, a, layer=layer: heads_hook(m, a, layer)),
            attn.register_forward_hook(
                lambda m, a, out, layer=layer: blend(
                    out, masks["attn"][layer], repl[("attn", layer)]
                )
            ),
            mlp.register_forward_hook(
                lambda m, a, out, layer=layer: blend(out, masks["mlp"][layer], repl[("mlp", layer)])
            ),
        ]
    try:
        return hf_logits(hf, tokens)
    finally:
        for h in handles:
            h.remove()


def _split(comps: ja.Components, row: np.ndarray) -> dict:
    m = comps.masks(row)
    return {"heads": np.asarray(m.heads), "attn": np.asarray(m.attn), "mlp": np.asarray(m.mlp)}


def _rows(comps: ja.Components, cfg) -> np.ndarray:
    """Heads only, blocks only, a head and its own block, and random rows (True = kept)."""
    n = len(comps)
    heads_only = np.array([c.kind != "head" or c.head in (0, cfg.n_heads - 1) for c in comps])
    blocks_only = np.array([c.kind == "head" or c.layer != 0 for c in comps])
    both = np.ones(n, bool)
    both[[comps.index("L1H2"), comps.index("L1.attn"), comps.index("L0.mlp")]] = False
    rand = np.random.default_rng(5).random(n) < 0.6
    return np.stack([heads_only, blocks_only, both, rand])


def _numpy_loss(logits: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    logits = logits[:, :-1].astype(np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    target = np.take_along_axis(logp, tokens[:, 1:, None].astype(np.int64), axis=-1)[..., 0]
    return -target.mean(-1)


@pytest.fixture(scope="module")
def families():
    """``case -> (hf model, jaxablate model)``, built once for the module."""
    out = {}
    for case in FAMILIES:
        hf = build_case(case)
        out[case] = (hf, ja.from_hf(hf))
    return out


def _ablation(model, kind: str, ref: np.ndarray) -> ja.Ablation:
    if kind == "resample":
        return ja.ablation.resample(model, ref)
    return ja.ablation.mean(model, ref, per_position=kind == "mean_per_position")


#: Every family with mean and resample ablation; per-position means on Llama only (time).
CASE_KINDS = [(case, kind) for case in FAMILIES for kind in ("mean", "resample")] + [
    ("llama-gqa-llama3", "mean_per_position")
]


@pytest.mark.slow
@pytest.mark.parametrize(("case", "kind"), CASE_KINDS)
def test_ablation_matches_torch_hooks(families, case, kind):
    hf, model = families[case]
    cfg = model.config
    if case == "neox-parallel-partial":
        assert cfg.parallel_residual
    if case == "llama-gqa-llama3":
        assert cfg.kv_heads < cfg.n_heads
    comps = ja.heads(cfg) + ja.blocks(cfg, "attn") + ja.blocks(cfg, "mlp")
    tokens = _tokens(cfg.vocab_size, BATCH, seed=1)
    ref = _tokens(cfg.vocab_size, BATCH if kind == "resample" else REF_BATCH, seed=2)
    abl = _ablation(model, kind, ref)
    repl = replacements(hf, kind, ref)
    rows = _rows(comps, cfg)
    continuous = np.random.default_rng(6).uniform(0.0, 1.0, len(comps)).astype(np.float32)

    clean = hf_logits(hf, tokens)
    zero = np.asarray(model(tokens, masks=comps.masks(rows[-1])))
    expected, outputs = [], []
    for row in [*rows, continuous]:
        want = hooked_logits(hf, tokens, _split(comps, row), repl)
        got = np.asarray(model(tokens, masks=comps.masks(row), ablation=abl))
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
        assert np.abs(want - clean).max() > 1e-3  # the ablation mattered
        expected.append(_numpy_loss(want, tokens))
        outputs.append(got)
    assert np.abs(outputs[len(rows) - 1] - zero).max() > 1e-3  # the replacement is not zero

    per_example = ja.evaluate_per_example(
        model, comps, rows, tokens, metric=ja.metrics.loss, ablation=abl
    )
    assert per_example.shape == (len(rows), BATCH)
    np.testing.assert_allclose(per_example, np.stack(expected[: len(rows)]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("case", FAMILIES)
def test_clean_activations_match_captures(families, case):
    """What mean and resample read (``model.activations``) is what the hooks capture: per query
    head ``z`` (GQA too), and the attention and MLP outputs that join the residual stream."""
    hf, model = families[case]
    cfg = model.config
    tokens = _tokens(cfg.vocab_size, BATCH, seed=7)
    acts = model.activations(tokens)
    seen = capture(hf, tokens)
    for layer in range(cfg.n_layers):
        for name in ("z", "attn", "mlp"):
            np.testing.assert_allclose(
                np.asarray(getattr(acts, name)[layer]),
                seen[(name, layer)],
                atol=1e-4,
                rtol=0,
                err_msg=f"{name} at layer {layer}",
            )
