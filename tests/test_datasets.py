"""``ja.datasets.ioi`` on tiny tokenizers of two families: answers really one token (checked with
``transformers`` on the same files), named positions on the right tokens, aligned corrupted
twins with every name replaced, reproducible from the key."""

import re

import jax
import numpy as np
import pytest
from transformers import PreTrainedTokenizerFast

import jaxablate as ja
from jaxablate.datasets import NAMES, TEMPLATES
from tests._text import RARE, make_tokenizer


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ioi")
    return {f: make_tokenizer(root / f, f) for f in ("gpt2", "llama2")}


@pytest.fixture(scope="module", params=["gpt2", "llama2"])
def family(request, dirs):
    return request.param, ja.load_tokenizer(dirs[request.param]), dirs[request.param]


def _names(text):
    """The three names of a prompt in text order (capitalised words but the first)."""
    words = re.findall(r"[A-Z][a-z]+", text)
    return [w for w in words if w not in ("When", "Then", "After", "While")]


def _io_s(text):
    """(IO, S) of a clean prompt: S is the name said twice, the second time last."""
    a, b, s = _names(text)
    assert s in (a, b) and a != b
    return (b if a == s else a), s


def test_answers_are_single_tokens(family):
    _, tok, path = family
    p = ja.datasets.ioi(tok, 24, jax.random.key(0))
    ref = PreTrainedTokenizerFast.from_pretrained(path)
    assert p.batch == 24 and p.corrupted is not None and p.texts is not None
    for i, text in enumerate(p.texts):
        io, s = _io_s(text)
        for answer, got in ((io, p.correct[i]), (s, p.wrong[i])):
            full = ref(text + " " + answer)["input_ids"]  # the reference: prompt then answer
            assert full[:-1] == list(p.tokens[i, : p.lengths[i]])
            assert full[-1] == got
        assert tok.decode([p.correct[i]]).strip() == io


def test_named_positions_point_at_the_names(family):
    _, tok, _ = family
    p = ja.datasets.ioi(tok, 16, jax.random.key(1))
    assert set(p.positions) == {"IO", "S1", "S2", "END"}
    np.testing.assert_array_equal(p.positions["END"], p.lengths - 1)
    for i, text in enumerate(p.texts):
        io, s = _io_s(text)
        row = p.tokens[i]
        assert tok.decode([row[p.positions["IO"][i]]]).strip() == io
        assert tok.decode([row[p.positions["S1"][i]]]).strip() == s
        assert tok.decode([row[p.positions["S2"][i]]]).strip() == s
        assert p.positions["S1"][i] < p.positions["S2"][i] < p.positions["END"][i]
        assert tok.decode([row[p.positions["END"][i]]]).strip() == "to"


def test_corrupted_replaces_every_name(family):
    _, tok, _ = family
    p = ja.datasets.ioi(tok, 16, jax.random.key(2))
    c = p.corrupted
    assert c is not None and c.texts is not None
    np.testing.assert_array_equal(c.lengths, p.lengths)
    np.testing.assert_array_equal(c.correct, p.correct)
    np.testing.assert_array_equal(c.wrong, p.wrong)
    for i, (clean, dirty) in enumerate(zip(p.texts, c.texts, strict=True)):
        a, b, c3 = _names(dirty)
        assert len({a, b, c3}) == 3 and not {a, b, c3} & set(_names(clean))
        any_name = r"\b(?:" + "|".join(NAMES) + r")\b"
        assert re.sub(any_name, "N", clean) == re.sub(any_name, "N", dirty)
        changed = np.flatnonzero(p.tokens[i] != c.tokens[i])
        expected = sorted(int(p.positions[k][i]) for k in ("IO", "S1", "S2"))
        assert list(changed) == expected  # only the three name tokens differ


def test_reproducible_from_the_key(family):
    _, tok, _ = family
    a = ja.datasets.ioi(tok, 12, jax.random.key(5))
    b = ja.datasets.ioi(tok, 12, jax.random.key(5))
    c = ja.datasets.ioi(tok, 12, jax.random.key(6))
    assert a.texts == b.texts and a.corrupted.texts == b.corrupted.texts
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert a.texts != c.texts
    raw = ja.datasets.ioi(tok, 12, jax.random.PRNGKey(5))  # a raw key of the same bits
    assert raw.texts == a.texts
    assert len(set(a.texts + c.texts)) > 12  # draws differ within a set too


def test_bos_shifts_positions(dirs):
    tok = ja.load_tokenizer(dirs["gpt2"])
    plain = ja.datasets.ioi(tok, 6, jax.random.key(3))
    bos = ja.datasets.ioi(tok, 6, jax.random.key(3), prepend_bos=True)
    assert plain.texts == bos.texts
    assert (bos.tokens[:, 0] == tok.bos_id).all()
    for k in ("IO", "S1", "S2", "END"):
        np.testing.assert_array_equal(bos.positions[k], plain.positions[k] + 1)


def test_multi_token_names_are_dropped(dirs):
    tok = ja.load_tokenizer(dirs["gpt2"])
    names = ["Mary", "John", "Alice", "Bob", "Tom", RARE]
    p = ja.datasets.ioi(tok, 40, jax.random.key(4), names=names)
    assert not any(RARE in t for t in p.texts + p.corrupted.texts)
    with pytest.raises(
        ValueError, match=rf"at least 5 names .* 4 of 5 are .* dropped: \['{RARE}'\]"
    ):
        ja.datasets.ioi(tok, 4, jax.random.key(4), names=[*names[:4], RARE])
    with pytest.raises(ValueError, match="at least 1 places"):
        ja.datasets.ioi(tok, 4, jax.random.key(4), places=[RARE])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"templates": ["When {IO} and {S} went, gave it to"]}, "two {S}"),
        ({"templates": ["{IO} {S} {S} {PLACE} {OBJECT} {X}"]}, "no other braces"),
        ({"templates": "When {IO}"}, "non-empty list of strings"),
        ({"names": ["Mary", "Mary", "John", "Bob", "Tom", "Alice"]}, "must not repeat"),
        ({"names": [" Mary"]}, "without outer spaces"),
        ({"places": []}, "non-empty list"),
    ],
)
def test_bad_options(dirs, options, message):
    tok = ja.load_tokenizer(dirs["gpt2"])
    with pytest.raises(ValueError, match=re.escape(message) if "{" in message else message):
        ja.datasets.ioi(tok, 4, jax.random.key(0), **options)


def test_bad_arguments(dirs):
    tok = ja.load_tokenizer(dirs["gpt2"])
    with pytest.raises(ValueError, match="ioi n must be a positive int"):
        ja.datasets.ioi(tok, 0, jax.random.key(0))
    with pytest.raises(ValueError, match=r"key must be a single jax\.random key"):
        ja.datasets.ioi(tok, 4, 0)
    with pytest.raises(ValueError, match="needs a jaxablate Tokenizer"):
        ja.datasets.ioi(tok.backend, 4, jax.random.key(0))
    assert len(TEMPLATES) == 8
