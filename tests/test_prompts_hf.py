"""Activation patching from paired corrupted prompts against torch hooks on a tiny Llama.

The reference runs the transformers model on the corrupted prompts, captures every component's
output, then runs the clean prompts with hooks that blend ``m * c + (1 - m) * r`` (see
tests/test_family_ablation.py), on the right-padded batch as a whole.
"""

import numpy as np
import pytest

import jaxablate as ja
from tests.test_families import _build as build_case
from tests.test_family_ablation import _split, capture, hooked_logits

SEQ = 10
LENGTHS = np.array([10, 6, 8])


@pytest.fixture(scope="module")
def llama():
    hf = build_case("llama-gqa-llama3")
    return hf, ja.from_hf(hf)


def _prompts(vocab: int) -> ja.Prompts:
    rng = np.random.default_rng(11)
    valid = np.arange(SEQ)[None] < LENGTHS[:, None]
    clean = np.where(valid, rng.integers(1, vocab, (3, SEQ)), 0)
    corrupt = np.where(valid, rng.integers(1, vocab, (3, SEQ)), 0)
    return ja.Prompts(
        tokens=clean,
        lengths=LENGTHS,
        correct=rng.integers(0, vocab, 3),
        wrong=rng.integers(0, vocab, 3),
        corrupted=ja.Prompts(tokens=corrupt, lengths=LENGTHS),
    )


def test_resample_from_corrupted_prompts_matches_torch_patching(llama):
    hf, model = llama
    cfg = model.config
    p = _prompts(cfg.vocab_size)
    comps = ja.heads(cfg) + ja.blocks(cfg, "mlp")
    rows = np.random.default_rng(3).random((4, len(comps))) < 0.5
    metric = ja.metrics.logit_diff(p.correct, p.wrong, position="last")
    abl = ja.ablation.resample(model, p.corrupted)
    got = ja.evaluate_per_example(model, comps, rows, p, metric=metric, ablation=abl)
    repl = capture(hf, p.corrupted.tokens)
    b = np.arange(3)
    for r, row in enumerate(rows):
        logits = hooked_logits(hf, p.tokens, _split(comps, row), repl)[b, p.last]
        want = logits[b, p.correct] - logits[b, p.wrong]
        np.testing.assert_allclose(got[r], want, atol=2e-4, rtol=0)
    clean = ja.evaluate_per_example(model, comps, np.ones((1, len(comps)), bool), p, metric=metric)
    assert np.abs(got - clean).max() > 1e-3  # the patching mattered
