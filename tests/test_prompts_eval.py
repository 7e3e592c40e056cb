"""Right-padded prompts: every evaluation equals each prompt evaluated alone, unpadded.

Nothing may read a pad position: per-example last-position metrics, mean ablation over padded
references, resample from paired corrupted prompts, and pad-skipping all-position metrics are
checked against per-prompt evaluations (and, for patching, against torch hooks).
"""

import jax
import numpy as np
import pytest
from flax import nnx

import jaxablate as ja

LENGTHS = np.array([5, 8, 3, 7])
SEQ = 8


def _model(**kw) -> ja.Transformer:
    base = dict(
        n_layers=3, n_heads=4, d_model=32, d_head=8, d_mlp=48, vocab_size=37, n_ctx=16, init_std=0.3
    )
    return ja.Transformer(ja.ModelConfig(**(base | kw)), rngs=nnx.Rngs(3))


MODELS = {
    "gpt2": lambda: _model(),
    "llama": lambda: _model(
        norm="rmsnorm", positions="rotary", gated_mlp=True, act_fn="silu", n_kv_heads=2
    ),
}


def _prompts(vocab: int, seed: int = 0, lengths=LENGTHS) -> ja.Prompts:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, vocab, (len(lengths), SEQ)).astype(np.int32)
    corrupt = rng.integers(1, vocab, (len(lengths), SEQ)).astype(np.int32)
    valid = np.arange(SEQ)[None] < np.asarray(lengths)[:, None]
    tokens, corrupt = np.where(valid, tokens, 0), np.where(valid, corrupt, 0)
    return ja.Prompts(
        tokens=tokens,
        lengths=lengths,
        correct=rng.integers(0, vocab, len(lengths)),
        wrong=rng.integers(0, vocab, len(lengths)),
        corrupted=ja.Prompts(tokens=corrupt, lengths=lengths),
        positions={"second": np.ones(len(lengths), np.int32)},
    )


def _comps(cfg: ja.ModelConfig, kind: str) -> ja.Components:
    if kind == "heads":
        return ja.heads(cfg, layers=[0, 2], heads=[0, 1, 3])
    if kind == "heads+blocks":  # heads and both kinds of block in one set (one program)
        return _comps(cfg, "heads") + ja.blocks(cfg, "attn", layers=[1]) + _comps(cfg, "mlp")
    if kind == "mlp":
        return ja.blocks(cfg, "mlp", layers=[0, 1])
    return ja.blocks(cfg, "attn") + ja.blocks(cfg, "mlp", layers=[0, 1])


def _rows(n: int) -> np.ndarray:
    rows = np.random.default_rng(1).random((6, n)) < 0.5
    return np.concatenate([rows, np.ones((1, n), bool), np.zeros((1, n), bool)])


def _alone(model, comps, rows, p, ablation_kind, metric_of, i):
    """The metric of prompt ``i`` evaluated alone, unpadded."""
    n = int(p.lengths[i])
    tokens = p.tokens[i : i + 1, :n]
    if ablation_kind == "resample":
        abl = ja.ablation.resample(model, p.corrupted.tokens[i : i + 1, :n])
    else:
        abl = ABLATIONS[ablation_kind](model, p)
    return ja.evaluate_per_example(model, comps, rows, tokens, metric=metric_of(p, i), ablation=abl)


ABLATIONS = {
    "zero": lambda model, p: ja.ablation.zero(),
    "mean": lambda model, p: ja.ablation.mean(model, p),
    "mean_per_position": lambda model, p: ja.ablation.mean(model, p, per_position=True),
    "resample": lambda model, p: ja.ablation.resample(model, p.corrupted),
}


def _check_ragged(name, kind, ablation_kind, share_prefix):
    model = MODELS[name]()
    p = _prompts(model.config.vocab_size)
    comps = _comps(model.config, kind)
    rows = _rows(len(comps))
    abl = ABLATIONS[ablation_kind](model, p)
    metric = ja.metrics.logit_diff(p.correct, p.wrong, position="last")
    got = ja.evaluate_per_example(
        model, comps, rows, p, metric=metric, ablation=abl, share_prefix=share_prefix
    )

    def metric_of(p, i):
        return ja.metrics.logit_diff(int(p.correct[i]), int(p.wrong[i]))

    want = np.concatenate(
        [_alone(model, comps, rows, p, ablation_kind, metric_of, i) for i in range(len(p))], 1
    )
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert np.ptp(got, axis=0).max() > 1e-3  # the rows differ: the check has teeth


# heads and blocks in one component set: one program per case for the padded batch and one per
# prompt length for the references
@pytest.mark.parametrize("ablation_kind", list(ABLATIONS))
def test_ragged_last_position_equals_each_prompt_alone(ablation_kind):
    _check_ragged("gpt2", "heads+blocks", ablation_kind, share_prefix=True)


@pytest.mark.slow
@pytest.mark.parametrize("ablation_kind", list(ABLATIONS))
@pytest.mark.parametrize(("name", "share_prefix"), [("gpt2", False), ("llama", True)])
def test_ragged_other_paths_and_families(name, share_prefix, ablation_kind):
    _check_ragged(name, "heads+blocks", ablation_kind, share_prefix)


def _log_softmax64(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_pad_skipping_metrics_equal_each_prompt_alone():
    """Both evaluation paths (prefix sharing and naive) against each prompt alone: its masked
    logits from the model (one vmapped forward over the rows per prompt length) and the
    metrics in float64 numpy, over the prompt's real positions only."""
    model = MODELS["llama"]()
    p = _prompts(model.config.vocab_size, seed=4)
    comps = _comps(model.config, "heads")
    rows = _rows(len(comps))
    graphdef, state = nnx.split(model)

    @jax.jit
    def masked_logits(state, tokens, masks):
        return jax.vmap(lambda m: nnx.merge(graphdef, state)(tokens, masks=m))(masks)

    want = {"loss": [], "accuracy": [], "kl_to_clean": []}
    for i, n in enumerate(p.lengths):
        tokens = p.tokens[i : i + 1, :n]
        logp = _log_softmax64(masked_logits(state, tokens, comps.masks(rows))[:, 0])  # [M, n, V]
        clean = _log_softmax64(model(tokens)[0])
        targets = tokens[0, 1:]
        picked = np.take_along_axis(logp[:, :-1], targets[None, :, None], axis=-1)[..., 0]
        want["loss"].append(-picked.mean(-1))
        want["accuracy"].append((logp[:, :-1].argmax(-1) == targets).mean(-1))
        want["kl_to_clean"].append((np.exp(clean) * (clean - logp)).sum(-1).mean(-1))
    for metric in (ja.metrics.loss, ja.metrics.accuracy, ja.metrics.kl_to_clean(model, p)):
        reference = np.stack(want[metric.name], 1)  # [M, prompts]
        for share in (True, False):
            got = ja.evaluate_per_example(model, comps, rows, p, metric=metric, share_prefix=share)
            np.testing.assert_allclose(got, reference, atol=1e-5, rtol=0, err_msg=f"{share=}")
        assert np.ptp(reference, axis=0).max() > 1e-3  # the rows differ: the check has teeth


def test_named_and_negative_positions_are_per_prompt():
    model = MODELS["gpt2"]()
    p = _prompts(model.config.vocab_size, seed=2)
    comps = _comps(model.config, "heads")
    rows = _rows(len(comps))
    logits = np.asarray(model(p.tokens, masks=None))
    for position, index in (("second", np.ones(4, int)), (-2, p.lengths - 2), ("last", p.last)):
        metric = ja.metrics.logit_diff(p.correct, p.wrong, position=position)
        got = ja.evaluate_per_example(model, comps, rows[-2:-1], p, metric=metric)[0]
        at = logits[np.arange(4), index]
        want = at[np.arange(4), p.correct] - at[np.arange(4), p.wrong]
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_mean_over_padded_prompts_is_the_mean_of_real_positions():
    model = MODELS["llama"]()
    # two prompts share a length (three per-prompt programs), the counts per position still differ
    p = _prompts(model.config.vocab_size, seed=3, lengths=np.array([5, 8, 5, 3]))
    acts = [model.activations(p.tokens[i : i + 1, :n]) for i, n in enumerate(p.lengths)]
    for name in ("z", "attn", "mlp"):
        real = np.concatenate([np.asarray(getattr(a, name), np.float64)[:, 0] for a in acts], 1)
        want = real.mean(axis=1)  # over every real position of every prompt
        got = np.asarray(getattr(ja.ablation.mean(model, p, batch_size=3), name))[:, 0, 0]
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
        per_pos = np.asarray(getattr(ja.ablation.mean(model, p, per_position=True), name))
        for t in (0, 4, 7):
            rows_t = [
                np.asarray(getattr(a, name))[:, 0, t]
                for a, n in zip(acts, p.lengths, strict=True)
                if n > t
            ]
            np.testing.assert_allclose(per_pos[:, 0, t], np.mean(rows_t, 0), atol=1e-5, rtol=0)


def test_fast_columns_equal_full_logits_then_indexed():
    """The evaluator's sliced unembedding (two columns per example) equals full logits."""
    model = _model(tie_embeddings=True)
    p = _prompts(model.config.vocab_size, seed=5)
    comps = _comps(model.config, "heads")
    rows = _rows(len(comps))
    metric = ja.metrics.logit_diff(p.correct, p.wrong)
    assert metric.columns is not None and metric.columns.shape[0] <= 8
    fast = ja.evaluate_per_example(model, comps, rows, p, metric=metric)
    for r, row in enumerate(rows):
        logits = np.asarray(model(p.tokens, masks=comps.masks(row)))
        at = logits[np.arange(4), p.last]
        want = at[np.arange(4), p.correct] - at[np.arange(4), p.wrong]
        np.testing.assert_allclose(fast[r], want, atol=1e-5, rtol=0)


def test_answer_metrics_against_numpy():
    model = MODELS["gpt2"]()
    p = _prompts(model.config.vocab_size, seed=6)
    comps = _comps(model.config, "blocks")
    rows = _rows(len(comps))[:2]
    for row in rows:
        at = np.asarray(model(p.tokens, masks=comps.masks(row)), np.float64)[np.arange(4), p.last]
        logp = (
            at
            - np.log(np.exp(at - at.max(-1, keepdims=True)).sum(-1, keepdims=True))
            - at.max(-1, keepdims=True)
        )
        b = np.arange(4)
        expected = {
            "logprob": logp[b, p.correct],
            "prob": np.exp(logp[b, p.correct]),
            "pair": (at[b, p.correct] > at[b, p.wrong]).astype(float),
            "argmax": (at.argmax(-1) == p.correct).astype(float),
        }
        metrics = {
            "logprob": ja.metrics.logprob(p.correct),
            "prob": ja.metrics.prob(p.correct),
            "pair": ja.metrics.answer_accuracy(p.correct, p.wrong),
            "argmax": ja.metrics.answer_accuracy(p.correct),
        }
        for key, metric in metrics.items():
            got = ja.evaluate_per_example(model, comps, row[None], p, metric=metric)[0]
            np.testing.assert_allclose(got, expected[key], atol=1e-5, rtol=0, err_msg=key)


def test_bad_prompt_inputs_are_refused():
    model = MODELS["gpt2"]()
    cfg = model.config
    p = _prompts(cfg.vocab_size)
    comps = _comps(cfg, "heads")
    rows = _rows(len(comps))[:1]
    ev = lambda metric: ja.evaluate(model, comps, rows, p, metric=metric)  # noqa: E731
    with pytest.raises(ValueError, match="position 4 lies outside prompt 2, which has 3 tokens"):
        ev(ja.metrics.logit_diff(1, 2, position=4))
    with pytest.raises(ValueError, match="unknown position 'S1'"):
        ev(ja.metrics.logit_diff(1, 2, position="S1"))
    with pytest.raises(ValueError, match="holds 3 per-example answers, but the batch has 4"):
        ev(ja.metrics.logit_diff(np.array([1, 2, 3]), 4))
    with pytest.raises(ValueError, match=r"token ids in \[0, 37\)"):
        ev(ja.metrics.logit_diff(np.array([1, 2, 3, 99]), 4))
    with pytest.raises(ValueError, match=r"answers must be token ids in \[0, 37\)"):
        ev(ja.metrics.logprob(40))
    with pytest.raises(ValueError, match="int token id or a 1-D"):
        ja.metrics.logit_diff(1.5, 2)
    with pytest.raises(ValueError, match="non-negative"):
        ja.metrics.logit_diff(-1, 2)
    with pytest.raises(ValueError, match="reads every position, and these prompts are padded"):
        ev(lambda logits, tokens: logits.mean((1, 2)))
    with pytest.raises(ValueError, match="align position by position"):
        ja.Prompts(tokens=p.tokens, lengths=p.lengths, corrupted=ja.Prompts(p.tokens, [5, 8, 4, 7]))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 8\]"):
        ja.Prompts(tokens=p.tokens, lengths=[0, 8, 3, 7])
    with pytest.raises(ValueError, match="non-empty 2-D"):
        ja.Prompts(tokens=np.zeros((0, 3), np.int32), lengths=np.zeros(0, np.int32))
    short = ja.Prompts(tokens=p.tokens, lengths=[1, 8, 3, 7])
    with pytest.raises(ValueError, match="prompt 0 has 1 token"):
        ja.evaluate(model, comps, rows, short, metric=ja.metrics.loss)


# ------------------------------------------------------------------ position-level components
def _reference_masks(cfg, p, spec_index, head=None, block=None):
    """float64 reference masks that zero one component at each prompt's chosen position."""
    L, H, b, s = cfg.n_layers, cfg.n_heads, p.batch, p.seq
    head_mask, attn_mask = np.ones((L, H, b, s)), np.ones((L, b, s))
    if head is not None:
        head_mask[head[0], head[1], np.arange(b), spec_index] = 0.0
    if block is not None:
        attn_mask[block, np.arange(b), spec_index] = 0.0
    return head_mask, attn_mask


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_position_level_masks_equal_a_reference_that_patches_that_position(name):
    from tests._reference import reference_logits

    model = MODELS[name]()
    cfg = model.config
    p = _prompts(cfg.vocab_size, seed=8)
    specs = (("last", p.last), ("second", np.ones(4, int)), (-3, p.lengths - 3))

    def pair(spec):
        return ja.heads(cfg, layers=[1], heads=[2], positions=spec) + ja.blocks(
            cfg, "attn", layers=[0], positions=spec
        )

    comps = pair("last") + pair("second") + pair(-3)  # one set: one program per path
    assert comps.names == [n for spec, _ in specs for n in (f"L1H2@{spec}", f"L0.attn@{spec}")]
    rows, wants = [], []
    valid, clean = p.valid, np.asarray(model(p.tokens))
    for k, (spec, index) in enumerate(specs):
        for j, head, block in ((0, (1, 2), None), (1, None, 0)):  # remove the head, the block
            row = np.ones(len(comps), bool)
            row[2 * k + j] = False
            hm, am = _reference_masks(cfg, p, index, head, block)
            want = reference_logits(model, p.tokens, head_mask=hm, attn_mask=am)
            got = np.asarray(model(p.tokens, masks=comps.masks(row, p)))
            np.testing.assert_allclose(got[valid], want[valid], atol=2e-4, rtol=0, err_msg=spec)
            assert np.abs(got[valid] - clean[valid]).max() > 1e-3
            rows.append(row)
            wants.append(want)
    metric = ja.metrics.logit_diff(p.correct, p.wrong, position="last")
    for share in (True, False):
        values = ja.evaluate_per_example(
            model, comps, np.array(rows), p, metric=metric, share_prefix=share
        )
        for r, want in enumerate(wants):
            at = want[np.arange(4), p.last]
            np.testing.assert_allclose(
                values[r], at[np.arange(4), p.correct] - at[np.arange(4), p.wrong], atol=2e-4
            )


def test_a_head_at_every_position_is_the_plain_head():
    model = MODELS["gpt2"]()
    cfg = model.config
    p = _prompts(cfg.vocab_size, seed=9, lengths=np.full(4, SEQ))  # every position is real
    every = ja.heads(cfg, layers=[0, 2], heads=[1], positions=list(range(SEQ)))
    plain = ja.heads(cfg, layers=[0, 2], heads=[1])
    rows_plain = np.array([[False, True], [True, False], [False, False]])
    rows_every = np.repeat(rows_plain, SEQ, axis=1)  # layer-major, then position
    metric = ja.metrics.logit_diff(p.correct, p.wrong)
    for abl in (ja.ablation.zero(), ja.ablation.resample(model, p.corrupted)):
        got = ja.evaluate_per_example(model, every, rows_every, p, metric=metric, ablation=abl)
        want = ja.evaluate_per_example(model, plain, rows_plain, p, metric=metric, ablation=abl)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_resample_at_one_position_patches_that_position_only():
    """Patching L1H2 from the corrupted prompt at "last" alone equals a replacement that is the
    clean activation everywhere except each prompt's last position (with the head removed)."""
    model = MODELS["llama"]()
    cfg = model.config
    p = _prompts(cfg.vocab_size, seed=10)
    clean, corrupt = model.activations(p.tokens), model.activations(p.corrupted.tokens)
    sel = np.zeros((4, SEQ, 1, 1), bool)
    sel[np.arange(4), p.last] = True
    z = np.where(sel[None], np.asarray(corrupt.z), np.asarray(clean.z))
    patched = ja.Ablation(z=z, kind="hand-patched")
    positional = ja.heads(cfg, layers=[1], heads=[2], positions="last")
    plain = ja.heads(cfg, layers=[1], heads=[2])
    metric = ja.metrics.logit_diff(p.correct, p.wrong)
    abl = ja.ablation.resample(model, p.corrupted)
    got = ja.evaluate_per_example(
        model, positional, np.array([[False]]), p, metric=metric, ablation=abl
    )
    want = ja.evaluate_per_example(
        model, plain, np.array([[False]]), p, metric=metric, ablation=patched
    )
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    kept = ja.evaluate_per_example(model, plain, np.array([[True]]), p, metric=metric)
    assert np.abs(got - kept).max() > 1e-4


def test_position_level_components_are_checked():
    model = MODELS["gpt2"]()
    cfg = model.config
    p = _prompts(cfg.vocab_size)
    comps = ja.heads(cfg, layers=[1], positions="S9")
    with pytest.raises(ValueError, match="unknown position 'S9'"):
        ja.evaluate(model, comps, np.ones((1, len(comps)), bool), p)
    with pytest.raises(ValueError, match="pass the tokens"):
        comps.masks(np.ones(len(comps), bool))
    with pytest.raises(ValueError, match="position must be an int, 'last' or a position name"):
        ja.heads(cfg, layers=[1], positions=[1.5])
    with pytest.raises(ValueError, match=r"layers must be ints, got 0\.7"):
        ja.heads(cfg, [0.7])
    with pytest.raises(ValueError, match="does not support position-level components"):
        ja.learn_masks(
            model,
            ja.heads(cfg, [0], positions="last"),
            p.tokens,
            sparsity=[0.1],
            steps=1,
            key=__import__("jax").random.key(0),
        )
    with pytest.raises(ValueError, match="position 6 lies outside prompt 0, which has 5 tokens"):
        ja.evaluate(
            model,
            ja.heads(cfg, [0], positions=6),
            np.ones((1, 4), bool),
            p,
            metric=ja.metrics.logit_diff(p.correct, p.wrong),
        )
