"""Tiny tokenizers laid out like the real Hub repos of each family (built offline, in the test).

Each family's files copy the real repo's choices that decide BOS/EOS/pad: what
``tokenizer_config.json`` declares (or omits), the post-processor of ``tokenizer.json``, and the
ids ``config.json`` holds (GPT-2 declares its BOS only there; Qwen's ``bos_token`` is null).
The vocabularies are trained with ``tokenizers`` on a small corpus of IOI-style sentences, so the
template words and the common names are single tokens and a rare name is not.
"""

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from jaxablate.datasets import NAMES, OBJECTS, PLACES, TEMPLATES

#: A name that appears once in the corpus, so it stays several tokens.
RARE = "Bartholomew"

FAMILIES = ("gpt2", "pythia", "llama2", "llama3", "gemma", "qwen")


def corpus() -> list[str]:
    lines = []
    for t, template in enumerate(TEMPLATES):
        for i, name in enumerate(NAMES):
            other = NAMES[(i + 1 + t) % len(NAMES)]
            text = template.format(
                IO=name,
                S=other,
                PLACE=PLACES[(i + t) % len(PLACES)],
                OBJECT=OBJECTS[(i + 2 * t) % len(OBJECTS)],
            )
            lines.append(f"{text} {name}.")
    lines += ["The cat sat on the mat. Tom and Mary like tea.", f"{RARE} came."]
    return lines * 2


def _byte_level(specials: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=3000,
        min_frequency=3,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def _sentencepiece(specials: list[str]) -> Tokenizer:
    """Like a converted SentencePiece model: Metaspace only, and (as SentencePiece splits
    scripts when it trains) no merge joins a word and a punctuation mark."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    metaspace = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.pre_tokenizer = pre_tokenizers.Sequence([metaspace, pre_tokenizers.Punctuation()])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=3000, min_frequency=3, special_tokens=specials, show_progress=False
    )
    tok.train_from_iterator(corpus(), trainer)
    tok.pre_tokenizer = metaspace  # type: ignore[assignment]
    return tok


def _template(bos: str, tok: Tokenizer) -> processors.TemplateProcessing:
    return processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
    )


def _write(root: Path, name: str, value: dict) -> None:
    (root / name).write_text(json.dumps(value))


def make_tokenizer(root: Path, family: str) -> Path:
    """Write ``family``'s tokenizer files (and a ``config.json`` with its token ids) to ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    eot = "<|endoftext|>"
    if family in ("gpt2", "pythia", "qwen"):
        tok = _byte_level([eot, "<|im_start|>"] if family == "qwen" else [eot])
        config = {"model_type": family, "bos_token_id": 0, "eos_token_id": 0}
        if family == "gpt2":  # the real gpt2 repo: nothing but the max length
            tokenizer_config = {"model_max_length": 1024}
        elif family == "pythia":
            tokenizer_config = {"add_bos_token": False, "bos_token": eot, "eos_token": eot}
            _write(root, "special_tokens_map.json", {"bos_token": eot, "eos_token": eot})
        else:  # qwen: no BOS although config.json names one
            tokenizer_config = {"bos_token": None, "eos_token": eot, "pad_token": eot}
    elif family == "llama3":
        bos, eos = "<|begin_of_text|>", "<|end_of_text|>"
        tok = _byte_level([bos, eos])
        tok.post_processor = processors.Sequence(  # type: ignore[assignment]
            [processors.ByteLevel(trim_offsets=False), _template(bos, tok)]
        )
        tokenizer_config = {"bos_token": bos, "eos_token": eos}  # no add_bos_token key
        config = {"model_type": "llama", "bos_token_id": 0, "eos_token_id": 1}
    else:  # llama2, gemma: sentencepiece BPE, add_bos_token in the config, <s>/<bos> template
        bos, eos = ("<s>", "</s>") if family == "llama2" else ("<bos>", "<eos>")
        tok = _sentencepiece(["<unk>", bos, eos] + (["<pad>"] if family == "gemma" else []))
        tok.post_processor = _template(bos, tok)  # type: ignore[assignment]
        tokenizer_config = {
            "add_bos_token": True,
            "add_eos_token": False,
            "bos_token": {
                "__type": "AddedToken",
                "content": bos,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
            },
            "eos_token": eos,
            "pad_token": "<pad>" if family == "gemma" else None,
            "unk_token": "<unk>",
        }
        config = {"model_type": family, "bos_token_id": 1, "eos_token_id": 2}
    tok.save(str(root / "tokenizer.json"))
    _write(root, "tokenizer_config.json", tokenizer_config)
    _write(root, "config.json", config)
    return root
