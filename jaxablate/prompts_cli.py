"""``jaxablate sweep --prompts FILE.jsonl``: prompts from text instead of a ``.npy`` of tokens.

Each line of the file is a JSON object::

    {"clean": "When Mary and John went to the store, John gave a drink to",
     "corrupted": "When Alice and Bob went to the store, Sam gave a drink to",
     "correct": " Mary", "wrong": " John"}

``clean`` is required; ``corrupted``, ``correct`` and ``wrong`` are optional, but each is on
every line or on none. Answers are strings (one token each, continuing the prompt: mind the
leading space) or token ids. The tokenizer is ``--tokenizer`` (a directory or Hub id), by
default the model's own (:func:`jaxablate.tokenizer_of`, for a ``--model`` that is a Hugging
Face directory or Hub id). With ``--prompts`` the default metric is ``logit_diff``: each
prompt's correct minus wrong logit at its last token; ``--ablation resample`` takes its
sources from the corrupted prompts.
"""

import argparse
import json
from pathlib import Path
from typing import Any

import jax.numpy as jnp

from jaxablate import metrics as metrics_lib
from jaxablate._prompts import Prompts
from jaxablate.models.transformer import Transformer
from jaxablate.text import Tokenizer, load_tokenizer, prompts, tokenizer_of

FIELDS = ("clean", "corrupted", "correct", "wrong")


def add_prompt_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``--prompts`` and ``--tokenizer`` (``jaxablate sweep``)."""
    parser.add_argument(
        "--prompts",
        help=".jsonl file of prompts (fields clean, corrupted, correct, wrong), instead of "
        "--tokens; default metric logit_diff (correct minus wrong at each prompt's last token)",
    )
    parser.add_argument(
        "--tokenizer",
        help="tokenizer directory or Hub id for --prompts (default: the model's own, when "
        "--model is a Hugging Face directory or Hub id)",
    )


def read_prompts_file(path: str) -> dict[str, list[Any]]:
    """The fields of a ``.jsonl`` prompts file, one list per field present (blank lines skipped).

    Raises:
        ValueError: unreadable file, a line that is not a JSON object, an unknown field, a line
            without ``clean``, or an optional field on some lines only (the first line
            without it is named).
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"--prompts {path}: cannot read the file ({err})") from None
    rows: list[tuple[int, dict[str, Any]]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"--prompts {path}:{number}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict) or "clean" not in row:
            raise ValueError(
                f"--prompts {path}:{number}: expected a JSON object with a 'clean' field, got "
                f"{line.strip()[:80]}"
            )
        unknown = sorted(set(row) - set(FIELDS))
        if unknown:
            raise ValueError(
                f"--prompts {path}:{number}: unknown fields {unknown}; the fields are "
                f"{list(FIELDS)}"
            )
        rows.append((number, row))
    if not rows:
        raise ValueError(f"--prompts {path} holds no prompts (one JSON object per line)")
    out = {"clean": [row["clean"] for _, row in rows]}
    for name in FIELDS[1:]:
        having = [number for number, row in rows if name in row]
        if having and len(having) < len(rows):
            missing = next(number for number, row in rows if name not in row)
            raise ValueError(
                f"--prompts {path}:{missing}: no {name!r} field, which line {having[0]} has; "
                "give it on every line or on none"
            )
        if having:
            out[name] = [row[name] for _, row in rows]
    return out


def _tokenizer(args: argparse.Namespace, model: Transformer) -> Tokenizer:
    if args.tokenizer is not None:
        return load_tokenizer(args.tokenizer)
    try:
        return tokenizer_of(model)
    except ValueError as err:
        raise ValueError(
            f"--prompts needs --tokenizer NAME_OR_DIR: --model {args.model} has no tokenizer "
            f"of its own ({err})"
        ) from None


def load_prompts(args: argparse.Namespace, model: Transformer) -> Prompts | None:
    """The prompts of ``--prompts``, tokenized for ``model`` (``None`` without ``--prompts``).

    Raises:
        ValueError: both or neither of ``--tokens`` and ``--prompts``; ``--tokenizer`` without
            ``--prompts``; a bad file or prompt (see :func:`read_prompts_file` and
            :func:`jaxablate.prompts`); no tokenizer to be found.
    """
    if (args.tokens is None) == (args.prompts is None):
        raise ValueError("give the inputs as --tokens FILE.npy or as --prompts FILE.jsonl (one)")
    if args.prompts is None:
        if args.tokenizer is not None:
            raise ValueError("--tokenizer applies to --prompts, not to --tokens")
        return None
    fields = read_prompts_file(args.prompts)
    tok = _tokenizer(args, model)
    try:
        return prompts(
            tok,
            fields["clean"],
            correct=fields.get("correct"),
            wrong=fields.get("wrong"),
            corrupted=fields.get("corrupted"),
            max_length=model.config.n_ctx,
        )
    except ValueError as err:
        raise ValueError(f"--prompts {args.prompts} (prompt i = i-th JSON line): {err}") from None


def answer_metric(tokens: object) -> metrics_lib.Metric:
    """``--metric logit_diff``: each prompt's correct minus wrong logit at its last token.

    Raises:
        ValueError: not prompts with both answers (``--tokens`` takes
            ``logit_diff:CORRECT:WRONG``).
    """
    if not isinstance(tokens, Prompts) or tokens.correct is None or tokens.wrong is None:
        raise ValueError(
            "--metric logit_diff needs --prompts whose lines give 'correct' and 'wrong' "
            "answers; with --tokens use logit_diff:CORRECT:WRONG[:POSITION] (token ids)"
        )
    return metrics_lib.logit_diff(
        jnp.asarray(tokens.correct), jnp.asarray(tokens.wrong), position="last"
    )


def resample_source(tokens: Prompts, ref: object) -> Prompts:
    """``--ablation resample`` with ``--prompts``: the corrupted prompts.

    Raises:
        ValueError: ``--ref-tokens`` given too, or prompts without corrupted texts.
    """
    if ref is not None:
        raise ValueError(
            "--ref-tokens does not combine with --prompts for resample: the sources are the "
            "prompts' 'corrupted' texts"
        )
    if tokens.corrupted is None:
        raise ValueError(
            "--ablation resample with --prompts needs a 'corrupted' text on every line"
        )
    return tokens.corrupted
