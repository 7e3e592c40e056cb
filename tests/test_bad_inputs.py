"""Bad inputs at every public boundary (issue 14): none is accepted, every one is refused.

Each case is a call that must raise ``ValueError`` (or an ``OSError`` that names the file)
whose message matches a regex naming the argument and what was expected (and usually what was
given). Every case fails in validation, before anything compiles: the table runs in seconds on
one tiny model. Command-line cases must exit with status 2 and end in one line
``jaxablate CMD: error: ...`` on stderr, with no traceback.
"""

import importlib
import itertools
import json
import math
import re
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

import jaxablate as ja
from jaxablate import cli
from tests._text import make_tokenizer

CFG = ja.ModelConfig(n_layers=2, n_heads=2, d_model=8, d_head=4, d_mlp=16, vocab_size=11, n_ctx=8)
OTHER = CFG.replace(vocab_size=13)
ATTN_ONLY = ja.ModelConfig(
    n_layers=1, n_heads=2, d_model=8, d_head=4, vocab_size=11, n_ctx=8, attn_only=True
)
NAN, INF = math.nan, math.inf
KEY = jax.random.key(0)


def _gpt2_tensors(d: int = 8, layers: int = 1, vocab: int = 11, ctx: int = 8) -> dict:
    rng = np.random.default_rng(0)

    def f(*shape: int) -> np.ndarray:
        return rng.normal(size=shape).astype(np.float32)

    out = {"wte.weight": f(vocab, d), "wpe.weight": f(ctx, d), "ln_f.weight": f(d)}
    out["ln_f.bias"] = f(d)
    for i in range(layers):
        p = f"h.{i}."
        for ln in ("ln_1", "ln_2"):
            out[p + ln + ".weight"], out[p + ln + ".bias"] = f(d), f(d)
        out[p + "attn.c_attn.weight"], out[p + "attn.c_attn.bias"] = f(d, 3 * d), f(3 * d)
        out[p + "attn.c_proj.weight"], out[p + "attn.c_proj.bias"] = f(d, d), f(d)
        out[p + "mlp.c_fc.weight"], out[p + "mlp.c_fc.bias"] = f(d, 4 * d), f(4 * d)
        out[p + "mlp.c_proj.weight"], out[p + "mlp.c_proj.bias"] = f(4 * d, d), f(d)
    return out


GPT2_CONFIG = {
    "model_type": "gpt2",
    "n_embd": 8,
    "n_head": 2,
    "n_layer": 1,
    "n_positions": 8,
    "vocab_size": 11,
}


def _hf_dir(root: Path, config: object = None, tensors: dict | None = None) -> Path:
    """A tiny GPT-2 checkpoint (``config.json`` + ``model.safetensors``), maybe damaged."""
    root.mkdir(parents=True)
    save_file(_gpt2_tensors() if tensors is None else tensors, str(root / "model.safetensors"))
    text = config if isinstance(config, str) else json.dumps(config or GPT2_CONFIG)
    (root / "config.json").write_text(text)
    return root


def _damaged_saves(root: Path, model: ja.Transformer) -> dict[str, Path]:
    """Copies of a saved jaxablate model, each damaged one way."""
    good = ja.save_model(model, root / "good")
    meta = json.loads((good / "config.json").read_text())
    weights = (good / "model.safetensors").read_bytes()
    stored = load_file(str(good / "model.safetensors"))

    def variant(name: str, config: str | None = None, tensors: dict | bytes | None = None) -> Path:
        d = root / name
        d.mkdir()
        text = json.dumps(meta) if config is None else config
        (d / "config.json").write_bytes(text.encode("utf-8", "surrogateescape"))
        if isinstance(tensors, bytes):
            (d / "model.safetensors").write_bytes(tensors)
        elif tensors is not None:
            save_file(tensors, str(d / "model.safetensors"))
        else:
            (d / "model.safetensors").write_bytes(weights)
        return d

    no_config = root / "no_config"
    no_config.mkdir()
    (no_config / "model.safetensors").write_bytes(weights)
    wrong_field = json.loads(json.dumps(meta))
    wrong_field["config"]["n_embd"] = wrong_field["config"].pop("d_model")
    bad_value = json.loads(json.dumps(meta))
    bad_value["config"]["n_layers"] = 0
    no_inner = {k: v for k, v in meta.items() if k != "config"}
    nan_w = dict(stored)
    nan_w["attn.W_Q"] = stored["attn.W_Q"].copy()
    nan_w["attn.W_Q"].flat[3] = np.nan
    inf_w = dict(stored)
    inf_w["W_E"] = stored["W_E"].copy()
    inf_w["W_E"][0, 0] = np.inf
    reshaped = dict(stored)
    reshaped["attn.W_Q"] = stored["attn.W_Q"].reshape(CFG.n_layers, CFG.n_heads, -1, CFG.d_model)
    out = {
        "no_config": no_config,
        "truncated_json": variant("truncated_json", json.dumps(meta)[:40]),
        "not_utf8": variant("not_utf8", "\udcff"),
        "json_list": variant("json_list", "[1, 2]"),
        "wrong_field": variant("wrong_field", json.dumps(wrong_field)),
        "bad_value": variant("bad_value", json.dumps(bad_value)),
        "no_inner_config": variant("no_inner_config", json.dumps(no_inner)),
        "bad_safetensors": variant("bad_safetensors", tensors=b"not a safetensors file at all"),
        "nan_weight": variant("nan_weight", tensors=nan_w),
        "inf_weight": variant("inf_weight", tensors=inf_w),
        "reshaped_weight": variant("reshaped_weight", tensors=reshaped),
        "missing_weight": variant(
            "missing_weight", tensors={k: v for k, v in stored.items() if k != "W_E"}
        ),
    }
    (root / "no_weights").mkdir()
    (root / "no_weights" / "config.json").write_text(json.dumps(meta))
    out["no_weights"] = root / "no_weights"
    return out


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    model = ja.Transformer(CFG, rngs=nnx.Rngs(0))
    tokens = np.asarray(jax.random.randint(jax.random.key(1), (2, 6), 0, CFG.vocab_size))
    a_file = root / "a_file.txt"
    a_file.write_text("not a directory")
    hf = root / "hf"
    hf.mkdir()
    gpt2 = _gpt2_tensors()
    nan_gpt2 = dict(gpt2, **{"h.0.mlp.c_fc.weight": np.full((8, 32), np.nan, np.float32)})
    flat_bias = dict(gpt2, **{"h.0.attn.c_attn.bias": gpt2["h.0.attn.c_attn.bias"][:, None]})
    no_embd = {k: v for k, v in GPT2_CONFIG.items() if k != "n_embd"}
    hf_dirs = {
        "no_embd": _hf_dir(hf / "no_embd", no_embd),
        "truncated": _hf_dir(hf / "truncated", json.dumps(GPT2_CONFIG)[:30]),
        "unknown_type": _hf_dir(hf / "unknown_type", dict(GPT2_CONFIG, model_type="bert")),
        "nan": _hf_dir(hf / "nan", tensors=nan_gpt2),
        "flat_bias": _hf_dir(hf / "flat_bias", tensors=flat_bias),
        "good": _hf_dir(hf / "good"),
        "bad_field": _hf_dir(hf / "bad_field", dict(GPT2_CONFIG, n_head="two")),
        "list": _hf_dir(hf / "list", "[]"),
    }
    (hf_dirs["good"] / "junk.safetensors").write_bytes(b"junk")
    bad_st = _hf_dir(hf / "bad_st")
    (bad_st / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    hf_dirs["bad_st"] = bad_st
    tok_dir = make_tokenizer(root / "tok", "gpt2")
    np.save(root / "tokens.npy", tokens)
    np.save(root / "float_tokens.npy", tokens.astype(np.float32))
    np.save(root / "oov_tokens.npy", tokens + CFG.vocab_size)
    sweep_dir = root / "empty_sweep"
    sweep_dir.mkdir()
    return types.SimpleNamespace(
        root=root,
        model=model,
        attn_model=ja.Transformer(ATTN_ONLY, rngs=nnx.Rngs(0)),
        tokens=tokens,
        comps=ja.heads(CFG),
        pos_comps=ja.heads(CFG, layers=[1], positions="last"),
        other_comps=ja.heads(OTHER),
        rows=ja.subsets.all(4),
        a_file=a_file,
        missing=root / "missing" / "dir",
        saves=_damaged_saves(root / "saves", model),
        hf=hf_dirs,
        tok=ja.load_tokenizer(tok_dir),
        tok_dir=tok_dir,
        empty_sweep=sweep_dir,
        values=np.arange(8.0),
    )


def _optional(module: str) -> types.ModuleType:
    """A module another engineer is finishing: skip its cases, saying why, while it is absent."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        pytest.skip(f"{module} is not importable yet ({err})")


def _game(e):
    games = _optional("jaxablate.games")
    return games.Game(e.model, e.comps, e.tokens)


def _ev(e, **kw):
    """``ja.evaluate`` of the fixture's model with some arguments replaced."""
    args = dict(model=e.model, comps=e.comps, rows=e.rows, tokens=e.tokens)
    args.update(kw)
    return ja.evaluate(args.pop("model"), args.pop("comps"), args.pop("rows"), **args)


def _prompts(e, **kw):
    args = dict(tokens=e.tokens, lengths=[6, 4])
    args.update(kw)
    return ja.Prompts(**args)


def _learn(e, **kw):
    args = dict(sparsity=[0.1], steps=2, key=KEY)
    args.update(kw)
    return ja.learn_masks(
        args.pop("model", e.model), args.pop("comps", e.comps), args.pop("tokens", e.tokens), **args
    )


def _optimal(e, **kw):
    args = dict(steps=2, key=KEY)
    args.update(kw)
    return ja.ablation.optimal(
        args.pop("model", e.model), args.pop("comps", e.comps), args.pop("tokens", e.tokens), **args
    )


def _recover(e, **kw):
    args = dict(steps=2, eval_tokens=e.tokens, eval_every=1, batch_size=2, key=KEY, progress=False)
    args.update(kw)
    return ja.recover(
        args.pop("model", e.model),
        args.pop("comps", e.comps),
        args.pop("rows", ja.subsets.loco(4)),
        args.pop("train_tokens", e.tokens),
        **args,
    )


_OUTS = itertools.count()


def _sweep(e, **kw):
    args = dict(rows="all", out=e.root / f"sweep_out_{next(_OUTS)}", progress=False)
    args.update(kw)
    return ja.sweep(
        args.pop("model", e.model),
        args.pop("comps", e.comps),
        args.pop("rows"),
        args.pop("tokens", e.tokens),
        args.pop("out"),
        **args,
    )


def _cfg(**kw):
    base = dict(n_layers=2, n_heads=2, d_model=8, d_head=4, d_mlp=16, vocab_size=11, n_ctx=8)
    base.update(kw)
    return ja.ModelConfig(**base)


def _bf16_rows():
    return jnp.asarray(ja.subsets.loco(4), jnp.bfloat16)


#: Cases that fail in a module another engineer owns: reported to them, expected to fail until
#: fixed (strict, so a fix shows up); ``run=False`` where the bad input starts real work. Empty:
#: every case passes; add ``"id": (reason, run)`` for a newly found one.
NOT_YET: dict[str, tuple[str, bool]] = {}


def P(call, match, id):  # a table row
    if id in NOT_YET:
        reason, run = NOT_YET[id]
        return pytest.param(
            call, match, id=id, marks=pytest.mark.xfail(strict=True, run=run, reason=reason)
        )
    return pytest.param(call, match, id=id)


# fmt: off
CONFIG_CASES = [
    P(lambda e: _cfg(n_layers=0), r"ModelConfig.n_layers must be a positive int, got 0", "cfg-layers-0"),
    P(lambda e: _cfg(n_layers=2.0), r"ModelConfig.n_layers must be a positive int, got 2.0", "cfg-layers-float"),
    P(lambda e: _cfg(n_heads=True), r"ModelConfig.n_heads must be a positive int, got True", "cfg-heads-bool"),
    P(lambda e: _cfg(d_model="8"), r"ModelConfig.d_model must be a positive int, got '8'", "cfg-dmodel-str"),
    P(lambda e: _cfg(vocab_size=None), r"ModelConfig.vocab_size must be a positive int, got None", "cfg-vocab-none"),
    P(lambda e: _cfg(n_ctx=-4), r"ModelConfig.n_ctx must be a positive int, got -4", "cfg-ctx-neg"),
    P(lambda e: _cfg(d_mlp=-1), r"ModelConfig.d_mlp must be a non-negative int, got -1", "cfg-dmlp-neg"),
    P(lambda e: _cfg(d_mlp=0), r"ModelConfig.d_mlp must be positive unless attn_only=True", "cfg-dmlp-0"),
    P(lambda e: _cfg(act_fn="tanh"), r"ModelConfig.act_fn must be one of \[.*'gelu_new'.*\], got 'tanh'", "cfg-act"),
    P(lambda e: _cfg(dtype="float64"), r"ModelConfig.dtype must be one of \[.*'float32'.*\], got 'float64'", "cfg-dtype"),
    P(lambda e: _cfg(norm="batchnorm"), r"ModelConfig.norm must be one of .*got 'batchnorm'", "cfg-norm"),
    P(lambda e: _cfg(positions="alibi"), r"ModelConfig.positions must be one of .*got 'alibi'", "cfg-positions"),
    P(lambda e: _cfg(layer_norm_eps=0.0), r"ModelConfig.layer_norm_eps must be a finite number > 0, got 0.0", "cfg-eps-0"),
    P(lambda e: _cfg(layer_norm_eps=NAN), r"ModelConfig.layer_norm_eps must be a finite number > 0, got nan", "cfg-eps-nan"),
    P(lambda e: _cfg(init_std=INF), r"ModelConfig.init_std must be a finite number > 0, got inf", "cfg-std-inf"),
    P(lambda e: _cfg(norm_offset=NAN), r"ModelConfig.norm_offset must be finite, got nan", "cfg-offset-nan"),
    P(lambda e: _cfg(attn_only="no"), r"ModelConfig.attn_only must be a bool, got 'no'", "cfg-attn-only-str"),
    P(lambda e: _cfg(n_kv_heads=3), r"ModelConfig.n_kv_heads=3 must divide n_heads=2", "cfg-kv-divide"),
    P(lambda e: _cfg(n_kv_heads=0), r"ModelConfig.n_kv_heads must be a positive int, got 0", "cfg-kv-0"),
    P(lambda e: _cfg(rope_theta=5.0), r"ModelConfig.rope_theta is a rotary knob but positions='learned'", "cfg-rope-learned"),
    P(lambda e: _cfg(positions="rotary", rotary_dim=3), r"ModelConfig.rotary_dim must be even and <= d_head=4, got 3", "cfg-rotary-dim"),
    P(lambda e: _cfg(positions="rotary", rope_theta=NAN), r"ModelConfig.rope_theta must be a finite number > 0, got nan", "cfg-theta-nan"),
    P(lambda e: _cfg(sliding_window=4, sliding_layers=(True,)), r"ModelConfig.sliding_layers must have one flag per layer \(2\), got 1", "cfg-sliding-len"),
    P(lambda e: _cfg(sliding_layers=(True, False)), r"ModelConfig.sliding_layers is set but sliding_window is None", "cfg-sliding-nowindow"),
    P(lambda e: _cfg(attn_softcap=-1.0), r"ModelConfig.attn_softcap must be a finite number > 0 or None, got -1.0", "cfg-softcap"),
    P(lambda e: _cfg(sliding_window=0), r"ModelConfig.sliding_window must be a positive int, got 0", "cfg-window-0"),
    P(lambda e: ja.ModelConfig.from_dict({"n_embd": 8}), r"unknown ModelConfig fields \['n_embd'\]; known fields are", "cfg-from-dict-unknown"),
    P(lambda e: ja.ModelConfig.from_dict(None), r"ModelConfig.from_dict needs a dict of fields, got None", "cfg-from-dict-none"),
    P(lambda e: ja.ModelConfig.from_dict({"n_layers": 2}), r"ModelConfig is missing required fields \[.*'n_heads'.*\]", "cfg-from-dict-missing"),
    P(lambda e: CFG.replace(n_heads=0), r"ModelConfig.n_heads must be a positive int, got 0", "cfg-replace"),
    P(lambda e: CFG.replace(n_embd=4), r"unknown ModelConfig fields \['n_embd'\]; known fields are", "cfg-replace-unknown"),
]

MODEL_CASES = [
    P(lambda e: ja.Transformer(None, rngs=nnx.Rngs(0)), r"Transformer needs a ModelConfig, got NoneType", "transformer-cfg-none"),
    P(lambda e: ja.Transformer({"n_layers": 2}, rngs=nnx.Rngs(0)), r"Transformer needs a ModelConfig, got dict", "transformer-cfg-dict"),
    P(lambda e: ja.Transformer(CFG, rngs=0), r"rngs must be a flax.nnx.Rngs.*got 0", "transformer-rngs-int"),
    P(lambda e: e.model(e.tokens.astype(np.float32)), r"tokens must have an integer dtype, got float32", "call-float-tokens"),
    P(lambda e: e.model(e.tokens[0]), r"tokens must be 2-D \[batch, seq\], got shape \(6,\)", "call-1d-tokens"),
    P(lambda e: e.model(e.tokens + 11), r"token ids must lie in \[0, 11\) \(vocab_size\), got values in", "call-oov"),
    P(lambda e: e.model(-e.tokens - 1), r"token ids must lie in \[0, 11\)", "call-negative"),
    P(lambda e: e.model(np.zeros((1, 9), np.int32)), r"sequences of 9 tokens exceed the model's context n_ctx=8", "call-too-long"),
    P(lambda e: e.model(np.zeros((0, 4), np.int32)), r"tokens must be non-empty, got shape \(0, 4\)", "call-empty"),
    P(lambda e: e.model(e.tokens, masks=ja.Masks.ones(OTHER.replace(n_layers=3))), r"Masks.heads must have shape \(2, 2\), got \(3, 2\)", "call-masks-shape"),
    P(lambda e: e.model(e.tokens, masks=np.ones(4)), r"masks must be ja.Masks .*got", "call-masks-array"),
    P(lambda e: e.model(e.tokens, masks=ja.Masks.ones(CFG), ablation="zero"), r"ablation must be a ja.Ablation .*got 'zero'", "call-ablation-str"),
    P(lambda e: e.model(e.tokens, masks=ja.Masks.ones(CFG), ablation=ja.Ablation(z=jnp.zeros((2, 1, 1, 3, 4)))), r"replacement 'z' must have shape \[2, 1 or 2, 1 or 6, 2, 4\].*got \[2, 1, 1, 3, 4\]", "call-ablation-shape"),
    P(lambda e: e.model("0 1 2"), r"tokens must be .*got", "call-str-tokens"),
]

COMPONENT_CASES = [
    P(lambda e: ja.heads(CFG, [0.7]), r"layers must be ints, got 0.7", "heads-float-layer"),
    P(lambda e: ja.heads(CFG, [5]), r"layers \[5\] out of range: the model has layers 0..1", "heads-layer-range"),
    P(lambda e: ja.heads(CFG, [-1]), r"layers \[-1\] out of range", "heads-layer-neg"),
    P(lambda e: ja.heads(CFG, []), r"layers must not be empty", "heads-layers-empty"),
    P(lambda e: ja.heads(CFG, "01"), r"layers must be a list of ints, got '01'", "heads-layers-str"),
    P(lambda e: ja.heads(CFG, 1), r"layers must be a list of ints, got 1", "heads-layers-int"),
    P(lambda e: ja.heads(CFG, [True]), r"layers must be ints, got True", "heads-layer-bool"),
    P(lambda e: ja.heads(CFG, heads=[2]), r"heads \[2\] invalid: need a non-empty list in 0..1", "heads-head-range"),
    P(lambda e: ja.heads(CFG, heads=[]), r"heads \[\] invalid: need a non-empty list", "heads-heads-empty"),
    P(lambda e: ja.heads(CFG, heads=[0.0]), r"heads must be ints, got 0.0", "heads-head-float"),
    P(lambda e: ja.heads(CFG, positions=1.5), r"a position must be an int, 'last' or a position name .*got 1.5", "heads-position-float"),
    P(lambda e: ja.heads(CFG, positions=[]), r"positions must not be empty", "heads-positions-empty"),
    P(lambda e: ja.heads(CFG, positions="a@b"), r"a position must be an int, 'last' or a position name .*got 'a@b'", "heads-position-at"),
    P(lambda e: ja.heads(CFG, positions=True), r"a position must be an int.*got True", "heads-position-bool"),
    P(lambda e: ja.heads(None), r"cfg must be a ja.ModelConfig \(model.config\), got None", "heads-cfg-none"),
    P(lambda e: ja.heads(e.model), r"cfg must be a ja.ModelConfig \(model.config\), got", "heads-model-not-cfg"),
    P(lambda e: ja.blocks(CFG, "ffn"), r"blocks kind must be 'attn' or 'mlp', got 'ffn'", "blocks-kind"),
    P(lambda e: ja.blocks(ATTN_ONLY, "mlp"), r"attention-only: it has no MLP blocks", "blocks-attn-only-mlp"),
    P(lambda e: ja.blocks(CFG, "mlp", [2]), r"layers \[2\] out of range", "blocks-layer-range"),
    P(lambda e: ja.blocks(None, "mlp"), r"cfg must be a ja.ModelConfig", "blocks-cfg-none"),
    P(lambda e: ja.heads(CFG) + ja.heads(OTHER), r"cannot add Components of models with different configs", "comps-add-config"),
    P(lambda e: ja.heads(CFG) + "L0H0", r"can only add ja.Components to Components \(ja.heads / ja.blocks\), got 'L0H0'", "comps-add-str"),
    P(lambda e: ja.heads(CFG, [0]) + ja.heads(CFG, [0]), r"Components lists \['L0H0', 'L0H1'\] more than once", "comps-dupes"),
    P(lambda e: e.comps.index("L9H9"), r"no component named 'L9H9'; have \['L0H0'", "comps-index"),
    P(lambda e: e.comps.masks(np.ones((2, 3))), r"rows must have shape \[\.\.\., 4\] \(one column per component\), got \(2, 3\)", "masks-width"),
    P(lambda e: e.comps.masks(np.full((1, 4), 2.0)), r"mask values must lie in \[0, 1\], got range \[2.0, 2.0\]", "masks-range"),
    P(lambda e: e.comps.masks(np.full((1, 4), NAN)), r"rows must be finite.*NaN", "masks-nan"),
    P(lambda e: e.comps.masks(np.array([["a"] * 4])), r"rows must be bool or numeric, got dtype <U1", "masks-str"),
    P(lambda e: e.comps.masks(np.zeros((0, 4))), r"rows must hold at least one row, got shape \(0, 4\)", "masks-empty"),
    P(lambda e: e.comps.masks(np.float32(1.0)), r"rows must have shape \[\.\.\., 4\].*got \(\)", "masks-scalar"),
    P(lambda e: e.comps.masks(np.ones((1, 4), np.complex64)), r"rows must be bool or numeric, got dtype complex64", "masks-complex"),
    P(lambda e: e.comps.masks(jnp.full((1, 4), 1.5, jnp.bfloat16)), r"mask values must lie in \[0, 1\], got range \[1.5, 1.5\]", "masks-bf16-range"),
    P(lambda e: e.pos_comps.masks(np.ones((1, 2))), r"masked at chosen positions: pass the tokens", "masks-positional-no-tokens"),
    P(lambda e: e.pos_comps.masks(np.ones((1, 2)), np.zeros(3, np.int32)), r"tokens must be 2-D \[batch, seq\], got shape \(3,\)", "masks-positional-1d-tokens"),
    P(lambda e: e.pos_comps.masks(np.ones((1, 2)), None), r"pass the tokens", "masks-positional-none"),
]

SUBSET_CASES = [
    P(lambda e: ja.subsets.all(0), r"n \(number of components\) must be a positive int, got 0", "all-0"),
    P(lambda e: ja.subsets.all(-2), r"n \(number of components\) must be a positive int, got -2", "all-neg"),
    P(lambda e: ja.subsets.all(3.0), r"n \(number of components\) must be a positive int, got 3.0", "all-float"),
    P(lambda e: ja.subsets.all(True), r"n \(number of components\) must be a positive int, got True", "all-bool"),
    P(lambda e: ja.subsets.all(25), r"subsets.all\(25\) would materialise 2\^25 rows.*limit n <= MAX_ALL = 24", "all-too-many"),
    P(lambda e: ja.subsets.loco(0), r"n \(number of components\) must be a positive int, got 0", "loco-0"),
    P(lambda e: ja.subsets.loco("3"), r"n \(number of components\) must be a positive int, got '3'", "loco-str"),
    P(lambda e: ja.subsets.k_subsets(4, True), r"k must be an int in \[0, 4\], got True", "k-bool"),
    P(lambda e: ja.subsets.k_subsets(4, 5), r"k must be an int in \[0, 4\], got 5", "k-too-big"),
    P(lambda e: ja.subsets.k_subsets(4, -1), r"k must be an int in \[0, 4\], got -1", "k-neg"),
    P(lambda e: ja.subsets.k_subsets(4, 1.0), r"k must be an int in \[0, 4\], got 1.0", "k-float"),
    P(lambda e: ja.subsets.k_subsets(0, 0), r"n \(number of components\) must be a positive int, got 0", "k-n-0"),
    P(lambda e: ja.subsets.k_subsets(40, 20), r"k_subsets\(40, 20\) has \d+ rows, too many", "k-too-many"),
    P(lambda e: ja.subsets.sample(KEY, 0, 3), r"n \(number of components\) must be a positive int, got 0", "sample-n-0"),
    P(lambda e: ja.subsets.sample(KEY, 3, 0), r"m \(number of rows\) must be a positive int, got 0", "sample-m-0"),
    P(lambda e: ja.subsets.sample(KEY, 3, 2, p=1.5), r"p must be a number in \[0, 1\], got 1.5", "sample-p-big"),
    P(lambda e: ja.subsets.sample(KEY, 3, 2, p=NAN), r"p must be a number in \[0, 1\], got nan", "sample-p-nan"),
    P(lambda e: ja.subsets.sample(KEY, 3, 2, p="0.5"), r"p must be a number in \[0, 1\], got '0.5'", "sample-p-str"),
    P(lambda e: ja.subsets.sample(0, 3, 2), r"key must be a single jax.random key.*an int seed is not a key: use jax.random.key\(seed\)", "sample-int-key"),
    P(lambda e: ja.subsets.sample(jax.random.split(KEY, 2), 3, 2), r"key must be a single jax.random key", "sample-key-batch"),
    P(lambda e: ja.subsets.bits([16], 4), r"codes must lie in \[0, 2\^4\) = \[0, 16\), got 16", "bits-too-big"),
    P(lambda e: ja.subsets.bits([-1], 4), r"codes must lie in \[0, 2\^4\).*got -1", "bits-neg"),
    P(lambda e: ja.subsets.bits([1.5], 2), r"codes must be ints \(bitmasks\), got dtype float64", "bits-float"),
    P(lambda e: ja.subsets.bits([[1, 2]], 2), r"codes must be 1-D \[n_masks\], got shape \(1, 2\)", "bits-2d"),
    P(lambda e: ja.subsets.bits([1], 0), r"n \(number of components\) must be a positive int, got 0", "bits-n-0"),
    P(lambda e: ja.subsets.bits([1], 64), r"n \(number of components\) must be at most 62", "bits-n-64"),
    P(lambda e: ja.subsets.bits([True], 2), r"codes must be ints \(bitmasks\), got dtype bool", "bits-bool"),
    P(lambda e: ja.subsets.bits(range(-1, 2), 2), r"codes must lie in \[0, 2\^2\).*got -1", "bits-range-neg"),
    P(lambda e: ja.subsets.codes(np.array([1, 0, 1])), r"rows must be 2-D \[n_masks, n\], got shape \(3,\)", "codes-1d"),
    P(lambda e: ja.subsets.codes(np.array([[1, 2]])), r"rows must be binary \(bool or 0/1\).*got value 2", "codes-value"),
    P(lambda e: ja.subsets.codes(np.array([["a"]])), r"rows must be bool or numeric, got dtype <U1", "codes-str"),
    P(lambda e: ja.subsets.codes(np.ones((1, 63), bool)), r"rows must have at most 62 columns.*got 63", "codes-too-wide"),
]

_BAD_ABL = ja.Ablation(z=jnp.zeros((2, 1, 1, 3, 4)), kind="mean")

ABLATION_CASES = [
    P(lambda e: ja.ablation.mean(None, e.tokens), r"model must be a ja.Transformer.*got None", "mean-model-none"),
    P(lambda e: ja.ablation.mean(e.model, e.tokens.astype(float)), r"mean ablation reference tokens: tokens must have an integer dtype, got float64", "mean-float-tokens"),
    P(lambda e: ja.ablation.mean(e.model, e.tokens + 11), r"mean ablation reference tokens: token ids must lie in \[0, 11\)", "mean-oov"),
    P(lambda e: ja.ablation.mean(e.model, e.tokens, batch_size=0), r"batch_size must be a positive int, got 0", "mean-batch-size"),
    P(lambda e: ja.ablation.mean(e.model, e.tokens, per_position="yes"), r"per_position must be a bool \(True or False\), got 'yes'", "mean-per-position"),
    P(lambda e: ja.ablation.mean(e.model, None), r"mean ablation reference tokens: tokens must be .*got", "mean-tokens-none"),
    P(lambda e: ja.ablation.resample(e.model, e.tokens[0]), r"resample ablation source tokens: tokens must be 2-D", "resample-1d"),
    P(lambda e: ja.ablation.resample(None, e.tokens), r"model must be a ja.Transformer.*got None", "resample-model-none"),
    P(lambda e: ja.ablation.resample(e.model, e.tokens[:, :9] + 20), r"resample ablation source tokens: token ids must lie", "resample-oov"),
    P(lambda e: _optimal(e, steps=0), r"steps must be a positive int, got 0", "optimal-steps-0"),
    P(lambda e: _optimal(e, steps=2.5), r"steps must be a positive int, got 2.5", "optimal-steps-float"),
    P(lambda e: _optimal(e, key=0), r"key must be a single jax.random key.*use jax.random.key\(seed\)", "optimal-int-key"),
    P(lambda e: _optimal(e, optimizer="adam"), r"optimizer must be an optax.GradientTransformation.*got 'adam'", "optimal-optimizer-str"),
    P(lambda e: _optimal(e, optimizer=optax.adam(NAN)), r"optimizer must give finite updates.*learning rate", "optimal-lr-nan"),
    P(lambda e: _optimal(e, optimizer=optax.sgd(INF)), r"optimizer must give finite updates.*learning rate", "optimal-lr-inf"),
    P(lambda e: _optimal(e, removal_prob=0.0), r"removal_prob must be a number in \(0, 1\], got 0.0", "optimal-removal-prob"),
    P(lambda e: _optimal(e, removal_prob=NAN), r"removal_prob must be a number in \(0, 1\], got nan", "optimal-removal-nan"),
    P(lambda e: _optimal(e, random_subsets=-1), r"random_subsets must be a non-negative int, got -1", "optimal-random-subsets"),
    P(lambda e: _optimal(e, single_removals="yes"), r"single_removals must be a bool, got 'yes'", "optimal-single-removals"),
    P(lambda e: _optimal(e, comps=e.pos_comps), r"ablation.optimal does not support position-level components", "optimal-positional"),
    P(lambda e: _optimal(e, comps="heads"), r"comps must be ja.Components \(ja.heads / ja.blocks\), got 'heads'", "optimal-comps-str"),
    P(lambda e: _optimal(e, tokens=e.tokens.astype(float)), r"tokens must have an integer dtype", "optimal-float-tokens"),
    P(lambda e: _optimal(e, model=None), r"model must be a ja.Transformer.*got None", "optimal-model-none"),
    P(lambda e: _optimal(e, metric="loss"), r"metric must be callable \(logits, tokens\) -> \[batch\], got 'loss'", "optimal-metric-str"),
]

EVALUATE_CASES = [
    P(lambda e: _ev(e, model=None), r"model must be a ja.Transformer.*got None", "eval-model-none"),
    P(lambda e: _ev(e, comps=None), r"comps must be ja.Components \(ja.heads / ja.blocks\), got None", "eval-comps-none"),
    P(lambda e: _ev(e, comps="heads"), r"comps must be ja.Components.*got 'heads'", "eval-comps-str"),
    P(lambda e: _ev(e, comps=e.other_comps), r"comps were built for a different ModelConfig", "eval-comps-config"),
    P(lambda e: _ev(e, rows=np.ones((2, 3), bool)), r"rows must have shape \[\.\.\., 4\].*got \(2, 3\)", "eval-rows-width"),
    P(lambda e: _ev(e, rows=np.ones(4, bool)), r"rows must be 2-D \[n_masks, 4\], got shape \(4,\)", "eval-rows-1d"),
    P(lambda e: _ev(e, rows=np.ones((1, 2, 4), bool)), r"rows must be 2-D \[n_masks, 4\], got shape \(1, 2, 4\)", "eval-rows-3d"),
    P(lambda e: _ev(e, rows=np.full((1, 4), 0.5)), r"rows must be binary \(bool or 0/1\) here, got value 0.5", "eval-rows-half"),
    P(lambda e: _ev(e, rows=np.full((1, 4), NAN)), r"rows must be finite.*NaN", "eval-rows-nan"),
    P(lambda e: _ev(e, rows=np.zeros((0, 4), bool)), r"rows must hold at least one row", "eval-rows-empty"),
    P(lambda e: _ev(e, rows="all"), r"rows must be bool or numeric, got dtype <U3", "eval-rows-str"),
    P(lambda e: _ev(e, rows=jnp.full((1, 4), 0.5, jnp.bfloat16)), r"rows must be binary.*got value 0.5", "eval-rows-bf16-half"),
    P(lambda e: _ev(e, tokens=e.tokens.astype(np.float32)), r"tokens must have an integer dtype, got float32", "eval-tokens-float"),
    P(lambda e: _ev(e, tokens=e.tokens[0]), r"tokens must be 2-D \[batch, seq\], got shape \(6,\)", "eval-tokens-1d"),
    P(lambda e: _ev(e, tokens=e.tokens + 11), r"token ids must lie in \[0, 11\) \(vocab_size\)", "eval-tokens-oov"),
    P(lambda e: _ev(e, tokens=np.zeros((1, 9), np.int32)), r"sequences of 9 tokens exceed the model's context n_ctx=8", "eval-tokens-long"),
    P(lambda e: _ev(e, tokens=np.zeros((1, 0), np.int32)), r"tokens must be non-empty", "eval-tokens-empty"),
    P(lambda e: _ev(e, tokens=None), r"tokens must be .*got", "eval-tokens-none"),
    P(lambda e: _ev(e, metric="loss"), r"metric must be callable \(logits, tokens\) -> \[batch\], got 'loss'", "eval-metric-str"),
    P(lambda e: _ev(e, metric=None), r"metric must be callable.*got None", "eval-metric-none"),
    P(lambda e: _ev(e, ablation="zero"), r"ablation must be a ja.Ablation .*got 'zero'", "eval-ablation-str"),
    P(lambda e: _ev(e, ablation=_BAD_ABL), r"mean ablation: replacement 'z' must have shape \[2, 1 or 2, 1 or 6, 2, 4\] for this model, got \[2, 1, 1, 3, 4\]", "eval-ablation-shape"),
    P(lambda e: _ev(e, chunk_size=0), r"chunk_size must be a positive int, 'auto' or None, got 0", "eval-chunk-0"),
    P(lambda e: _ev(e, chunk_size="big"), r"chunk_size must be a positive int, 'auto' or None, got 'big'", "eval-chunk-str"),
    P(lambda e: _ev(e, chunk_size=2.5), r"chunk_size must be a positive int, 'auto' or None, got 2.5", "eval-chunk-float"),
    P(lambda e: _ev(e, mesh="cpu"), r"mesh must be a jax.sharding.Mesh, got str", "eval-mesh-str"),
    P(lambda e: _ev(e, memory_budget=-1), r"memory_budget must be a positive number of bytes, got -1", "eval-budget-neg"),
    P(lambda e: _ev(e, memory_budget="1GB"), r"memory_budget must be a positive number of bytes, got '1GB'", "eval-budget-str"),
    P(lambda e: _ev(e, share_prefix="yes"), r"share_prefix must be a bool \(True or False\), got 'yes'", "eval-share-prefix"),
    P(lambda e: _ev(e, metric=ja.metrics.logit_diff([1, 2, 3], 4)), r"metric 'logit_diff' holds 3 per-example answers, but the batch has 2 examples", "eval-answers-length"),
    P(lambda e: _ev(e, metric=ja.metrics.logit_diff(11, 2)), r"metric 'logit_diff' columns must be token ids in \[0, 11\).*got values in \[2, 11\]", "eval-answers-oov"),
    P(lambda e: _ev(e, metric=ja.metrics.logprob([1, 20])), r"metric 'logprob' answers must be token ids in \[0, 11\)", "eval-logprob-oov"),
    P(lambda e: _ev(e, metric=ja.metrics.logit_diff(1, 2, position=6)), r"metric 'logit_diff' reads positions \[6\], but 6 lies outside sequences of 6 tokens", "eval-position-range"),
    P(lambda e: _ev(e, metric=ja.metrics.logit_diff(1, 2, position="S2")), r"reads the named position 'S2': evaluate it on ja.Prompts", "eval-position-name"),
    P(lambda e: _ev(e, comps=e.pos_comps, rows=np.ones((1, 2), bool), tokens=_prompts(e), metric=ja.metrics.logit_diff(1, 2, position="IO")), r"metric 'logit_diff': unknown position 'IO': the prompts name \['last'\]", "eval-prompts-unknown-name"),
    P(lambda e: _ev(e, tokens=_prompts(e), metric=lambda logits, tokens: logits.sum((1, 2))), r"reads every position, and these prompts are padded", "eval-plain-metric-padded"),
    P(lambda e: ja.evaluate_per_example(e.model, e.comps, np.ones((1, 5), bool), e.tokens), r"rows must have shape \[\.\.\., 4\]", "per-example-rows"),
    P(lambda e: ja.evaluate_per_example(e.model, e.comps, e.rows, e.tokens, chunk_size=-3), r"chunk_size must be a positive int", "per-example-chunk"),
    P(lambda e: ja.evaluate_per_example(None, e.comps, e.rows, e.tokens), r"model must be a ja.Transformer", "per-example-model"),
]

METRIC_CASES = [
    P(lambda e: ja.metrics.logit_diff(1.5, 2), r"logit_diff correct must be an int token id or a 1-D \[batch\] int array, got 1.5", "ld-float"),
    P(lambda e: ja.metrics.logit_diff(1, [2.0, 3.0]), r"logit_diff wrong must be an int token id or a 1-D \[batch\] int array", "ld-float-array"),
    P(lambda e: ja.metrics.logit_diff(True, 2), r"logit_diff correct must be an int token id.*got True", "ld-bool"),
    P(lambda e: ja.metrics.logit_diff(-1, 2), r"logit_diff correct must be non-negative token ids, got -1", "ld-neg"),
    P(lambda e: ja.metrics.logit_diff([[1]], 2), r"logit_diff correct must be an int or a non-empty 1-D \[batch\] array, got shape \(1, 1\)", "ld-2d"),
    P(lambda e: ja.metrics.logit_diff([], 2), r"logit_diff correct must be an int token id or a 1-D \[batch\] int array, got \[\]", "ld-empty"),
    P(lambda e: ja.metrics.logit_diff("a", 2), r"logit_diff correct must be an int token id.*got 'a'", "ld-str"),
    P(lambda e: ja.metrics.logit_diff(None, 2), r"logit_diff correct must be an int token id.*got None", "ld-none"),
    P(lambda e: ja.metrics.logit_diff(1, 2, position=1.5), r"logit_diff: a position must be an int, 'last' or a name, got 1.5", "ld-position-float"),
    P(lambda e: ja.metrics.logit_diff(1, 2, position=""), r"logit_diff: a position must be an int, 'last' or a name, got ''", "ld-position-empty"),
    P(lambda e: ja.metrics.logit_diff(1, 2, position=None), r"logit_diff: a position must be.*got None", "ld-position-none"),
    P(lambda e: ja.metrics.logit_diff([1, 2], [3, 4, 5]), r"logit_diff correct and wrong must have the same length.*got 2 and 3", "ld-length-mismatch"),
    P(lambda e: ja.metrics.logprob(1.5), r"logprob answer must be an int token id.*got 1.5", "logprob-float"),
    P(lambda e: ja.metrics.prob(-3), r"prob answer must be non-negative token ids, got -3", "prob-neg"),
    P(lambda e: ja.metrics.answer_accuracy(1, [1.5]), r"answer_accuracy wrong must be an int token id", "acc-wrong-float"),
    P(lambda e: ja.metrics.answer_accuracy(1.0), r"answer_accuracy answer must be an int token id", "acc-float"),
    P(lambda e: ja.metrics.logprob(2, position=[1]), r"logprob: a position must be an int, 'last' or a name, got \[1\]", "logprob-position-list"),
    P(lambda e: ja.metrics.kl_to_clean(e.model, e.tokens.astype(float)), r"tokens must have an integer dtype", "kl-float-tokens"),
    P(lambda e: ja.metrics.kl_to_clean(None, e.tokens), r"model must be a ja.Transformer.*got None", "kl-model-none"),
    P(lambda e: ja.metrics.Metric(data=None, fn=lambda *a: a[0], positions=()), r"positions must be None or a non-empty tuple", "metric-positions-empty"),
    P(lambda e: ja.metrics.Metric(data=None, fn=lambda *a: a[0], positions=(1.5,)), r"a position must be an int, 'last' or a name, got 1.5", "metric-position-float"),
    P(lambda e: ja.metrics.Metric(data=None, fn="loss"), r"Metric.fn must be callable.*got 'loss'", "metric-fn-str"),
]

INTERACTION_CASES = [
    P(lambda e: ja.interactions.mobius([1.0, 2.0, 3.0]), r"values must have a last axis of length 2\^n with n >= 1 \(2, 4, 8, \.\.\.\); got shape \(3,\)", "mobius-3"),
    P(lambda e: ja.interactions.mobius(1.0), r"values must have a last axis of 2\^n coalitions; got a scalar", "mobius-scalar"),
    P(lambda e: ja.interactions.mobius([NAN, 1.0]), r"values must be finite; got 1 NaN/inf entries of 2, first at index \(0,\)", "mobius-nan"),
    P(lambda e: ja.interactions.mobius([1.0]), r"values must have a last axis of length 2\^n with n >= 1.*last axis 1", "mobius-1"),
    P(lambda e: ja.interactions.zeta(None), r"dividends must have a last axis of 2\^n coalitions; got a scalar", "zeta-none"),
    P(lambda e: ja.interactions.zeta(np.zeros(6)), r"dividends must have a last axis of length 2\^n", "zeta-6"),
    P(lambda e: ja.interactions.shapley(np.zeros(6)), r"values must have a last axis of length 2\^n.*got shape \(6,\)", "shapley-6"),
    P(lambda e: ja.interactions.shapley(np.zeros((2, 3))), r"values must have a last axis of length 2\^n.*got shape \(2, 3\)", "shapley-2x3"),
    P(lambda e: ja.interactions.shapley([INF, 0.0, 1.0, 2.0]), r"values must be finite; got 1 NaN/inf entries", "shapley-inf"),
    P(lambda e: ja.interactions.banzhaf(np.array(["a", "b"])), r"values must hold real numbers; got dtype <U1", "banzhaf-str"),
    P(lambda e: ja.interactions.banzhaf(np.zeros(0)), r"values must have a last axis of length 2\^n.*last axis 0", "banzhaf-empty"),
    P(lambda e: ja.interactions.loco(np.ones(4, np.complex64)), r"values must hold real numbers; got dtype complex64", "loco-complex"),
    P(lambda e: ja.interactions.loco(np.zeros(5)), r"values must have a last axis of length 2\^n", "loco-5"),
    P(lambda e: ja.interactions.removal_pairs(np.zeros(12)), r"values must have a last axis of length 2\^n", "removal-pairs-12"),
    P(lambda e: ja.interactions.spectrum(np.full(4, -INF)), r"values must be finite", "spectrum-inf"),
    P(lambda e: ja.interactions.shapley_interaction(np.zeros((4, 3))), r"values must have a last axis of length 2\^n", "sii-4x3"),
    P(lambda e: ja.interactions.banzhaf_interaction(np.array([1.0, NAN, 0.0, 0.0])), r"values must be finite", "bii-nan"),
    P(lambda e: ja.interactions.k_sii(e.values, 0), r"k must satisfy 1 <= k <= n = 3; got k = 0", "ksii-0"),
    P(lambda e: ja.interactions.k_sii(e.values, 1.5), r"k must be a Python int with 1 <= k <= n = 3; got 1.5", "ksii-float"),
    P(lambda e: ja.interactions.shapley_taylor(e.values, 5), r"k must satisfy 1 <= k <= n = 3; got k = 5", "stii-5"),
    P(lambda e: ja.interactions.faith_shapley(e.values, True), r"k must be a Python int with 1 <= k <= n = 3; got True", "faith-bool"),
    P(lambda e: ja.interactions.faith_shapley(np.zeros(7), 1), r"values must have a last axis of length 2\^n", "faith-7"),
    P(lambda e: ja.interactions.pairs(np.zeros(3)), r"per_coalition must have a last axis of length 2\^n", "pairs-3"),
    P(lambda e: ja.interactions.pairs([NAN] * 4), r"per_coalition must be finite", "pairs-nan"),
    P(lambda e: ja.interactions.coalition_sizes(-1), r"n must be a non-negative int, got -1", "sizes-neg"),
    P(lambda e: ja.interactions.coalition_sizes(27), r"coalition_sizes is over n = 27 players, more than MAX_PLAYERS = 26", "sizes-27"),
    P(lambda e: ja.interactions.coalition_sizes(2.0), r"n must be a non-negative int, got 2.0", "sizes-float"),
    P(lambda e: ja.interactions.n_players(np.zeros(5)), r"values must have a last axis of length 2\^n", "n-players-5"),
    P(lambda e: ja.interactions.n_players(jax.ShapeDtypeStruct((2**27,), jnp.float32)), r"values is over n = 27 players, more than MAX_PLAYERS = 26", "n-players-27"),
]

SWEEP_CASES = [
    P(lambda e: ja.load_sweep(e.missing), r"missing/dir holds no manifest.json: not a sweep directory", "load-sweep-missing"),
    P(lambda e: ja.load_sweep(e.a_file), r"a_file.txt holds no manifest.json: not a sweep directory", "load-sweep-file"),
    P(lambda e: ja.load_sweep(e.empty_sweep), r"empty_sweep holds no manifest.json: not a sweep directory", "load-sweep-empty"),
    P(lambda e: ja.sweep_status(e.missing), r"missing/dir holds no manifest.json: not a sweep directory", "status-missing"),
    P(lambda e: ja.sweep_status(e.a_file), r"a_file.txt holds no manifest.json: not a sweep directory", "status-file"),
    P(lambda e: ja.load_sweep(None), r"out must be a directory path.*got None", "load-sweep-none"),
    P(lambda e: _sweep(e, out=e.a_file), r"(?i)not a directory.*a_file.txt", "sweep-out-file"),
    P(lambda e: _sweep(e, rows="everything"), r"rows must be 'all' or a bool \[M, 4\] array, got 'everything'", "sweep-rows-str"),
    P(lambda e: _sweep(e, rows=np.full((1, 4), 0.5)), r"rows must be binary", "sweep-rows-half"),
    P(lambda e: _sweep(e, chunk_size=0), r"chunk_size must be a positive int or 'auto', got 0", "sweep-chunk-0"),
    P(lambda e: _sweep(e, eval_chunk_size=-1), r"eval_chunk_size must be a positive int or 'auto', got -1", "sweep-eval-chunk"),
    P(lambda e: _sweep(e, worker=(3, 2)), r"worker must be \(index, count\) with 0 <= index < count, got \(3, 2\)", "sweep-worker"),
    P(lambda e: _sweep(e, timeout=-1.0), r"timeout must be .*got -1.0", "sweep-timeout"),
    P(lambda e: _sweep(e, poll_interval=NAN), r"poll_interval must be .*got nan", "sweep-poll"),
    P(lambda e: _sweep(e, model=None), r"model must be a ja.Transformer.*got None", "sweep-model-none"),
    P(lambda e: _sweep(e, comps="heads"), r"comps must be ja.Components.*got 'heads'", "sweep-comps-str"),
    P(lambda e: _sweep(e, tokens=e.tokens.astype(float)), r"tokens must have an integer dtype", "sweep-float-tokens"),
    P(lambda e: _sweep(e, ablation="zero"), r"ablation must be a ja.Ablation .*got 'zero'", "sweep-ablation-str"),
]

LEARN_CASES = [
    P(lambda e: _learn(e, sparsity=-1.0), r"sparsity penalties must be finite and >= 0, got \[-1.0\]", "learn-sparsity-neg"),
    P(lambda e: _learn(e, sparsity=NAN), r"sparsity penalties must be finite and >= 0, got \[nan\]", "learn-sparsity-nan"),
    P(lambda e: _learn(e, sparsity=[[0.1]]), r"sparsity must be a number or a non-empty 1-D array \[P\], got shape \(1, 1\)", "learn-sparsity-2d"),
    P(lambda e: _learn(e, sparsity="a"), r"sparsity must be a number or a 1-D list of numbers, got 'a'", "learn-sparsity-str"),
    P(lambda e: _learn(e, sparsity=[]), r"sparsity must be a number or a non-empty 1-D array", "learn-sparsity-empty"),
    P(lambda e: _learn(e, steps=0), r"steps must be a positive int, got 0", "learn-steps-0"),
    P(lambda e: _learn(e, steps=1.5), r"steps must be a positive int, got 1.5", "learn-steps-float"),
    P(lambda e: _learn(e, key=0), r"key must be a single jax.random key.*an int seed is not a key: use jax.random.key\(seed\)", "learn-int-key"),
    P(lambda e: _learn(e, key=None), r"key must be a single jax.random key.*got None", "learn-key-none"),
    P(lambda e: _learn(e, parametrization="relu"), r"parametrization must be one of \['hard_concrete', 'sigmoid'\], got 'relu'", "learn-param"),
    P(lambda e: _learn(e, optimizer="adam"), r"optimizer must be an optax.GradientTransformation", "learn-optimizer-str"),
    P(lambda e: _learn(e, optimizer=optax.adam(NAN)), r"optimizer must give finite updates.*learning rate", "learn-lr-nan"),
    P(lambda e: _learn(e, optimizer=optax.adam(INF)), r"optimizer must give finite updates.*learning rate", "learn-lr-inf"),
    P(lambda e: _learn(e, init_logit=NAN), r"init_logit must be a finite number, got nan", "learn-init-nan"),
    P(lambda e: _learn(e, comps=e.pos_comps), r"learn_masks does not support position-level components", "learn-positional"),
    P(lambda e: _learn(e, tokens=e.tokens.astype(float)), r"tokens must have an integer dtype", "learn-float-tokens"),
    P(lambda e: _learn(e, model=None), r"model must be a ja.Transformer.*got None", "learn-model-none"),
    P(lambda e: _learn(e, ablation="zero"), r"ablation must be a ja.Ablation .*got 'zero'", "learn-ablation-str"),
    P(lambda e: _learn(e, metric="loss"), r"metric must be callable.*got 'loss'", "learn-metric-str"),
]

RECOVER_CASES = [
    P(lambda e: _recover(e, steps=0), r"steps must be a positive int, got 0", "recover-steps-0"),
    P(lambda e: _recover(e, eval_every=0), r"eval_every must be a positive int, got 0", "recover-eval-every"),
    P(lambda e: _recover(e, batch_size=0), r"batch_size must be a positive int, got 0", "recover-batch-size"),
    P(lambda e: _recover(e, key=3), r"key must be a single jax.random key.*use jax.random.key\(seed\)", "recover-int-key"),
    P(lambda e: _recover(e, eval_tokens=e.tokens.astype(float)), r"eval_tokens: tokens must have an integer dtype, got float64", "recover-eval-float"),
    P(lambda e: _recover(e, eval_tokens=None), r"eval_tokens: tokens must be .*got", "recover-eval-none"),
    P(lambda e: _recover(e, eval_tokens=e.tokens + 11), r"eval_tokens: token ids must lie in \[0, 11\)", "recover-eval-oov"),
    P(lambda e: _recover(e, train_tokens=e.tokens[0]), r"train_tokens: tokens must be 2-D", "recover-train-1d"),
    P(lambda e: _recover(e, rows=np.full((1, 4), 0.5)), r"rows must be binary", "recover-rows-half"),
    P(lambda e: _recover(e, checkpoint_every=2), r"checkpoint_every needs a checkpoint_dir", "recover-ckpt-every"),
    P(lambda e: _recover(e, optimizer=optax.adamw(NAN)), r"optimizer must give finite updates.*learning rate", "recover-lr-nan"),
    P(lambda e: _recover(e, optimizer="sgd"), r"optimizer must be an optax.GradientTransformation", "recover-optimizer-str"),
    P(lambda e: _recover(e, model=None), r"model must be a ja.Transformer.*got None", "recover-model-none"),
    P(lambda e: _recover(e, checkpoint_dir=e.a_file), r"checkpoint_dir .*a_file.txt.* is a file", "recover-ckpt-file"),
    P(lambda e: _recover(e, ablation="mean"), r"ablation must be a ja.Ablation .*got 'mean'", "recover-ablation-str"),
    P(lambda e: _recover(e, comps=e.pos_comps, rows=np.ones((1, 2), bool)), r"recover does not support position-level components", "recover-positional"),
    P(lambda e: _recover(e, metric=3), r"metric must be callable.*got 3", "recover-metric-int"),
    P(lambda e: _recover(e, progress="no"), r"progress must be a bool \(True or False\), got 'no'", "recover-progress"),
]

ATTRIBUTION_CASES = [
    P(lambda e: ja.attribution(None, e.comps, e.tokens), r"model must be a ja.Transformer.*got None", "attr-model-none"),
    P(lambda e: ja.attribution(e.model, e.pos_comps, e.tokens), r"attribution does not support position-level components", "attr-positional"),
    P(lambda e: ja.attribution(e.model, e.comps, e.tokens.astype(float)), r"tokens must have an integer dtype", "attr-float-tokens"),
    P(lambda e: ja.attribution(e.model, e.comps, e.tokens, metric="loss"), r"metric must be callable.*got 'loss'", "attr-metric-str"),
    P(lambda e: ja.attribution(e.model, e.comps, e.tokens, ablation="zero"), r"ablation must be a ja.Ablation .*got 'zero'", "attr-ablation-str"),
    P(lambda e: ja.attribution(e.model, e.comps, e.tokens, ablation=_BAD_ABL), r"replacement 'z' must have shape", "attr-ablation-shape"),
    P(lambda e: ja.attribution(e.model, None, e.tokens), r"comps must be ja.Components.*got None", "attr-comps-none"),
]

IO_CASES = [
    P(lambda e: ja.save_model(None, e.root / "saved_none"), r"model must be a ja.Transformer.*got None", "save-model-none"),
    P(lambda e: ja.save_model(e.model, e.a_file), r"File exists: '.*a_file.txt'", "save-into-file"),
    P(lambda e: ja.load_model(e.missing), r"missing/dir.*(does not exist|not a directory)", "load-missing"),
    P(lambda e: ja.load_model(e.a_file), r"a_file.txt is not a directory", "load-file"),
    P(lambda e: ja.load_model(e.saves["no_config"]), r"no_config holds no config.json", "load-no-config"),
    P(lambda e: ja.load_model(e.saves["truncated_json"]), r"truncated_json/config.json is not valid JSON", "load-truncated-json"),
    P(lambda e: ja.load_model(e.saves["not_utf8"]), r"not_utf8/config.json is not (valid JSON|UTF-8)", "load-not-utf8"),
    P(lambda e: ja.load_model(e.saves["json_list"]), r"json_list/config.json must hold a JSON object, got list", "load-json-list"),
    P(lambda e: ja.load_model(e.saves["wrong_field"]), r"wrong_field/config.json: unknown ModelConfig fields \['n_embd'\]", "load-wrong-field"),
    P(lambda e: ja.load_model(e.saves["bad_value"]), r"bad_value/config.json: ModelConfig.n_layers must be a positive int, got 0", "load-bad-value"),
    P(lambda e: ja.load_model(e.saves["no_inner_config"]), r"no_inner_config/config.json has no 'config' object", "load-no-inner-config"),
    P(lambda e: ja.load_model(e.saves["bad_safetensors"]), r"bad_safetensors/model.safetensors is not a safetensors file", "load-bad-safetensors"),
    P(lambda e: ja.load_model(e.saves["no_weights"]), r"no_weights/model.safetensors is missing: a saved model directory holds model.safetensors", "load-no-weights"),
    P(lambda e: ja.load_model(e.saves["nan_weight"]), r"nan_weight/model.safetensors: tensor attn.W_Q holds 1 NaN/inf values", "load-nan-weight"),
    P(lambda e: ja.load_model(e.saves["inf_weight"]), r"inf_weight/model.safetensors: tensor W_E holds 1 NaN/inf values", "load-inf-weight"),
    P(lambda e: ja.load_model(e.saves["reshaped_weight"]), r"reshaped_weight.*tensor attn.W_Q has shape \(2, 2, 4, 8\), expected \(2, 2, 8, 4\)", "load-reshaped-weight"),
    P(lambda e: ja.load_model(e.saves["missing_weight"]), r"missing_weight.*tensors do not match the config: missing \['W_E'\]", "load-missing-weight"),
    P(lambda e: ja.load_model(e.saves["nan_weight"].parent / "good", dtype="float64"), r"load_model dtype must be one of \['float32', 'bfloat16', 'float16'\], got 'float64'", "load-dtype"),
    P(lambda e: ja.load_model(None), r"directory must be a path.*got None", "load-none"),
    P(lambda e: ja.from_hf(123), r"from_hf needs a transformers model, a local directory path or a Hub repo id, got int", "hf-int"),
    P(lambda e: ja.from_hf(None), r"from_hf needs a transformers model.*got NoneType", "hf-none"),
    P(lambda e: ja.from_hf(e.missing), r"missing/dir.*is not a directory, nor a Hugging Face Hub repo id", "hf-missing"),
    P(lambda e: ja.from_hf(e.a_file), r"a_file.txt.*is not a directory", "hf-file"),
    P(lambda e: ja.from_hf(e.saves["no_config"]), r"no_config has no config.json", "hf-no-config"),
    P(lambda e: ja.from_hf(e.hf["truncated"]), r"truncated/config.json is not valid JSON", "hf-truncated"),
    P(lambda e: ja.from_hf(e.hf["list"]), r"list/config.json must hold a JSON object, got list", "hf-json-list"),
    P(lambda e: ja.from_hf(e.hf["no_embd"]), r"no_embd: tensor wte.weight has shape \(11, 8\).*expected \(11, 768\) for W_E", "hf-no-embd"),
    P(lambda e: ja.from_hf(e.hf["bad_field"]), r"hf/bad_field: GPT-2 config n_head must be a positive int, got 'two'", "hf-bad-field"),
    P(lambda e: ja.from_hf(e.hf["unknown_type"]), r"unsupported architecture model_type='bert'.*supported: \[", "hf-unknown-type"),
    P(lambda e: ja.from_hf(e.hf["bad_st"]), r"bad_st/model.safetensors is not a safetensors file", "hf-bad-safetensors"),
    P(lambda e: ja.from_hf(e.hf["nan"]), r"hf/nan/model.safetensors: tensor h.0.mlp.c_fc.weight holds 256 NaN/inf values \(of 256\)", "hf-nan"),
    P(lambda e: ja.from_hf(e.hf["flat_bias"]), r"tensor h.0.attn.c_attn.bias has shape \(24, 1\).*expected 1-D", "hf-reshapable-bias"),
    P(lambda e: ja.from_hf(e.hf["good"], dtype="float64"), r"from_hf dtype must be one of \['float32', 'bfloat16'\], got 'float64'", "hf-dtype"),
    P(lambda e: ja.from_hf(e.hf["good"], revision="main"), r"revision='main' applies to Hub ids, not to directory", "hf-revision-dir"),
    P(lambda e: ja.from_hf("not a repo id!"), r"'not a repo id!' is not a directory, nor a Hugging Face Hub repo id", "hf-bad-id"),
    P(lambda e: ja.load_pretrained("nope"), r"unknown pretrained model 'nope'; available: induction-2l", "pretrained-unknown"),
    P(lambda e: ja.load_pretrained(3), r"unknown pretrained model 3; available: induction-2l", "pretrained-int"),
    P(lambda e: ja.load_pretrained(None), r"unknown pretrained model None; available: induction-2l", "pretrained-none"),
]

TEXT_CASES = [
    P(lambda e: ja.Prompts(e.tokens[0], [3]), r"Prompts.tokens must be a non-empty 2-D \[batch, seq\] array, got shape \(6,\)", "prompts-1d"),
    P(lambda e: ja.Prompts(e.tokens.astype(float), [6, 6]), r"Prompts.tokens must hold integer ids, got dtype float64", "prompts-float"),
    P(lambda e: _prompts(e, lengths=[6]), r"Prompts.lengths must be 1-D with one entry per prompt \(2\), got shape \(1,\)", "prompts-lengths-count"),
    P(lambda e: _prompts(e, lengths=[0, 6]), r"Prompts.lengths must lie in \[1, 6\].*got values in \[0, 6\]", "prompts-lengths-0"),
    P(lambda e: _prompts(e, lengths=[7, 6]), r"Prompts.lengths must lie in \[1, 6\]", "prompts-lengths-long"),
    P(lambda e: _prompts(e, lengths=[1.5, 6]), r"Prompts.lengths must hold integer ids, got dtype float64", "prompts-lengths-float"),
    P(lambda e: _prompts(e, correct=[1, 2, 3]), r"Prompts.correct must be 1-D with one entry per prompt \(2\), got shape \(3,\)", "prompts-correct-count"),
    P(lambda e: _prompts(e, wrong=[-1, 2]), r"Prompts.wrong", "prompts-wrong-neg"),
    P(lambda e: _prompts(e, positions={"S2": [9, 0]}), r"Prompts.positions\['S2'\] must lie inside each prompt; prompt 0 has 6 tokens, position 9 was given", "prompts-position-range"),
    P(lambda e: _prompts(e, positions={"last": [0, 0]}), r"Prompts.positions names must be non-empty strings other than 'last'.*got 'last'", "prompts-position-last"),
    P(lambda e: _prompts(e, corrupted=ja.Prompts(e.tokens[:1], [6])), r"clean and corrupted prompts must align position by position.*got shapes \(2, 6\) and \(1, 6\)", "prompts-corrupted-shape"),
    P(lambda e: _prompts(e, pad_id=-1), r"pad_id", "prompts-pad-neg"),
    P(lambda e: ja.prompts(e.tok, []), r"texts must hold at least one string, got an empty list", "text-prompts-empty"),
    P(lambda e: ja.prompts(e.tok, "When Mary"), r"texts must be a list of strings, got str", "text-prompts-str"),
    P(lambda e: ja.prompts(e.tok, [""]), r"texts\[0\] must be a non-empty string, got ''", "text-prompts-empty-text"),
    P(lambda e: ja.prompts(e.tok, ["a b", "c d"], correct=[" a"]), r"correct must hold one entry per prompt \(2\), got 1", "text-prompts-correct-count"),
    P(lambda e: ja.prompts(e.tok, ["a b"], max_length=0), r"max_length must be a positive int, got 0", "text-prompts-max-length"),
    P(lambda e: ja.prompts(e.tok, [3]), r"texts\[0\] must be a non-empty string, got 3", "text-prompts-int-text"),
    P(lambda e: ja.prompts(None, ["a"]), r"prompts needs a jaxablate Tokenizer \(ja.load_tokenizer\), got NoneType", "text-prompts-tokenizer-none"),
    P(lambda e: ja.load_tokenizer(e.missing), r"missing/dir' is not a directory, nor a Hugging Face Hub repo id", "tok-missing"),
    P(lambda e: ja.load_tokenizer(e.saves["no_config"]), r"no_config .*has no tokenizer.json: expected a fast tokenizer", "tok-no-tokenizer-json"),
    P(lambda e: ja.load_tokenizer(3), r"load_tokenizer needs a directory or a Hub id.*got 3|3.*is not a directory", "tok-int"),
    P(lambda e: ja.load_tokenizer(e.a_file), r"a_file.txt' is not a directory, nor a Hugging Face Hub repo id", "tok-file"),
    P(lambda e: ja.datasets.ioi(e.tok, 0, KEY), r"ioi n must be a positive int, got 0", "ioi-n-0"),
    P(lambda e: ja.datasets.ioi(e.tok, 2, 0), r"key must be a single jax.random key.*use jax.random.key\(seed\)", "ioi-int-key"),
    P(lambda e: ja.datasets.ioi(e.tok, 2, KEY, names=["Mary"]), r"ioi needs at least 5 names that are one token.*1 of 1", "ioi-one-name"),
    P(lambda e: ja.datasets.ioi(None, 2, KEY), r"ioi needs a jaxablate Tokenizer \(ja.load_tokenizer\), got NoneType", "ioi-tokenizer-none"),
    P(lambda e: ja.datasets.ioi(e.tok, 2, KEY, templates=["no slots"]), r"each template needs exactly one \{IO\}, two \{S\}.*got 'no slots'", "ioi-template"),
]

GAME_CASES = [
    P(lambda e: _optional("jaxablate.games").Game(e.model, e.comps, e.tokens.astype(float)), r"tokens must have an integer dtype", "game-float-tokens"),
    P(lambda e: _optional("jaxablate.games").Game(None, e.comps, e.tokens), r"model must be a ja.Transformer.*got None", "game-model-none"),
    P(lambda e: _optional("jaxablate.games").Game(e.model, "heads", e.tokens), r"comps must be ja.Components.*got 'heads'", "game-comps-str"),
    P(lambda e: _optional("jaxablate.estimate").shapley(_game(e), budget=0, key=KEY), r"budget must be a positive int, got 0", "estimate-budget-0"),
    P(lambda e: _optional("jaxablate.estimate").shapley(_game(e), budget=100, key=0), r"key must be a single jax.random key.*use jax.random.key\(seed\)", "estimate-int-key"),
    P(lambda e: _optional("jaxablate.estimate").shapley(_game(e), budget=100, key=KEY, method="exact"), r"method must be one of \['kernel', 'permutation'\], got 'exact'", "estimate-method"),
    P(lambda e: _optional("jaxablate.estimate").shapley("not a game", budget=100, key=KEY), r"game must be .*got 'not a game'", "estimate-not-a-game"),
    P(lambda e: _optional("jaxablate.estimate").banzhaf(_game(e), budget=-5, key=KEY), r"budget must be a positive int, got -5", "estimate-banzhaf-budget"),
    P(lambda e: _game(e)(np.ones((1, 3), bool)), r"coalitions must be bool \[m, n_players = 4\]; got shape \(1, 3\)", "game-call-width"),
]

TASK_CASES = [
    P(lambda e: importlib.import_module("jaxablate.tasks").induction(vocab_size=1), r"vocab_size must be an int >= max_segment \+ 1 = 13.*got 1", "task-induction-vocab"),
    P(lambda e: importlib.import_module("jaxablate.tasks").induction(min_segment=0), r"min_segment must be an int >= 2, got 0", "task-induction-min"),
    P(lambda e: importlib.import_module("jaxablate.tasks").induction(min_segment=9, max_segment=6), r"max_segment must be an int >= min_segment = 9, got 6", "task-induction-order"),
    P(lambda e: importlib.import_module("jaxablate.tasks").modular_addition(p=1), r"p must be an int >= 2, got 1", "task-modadd-p"),
    P(lambda e: importlib.import_module("jaxablate.tasks").induction().batch(0, 2), r"key must be a single jax.random key.*use jax.random.key\(seed\)", "task-batch-int-key"),
    P(lambda e: importlib.import_module("jaxablate.tasks").induction().batch(KEY, 0), r"batch_size must be a positive int, got 0", "task-batch-size"),
]

# fmt: on

CASES = (
    CONFIG_CASES
    + MODEL_CASES
    + COMPONENT_CASES
    + SUBSET_CASES
    + ABLATION_CASES
    + EVALUATE_CASES
    + METRIC_CASES
    + INTERACTION_CASES
    + SWEEP_CASES
    + LEARN_CASES
    + RECOVER_CASES
    + ATTRIBUTION_CASES
    + IO_CASES
    + TEXT_CASES
    + GAME_CASES
    + TASK_CASES
)


@pytest.mark.parametrize("call, match", CASES)
def test_bad_input_is_refused(env, call, match):
    with pytest.raises((ValueError, OSError)) as info:
        call(env)
    message = str(info.value)
    assert re.search(match, message), f"message {message!r} does not match {match!r}"
    if isinstance(info.value, OSError) and not isinstance(info.value, ValueError):
        assert info.value.filename or "/" in message, f"a file error must name the file: {message}"


def _sweep_argv(e, *extra: str) -> list[str]:
    base = {
        "--model": str(e.saves["nan_weight"].parent / "good"),
        "--tokens": str(e.root / "tokens.npy"),
        "--components": "L0H0,L1H1",
        "--out": str(e.root / f"cli_sweep_{next(_OUTS)}"),
    }
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        base[flag] = value
    return ["sweep", *[w for kv in base.items() for w in kv if kv[1] is not None], "--no-progress"]


# fmt: off
CLI_CASES = [
    P(lambda e: _sweep_argv(e, "--model", str(e.missing)), r"--model .*missing/dir", "cli-sweep-model-missing"),
    P(lambda e: _sweep_argv(e, "--model", str(e.saves["truncated_json"])), r"truncated_json/config.json is not valid JSON", "cli-sweep-model-damaged"),
    P(lambda e: _sweep_argv(e, "--model", str(e.saves["nan_weight"])), r"nan_weight/model.safetensors: tensor attn.W_Q holds 1 NaN/inf values", "cli-sweep-model-nan"),
    P(lambda e: _sweep_argv(e, "--tokens", str(e.missing)), r"--tokens .*missing/dir: cannot read a .npy array", "cli-sweep-tokens-missing"),
    P(lambda e: _sweep_argv(e, "--tokens", str(e.root / "float_tokens.npy")), r"--tokens .*float_tokens.npy must hold an integer array \[batch, seq\], got float32", "cli-sweep-tokens-float"),
    P(lambda e: _sweep_argv(e, "--tokens", str(e.root / "oov_tokens.npy")), r"--tokens .*token ids must lie in \[0, 11\)", "cli-sweep-tokens-oov"),
    P(lambda e: _sweep_argv(e, "--tokens", str(e.a_file)), r"--tokens .*a_file.txt: cannot read a .npy array", "cli-sweep-tokens-not-npy"),
    P(lambda e: _sweep_argv(e, "--components", "bogus"), r"--components: unknown component spec 'bogus'; use heads", "cli-sweep-components"),
    P(lambda e: _sweep_argv(e, "--components", "L0H7"), r"--components L0H7: the model has heads 0..1, got head 7", "cli-sweep-head-range"),
    P(lambda e: _sweep_argv(e, "--metric", "bogus"), r"--metric must be one of", "cli-sweep-metric"),
    P(lambda e: _sweep_argv(e, "--chunk-size", "0"), r"expected a positive int or 'auto', got '0'", "cli-sweep-chunk"),
    P(lambda e: _sweep_argv(e, "--worker", "3/2"), r"--worker .*must be .*got", "cli-sweep-worker"),
    P(lambda e: _sweep_argv(e, "--out", str(e.a_file)), r"--out .*a_file.txt.* is a file", "cli-sweep-out-file"),
    P(lambda e: _sweep_argv(e, "--metric", "logit_diff:99:1"), r"--metric logit_diff:99:1: token ids must lie in \[0, 11\)", "cli-sweep-logit-diff-oov"),
    P(lambda e: ["show", str(e.missing)], r"missing/dir holds no manifest.json: not a sweep directory", "cli-show-missing"),
    P(lambda e: ["show", str(e.a_file)], r"a_file.txt holds no manifest.json: not a sweep directory", "cli-show-file"),
    P(lambda e: ["show", str(e.root), "--top", "0"], r"expected a positive int, got '0'", "cli-show-top"),
    P(lambda e: ["demo", "--model", "nope", "--out", str(e.root / "demo")], r"invalid choice: 'nope'", "cli-demo-model"),
]
# fmt: on


@pytest.mark.parametrize("argv, match", CLI_CASES)
def test_bad_command_line_is_one_line(env, argv, match, capsys):
    args = argv(env)
    try:
        code = cli.main(args)
    except SystemExit as exit:  # argparse: usage, then the error line
        code = exit.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    usage = [line for line in lines[:-1] if not line.startswith(("usage:", " "))]
    assert not usage, f"more than one error line: {err}"
    assert lines[-1].startswith(f"jaxablate {args[0]}: error: "), err
    assert re.search(match, lines[-1]), f"{lines[-1]!r} does not match {match!r}"


def test_the_table_is_large_enough():
    assert len(CASES) + len(CLI_CASES) >= 200


# --------------------------------------------------------------------- refused wrongly before


def test_bfloat16_rows_are_accepted():
    comps = ja.heads(CFG)
    masks = comps.masks(_bf16_rows())
    assert masks.heads.shape == (5, 2, 2)
    np.testing.assert_array_equal(np.asarray(masks.heads[1]), [[0, 1], [1, 1]])
    half = comps.masks(jnp.full((1, 4), 0.5, jnp.bfloat16))
    np.testing.assert_allclose(np.asarray(half.heads), 0.5)
    assert ja.subsets.codes(_bf16_rows()).tolist() == [15, 14, 13, 11, 7]
