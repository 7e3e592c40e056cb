"""From text to :class:`~jaxablate.Prompts`: fast tokenizers, answers, named positions.

:func:`load_tokenizer` reads a Hugging Face *fast* tokenizer (``tokenizer.json``, with
``tokenizer_config.json`` / ``special_tokens_map.json`` / ``config.json`` for the special
tokens) from a local directory or a Hub id, with the Rust ``tokenizers`` library only
(transformers is not needed). :func:`prompts` turns strings into right-padded
:class:`~jaxablate.Prompts` with answer ids, aligned corrupted prompts and named positions, and
:func:`tokenizer_of` finds the tokenizer saved next to the weights a model was loaded from.

**BOS per family.** Whether a prompt starts with the beginning-of-sequence token is read from the
files, never guessed from a name: ``tokenizer_config.json``'s ``add_bos_token`` when it is set,
else whether ``tokenizer.json``'s post-processor template starts with a special token. So
Llama, Mistral and Gemma prepend BOS; GPT-2 and Pythia do not (their BOS is ``<|endoftext|>``,
the same token as EOS; circuit work often prepends it anyway: ``prepend_bos=True``); Qwen has no
BOS at all (``bos_token: null``). Nothing else from the post-processor is added (no EOS at the
end: a prompt ends at its last text token).
"""

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers
from jaxtyping import Int

from jaxablate._checks import positive_int
from jaxablate._prompts import Prompts
from jaxablate.models._hf_load import resolve
from jaxablate.models.transformer import Transformer

#: Files fetched for a Hub id by :func:`load_tokenizer` (``config.json`` holds fallback ids).
TOKENIZER_PATTERNS = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "config.json",
]

#: A per-prompt position: a token index (negative: from the prompt's end), a substring (its first
#: occurrence), or ``(substring, occurrence)`` (0-based; negative counts from the last).
PositionItem = int | str | tuple[str, int]


class Tokenizer:
    """A fast tokenizer and the special tokens a prompt needs.

    Build one with :func:`load_tokenizer`, or wrap a ``tokenizers.Tokenizer`` directly.

    Args:
        backend: The ``tokenizers.Tokenizer`` (its padding and truncation are switched off).
        bos_id: Beginning-of-sequence id, or ``None`` if the tokenizer has none.
        eos_id: End-of-sequence id, or ``None``.
        pad_id: The declared pad id, or ``None`` (then :attr:`pad_id` falls back to EOS, then 0).
        prepend_bos: Whether :meth:`encode` starts with BOS unless told otherwise.
        name: Where it came from, for messages.

    Raises:
        ValueError: an id outside the vocabulary, or ``prepend_bos`` without a BOS id.
    """

    def __init__(
        self,
        backend: Any,
        *,
        bos_id: int | None = None,
        eos_id: int | None = None,
        pad_id: int | None = None,
        prepend_bos: bool = False,
        name: str = "tokenizer",
    ):
        if not isinstance(backend, tokenizers.Tokenizer):
            raise ValueError(
                "Tokenizer wraps a tokenizers.Tokenizer (a transformers fast tokenizer holds one "
                f"as .backend_tokenizer), got {type(backend).__name__}"
            )
        backend.no_padding()
        backend.no_truncation()
        self.backend = backend
        self.name = name
        self.vocab_size = int(backend.get_vocab_size(with_added_tokens=True))
        for what, value in (("bos_id", bos_id), ("eos_id", eos_id), ("pad_id", pad_id)):
            if value is not None and not (
                isinstance(value, int)
                and not isinstance(value, bool)
                and 0 <= value < self.vocab_size
            ):
                raise ValueError(
                    f"{name}: {what} must be an id in [0, {self.vocab_size}) or None, got {value!r}"
                )
        self.bos_id, self.eos_id, self.declared_pad_id = bos_id, eos_id, pad_id
        self.prepend_bos = _bos_flag(self, prepend_bos)

    @property
    def pad_id(self) -> int:
        """The id written at pad positions: the declared pad token, else EOS, else 0.

        Any valid id does: nothing in jaxablate reads a pad position.
        """
        for value in (self.declared_pad_id, self.eos_id):
            if value is not None:
                return value
        return 0

    def __repr__(self) -> str:
        return (
            f"Tokenizer({self.name!r}, vocab_size={self.vocab_size}, bos_id={self.bos_id}, "
            f"eos_id={self.eos_id}, pad_id={self.pad_id}, prepend_bos={self.prepend_bos})"
        )

    def encoding(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids of ``text`` (no special tokens added, no BOS) and each token's character span."""
        if not isinstance(text, str):
            raise ValueError(f"{self.name}: expected a string to tokenize, got {text!r}")
        enc = self.backend.encode(text, add_special_tokens=False)
        return list(enc.ids), [(int(a), int(b)) for a, b in enc.offsets]

    def encode(self, text: str, *, prepend_bos: bool | None = None) -> list[int]:
        """Token ids of ``text``, with BOS first if ``prepend_bos`` (default:
        :attr:`prepend_bos`)."""
        ids, _ = self.encoding(text)
        return self._prefix(self._bos(prepend_bos)) + ids

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The text of ``ids`` (special tokens kept, so a BOS shows)."""
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=False)

    def pieces(self, ids: Sequence[int] | np.ndarray) -> list[str | None]:
        """The vocabulary string of each id (``"ĠMary"`` in GPT-2, ``"▁Mary"`` in Llama)."""
        return [self.backend.id_to_token(int(i)) for i in ids]

    def continuation(self, prompt: str, answer: str) -> list[int]:
        """Ids of ``answer`` as it continues ``prompt``: the tokens of ``prompt + answer`` after
        the prompt's own (no BOS). Mind the leading space: ``" Mary"`` after ``"... to"``.

        Raises:
            ValueError: ``prompt + answer`` changes the prompt's own tokens (the answer does not
                start at a token boundary, e.g. a prompt that ends with a space).
        """
        base, _ = self.encoding(prompt)
        full, _ = self.encoding(prompt + answer)
        if full[: len(base)] != base:
            raise ValueError(
                f"answer {answer!r} does not start at a token boundary after {prompt!r}: the "
                f"prompt's last tokens {self.pieces(base[-2:])} become "
                f"{self.pieces(full[max(0, len(base) - 2) :])} (a prompt that ends with a space? "
                "put the space in the answer, ' Mary')"
            )
        return full[len(base) :]

    def locate(
        self,
        text: str,
        substring: str,
        *,
        occurrence: int = 0,
        prepend_bos: bool | None = None,
    ) -> int:
        """Token index of ``substring`` in ``text``: its last token, so for a one-token word
        that token, and for a span of several tokens the one where the model has read it all.

        Args:
            text: The prompt.
            substring: What to find (case-sensitive).
            occurrence: Which occurrence (0-based; negative counts from the last).
            prepend_bos: As in :meth:`encode`: whether index 0 is BOS.

        Raises:
            ValueError: the substring is absent, or occurs fewer times than asked.
        """
        _, spans = self.encoding(text)
        shift = len(self._prefix(self._bos(prepend_bos)))
        return shift + _locate(text, spans, substring, occurrence)

    def _bos(self, prepend_bos: bool | None) -> bool:
        return self.prepend_bos if prepend_bos is None else _bos_flag(self, prepend_bos)

    def _prefix(self, bos: bool) -> list[int]:
        return [self.bos_id] if bos and self.bos_id is not None else []


def _bos_flag(tok: Tokenizer, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"prepend_bos must be True, False or None, got {value!r}")
    if value and tok.bos_id is None:
        raise ValueError(
            f"{tok.name} has no BOS token (as Qwen's), so prepend_bos=True cannot be honoured"
        )
    return value


def _locate(text: str, spans: Sequence[tuple[int, int]], substring: str, occurrence: int) -> int:
    """Token index (no BOS) of the last token of one occurrence of ``substring`` in ``text``."""
    if not isinstance(substring, str) or not substring:
        raise ValueError(f"a substring to locate must be a non-empty string, got {substring!r}")
    if not isinstance(occurrence, int) or isinstance(occurrence, bool):
        raise ValueError(f"occurrence must be an int, got {occurrence!r}")
    starts, i = [], text.find(substring)
    while i >= 0:
        starts.append(i)
        i = text.find(substring, i + 1)
    if not -len(starts) <= occurrence < len(starts):
        raise ValueError(
            f"{substring!r} occurs {len(starts)} times in {text!r}; occurrence {occurrence} "
            "was asked for"
        )
    start = starts[occurrence]
    return token_at(spans, start, start + len(substring), text)


def token_at(spans: Sequence[tuple[int, int]], start: int, end: int, text: str) -> int:
    """Index of the last token whose character span overlaps ``[start, end)`` of ``text``.

    Raises:
        ValueError: no token overlaps it (whitespace the tokenizer drops).
    """
    hits = [j for j, (a, b) in enumerate(spans) if b > start and a < end]
    if not hits:
        raise ValueError(
            f"no token covers characters {start}:{end} ({text[start:end]!r}) of {text!r}"
        )
    return hits[-1]


# ------------------------------------------------------------------------------ loading


def load_tokenizer(
    name_or_dir: str | os.PathLike, *, revision: str | None = None, prepend_bos: bool | None = None
) -> Tokenizer:
    """The fast tokenizer of a local directory or a Hugging Face Hub id.

    A Hub id resolves like :func:`jaxablate.from_hf` (``huggingface_hub.snapshot_download``,
    which honours ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE``), fetching only the tokenizer files and
    ``config.json``. Special tokens come from ``tokenizer_config.json``, then
    ``special_tokens_map.json``, then ``config.json``'s ``*_token_id`` (GPT-2 declares its BOS
    only there); an explicit ``null`` means the tokenizer has none. The BOS default per family is
    described in :mod:`jaxablate.text`.

    Args:
        name_or_dir: A directory holding ``tokenizer.json``, or a Hub id (``"gpt2"``,
            ``"EleutherAI/pythia-70m"``).
        revision: Branch, tag or commit of a Hub id (``None``: ``main``).
        prepend_bos: Override the files' BOS default (``None``: keep it).

    Raises:
        ValueError: neither a directory nor a Hub id; a Hub id not in the cache while offline;
            a directory without ``tokenizer.json``; unreadable files; a special token that is
            not in the vocabulary.
    """
    if not isinstance(name_or_dir, str | os.PathLike):
        raise ValueError(
            "load_tokenizer needs a directory or a Hub id (str or os.PathLike), got "
            f"{name_or_dir!r}"
        )
    root = resolve(name_or_dir, revision, patterns=TOKENIZER_PATTERNS)
    if not (root / "tokenizer.json").is_file():
        found = sorted(p.name for p in root.iterdir())
        hint = ""
        if {"vocab.json", "tokenizer.model"} & set(found):
            hint = (
                "; it holds a slow tokenizer only: convert it once with transformers, "
                "AutoTokenizer.from_pretrained(dir).save_pretrained(dir)"
            )
        raise ValueError(
            f"{name_or_dir!s} ({root}) has no tokenizer.json: expected a fast tokenizer "
            f"(tokenizer.json, optionally tokenizer_config.json), found {found}{hint}"
        )
    try:
        backend = tokenizers.Tokenizer.from_file(str(root / "tokenizer.json"))
    except Exception as error:  # tokenizers raises a bare Exception on malformed files
        raise ValueError(
            f"{root / 'tokenizer.json'} is not a valid tokenizer file: {error}"
        ) from None
    files = [_json(root / n) for n in ("tokenizer_config.json", "special_tokens_map.json")]
    model_config = _json(root / "config.json")
    processor = backend.post_processor  # its JSON is its pickle state: no second parse of the file
    template = _template_first(None if processor is None else json.loads(processor.__getstate__()))
    ids = {
        kind: _special_id(backend, kind, files, model_config, str(root))
        for kind in ("bos", "eos", "pad")
    }
    if ids["bos"] is None and template is not None and not _declares(files, "bos"):
        ids["bos"] = backend.token_to_id(template)
    flag = files[0].get("add_bos_token")
    default = flag if isinstance(flag, bool) else template is not None
    return Tokenizer(
        backend,
        bos_id=ids["bos"],
        eos_id=ids["eos"],
        pad_id=ids["pad"],
        prepend_bos=default if prepend_bos is None else prepend_bos,
        name=os.fspath(name_or_dir),
    )


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not readable JSON: {error}") from None
    return value if isinstance(value, dict) else {}


def _declares(files: list[dict[str, Any]], kind: str) -> bool:
    return any(f"{kind}_token" in f for f in files)


def _special_id(
    backend: Any, kind: str, files: list[dict[str, Any]], model_config: dict[str, Any], where: str
) -> int | None:
    """The id of the ``bos``/``eos``/``pad`` token the files declare (``None``: none)."""
    for f in files:
        if f"{kind}_token" in f:
            value = f[f"{kind}_token"]
            content = value.get("content") if isinstance(value, dict) else value
            if content is None:
                return None  # declared absent (Qwen's bos_token: null)
            found = backend.token_to_id(str(content))
            if found is None:
                raise ValueError(
                    f"{where}: {kind}_token {content!r} is not in the tokenizer's vocabulary"
                )
            return int(found)
    value = model_config.get(f"{kind}_token_id")
    if isinstance(value, list) and value:
        value = value[0]  # several EOS ids (Llama 3 instruct): the first
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value if value < backend.get_vocab_size(with_added_tokens=True) else None
    return None


def _template_first(processor: Any) -> str | None:
    """The special token a ``TemplateProcessing`` post-processor puts first, if any."""
    if not isinstance(processor, dict):
        return None
    if processor.get("type") == "Sequence":
        for inner in processor.get("processors", []):
            found = _template_first(inner)
            if found is not None:
                return found
        return None
    if processor.get("type") != "TemplateProcessing" or not processor.get("single"):
        return None
    first = processor["single"][0]
    if isinstance(first, dict) and "SpecialToken" in first:
        return str(first["SpecialToken"]["id"])
    return None


def tokenizer_of(model: Transformer) -> Tokenizer:
    """The tokenizer saved next to the checkpoint ``model`` was loaded from.

    :func:`jaxablate.from_hf` records the directory it read (a Hub id's snapshot) as
    ``model.hf_dir``, a plain string kept outside nnx state; this loads the tokenizer from
    there on every call (keep the result).

    Raises:
        ValueError: ``model`` was not loaded from a directory or Hub id (a toy model, or a
            ``transformers`` object), or that directory holds no ``tokenizer.json``.
    """
    if not isinstance(model, Transformer):
        raise ValueError(f"tokenizer_of needs a jaxablate Transformer, got {type(model).__name__}")
    where = getattr(model, "hf_dir", None)
    if where is None:
        raise ValueError(
            "this model was not loaded by ja.from_hf from a directory or Hub id, so no "
            "tokenizer is on record; load one with ja.load_tokenizer(NAME_OR_DIR)"
        )
    return load_tokenizer(where)


# ------------------------------------------------------------------------------ prompts


def prompts(
    tokenizer: Tokenizer,
    texts: Sequence[str],
    *,
    correct: str | int | Sequence[str | int] | None = None,
    wrong: str | int | Sequence[str | int] | None = None,
    corrupted: Sequence[str] | None = None,
    prepend_bos: bool | None = None,
    max_length: int | None = None,
    positions: Mapping[str, PositionItem | Sequence[PositionItem]] | None = None,
) -> Prompts:
    """Tokenize ``texts`` into right-padded :class:`~jaxablate.Prompts`.

    Rows are padded to the longest prompt with :attr:`Tokenizer.pad_id` (the declared pad token,
    else EOS, else 0; never read).

    Args:
        tokenizer: From :func:`load_tokenizer`.
        texts: The prompts, non-empty strings.
        correct: Each prompt's correct next token: a string, tokenized as the continuation of
            its prompt (:meth:`Tokenizer.continuation`, so no BOS, and the leading space
            counts: ``" Mary"``), or an id; one value for all prompts or one per prompt. An
            answer that is not exactly one token is refused.
        wrong: The competing token, likewise.
        corrupted: Counterfactual texts, one per prompt, tokenized the same way; each pair must
            have the same number of tokens (positions align one to one). They share the clean
            prompts' answers and positions.
        prepend_bos: Start every prompt with BOS (``None``: the tokenizer's default).
        max_length: Refuse any prompt with more tokens (e.g. the model's ``n_ctx``).
        positions: Named positions, ``name -> spec``: one int or substring for all prompts, or
            one item per prompt, each a token index (negative: from that prompt's end), a
            substring (its last token, first occurrence; :meth:`Tokenizer.locate`) or
            ``(substring, occurrence)``. ``"last"`` is always there.

    Raises:
        ValueError: texts that are not a non-empty list of non-empty strings; a prompt longer
            than ``max_length``; an answer of more or fewer than one token (named, with its
            tokens and prompt); misaligned corrupted pairs (the first, with both lengths); a
            position outside its prompt.
    """
    if not isinstance(tokenizer, Tokenizer):
        raise ValueError(
            "prompts needs a jaxablate Tokenizer (ja.load_tokenizer), got "
            f"{type(tokenizer).__name__}"
        )
    bos = tokenizer._bos(prepend_bos)
    limit = None if max_length is None else positive_int("max_length", max_length)
    clean = _tokenize(tokenizer, _texts(texts, "texts"), bos, limit, "prompt")
    batch = len(clean.ids)
    answers = {
        name: _answers(tokenizer, name, value, clean.texts)
        for name, value in (("correct", correct), ("wrong", wrong))
    }
    where = _positions(positions, clean)
    other = None
    if corrupted is not None:
        bad = _texts(corrupted, "corrupted")
        if len(bad) != batch:
            raise ValueError(f"corrupted must hold one text per prompt ({batch}), got {len(bad)}")
        dirty = _tokenize(tokenizer, bad, bos, limit, "corrupted prompt")
        for i, (a, b) in enumerate(zip(clean.ids, dirty.ids, strict=True)):
            if len(a) != len(b):
                raise ValueError(
                    f"clean and corrupted prompts must align token by token; pair {i} does not: "
                    f"{clean.texts[i]!r} has {len(a)} tokens, {dirty.texts[i]!r} has {len(b)}"
                )
        other = dirty.build(tokenizer.pad_id, answers, where)
    return clean.build(tokenizer.pad_id, answers, where, other)


@dataclass(frozen=True)
class _Batch:
    """Tokenized texts before padding: ids (BOS included), token spans (BOS excluded)."""

    texts: tuple[str, ...]
    ids: list[list[int]]
    spans: list[list[tuple[int, int]]]
    shift: int

    def build(
        self,
        pad_id: int,
        answers: Mapping[str, np.ndarray | None],
        positions: Mapping[str, np.ndarray],
        corrupted: Prompts | None = None,
    ) -> Prompts:
        lengths = np.array([len(row) for row in self.ids], np.int32)
        tokens = np.full((len(self.ids), int(lengths.max())), pad_id, np.int32)
        for i, row in enumerate(self.ids):
            tokens[i, : len(row)] = row
        return Prompts(
            tokens=tokens,
            lengths=lengths,
            correct=answers["correct"],
            wrong=answers["wrong"],
            corrupted=corrupted,
            positions=dict(positions),
            texts=self.texts,
            pad_id=pad_id,
        )


def _texts(texts: object, what: str) -> tuple[str, ...]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        hint = " (wrap a single prompt in a list)" if isinstance(texts, str) else ""
        raise ValueError(f"{what} must be a list of strings, got {type(texts).__name__}{hint}")
    if not texts:
        raise ValueError(f"{what} must hold at least one string, got an empty list")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text:
            raise ValueError(f"{what}[{i}] must be a non-empty string, got {text!r}")
    return tuple(texts)


def _tokenize(
    tok: Tokenizer, texts: tuple[str, ...], bos: bool, limit: int | None, what: str
) -> _Batch:
    ids, spans = [], []
    for i, text in enumerate(texts):
        row, offsets = tok.encoding(text)
        if not row:
            raise ValueError(f"{what} {i} ({text!r}) tokenizes to no tokens")
        row = tok._prefix(bos) + row
        if limit is not None and len(row) > limit:
            raise ValueError(
                f"{what} {i} has {len(row)} tokens, more than max_length={limit}: {text!r}"
            )
        ids.append(row)
        spans.append(offsets)
    return _Batch(texts, ids, spans, len(tok._prefix(bos)))


def _per_prompt(name: str, value: object, batch: int, single: tuple[type, ...]) -> list[Any]:
    """``value`` once per prompt: a single value repeated, or a sequence of ``batch`` items."""
    if isinstance(value, single) and not isinstance(value, bool):
        return [value] * batch
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
        raise ValueError(
            f"{name} must be one value for all prompts or a list of {batch}, got {value!r}"
        )
    items = list(value)
    if len(items) != batch:
        raise ValueError(f"{name} must hold one entry per prompt ({batch}), got {len(items)}")
    return items


def _answers(
    tok: Tokenizer, name: str, value: object, texts: tuple[str, ...]
) -> Int[np.ndarray, " batch"] | None:
    if value is None:
        return None
    items = _per_prompt(name, value, len(texts), (str, int, np.integer))
    out = np.empty(len(texts), np.int32)
    for i, (answer, text) in enumerate(zip(items, texts, strict=True)):
        if isinstance(answer, int | np.integer) and not isinstance(answer, bool):
            if not 0 <= answer < tok.vocab_size:
                raise ValueError(
                    f"{name} answer of prompt {i} is id {answer}, outside the vocabulary "
                    f"[0, {tok.vocab_size})"
                )
            out[i] = answer
            continue
        if not isinstance(answer, str) or not answer:
            raise ValueError(
                f"{name} answer of prompt {i} must be a non-empty string or an id, got {answer!r}"
            )
        ids = tok.continuation(text, answer)
        if len(ids) != 1:
            raise ValueError(
                f"{name} answer {answer!r} of prompt {i} is {len(ids)} tokens {ids} "
                f"{tok.pieces(ids)} after {text!r}, expected exactly one"
            )
        out[i] = ids[0]
    return out


def _positions(positions: Mapping[str, Any] | None, clean: _Batch) -> dict[str, np.ndarray]:
    if positions is None:
        return {}
    if not isinstance(positions, Mapping):
        raise ValueError(f"positions must be a dict name -> spec, got {type(positions).__name__}")
    out = {}
    for name, spec in positions.items():
        items = _per_prompt(f"positions[{name!r}]", spec, len(clean.ids), (str, int, np.integer))
        where = np.empty(len(items), np.int32)
        for i, item in enumerate(items):
            length = len(clean.ids[i])
            if isinstance(item, int | np.integer) and not isinstance(item, bool):
                index = int(item) + (length if item < 0 else 0)
                if not 0 <= index < length:
                    raise ValueError(
                        f"positions[{name!r}] of prompt {i} is {int(item)}, outside its "
                        f"{length} tokens"
                    )
            else:
                sub, k = item if isinstance(item, tuple) and len(item) == 2 else (item, 0)
                if not isinstance(sub, str) or not isinstance(k, int):
                    raise ValueError(
                        f"positions[{name!r}] of prompt {i} must be an int, a substring or "
                        f"(substring, occurrence), got {item!r}"
                    )
                index = clean.shift + _locate(clean.texts[i], clean.spans[i], sub, k)
            where[i] = index
        out[name] = where
    return out
