"""``jaxablate sweep --prompts FILE.jsonl``: the values against ``transformers`` (each prompt run
alone, unpadded, heads removed by a hook on ``c_proj``'s input), and every refusal."""

import argparse
import json

import numpy as np
import pytest
import torch

import jaxablate as ja
from jaxablate.cli import main
from jaxablate.prompts_cli import load_prompts, read_prompts_file
from tests._hf import tiny_gpt2
from tests._text import make_tokenizer

CLEAN = [
    "When Mary and John went to the store, John gave a drink to",
    "Then, Tom and Kate went to the park. Kate gave a book to",
    "Tom and Mary like tea",
]
CORRUPTED = [
    "When Alice and Bob went to the store, Sam gave a drink to",
    "Then, Emma and Paul went to the park. Mark gave a book to",
    "Tom and Kate like tea",
]
CORRECT, WRONG = [" Mary", " Tom", " and"], [" John", " Kate", " John"]
N_HEAD, D_HEAD = 2, 8


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("prompts_cli")
    hf = tiny_gpt2(vocab_size=506, n_positions=32, n_layer=1, n_head=N_HEAD, n_embd=16)
    hf.save_pretrained(root / "model")
    tok_dir = make_tokenizer(root / "tok", "gpt2")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (root / "model" / name).write_bytes((tok_dir / name).read_bytes())
    lines = [
        {"clean": c, "corrupted": d, "correct": a, "wrong": w}
        for c, d, a, w in zip(CLEAN, CORRUPTED, CORRECT, WRONG, strict=True)
    ]
    _write(root / "prompts.jsonl", lines)
    return hf, root, ja.load_tokenizer(tok_dir)


def _write(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def _torch_values(hf, tok, *, source=None):
    """Mean logit difference of every head subset (bit order), each prompt run alone; removed
    heads' ``z`` zeroed, or taken from the same prompt index of ``source`` texts."""
    c_proj = hf.transformer.h[0].attn.c_proj
    ids = [tok.encode(t) for t in CLEAN]
    answers = [
        (tok.continuation(t, a)[0], tok.continuation(t, w)[0])
        for t, a, w in zip(CLEAN, CORRECT, WRONG, strict=True)
    ]
    replacement = []
    for i, row in enumerate(ids):
        if source is None:
            replacement.append(torch.zeros(1, len(row), N_HEAD * D_HEAD))
            continue
        seen: dict = {}
        hook = c_proj.register_forward_pre_hook(lambda m, a, seen=seen: seen.update(z=a[0].clone()))
        with torch.no_grad():
            hf(torch.tensor([tok.encode(source[i])]))
        hook.remove()
        replacement.append(seen["z"])
    values = []
    for r in range(2**N_HEAD):
        diffs = []
        for row, (c, w), rep in zip(ids, answers, replacement, strict=True):

            def mask(module, args, r=r, rep=rep):
                z = args[0].clone()
                for h in range(N_HEAD):
                    if not (r >> h) & 1:
                        z[..., h * D_HEAD : (h + 1) * D_HEAD] = rep[
                            ..., h * D_HEAD : (h + 1) * D_HEAD
                        ]
                return (z,)

            hook = c_proj.register_forward_pre_hook(mask)
            with torch.no_grad():
                logits = hf(torch.tensor([row])).logits[0, -1]
            hook.remove()
            diffs.append(float(logits[c] - logits[w]))
        values.append(np.mean(diffs))
    return np.array(values)


@pytest.mark.slow
def test_sweep_with_prompts_matches_transformers(setup, capsys):
    hf, root, tok = setup
    out = root / "zero"
    argv = ["sweep", "--model", str(root / "model"), "--prompts", str(root / "prompts.jsonl")]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    values, meta = ja.load_sweep(out)
    assert meta["metric"]["name"] == "logit_diff"
    np.testing.assert_allclose(values, _torch_values(hf, tok), atol=2e-4, rtol=0)
    assert "logit_diff: all kept" in capsys.readouterr().out


@pytest.mark.slow
def test_resample_takes_the_corrupted_prompts(setup):
    hf, root, tok = setup
    out = root / "resample"
    argv = ["sweep", "--model", str(root / "model"), "--prompts", str(root / "prompts.jsonl")]
    assert main([*argv, "--ablation", "resample", "--out", str(out), "--no-progress"]) == 0
    values, _ = ja.load_sweep(out)
    np.testing.assert_allclose(values, _torch_values(hf, tok, source=CORRUPTED), atol=2e-4)


@pytest.mark.slow
def test_explicit_tokenizer_for_a_model_without_one(setup, tmp_path, capsys):
    hf, root, tok_obj = setup
    ja.save_model(ja.from_hf(root / "model"), tmp_path / "ours")  # jaxablate format: no tokenizer
    argv = ["sweep", "--model", str(tmp_path / "ours"), "--prompts", str(root / "prompts.jsonl")]
    assert main([*argv, "--out", str(tmp_path / "a"), "--no-progress"]) == 2
    assert "--prompts needs --tokenizer NAME_OR_DIR" in capsys.readouterr().err
    tok = ["--tokenizer", str(root / "tok")]
    assert main([*argv, *tok, "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    # against transformers itself (not another test's sweep: tests may run apart under xdist)
    values, _ = ja.load_sweep(tmp_path / "b")
    np.testing.assert_allclose(values, _torch_values(hf, tok_obj), atol=2e-4, rtol=0)


def _args(root, **kw):
    base = {"model": "m", "tokens": None, "prompts": None, "tokenizer": None}
    return argparse.Namespace(**{**base, **kw})


def test_inputs_are_tokens_or_prompts(setup):
    _, root, _ = setup
    model = ja.from_hf(root / "model")
    with pytest.raises(ValueError, match=r"as --tokens FILE\.npy or as --prompts FILE\.jsonl"):
        load_prompts(_args(root), model)
    with pytest.raises(ValueError, match=r"as --tokens FILE\.npy or as --prompts FILE\.jsonl"):
        load_prompts(_args(root, tokens="t.npy", prompts="p.jsonl"), model)
    with pytest.raises(ValueError, match="--tokenizer applies to --prompts"):
        load_prompts(_args(root, tokens="t.npy", tokenizer="x"), model)
    p = load_prompts(_args(root, prompts=str(root / "prompts.jsonl")), model)
    assert p is not None and p.texts == tuple(CLEAN) and p.corrupted.texts == tuple(CORRUPTED)


def test_prompt_errors_name_the_file(setup, tmp_path):
    _, root, _ = setup
    model = ja.from_hf(root / "model")
    bad = _write(tmp_path / "multi.jsonl", [{"clean": CLEAN[0], "correct": " Mary John"}])
    with pytest.raises(
        ValueError,
        match=r"multi.jsonl \(prompt i = i-th JSON line\): correct answer ' Mary John' of prompt 0 is 2 tokens",
    ):
        load_prompts(_args(root, prompts=str(bad)), model)
    long = _write(tmp_path / "long.jsonl", [{"clean": " ".join(["Tom"] * 40)}])
    with pytest.raises(ValueError, match="more than max_length=32"):
        load_prompts(_args(root, prompts=str(long)), model)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "holds no prompts"),
        (["{not json"], r":1: not valid JSON"),
        (['["a list"]'], r":1: expected a JSON object with a 'clean' field"),
        ([{"clean": "a", "correctt": " b"}], r":1: unknown fields \['correctt'\]"),
        (
            [{"clean": "a", "wrong": " b"}, "", {"clean": "c"}],
            r":3: no 'wrong' field, which line 1 has",
        ),
    ],
)
def test_bad_prompt_files(tmp_path, rows, message):
    with pytest.raises(ValueError, match=message):
        read_prompts_file(str(_write(tmp_path / "p.jsonl", rows)))


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="cannot read the file"):
        read_prompts_file(str(tmp_path / "absent.jsonl"))


def test_cli_refusals(setup, tmp_path, capsys):
    _, root, _ = setup
    no_answers = _write(tmp_path / "plain.jsonl", [{"clean": c} for c in CLEAN])
    base = ["sweep", "--model", str(root / "model"), "--no-progress"]
    cases = [
        (["--prompts", str(no_answers)], "--metric logit_diff needs --prompts whose lines give"),
        (
            ["--prompts", str(no_answers), "--ablation", "resample", "--metric", "loss"],
            "needs a 'corrupted' text",
        ),
        (
            [
                "--prompts",
                str(root / "prompts.jsonl"),
                "--ablation",
                "resample",
                "--ref-tokens",
                "x.npy",
            ],
            "--ref-tokens does not combine with --prompts",
        ),
        ([], "as --tokens FILE.npy or as --prompts FILE.jsonl"),
    ]
    for i, (extra, message) in enumerate(cases):
        if "--ref-tokens" in extra:
            np.save(tmp_path / "x.npy", np.zeros((3, 4), np.int32))
            extra = [*extra[:-1], str(tmp_path / "x.npy")]
        assert main([*base, *extra, "--out", str(tmp_path / f"o{i}")]) == 2
        assert message in capsys.readouterr().err
