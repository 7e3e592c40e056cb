"""``ja.load_tokenizer``, ``ja.prompts`` and ``ja.tokenizer_of`` against ``transformers`` on the
same files (tiny tokenizers laid out like each family's real repo, built in the test)."""

import os
import subprocess
import sys
import textwrap

import huggingface_hub.constants
import numpy as np
import pytest
from flax import nnx
from transformers import PreTrainedTokenizerFast

import jaxablate as ja
from tests._hf import tiny_gpt2
from tests._text import FAMILIES, RARE, make_tokenizer

IOI = "When Mary and John went to the store, John gave a drink to"
TEXTS = [
    IOI,
    "The cat sat on the mat.",
    "Tom and Mary like tea",
    "héllo wörld, <|endoftext|> again",
]
COMMIT = "c" * 40


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    return {family: make_tokenizer(root / family, family) for family in FAMILIES}


@pytest.fixture(scope="module")
def gpt2(dirs):
    return ja.load_tokenizer(dirs["gpt2"])


@pytest.fixture(scope="module")
def llama(dirs):
    return ja.load_tokenizer(dirs["llama2"])


# ------------------------------------------------------------------------------ tokenizers

#: family -> (prepend BOS by default, BOS token, EOS token, pad token), as the real repos say.
EXPECTED = {
    "gpt2": (False, "<|endoftext|>", "<|endoftext|>", "<|endoftext|>"),
    "pythia": (False, "<|endoftext|>", "<|endoftext|>", "<|endoftext|>"),
    "llama2": (True, "<s>", "</s>", "</s>"),  # pad_token null: pads with EOS
    "llama3": (True, "<|begin_of_text|>", "<|end_of_text|>", "<|end_of_text|>"),
    "gemma": (True, "<bos>", "<eos>", "<pad>"),
    "qwen": (False, None, "<|endoftext|>", "<|endoftext|>"),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_ids_equal_transformers(dirs, family):
    ours = ja.load_tokenizer(dirs[family])
    ref = PreTrainedTokenizerFast.from_pretrained(dirs[family])
    for text in TEXTS:
        assert ours.encode(text) == ref(text)["input_ids"], text
        assert (
            ours.encode(text, prepend_bos=False) == ref(text, add_special_tokens=False)["input_ids"]
        )
        assert ours.decode(ours.encode(text, prepend_bos=False)) == ref.decode(
            ref(text, add_special_tokens=False)["input_ids"]
        )
    assert ours.vocab_size == len(ref)


@pytest.mark.parametrize("family", FAMILIES)
def test_special_tokens_per_family(dirs, family):
    tok = ja.load_tokenizer(dirs[family])
    prepend, bos, eos, pad = EXPECTED[family]
    assert tok.prepend_bos is prepend
    assert tok.pieces([tok.bos_id])[0] == bos if bos else tok.bos_id is None
    assert tok.pieces([tok.eos_id, tok.pad_id]) == [eos, pad]
    first = tok.encode("Tom")[0]
    assert (first == tok.bos_id) is prepend


def test_prepend_bos_override(dirs, gpt2):
    forced = ja.load_tokenizer(dirs["gpt2"], prepend_bos=True)
    assert forced.encode("Tom") == [gpt2.bos_id, *gpt2.encode("Tom")]
    assert gpt2.encode("Tom", prepend_bos=True) == forced.encode("Tom")
    with pytest.raises(ValueError, match="has no BOS token"):
        ja.load_tokenizer(dirs["qwen"], prepend_bos=True)
    with pytest.raises(ValueError, match="prepend_bos must be True, False or None"):
        gpt2.encode("Tom", prepend_bos="yes")


def test_directory_without_tokenizer_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"has no tokenizer.json: expected a fast tokenizer"):
        ja.load_tokenizer(tmp_path)
    (tmp_path / "vocab.json").write_text("{}")
    with pytest.raises(ValueError, match="slow tokenizer only"):
        ja.load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid tokenizer file"):
        ja.load_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="is not a directory, nor a Hugging Face Hub repo id"):
        ja.load_tokenizer(tmp_path / "missing")


def test_special_token_not_in_vocabulary(dirs, tmp_path):
    make_tokenizer(tmp_path, "pythia")
    (tmp_path / "tokenizer_config.json").write_text('{"eos_token": "<nope>"}')
    with pytest.raises(ValueError, match="eos_token '<nope>' is not in the tokenizer's vocabulary"):
        ja.load_tokenizer(tmp_path)


def test_wrapping_a_backend(gpt2):
    tok = ja.Tokenizer(gpt2.backend, eos_id=0)
    assert tok.bos_id is None and tok.pad_id == 0 and not tok.prepend_bos
    with pytest.raises(ValueError, match=r"bos_id must be an id in \[0, 506\)"):
        ja.Tokenizer(gpt2.backend, bos_id=506)
    with pytest.raises(ValueError, match=r"wraps a tokenizers\.Tokenizer"):
        ja.Tokenizer(PreTrainedTokenizerFast(tokenizer_object=gpt2.backend))


def _hub(tmp_path):
    cache = tmp_path / "hub"
    make_tokenizer(cache / "models--org--tok" / "snapshots" / COMMIT, "llama2")
    (cache / "models--org--tok" / "refs").mkdir()
    (cache / "models--org--tok" / "refs" / "main").write_text(COMMIT)
    return cache


def test_hub_id_from_offline_cache(tmp_path, monkeypatch, llama):
    """huggingface_hub read its env vars at import, so the test sets its constants."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(_hub(tmp_path)))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    tok = ja.load_tokenizer("org/tok")
    assert tok.encode(IOI) == llama.encode(IOI) and tok.prepend_bos
    assert ja.load_tokenizer("org/tok", revision=COMMIT).encode(IOI) == llama.encode(IOI)
    with pytest.raises(ValueError, match="'org/absent' is not in the local cache"):
        ja.load_tokenizer("org/absent")


@pytest.mark.slow
def test_hub_id_with_env_vars_in_a_fresh_process(tmp_path, llama):
    script = textwrap.dedent(
        f"""
        import jaxablate as ja
        print(ja.load_tokenizer("org/tok").encode({IOI!r}))
        try:
            ja.load_tokenizer("org/absent")
        except ValueError as error:
            print(error)
        """
    )
    env = {**os.environ, "HF_HUB_CACHE": str(_hub(tmp_path)), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    ids, error = done.stdout.strip().splitlines()
    assert ids == str(llama.encode(IOI))
    assert "'org/absent' is not in the local cache" in error and "HF_HUB_OFFLINE is set" in error


def test_locate_and_continuation(gpt2, llama):
    for tok, bos in ((gpt2, 0), (llama, 1)):
        ids = tok.encode(IOI)
        for word, k in (("Mary", 0), ("John", 0), ("John", 1), ("John", -1), ("store", 0)):
            index = tok.locate(IOI, word, occurrence=k)
            assert tok.decode([ids[index]]).strip() == word
        assert tok.locate(IOI, "John", occurrence=1) - tok.locate(IOI, "John") == 6
        assert tok.locate(IOI, "Mary") == 1 + bos
        assert tok.locate(IOI, "the store") == tok.locate(IOI, "store")  # the span's last token
        with pytest.raises(ValueError, match=r"'John' occurs 2 times .* occurrence 2"):
            tok.locate(IOI, "John", occurrence=2)
        with pytest.raises(ValueError, match="'Alice' occurs 0 times"):
            tok.locate(IOI, "Alice")
    assert gpt2.pieces(gpt2.continuation(IOI, " Mary")) == ["ĠMary"]
    assert llama.pieces(llama.continuation(IOI, " Mary")) == ["▁Mary"]


# ------------------------------------------------------------------------------ prompts


def test_padding_and_lengths_by_hand(gpt2):
    p = ja.prompts(gpt2, TEXTS[:3])
    rows = [gpt2.encode(t) for t in TEXTS[:3]]
    seq = max(map(len, rows))
    expected = np.array([r + [gpt2.pad_id] * (seq - len(r)) for r in rows], np.int32)
    np.testing.assert_array_equal(p.tokens, expected)
    np.testing.assert_array_equal(p.lengths, [len(r) for r in rows])
    assert p.tokens.dtype == np.int32 and p.pad_id == gpt2.pad_id == 0
    assert p.texts == tuple(TEXTS[:3]) and p.correct is None and p.corrupted is None


def test_prepend_bos_in_prompts(gpt2, llama):
    p = ja.prompts(gpt2, [IOI], prepend_bos=True, positions={"IO": "Mary"})
    assert p.tokens[0, 0] == gpt2.bos_id and p.lengths[0] == len(gpt2.encode(IOI)) + 1
    assert gpt2.decode([p.tokens[0, p.positions["IO"][0]]]) == " Mary"
    q = ja.prompts(llama, [IOI], prepend_bos=False, positions={"IO": "Mary"})
    assert q.tokens[0, 0] != llama.bos_id
    assert llama.decode([q.tokens[0, q.positions["IO"][0]]]) == "Mary"


def test_answers_match_transformers(dirs, gpt2, llama):
    texts = [IOI, "Then, John and Mary went to the park. Mary gave a book to"]
    p = ja.prompts(gpt2, texts, correct=[" Mary", " John"], wrong=" John")
    ref = PreTrainedTokenizerFast.from_pretrained(dirs["gpt2"])
    expected = [ref(a, add_special_tokens=False)["input_ids"][0] for a in (" Mary", " John")]
    np.testing.assert_array_equal(p.correct, expected)
    np.testing.assert_array_equal(p.wrong, [expected[1]] * 2)
    q = ja.prompts(llama, texts, correct=[" Mary", " John"], wrong=[7, 8])
    ref = PreTrainedTokenizerFast.from_pretrained(dirs["llama2"])
    full = [ref(t + a)["input_ids"] for t, a in zip(texts, (" Mary", " John"), strict=True)]
    np.testing.assert_array_equal(q.correct, [f[-1] for f in full])
    np.testing.assert_array_equal(q.wrong, [7, 8])
    assert [len(f) - 1 for f in full] == list(q.lengths)


def test_answer_errors(gpt2):
    with pytest.raises(ValueError, match=rf"correct answer ' {RARE}' of prompt 1 is 9 tokens"):
        ja.prompts(gpt2, [IOI, IOI], correct=[" Mary", " " + RARE])
    with pytest.raises(ValueError, match="wrong answer ' Mary John' of prompt 0 is 2 tokens"):
        ja.prompts(gpt2, [IOI], wrong=" Mary John")
    with pytest.raises(ValueError, match="does not start at a token boundary"):
        ja.prompts(gpt2, [IOI + " "], correct="Mary")
    with pytest.raises(ValueError, match=r"correct answer of prompt 0 is id 506, outside"):
        ja.prompts(gpt2, [IOI], correct=506)
    with pytest.raises(ValueError, match=r"correct must hold one entry per prompt \(2\), got 1"):
        ja.prompts(gpt2, [IOI, IOI], correct=[" Mary"])
    with pytest.raises(ValueError, match="must be a non-empty string or an id"):
        ja.prompts(gpt2, [IOI], correct=[""])


def test_corrupted_pairs(gpt2):
    clean = [IOI, "Tom and Mary like tea"]
    dirty = ["When Alice and Bob went to the store, Sam gave a drink to", "Tom and Kate like tea"]
    p = ja.prompts(gpt2, clean, correct=" Mary", wrong=" John", corrupted=dirty)
    c = p.corrupted
    assert c is not None and c.texts == tuple(dirty)
    np.testing.assert_array_equal(c.lengths, p.lengths)
    np.testing.assert_array_equal(c.tokens[1, : c.lengths[1]], gpt2.encode(dirty[1]))
    np.testing.assert_array_equal(c.correct, p.correct)
    bad = [dirty[0], "Tom and Kate like green tea"]
    n, m = len(gpt2.encode(clean[1])), len(gpt2.encode(bad[1]))
    assert n != m
    with pytest.raises(
        ValueError, match=rf"pair 1 does not: 'Tom and Mary like tea' has {n} tokens, .* has {m}"
    ):
        ja.prompts(gpt2, clean, corrupted=bad)
    with pytest.raises(ValueError, match=r"one text per prompt \(2\), got 1"):
        ja.prompts(gpt2, clean, corrupted=dirty[:1])


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ([], "at least one string"),
        ([IOI, ""], r"texts\[1\] must be a non-empty string"),
        ([IOI, 3], r"texts\[1\] must be a non-empty string, got 3"),
        (IOI, "wrap a single prompt in a list"),
        (None, "must be a list of strings, got NoneType"),
    ],
)
def test_bad_texts(gpt2, texts, message):
    with pytest.raises(ValueError, match=message):
        ja.prompts(gpt2, texts)


def test_max_length_and_tokenizer_check(gpt2):
    n = len(gpt2.encode(IOI))
    assert ja.prompts(gpt2, [IOI], max_length=n).seq == n
    with pytest.raises(ValueError, match=rf"prompt 1 has {n} tokens, more than max_length={n - 1}"):
        ja.prompts(gpt2, ["Tom", IOI], max_length=n - 1)
    with pytest.raises(ValueError, match="max_length must be a positive int"):
        ja.prompts(gpt2, [IOI], max_length=0)
    with pytest.raises(ValueError, match="needs a jaxablate Tokenizer"):
        ja.prompts(PreTrainedTokenizerFast(tokenizer_object=gpt2.backend), [IOI])


def test_named_positions(gpt2):
    texts = [IOI, "Tom and Mary like tea"]
    p = ja.prompts(
        gpt2,
        texts,
        positions={
            "first": 0,
            "penultimate": -2,
            "name": ["John", "Mary"],
            "S2": [("John", 1), 1],
        },
    )
    np.testing.assert_array_equal(p.positions["first"], [0, 0])
    np.testing.assert_array_equal(p.positions["penultimate"], p.lengths - 2)
    assert [gpt2.decode([p.tokens[i, p.positions["name"][i]]]) for i in (0, 1)] == [
        " John",
        " Mary",
    ]
    np.testing.assert_array_equal(p.positions["S2"], [gpt2.locate(IOI, "John", occurrence=1), 1])
    np.testing.assert_array_equal(p.position("S2"), p.positions["S2"])


@pytest.mark.parametrize(
    ("positions", "message"),
    [
        ({"x": [0, "{n}"]}, r"positions\['x'\] of prompt 1 is {n}, outside its {n} tokens"),
        ({"x": "-{n1}"}, r"positions\['x'\] of prompt 1 is -{n1}, outside its {n} tokens"),
        ({"x": [0]}, r"one entry per prompt \(2\), got 1"),
        ({"x": "Alice"}, "'Alice' occurs 0 times"),
        ({"x": [1.5, 0]}, "must be an int, a substring or"),
        ({"last": 0}, "other than 'last'"),
        ([("x", 0)], "positions must be a dict"),
    ],
)
def test_bad_positions(gpt2, positions, message):
    short = "Tom and Mary like tea"
    n = len(gpt2.encode(short))
    fill = {"{n}": n, "-{n1}": -n - 1}
    if isinstance(positions, dict):  # token counts of the trained vocabulary, filled in here
        positions = {
            k: [fill.get(x, x) for x in v] if isinstance(v, list) else fill.get(v, v)
            for k, v in positions.items()
        }
    message = message.replace("{n1}", str(n + 1)).replace("{n}", str(n))
    with pytest.raises(ValueError, match=message):
        ja.prompts(gpt2, [IOI, short], positions=positions)


# ------------------------------------------------------------------------------ tokenizer_of


def test_tokenizer_of_a_converted_model(tmp_path, dirs):
    hf = tiny_gpt2(vocab_size=506, n_positions=32)
    hf.save_pretrained(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((dirs["gpt2"] / name).read_bytes())
    model = ja.from_hf(tmp_path)
    tok = ja.tokenizer_of(model)
    assert tok.encode(IOI) == ja.load_tokenizer(dirs["gpt2"]).encode(IOI)
    assert model.hf_dir == str(tmp_path)
    assert "hf_dir" not in str(nnx.state(model))  # outside nnx state ...
    assert nnx.merge(*nnx.split(model)).hf_dir == str(tmp_path)  # ... but kept by split/merge
    with pytest.raises(ValueError, match="no tokenizer is on record"):
        ja.tokenizer_of(ja.from_hf(hf))
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match=r"has no tokenizer\.json"):
        ja.tokenizer_of(model)


def test_tokenizer_of_a_model_without_source():
    cfg = ja.ModelConfig(n_layers=1, n_heads=1, d_model=4, d_head=4, d_mlp=8, vocab_size=7, n_ctx=4)
    with pytest.raises(ValueError, match="no tokenizer is on record"):
        ja.tokenizer_of(nnx.eval_shape(lambda: ja.Transformer(cfg, rngs=nnx.Rngs(0))))
    with pytest.raises(ValueError, match="needs a jaxablate Transformer"):
        ja.tokenizer_of("gpt2")
