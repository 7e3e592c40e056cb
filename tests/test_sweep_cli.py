"""``jaxablate sweep`` / ``jaxablate show`` through ``jaxablate.cli.main``, checked against a plain
loop over subsets and brute-force Shapley values, pair interactions and spectrum."""

import itertools
import math
import re

import jax
import numpy as np
import pytest
from flax import nnx

import jaxablate as ja
from jaxablate import sweep_cli
from jaxablate.cli import main
from jaxablate.sweep_cli import parse_components, resolve_model

CFG = ja.ModelConfig(
    n_layers=2, n_heads=2, d_model=8, d_head=4, d_mlp=16, vocab_size=11, n_ctx=8, init_std=0.4
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model = ja.Transformer(CFG, rngs=nnx.Rngs(3))
    tokens = np.asarray(jax.random.randint(jax.random.key(4), (3, 6), 0, CFG.vocab_size))
    ref = np.asarray(jax.random.randint(jax.random.key(5), (3, 6), 0, CFG.vocab_size))
    ja.save_model(model, root / "model")
    np.save(root / "tokens.npy", tokens)
    np.save(root / "ref.npy", ref)
    return model, tokens, ref, root


def loop_values(model, comps, tokens, metric, ablation):
    """One jitted unbatched model call per subset, in bit order."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def one(state, masks):
        logits = nnx.merge(graphdef, state)(tokens, masks=masks, ablation=ablation)
        return metric(logits, tokens)

    n = len(comps)
    rows = [[(r >> i) & 1 for i in range(n)] for r in range(2**n)]
    return np.array(
        [np.asarray(one(state, comps.masks(np.array(row, bool)))).mean() for row in rows]
    )


def brute_shapley(v, n):
    phi = np.zeros(n)
    for i in range(n):
        for r in range(2**n):
            if not r >> i & 1:
                s = bin(r).count("1")
                w = math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n)
                phi[i] += w * (v[r | 1 << i] - v[r])
    return phi


def brute_pair_sii(v, n, i, j):
    total = 0.0
    for r in range(2**n):
        if not (r >> i & 1 or r >> j & 1):
            t = bin(r).count("1")
            w = math.factorial(t) * math.factorial(n - t - 2) / math.factorial(n - 1)
            total += w * (v[r | 1 << i | 1 << j] - v[r | 1 << i] - v[r | 1 << j] + v[r])
    return total


def brute_spectrum(v, n):
    power = np.zeros(n + 1)
    for s in range(1, 2**n):
        chi = [(-1) ** bin(r & s).count("1") for r in range(2**n)]
        power[bin(s).count("1")] += np.mean(np.asarray(v) * chi) ** 2
    return power / power.sum()


def test_parse_components():
    assert parse_components(CFG, "heads").names == ja.heads(CFG).names
    assert parse_components(CFG, "heads:1").names == ["L1H0", "L1H1"]
    assert parse_components(CFG, "heads:0-1").names == ja.heads(CFG).names
    assert parse_components(CFG, "heads:0, mlp").names == ["L0H0", "L0H1", "L0.mlp", "L1.mlp"]
    assert parse_components(CFG, "L1H1,L0.attn,mlp:1").names == ["L1H1", "L0.attn", "L1.mlp"]
    for spec, match in [
        ("head", "unknown component spec 'head'"),
        ("heads:0,1", "unknown component spec '1'"),
        ("heads:2", "out of range"),
        ("heads:1-0", "is empty"),
        ("L0H5", "heads 0..1"),
        ("L2.mlp", "layers 0..1"),
        ("heads,L0H0", "more than once"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse_components(CFG, spec)


@pytest.mark.slow
def test_sweep_then_show(setup, tmp_path, capsys):
    model, tokens, _, root = setup
    out = tmp_path / "s"
    argv = ["sweep", "--model", str(root / "model"), "--tokens", str(root / "tokens.npy")]
    argv += ["--components", "heads:1,mlp", "--ablation", "mean", "--out", str(out)]
    assert main([*argv, "--chunk-size", "3", "--no-progress"]) == 0
    assert "swept 16 subsets of 4 components" in capsys.readouterr().out
    values, meta = ja.load_sweep(out)
    comps = ja.heads(CFG, [1]) + ja.blocks(CFG, "mlp")
    expected = loop_values(model, comps, tokens, ja.metrics.loss, ja.ablation.mean(model, tokens))
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-6)
    assert meta["components"] == comps.names and meta["ablation"]["kind"] == "mean"
    assert main([*argv, "--chunk-size", "5"]) == 2  # a resume with another chunk size: refused
    assert "chunk_size: 3 (on disk) vs 5 (this call)" in capsys.readouterr().err

    assert main(["show", str(out), "--top", "3"]) == 0
    text = capsys.readouterr().out
    v = values.astype(np.float64)
    phi = brute_shapley(v, 4)
    rows = re.findall(r"^  (L\S+)\s+([+-]\d+\.\d+)\s+([+-]\d+\.\d+)$", text, re.M)
    assert [r[0] for r in rows] == [comps.names[i] for i in np.argsort(-np.abs(phi))[:3]]
    for name, shap, loco in rows:  # removal costs of a loss: minus the presence game's values
        i = comps.names.index(name)
        np.testing.assert_allclose(float(shap), -phi[i], atol=2e-6)
        np.testing.assert_allclose(float(loco), v[15 ^ 1 << i] - v[15], atol=2e-6)
    pairs = re.findall(r"^  (\S+) x (\S+)\s+([+-]\d+\.\d+)$", text, re.M)
    sii = {(a, b): brute_pair_sii(v, 4, a, b) for a, b in itertools.combinations(range(4), 2)}
    best = sorted(sii.values(), key=abs, reverse=True)[:3]
    assert len(pairs) == 3
    for (a, b, value), want in zip(pairs, best, strict=True):
        got = sii[comps.names.index(a), comps.names.index(b)]
        np.testing.assert_allclose(float(value), got, atol=2e-6)
        np.testing.assert_allclose(abs(got), abs(want), atol=1e-12)
    spectrum = [float(x) for x in re.findall(r"^  degree \d+\s+(\d\.\d+)", text, re.M)]
    np.testing.assert_allclose(spectrum, brute_spectrum(v, 4)[1:], atol=2e-4)


@pytest.mark.slow
def test_resample_kl_and_workers(setup, tmp_path, capsys):
    model, tokens, ref, root = setup
    out = tmp_path / "s"
    argv = ["sweep", "--model", str(root / "model"), "--tokens", str(root / "tokens.npy")]
    argv += ["--components", "L0H0,L1.attn", "--ablation", "resample", "--metric", "kl"]
    argv += ["--ref-tokens", str(root / "ref.npy"), "--out", str(out), "--chunk-size", "1"]
    assert main([*argv, "--worker", "0/2", "--no-wait"]) == 0
    assert "2 of 4 chunks in" in capsys.readouterr().out  # other workers' chunks missing
    assert main(["show", str(out)]) == 2
    assert "2 of 4 chunks missing" in capsys.readouterr().err
    assert main([*argv, "--worker", "1/2", "--no-wait"]) == 0  # the last worker: complete
    assert "swept 4 subsets of 2 components" in capsys.readouterr().out
    values, meta = ja.load_sweep(out)
    comps = parse_components(CFG, "L0H0,L1.attn")
    metric = ja.metrics.kl_to_clean(model, tokens)
    expected = loop_values(model, comps, tokens, metric, ja.ablation.resample(model, ref))
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-6)
    assert values[3] == pytest.approx(0.0, abs=1e-6)  # all kept: the clean model, KL 0
    assert meta["metric"]["name"] == "kl_to_clean"


@pytest.mark.slow
def test_logit_diff_metric(setup, tmp_path, capsys):
    model, tokens, _, root = setup
    argv = ["sweep", "--model", str(root / "model"), "--tokens", str(root / "tokens.npy")]
    argv += ["--components", "heads", "--no-progress"]
    out = tmp_path / "s"
    assert main([*argv, "--metric", "logit_diff:3:5:-2", "--out", str(out)]) == 0
    values, meta = ja.load_sweep(out)
    metric = ja.metrics.logit_diff(3, 5, position=-2)
    expected = loop_values(model, ja.heads(CFG), tokens, metric, None)
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-5)
    assert meta["metric"] == {"name": "logit_diff", "sha256": meta["metric"]["sha256"],
                              "positions": [-2]}  # fmt: skip
    capsys.readouterr()
    assert main([*argv, "--metric", "logit_diff:3:11", "--out", str(tmp_path / "t")]) == 2
    assert "token ids must lie in [0, 11)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv, "--metric", "logit_diff:3", "--out", str(tmp_path / "u")])
    assert "logit_diff:CORRECT:WRONG[:POSITION]" in capsys.readouterr().err


@pytest.mark.slow
def test_errors(setup, tmp_path, capsys):
    model, tokens, _, root = setup
    base = ["sweep", "--tokens", str(root / "tokens.npy"), "--out", str(tmp_path / "x")]
    assert main([*base, "--model", str(root / "model"), "--ablation", "resample"]) == 2
    assert "needs --ref-tokens" in capsys.readouterr().err
    assert main([*base, "--model", "no-such-model"]) == 2
    assert "neither a model directory nor a shipped toy model" in capsys.readouterr().err
    np.save(tmp_path / "bad.npy", np.zeros(5, np.int32))
    bad = ["sweep", "--model", str(root / "model"), "--tokens", str(tmp_path / "bad.npy")]
    assert main([*bad, "--out", str(tmp_path / "y")]) == 2
    assert "integer array [batch, seq]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--model", str(root / "model"), "--worker", "3"])
    with pytest.raises(SystemExit):
        main([*base, "--model", str(root / "model"), "--chunk-size", "0"])
    capsys.readouterr()
    comps = ja.heads(CFG, [1]) + ja.blocks(CFG, "mlp")
    rows = ja.subsets.loco(len(comps))
    ja.sweep(model, comps, rows, tokens, tmp_path / "loco", chunk_size=3, progress=False)
    assert main(["show", str(tmp_path / "loco")]) == 2
    assert "show needs a sweep over all subsets" in capsys.readouterr().err
    assert main(["show", str(tmp_path)]) == 2
    assert "not a sweep directory" in capsys.readouterr().err


def test_model_by_toy_name(setup, monkeypatch):
    model = setup[0]
    monkeypatch.setattr(sweep_cli, "list_pretrained", lambda: ["stub-2l"])
    monkeypatch.setattr(sweep_cli, "load_pretrained", lambda name: (model, f"task of {name}"))
    assert resolve_model("stub-2l") is model
    with pytest.raises(ValueError, match=r"shipped: \['stub-2l'\]"):
        resolve_model("other")
