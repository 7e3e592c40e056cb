"""Every supported family against transformers: tiny random models built here (offline).

Each case has odd sizes, random norm weights and biases, and where the family has them GQA/MQA,
tied and untied unembeddings, rope scaling, partial rotary and a sliding window shorter than
the sequence.
"""

import json
import subprocess
import sys
import textwrap

import ml_dtypes
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

import jaxablate as ja
from jaxablate.models.hf import ARCHITECTURES, model_config
from tests._hf import hf_logits, hf_logits_with_pre_hooks, tiny_causal_lm

SEQ = 12
_LLAMA3 = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
}
_SHAPE = dict(vocab_size=61, hidden_size=40, intermediate_size=56, max_position_embeddings=64)

#: id -> (config class, model class, config kwargs).
CASES: dict[str, tuple[str, str, dict]] = {
    "llama-gqa-llama3": (
        "LlamaConfig",
        "LlamaForCausalLM",
        dict(
            **_SHAPE,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            attention_bias=True,
            rope_parameters=_LLAMA3,
        ),
    ),
    "llama-mqa-tied-linear": (
        "LlamaConfig",
        "LlamaForCausalLM",
        dict(
            **_SHAPE,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=12,
            mlp_bias=True,
            tie_word_embeddings=True,
            rope_parameters={"rope_type": "linear", "rope_theta": 1000.0, "factor": 2.0},
        ),
    ),
    "mistral-window": (
        "MistralConfig",
        "MistralForCausalLM",
        dict(
            **_SHAPE,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            sliding_window=5,
        ),
    ),
    "qwen2-bias-sliding": (
        "Qwen2Config",
        "Qwen2ForCausalLM",
        dict(
            **_SHAPE,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
            use_sliding_window=True,
            sliding_window=4,
            max_window_layers=1,
        ),
    ),
    "qwen3-qknorm": (
        "Qwen3Config",
        "Qwen3ForCausalLM",
        dict(
            **_SHAPE,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=14,
        ),
    ),
    "gemma-mqa": (
        "GemmaConfig",
        "GemmaForCausalLM",
        dict(
            **_SHAPE,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=12,
        ),
    ),
    "gemma2-softcap-window": (
        "Gemma2Config",
        "Gemma2ForCausalLM",
        dict(
            **_SHAPE,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=12,
            query_pre_attn_scalar=20,
            sliding_window=4,
            attn_logit_softcapping=5.0,
            final_logit_softcapping=3.0,
        ),
    ),
    "gemma3-local-rope": (
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        dict(
            **_SHAPE,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=12,
            query_pre_attn_scalar=16,
            sliding_window=4,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            rope_parameters={
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                "full_attention": {"rope_type": "linear", "rope_theta": 1e6, "factor": 4.0},
            },
        ),
    ),
    "neox-parallel-partial": (
        "GPTNeoXConfig",
        "GPTNeoXForCausalLM",
        dict(
            vocab_size=53,
            hidden_size=48,
            intermediate_size=60,
            max_position_embeddings=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 10000.0,
                "partial_rotary_factor": 0.5,
            },
        ),
    ),
    "neox-sequential-tied-nobias": (
        "GPTNeoXConfig",
        "GPTNeoXForCausalLM",
        dict(
            vocab_size=53,
            hidden_size=48,
            intermediate_size=44,
            max_position_embeddings=64,
            num_hidden_layers=2,
            num_attention_heads=3,
            use_parallel_residual=False,
            attention_bias=False,
            tie_word_embeddings=True,
        ),
    ),
    "gpt2": (
        "GPT2Config",
        "GPT2LMHeadModel",
        dict(n_embd=36, n_head=3, n_layer=2, n_positions=32, vocab_size=47),
    ),
}


def _tokens(vocab: int, batch: int = 2, seq: int = SEQ, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, (batch, seq)).astype(np.int32)


def _build(case: str, seed: int = 0):
    config_class, model_class, kwargs = CASES[case]
    return tiny_causal_lm(config_class, model_class, seed=seed, **kwargs)


@pytest.fixture(scope="module")
def built():
    """One random model per case, shared by the tests of this module."""
    return {case: _build(case) for case in CASES}


def test_every_architecture_has_a_case():
    covered = {_build_type(case) for case in CASES}
    assert covered == set(ARCHITECTURES)


def _build_type(case: str) -> str:
    import transformers

    return getattr(transformers, CASES[case][0])().model_type


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_from_object_and_directory(built, case, tmp_path):
    hf = built[case]
    tokens = _tokens(hf.config.vocab_size)
    ref = hf_logits(hf, tokens)
    model = ja.from_hf(hf)
    np.testing.assert_allclose(np.asarray(model(tokens)), ref, atol=1e-4, rtol=0)
    hf.save_pretrained(tmp_path)
    again = ja.from_hf(tmp_path)
    assert again.config == model.config
    np.testing.assert_allclose(np.asarray(again(tokens)), ref, atol=1e-4, rtol=0)


def test_window_and_rope_settings_are_read(built):
    cfg = {case: ja.from_hf(built[case]).config for case in CASES}
    assert (
        cfg["mistral-window"].sliding_window == 5 and cfg["mistral-window"].sliding_layers is None
    )
    assert cfg["qwen2-bias-sliding"].sliding_layers == (False, True)
    assert cfg["gemma2-softcap-window"].sliding_layers == (True, False)
    g3 = cfg["gemma3-local-rope"]
    assert (g3.rope_local_theta, g3.rope_theta, g3.rope_scaling) == (10000.0, 1e6, "linear")
    assert cfg["llama-gqa-llama3"].rope_scaling == "llama3"
    assert cfg["llama-mqa-tied-linear"].n_kv_heads == 1
    assert cfg["neox-parallel-partial"].rotary_dim == 6
    assert cfg["neox-sequential-tied-nobias"].parallel_residual is False


@pytest.mark.slow
def test_sharded_directory_without_torch(built, tmp_path):
    hf = built["qwen3-qknorm"]
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    tokens = _tokens(hf.config.vocab_size)
    np.save(tmp_path / "tokens.npy", tokens)
    script = textwrap.dedent(
        f"""
        import sys, numpy as np
        import jaxablate as ja
        model = ja.from_hf({str(tmp_path)!r})
        np.save({str(tmp_path / "ours.npy")!r}, np.asarray(model(np.load({str(tmp_path / "tokens.npy")!r}))))
        assert "torch" not in sys.modules and "transformers" not in sys.modules
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    np.testing.assert_allclose(
        np.load(tmp_path / "ours.npy"), hf_logits(hf, tokens), atol=1e-4, rtol=0
    )


#: Bound on max |logit difference| of a bfloat16 load against the float32 transformers model,
#: relative to the largest |logit|. Measured on these tiny models: 0.9% (Llama), 4.2% (Gemma2,
#: softcapped logits), 0.8% (NeoX), 0.4% (Gemma3) computing in bfloat16; 0.4-1.4% for the same
#: bf16 weights upcast to float32 (the rounding of the weights alone).
BF16_BOUND = 0.06
BF16_UPCAST_BOUND = 0.025


@pytest.mark.slow
@pytest.mark.parametrize("case", ["llama-gqa-llama3", "gemma2-softcap-window"])
def test_bfloat16_checkpoint_loads_as_bfloat16(case, tmp_path):
    hf = _build(case)
    tokens = _tokens(hf.config.vocab_size)
    ref = hf_logits(hf, tokens)
    hf.to(torch.bfloat16).save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), framework="numpy") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    model = ja.from_hf(tmp_path, dtype="bfloat16")
    assert model.W_E[...].dtype == ml_dtypes.bfloat16
    scale = np.abs(ref).max()
    diff = np.abs(np.asarray(model(tokens)) - ref).max()
    assert diff < BF16_BOUND * scale, diff
    up = ja.from_hf(tmp_path, dtype="float32")
    assert up.W_E[...].dtype == np.float32
    assert np.abs(np.asarray(up(tokens)) - ref).max() < BF16_UPCAST_BOUND * scale
    # the bf16 values are kept exactly: upcasting them is lossless
    np.testing.assert_array_equal(
        np.asarray(model.W_E[...]).astype(np.float32), np.asarray(up.W_E[...])
    )


def _o_proj(hf, layer: int):
    """The output projection module of ``layer`` (its input is the concatenated heads)."""
    if hasattr(hf, "gpt_neox"):
        return hf.gpt_neox.layers[layer].attention.dense
    if hasattr(hf, "transformer"):
        return hf.transformer.h[layer].attn.c_proj
    return hf.model.layers[layer].self_attn.o_proj


@pytest.mark.parametrize(
    "case", ["llama-gqa-llama3", "gemma3-local-rope", "neox-parallel-partial", "qwen2-bias-sliding"]
)
def test_zero_ablated_head_matches_zeroed_o_proj_input(built, case):
    hf = built[case]
    model = ja.from_hf(hf)
    cfg = model.config
    tokens = _tokens(cfg.vocab_size, seed=3)
    for layer, head in [(0, 1), (cfg.n_layers - 1, cfg.n_heads - 1)]:
        heads = np.ones((cfg.n_layers, cfg.n_heads), np.float32)
        heads[layer, head] = 0.0
        masks = ja.Masks.ones(cfg)
        masks = ja.Masks(heads=heads, attn=masks.attn, mlp=masks.mlp)
        ours = np.asarray(model(tokens, masks=masks))

        def zero_head(module, args, head=head):
            x = args[0].clone()
            x[..., head * cfg.d_head : (head + 1) * cfg.d_head] = 0.0
            return (x, *args[1:])

        ref = hf_logits_with_pre_hooks(hf, tokens, {_o_proj(hf, layer): zero_head})
        np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
        assert np.abs(ref - hf_logits(hf, tokens)).max() > 1e-3  # the ablation mattered


@pytest.fixture
def saved_llama(built, tmp_path):
    built["llama-gqa-llama3"].save_pretrained(tmp_path)
    return tmp_path


def _edit_tensors(path, edit) -> None:
    tensors = load_file(str(path / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(path / "model.safetensors"))


def _edit_config(path, **changes) -> None:
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


def test_missing_unexpected_and_misshaped_tensors_are_named(saved_llama):
    def drop_and_add(t):
        del t["model.layers.1.mlp.up_proj.weight"]
        t["model.layers.0.extra.weight"] = np.zeros(3, np.float32)

    _edit_tensors(saved_llama, drop_and_add)
    with pytest.raises(
        ValueError,
        match=r"Llama.*missing tensors \['layers.1.mlp.up_proj.weight'\].*"
        r"unexpected tensors \['layers.0.extra.weight'\]",
    ):
        ja.from_hf(saved_llama)


def test_wrong_shape_is_named(saved_llama):
    def shrink(t):
        t["model.layers.0.self_attn.k_proj.weight"] = t["model.layers.0.self_attn.k_proj.weight"][
            :-1
        ]

    _edit_tensors(saved_llama, shrink)
    with pytest.raises(ValueError, match=r"layers.0.self_attn.k_proj.weight has shape \(19, 40\)"):
        ja.from_hf(saved_llama)


def test_unknown_architecture_is_named(saved_llama):
    _edit_config(saved_llama, model_type="mamba")
    with pytest.raises(ValueError, match=r"unsupported architecture model_type='mamba'.*'llama'"):
        ja.from_hf(saved_llama)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        (dict(rope_parameters={"rope_type": "yarn", "factor": 2.0}), r"rope_type='yarn'"),
        (dict(rope_parameters={"rope_type": "dynamic", "factor": 2.0}), r"rope_type='dynamic'"),
        (dict(rope_scaling={"rope_type": "longrope", "factor": 2.0}), r"rope_type='longrope'"),
        (dict(hidden_act="tanh"), r"hidden_act='tanh'"),
        (dict(num_key_value_heads=3), r"num_key_value_heads=3.*divisor"),
        (dict(foo_bar=1), r"foo_bar=1 is an option jaxablate does not know"),
        (dict(quantization_config={"quant_method": "gptq"}), r"quantization_config=.*only None"),
    ],
)
def test_unsupported_config_option_is_named(saved_llama, changes, match):
    _edit_config(saved_llama, **changes)
    with pytest.raises(ValueError, match=r"unsupported Llama config: .*" + match):
        ja.from_hf(saved_llama)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"model_type": "gemma3_text", "use_bidirectional_attention": True}, "bidirectional"),
        (
            {
                "model_type": "gemma3_text",
                "rope_parameters": {"sliding_attention": {"rope_type": "linear", "factor": 2.0}},
            },
            r"sliding_attention'\] rope_type='linear'",
        ),
        ({"model_type": "qwen2", "use_mrope": True}, r"use_mrope=True"),
        ({"model_type": "gpt_neox", "rotary_pct": 0.01}, r"partial_rotary_factor=0.01"),
        ({"model_type": "gemma2", "layer_types": ["chunked_attention"] * 26}, "chunked"),
    ],
)
def test_family_specific_refusals(config, match):
    with pytest.raises(ValueError, match=match):
        model_config(config)


LEGACY = {
    # transformers 4.x config.json spellings of rope settings
    "llama": (
        {
            "rope_theta": 500000.0,
            "rope_scaling": {k: v for k, v in _LLAMA3.items() if k != "rope_theta"},
        },
        dict(rope_theta=500000.0, rope_scaling="llama3", rope_original_context=16),
    ),
    "gpt_neox": (
        {"rotary_pct": 0.5, "rotary_emb_base": 1000, "hidden_size": 64, "num_attention_heads": 4},
        dict(rotary_dim=8, rope_theta=1000.0),
    ),
    "gemma3_text": (
        {"rope_theta": 1e6, "rope_local_base_freq": 1e4, "sliding_window_pattern": 2},
        dict(rope_theta=1e6, rope_local_theta=1e4),
    ),
}


@pytest.mark.parametrize("model_type", list(LEGACY))
def test_legacy_rope_spellings(model_type):
    extra, expected = LEGACY[model_type]
    cfg = model_config({"model_type": model_type, **extra})
    assert {k: getattr(cfg, k) for k in expected} == expected
    if model_type == "gemma3_text":
        assert cfg.sliding_layers is not None and cfg.sliding_layers[:4] == (
            True,
            False,
            True,
            False,
        )


@pytest.mark.parametrize("model_type", sorted(ARCHITECTURES))
def test_default_configs_convert_and_tables_cover_transformers(model_type):
    import transformers

    config_class = {
        "gpt2": "GPT2Config",
        "llama": "LlamaConfig",
        "mistral": "MistralConfig",
        "qwen2": "Qwen2Config",
        "qwen3": "Qwen3Config",
        "gemma": "GemmaConfig",
        "gemma2": "Gemma2Config",
        "gemma3_text": "Gemma3TextConfig",
        "gpt_neox": "GPTNeoXConfig",
    }[model_type]
    library = getattr(transformers, config_class)().to_dict()
    options = ARCHITECTURES[model_type].options
    missing = sorted(set(library) - set(options))
    assert not missing, f"{model_type} table lacks {missing} (new in transformers?)"
    for name, rule in options.items():
        if rule.kind == "fixed":
            assert rule.note and rule.default == library.get(name, rule.default), name
    # a config.json that omits everything means the same model as the full default config
    assert model_config({"model_type": model_type}) == model_config(library)
