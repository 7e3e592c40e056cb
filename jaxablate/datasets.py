"""Prompt sets for circuit studies, built for any tokenizer: IOI (indirect object identification).

:func:`ioi` writes prompts such as ``"When Mary and John went to the store, John gave a drink
to"``, whose correct next token is the indirect object ``" Mary"`` and whose competing one is
the subject ``" John"`` (Wang et al. 2022, "Interpretability in the wild"). Each clean prompt
comes with an aligned corrupted one (the "ABC" distribution of that paper: every name replaced),
answer ids and the named positions ``IO``, ``S1``, ``S2`` and ``END``.
"""

import re
from collections.abc import Sequence

import jax
import numpy as np

from jaxablate._checks import check_key, positive_int
from jaxablate._prompts import Prompts
from jaxablate.text import Tokenizer, prompts, token_at

#: First names; :func:`ioi` keeps those that are one token wherever a template puts them.
NAMES = (
    "Mary", "John", "Alice", "Bob", "Tom", "James", "Michael", "David", "Sarah", "Emma",
    "Paul", "Mark", "Lisa", "Kate", "Jack", "Daniel", "Laura", "Peter", "Susan", "Robert",
    "Linda", "Chris", "Amy", "Jessica", "Kevin", "Rachel", "Steven", "Andrew", "Emily", "Brian",
    "Jennifer", "Eric", "Jason", "Adam", "Ryan", "Matthew", "Richard", "Thomas", "Nancy", "Sam",
)  # fmt: skip
#: Places (``{PLACE}``).
PLACES = (
    "store", "park", "school", "station", "office", "market", "garden", "restaurant",
    "hospital", "library", "beach", "house",
)  # fmt: skip
#: Objects (``{OBJECT}``).
OBJECTS = (
    "drink", "book", "ring", "key", "ball", "letter", "basket", "snack", "gift", "bottle",
    "bag", "cake",
)  # fmt: skip
#: Templates: one ``{IO}``, two ``{S}`` (S1, then S2), one ``{PLACE}`` and one ``{OBJECT}``,
#: ending where the indirect object's name comes next. Both name orders (ABBA and BABA) appear.
TEMPLATES = (
    "When {IO} and {S} went to the {PLACE}, {S} gave a {OBJECT} to",
    "When {S} and {IO} went to the {PLACE}, {S} gave a {OBJECT} to",
    "Then, {IO} and {S} went to the {PLACE}. {S} gave a {OBJECT} to",
    "Then, {S} and {IO} went to the {PLACE}. {S} gave a {OBJECT} to",
    "After {IO} and {S} went to the {PLACE}, {S} handed a {OBJECT} to",
    "After {S} and {IO} went to the {PLACE}, {S} handed a {OBJECT} to",
    "While {IO} and {S} were at the {PLACE}, {S} gave a {OBJECT} to",
    "While {S} and {IO} were at the {PLACE}, {S} gave a {OBJECT} to",
)

_SLOT = re.compile(r"\{(IO|S|PLACE|OBJECT)\}")
_SLOTS = {"IO": 1, "S": 2, "PLACE": 1, "OBJECT": 1}


def _render(template: str, fill: dict[str, list[str]]) -> tuple[str, dict[str, list[tuple]]]:
    """The text of ``template`` with each slot's values in order, and each value's char span."""
    out, spans, at, used = [], {k: [] for k in _SLOTS}, 0, {k: 0 for k in _SLOTS}
    for m in _SLOT.finditer(template):
        out.append(template[at : m.start()])
        kind = m.group(1)
        value = fill[kind][used[kind]]
        used[kind] += 1
        start = sum(len(s) for s in out)
        spans[kind].append((start, start + len(value)))
        out.append(value)
        at = m.end()
    out.append(template[at:])
    return "".join(out), spans


def _check_words(what: str, words: object) -> tuple[str, ...]:
    if isinstance(words, str) or not isinstance(words, Sequence) or not words:
        raise ValueError(f"{what} must be a non-empty list of strings, got {words!r}")
    for w in words:
        if not isinstance(w, str) or not w or w != w.strip():
            raise ValueError(f"{what} must hold strings without outer spaces, got {w!r}")
        if what != "templates" and ("{" in w or "}" in w):
            raise ValueError(f"{what} must not hold braces, got {w!r}")
    if len(set(words)) != len(words):
        raise ValueError(f"{what} must not repeat an entry, got {list(words)}")
    return tuple(words)


def _check_templates(templates: object) -> tuple[str, ...]:
    checked = _check_words("templates", templates)
    for t in checked:
        counts = {k: 0 for k in _SLOTS}
        for m in _SLOT.finditer(t):
            counts[m.group(1)] += 1
        rest = _SLOT.sub("", t)
        if counts != _SLOTS or "{" in rest or "}" in rest:
            raise ValueError(
                "each template needs exactly one {IO}, two {S}, one {PLACE} and one {OBJECT} "
                f"(and no other braces), got {t!r}"
            )
    return checked


def _one_token(tok: Tokenizer, text: str, span: tuple[int, int], word: str) -> bool:
    """Whether ``word`` at ``span`` of ``text`` is exactly one token that decodes to it."""
    ids, spans = tok.encoding(text)
    hits = [j for j, (a, b) in enumerate(spans) if b > span[0] and a < span[1]]
    return len(hits) == 1 and tok.decode([ids[hits[0]]]).strip() == word


def _usable(
    tok: Tokenizer, kind: str, words: tuple[str, ...], templates: tuple[str, ...]
) -> list[str]:
    """The words that are one token in every template slot of ``kind`` (names: and as the
    answer after each template)."""
    kept = []
    for word in words:
        ok = True
        for t in templates:
            fill = {"IO": ["Mary"], "S": ["John", "John"], "PLACE": ["store"], "OBJECT": ["drink"]}
            fill.update({"IO": [word], "S": [word, word]} if kind == "name" else {kind: [word]})
            text, spans = _render(t, fill)
            keys = ("IO", "S") if kind == "name" else (kind,)
            ok = all(_one_token(tok, text, s, word) for k in keys for s in spans[k])
            if ok and kind == "name":
                answer = tok.continuation(text, " " + word)
                ok = len(answer) == 1 and tok.decode(answer).strip() == word
            if not ok:
                break
        if ok:
            kept.append(word)
    return kept


def _filter(
    tok: Tokenizer, kind: str, what: str, words: object, templates: tuple[str, ...], need: int
) -> list[str]:
    words = _check_words(what, words)
    kept = _usable(tok, kind, words, templates)
    if len(kept) < need:
        dropped = [w for w in words if w not in kept]
        raise ValueError(
            f"ioi needs at least {need} {what} that are one token wherever the templates put "
            f"them for {tok.name}; {len(kept)} of {len(words)} are ({kept}), dropped: "
            f"{dropped[:20]}"
        )
    return kept


def ioi(
    tokenizer: Tokenizer,
    n: int,
    key: jax.Array,
    *,
    names: Sequence[str] = NAMES,
    places: Sequence[str] = PLACES,
    objects: Sequence[str] = OBJECTS,
    templates: Sequence[str] = TEMPLATES,
    prepend_bos: bool | None = None,
) -> Prompts:
    """``n`` IOI prompts with aligned corrupted twins, answers and named positions.

    Each prompt draws a template, a place, an object and two different names (IO, S) uniformly
    (with a numpy Generator seeded from ``key``'s data: the same key gives the same prompts).
    Its correct answer is ``" " + IO`` and its wrong one ``" " + S``, tokenized as continuations
    of the prompt. The corrupted twin keeps the template, place and object and replaces all
    three names (IO, S1, S2) with three further names, distinct from each other and from IO and
    S (the "ABC" distribution of Wang et al.): no name repeats, so the clue to the indirect
    object is gone. It shares the clean answers and positions.

    Only words that are one token wherever the templates put them (and, for names, as the answer)
    are used, so every pair aligns token by token.

    Args:
        tokenizer: From :func:`jaxablate.load_tokenizer` (any family).
        n: Number of prompts.
        key: A ``jax.random`` key.
        names: Candidate names (at least 5 must survive the one-token filter).
        places: Candidate places (``{PLACE}``).
        objects: Candidate objects (``{OBJECT}``).
        templates: See :data:`TEMPLATES` for the slots each must hold.
        prepend_bos: As in :func:`jaxablate.prompts`.

    Returns:
        :class:`~jaxablate.Prompts` with ``correct``, ``wrong``, ``corrupted``, ``texts`` and
        positions ``IO``, ``S1`` (first mention of the subject), ``S2`` (second) and ``END``
        (the last token, where the answer is read).

    Raises:
        ValueError: a bad ``n`` or key, malformed templates or word lists, or too few names
            (fewer than 5), places or objects that are single tokens for this tokenizer.
    """
    n = positive_int("ioi n", n)
    key = check_key(key)
    if not isinstance(tokenizer, Tokenizer):
        raise ValueError(
            f"ioi needs a jaxablate Tokenizer (ja.load_tokenizer), got {type(tokenizer).__name__}"
        )
    templates = _check_templates(templates)
    kept = {
        kind: _filter(tokenizer, kind, what, words, templates, need)
        for kind, what, words, need in (
            ("name", "names", names, 5),
            ("PLACE", "places", places, 1),
            ("OBJECT", "objects", objects, 1),
        )
    }
    rows = _draw(tokenizer, n, key, kept, templates, 1 if tokenizer._bos(prepend_bos) else 0)
    clean, dirty, correct, wrong, where = rows
    return prompts(
        tokenizer,
        clean,
        correct=correct,
        wrong=wrong,
        corrupted=dirty,
        prepend_bos=prepend_bos,
        positions={**where, "END": -1},
    )


def _draw(
    tok: Tokenizer,
    n: int,
    key: jax.Array,
    kept: dict[str, list[str]],
    templates: tuple[str, ...],
    shift: int,
) -> tuple[list[str], list[str], list[str], list[str], dict[str, list[int]]]:
    """Clean texts, corrupted texts, answers and name positions of ``n`` random prompts."""
    # a local Generator seeded from the key's bits: no global state, no compile per n
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)))
    which = {
        "template": rng.integers(0, len(templates), n),
        "PLACE": rng.integers(0, len(kept["PLACE"]), n),
        "OBJECT": rng.integers(0, len(kept["OBJECT"]), n),
    }
    who = np.argsort(rng.random((n, len(kept["name"]))), axis=1)[:, :5]  # 5 distinct names
    clean, dirty, correct, wrong = [], [], [], []
    where: dict[str, list[int]] = {"IO": [], "S1": [], "S2": []}
    for i in range(n):
        io, s, c1, c2, c3 = (kept["name"][j] for j in who[i])
        place, obj = kept["PLACE"][which["PLACE"][i]], kept["OBJECT"][which["OBJECT"][i]]
        template = templates[which["template"][i]]
        text, spans = _render(
            template, {"IO": [io], "S": [s, s], "PLACE": [place], "OBJECT": [obj]}
        )
        other, _ = _render(template, {"IO": [c1], "S": [c2, c3], "PLACE": [place], "OBJECT": [obj]})
        _, offsets = tok.encoding(text)
        for name, span in (("IO", spans["IO"][0]), ("S1", spans["S"][0]), ("S2", spans["S"][1])):
            where[name].append(shift + token_at(offsets, span[0], span[1], text))
        clean.append(text)
        dirty.append(other)
        correct.append(" " + io)
        wrong.append(" " + s)
    return clean, dirty, correct, wrong, where
