"""Metrics that read a few positions: the pruned evaluation against full forwards."""

import numpy as np
import pytest
from flax import nnx

import jaxablate as ja
from jaxablate import _evaluate as evaluate_module
from jaxablate._evaluate import _tree_chunk
from jaxablate.tasks import PositionAccuracy, PositionLoss

SEQ = 10


@pytest.fixture(scope="module")
def model():
    cfg = ja.ModelConfig(
        n_layers=3, n_heads=2, d_model=16, d_head=8, d_mlp=32, vocab_size=23, n_ctx=12, init_std=0.3
    )
    return ja.Transformer(cfg, rngs=nnx.Rngs(3))


@pytest.fixture(scope="module")
def tokens():
    return np.random.default_rng(5).integers(0, 23, (3, SEQ)).astype(np.int32)


def _metrics():
    return {
        "logit_diff_last": ja.metrics.logit_diff(3, np.array([4, 5, 6])),
        "logit_diff_mid": ja.metrics.logit_diff(7, 1, position=4),
        "loss_span": PositionLoss(2, 6),
        "accuracy_span": PositionAccuracy(0, 3),
    }


def _comps(cfg, which):
    return {
        # the heads of the first and of the last layer, an attention block and every MLP: its
        # rows include ones that vary the last layer alone (the whole prefix shared) and ones
        # that vary the first layer alone (see _rows)
        "spread": ja.heads(cfg, layers=[0, 2])
        + ja.blocks(cfg, "attn", layers=[1])
        + ja.blocks(cfg, "mlp"),
        "mixed": ja.blocks(cfg, "attn", layers=[0])
        + ja.heads(cfg, layers=[1])
        + ja.blocks(cfg, "mlp"),
    }[which]


def _rows(comps):
    """11 random rows; rows 0-2 keep every component before the last layer, rows 3-5 every
    component after the first."""
    rows = np.random.default_rng(0).random((11, len(comps))) < 0.5
    layer = np.array([c.layer for c in comps])
    rows[:3, layer < 2] = True
    rows[3:6, layer > 0] = True
    return rows


def _ablation(model, tokens, kind):
    if kind == "zero":
        return None
    if kind == "mean":
        return ja.ablation.mean(model, tokens)
    return ja.ablation.resample(model, tokens[::-1])


#: One component set per ablation: the zero case's "spread" set covers first-layer heads, last-layer
#: heads (pruned to the read positions), an attention block and the MLPs in one program.
CASES = [("spread", "zero"), ("mixed", "mean"), ("mixed", "resample")]


@pytest.mark.slow
@pytest.mark.parametrize(("which", "kind"), CASES)
@pytest.mark.parametrize("metric_name", list(_metrics()))
def test_position_metrics_equal_full_forward(model, tokens, which, metric_name, kind):
    comps = _comps(model.config, which)
    metric = _metrics()[metric_name]
    ablation = _ablation(model, tokens, kind)
    rows = _rows(comps)
    pruned = ja.evaluate_per_example(model, comps, rows, tokens, metric=metric, ablation=ablation)
    naive = ja.evaluate_per_example(
        model, comps, rows, tokens, metric=metric, ablation=ablation, share_prefix=False
    )
    np.testing.assert_allclose(pruned, naive, rtol=1e-5, atol=1e-6)
    # an independent reference: the model's full logits, then the metric in numpy
    replacement = ablation
    for i in (0, 5, 10):  # a last-layer-only row, a first-layer-only row and a random one
        logits = np.asarray(model(tokens, masks=comps.masks(rows[i]), ablation=replacement))
        np.testing.assert_allclose(
            pruned[i], _numpy_metric(metric_name, logits, tokens), rtol=1e-5, atol=1e-5
        )


def _numpy_metric(name, logits, tokens):
    logits = logits.astype(np.float64)
    rows = np.arange(logits.shape[0])
    if name == "logit_diff_last":
        return logits[rows, -1, 3] - logits[rows, -1, [4, 5, 6]]
    if name == "logit_diff_mid":
        return logits[:, 4, 7] - logits[:, 4, 1]
    if name == "loss_span":
        span = logits[:, 2:6]
        logp = span - np.log(np.exp(span).sum(-1, keepdims=True))
        target = tokens[:, 3:7]
        return -np.take_along_axis(logp, target[..., None], -1)[..., 0].mean(-1)
    assert name == "accuracy_span"
    return (logits[:, 0:3].argmax(-1) == tokens[:, 1:4]).mean(-1)


@pytest.mark.slow
def test_pruning_cuts_the_compiled_work(model, tokens, monkeypatch):
    """A last-position metric compiles to far fewer FLOPs than the all-position loss."""
    comps = ja.heads(model.config, layers=[2])
    rows = ja.subsets.all(len(comps))
    lowered = []

    def capture(*args, **kwargs):
        lowered.append(_tree_chunk.lower(*args, **kwargs))
        return _tree_chunk(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "_tree_chunk", capture)
    flops = {}
    for name, metric in (("loss", ja.metrics.loss), ("last", ja.metrics.logit_diff(3, 4))):
        ja.evaluate(model, comps, rows, tokens, metric=metric, chunk_size=4)
        cost = lowered[-1].compile().cost_analysis()
        flops[name] = float((cost[0] if isinstance(cost, list) else cost)["flops"])
    assert flops["last"] < 0.6 * flops["loss"], flops


def test_metric_positions_are_checked(model, tokens):
    comps = ja.heads(model.config, layers=[2])
    rows = np.ones((1, len(comps)), bool)
    with pytest.raises(ValueError, match=r"reads positions \[12\].*outside sequences of 10"):
        ja.evaluate(model, comps, rows, tokens, metric=ja.metrics.logit_diff(1, 2, position=12))
    with pytest.raises(ValueError, match="non-empty tuple of ints"):
        ja.metrics.Metric(data=None, fn=lambda logits, tokens, data: logits[:, 0, 0], positions=())
    with pytest.raises(ValueError, match="non-empty tuple of ints"):
        ja.metrics.Metric(data=None, fn=lambda logits, tokens, data: logits[:, 0, 0], positions=[1])
    with pytest.raises(ValueError, match="position must be an int, 'last' or a name"):
        ja.metrics.logit_diff(1, 2, position=1.5)
    with pytest.raises(ValueError, match="named position 'S2'"):
        ja.evaluate(model, comps, rows, tokens, metric=ja.metrics.logit_diff(1, 2, position="S2"))


def test_metric_call_slices_the_positions_it_reads(model, tokens):
    logits = model(tokens)
    metric = ja.metrics.as_metric(PositionLoss(2, 6))
    assert metric.positions == (2, 3, 4, 5)
    np.testing.assert_allclose(
        np.asarray(metric(logits, tokens)),
        np.asarray(metric.at(logits[:, 2:6], tokens)),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        np.asarray(metric(logits, tokens)),
        np.asarray(PositionLoss(2, 6)(logits, tokens)),
        rtol=1e-6,
    )
