"""Every GPT-2 config attribute is mapped, ignored, fixed at its default, or refused by name."""

import json
import shutil

import numpy as np
import pytest
from transformers import GPT2Config, PretrainedConfig

import jaxablate as ja
from jaxablate.models.config import ModelConfig
from jaxablate.models.hf import (
    GPT2_OPTIONS,
    PRETRAINED_OPTIONS,
    model_config,
    resolve_options,
)
from tests._hf import hf_logits, tiny_gpt2

SMALL = dict(n_embd=16, n_head=2, n_layer=1, vocab_size=20)

#: (extra GPT2Config options, pattern the ValueError must match: the attribute and its value).
REFUSED = [
    (
        dict(scale_attn_by_inverse_layer_idx=True),
        r"scale_attn_by_inverse_layer_idx=True.*only False",
    ),
    (dict(scale_attn_weights=False), r"scale_attn_weights=False.*only True"),
    (dict(add_cross_attention=True), r"add_cross_attention=True.*only False"),
    (dict(activation_function="tanh"), r"activation_function='tanh'.*supported: \[.*'gelu_new'"),
    (dict(n_inner=0), r"n_inner=0.*None or a positive int"),
    (dict(foo_bar=3), r"foo_bar=3 is an option jaxablate does not know"),
    (dict(is_encoder_decoder=True), r"is_encoder_decoder=True.*only False"),
    (dict(pruned_heads={0: [1]}), r"pruned_heads=.*only \{\}"),
    (
        dict(quantization_config={"quant_method": "bitsandbytes"}),
        r"quantization_config=.*only None",
    ),
]

#: Options with no effect on eval-mode logits (``n_inner`` is mapped: a non-default width).
ACCEPTED = [
    dict(resid_pdrop=0.3, embd_pdrop=0.3, attn_pdrop=0.3, bos_token_id=7, eos_token_id=8),
    dict(summary_type="mean", summary_use_proj=False, summary_first_dropout=0.5),
    dict(initializer_range=0.5, use_cache=False, output_hidden_states=True, num_labels=3),
    dict(n_inner=40, activation_function="swish", pad_token_id=1),
    dict(n_inner=None, activation_function="gelu_pytorch_tanh"),
    # precision only: computed in float32 with the scale inside the matmul (eager attention only)
    dict(reorder_and_upcast_attn=True, attn_implementation="eager"),
]


def _tokens(vocab: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, vocab, (2, 10)).astype(np.int32)


@pytest.fixture(scope="module")
def saved_default(tmp_path_factory):
    """A saved tiny default GPT-2 (its config.json as transformers writes it)."""
    path = tmp_path_factory.mktemp("gpt2")
    tiny_gpt2(**SMALL).save_pretrained(path)
    return path


def _with_options(saved, tmp_path, options: dict) -> dict:
    """Copy ``saved`` to ``tmp_path`` with ``options`` written into its config.json."""
    shutil.copytree(saved, tmp_path, dirs_exist_ok=True)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(options)
    (tmp_path / "config.json").write_text(json.dumps(config))
    return config


def test_default_gpt2_config_converts():
    expected = ModelConfig(
        n_layers=12, n_heads=12, d_model=768, d_head=64, d_mlp=3072, vocab_size=50257, n_ctx=1024
    )
    default = GPT2Config().to_dict()
    assert model_config(default) == expected
    assert model_config(default, library_defaults=GPT2Config().to_dict()) == expected
    # config.json may omit attributes at their defaults: our table fills them in
    assert model_config({"model_type": "gpt2"}) == expected


def test_legacy_hub_config_json_converts():
    """The ``config.json`` of the ``gpt2`` checkpoint on the Hub (written by transformers 2.x)."""
    hub = {
        "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.1,
        "bos_token_id": 50256,
        "embd_pdrop": 0.1,
        "eos_token_id": 50256,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "model_type": "gpt2",
        "n_ctx": 1024,
        "n_embd": 768,
        "n_head": 12,
        "n_layer": 12,
        "n_positions": 1024,
        "resid_pdrop": 0.1,
        "summary_activation": None,
        "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
        "vocab_size": 50257,
    }
    assert model_config(hub) == model_config(GPT2Config().to_dict())


def test_table_covers_installed_transformers():
    library = GPT2Config().to_dict()
    missing = sorted(set(library) - set(GPT2_OPTIONS))
    assert not missing, f"GPT2_OPTIONS lacks {missing} (new in transformers?)"
    assert not sorted(set(PretrainedConfig().to_dict()) - set(PRETRAINED_OPTIONS) - {"model_type"})
    for name, rule in GPT2_OPTIONS.items():
        if rule.kind != "ignored" and name in library:
            assert rule.default == library[name], (name, rule.default, library[name])
        if rule.kind == "fixed":
            assert rule.note, name


@pytest.mark.parametrize(("options", "match"), REFUSED)
def test_unsupported_option_from_model_object(options, match):
    with pytest.raises(ValueError, match=r"unsupported GPT-2 config: .*" + match):
        ja.from_hf(tiny_gpt2(**SMALL, **options))


@pytest.mark.parametrize(("options", "match"), REFUSED)
def test_unsupported_option_from_config_json(saved_default, tmp_path, options, match):
    _with_options(saved_default, tmp_path, options)
    with pytest.raises(ValueError, match=r"unsupported GPT-2 config: .*" + match):
        ja.from_hf(tmp_path)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (dict(n_embd=15), r"n_embd=15.*multiple of n_head=2"),
        (dict(n_layer=0), r"n_layer must be a positive int, got 0"),
        (dict(layer_norm_epsilon=0.0), r"layer_norm_epsilon=0.0.*> 0"),
        (dict(tie_word_embeddings="yes"), r"tie_word_embeddings='yes'"),
    ],
)
def test_unrepresentable_mapped_values(options, match):
    with pytest.raises(ValueError, match=match):
        model_config({"model_type": "gpt2", **SMALL, **options})


def test_all_problems_named_at_once():
    bad = {**GPT2Config().to_dict(), "foo_bar": 3, "scale_attn_weights": False}
    with pytest.raises(ValueError, match=r"scale_attn_weights=False.*; foo_bar=3"):
        model_config(bad)


def test_unknown_attribute_passes_only_at_library_default():
    default = GPT2Config().to_dict()
    future = {**default, "foo_bar": 3}
    assert model_config(future, library_defaults=future) == model_config(default)
    with pytest.raises(ValueError, match="foo_bar=3"):
        model_config(future, library_defaults={**default, "foo_bar": 2})
    with pytest.raises(ValueError, match="foo_bar=3"):
        model_config(future)  # config.json: no transformers to ask, so refused


def test_resolve_options_fills_defaults_and_keeps_values():
    resolved = resolve_options({"model_type": "gpt2", "n_layer": 3}, GPT2_OPTIONS, "GPT-2")
    assert resolved["n_layer"] == 3 and resolved["n_inner"] is None
    assert resolved["scale_attn_weights"] is True
    assert "resid_pdrop" not in resolved  # ignored attributes are not filled in


@pytest.mark.slow
@pytest.mark.parametrize("options", ACCEPTED)
def test_irrelevant_options_pass_from_model_object(options):
    hf = tiny_gpt2(**SMALL, **options)
    model = ja.from_hf(hf)
    tokens = _tokens(SMALL["vocab_size"])
    np.testing.assert_allclose(np.asarray(model(tokens)), hf_logits(hf, tokens), atol=1e-4, rtol=0)


@pytest.mark.parametrize("options", ACCEPTED[:3])
def test_irrelevant_options_pass_from_config_json(saved_default, tmp_path, options):
    _with_options(saved_default, tmp_path, options)
    assert ja.from_hf(tmp_path).config == ja.from_hf(saved_default).config
