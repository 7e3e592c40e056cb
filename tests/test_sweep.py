"""Resumable sweeps: equal to a plain loop over subsets, resume without recomputing, refuse
mismatched manifests, detect corrupt chunks, split work over workers and processes."""

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

import jaxablate as ja
from jaxablate._evaluate import _naive_chunk
from tests._compile import no_new_compilations
from tests._elsewhere import recomputed_elsewhere
from tests._xla import subprocess_xla_flags

WORKER = Path(__file__).with_name("_sweep_worker.py")
CFG = ja.ModelConfig(
    n_layers=2, n_heads=2, d_model=8, d_head=4, d_mlp=16, vocab_size=11, n_ctx=8, init_std=0.4
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model = ja.Transformer(CFG, rngs=nnx.Rngs(0))
    tokens = np.asarray(jax.random.randint(jax.random.key(1), (3, 6), 0, CFG.vocab_size))
    comps = ja.heads(CFG)
    ref = loop_values(model, comps, ja.subsets.all(len(comps)), tokens)
    assert np.ptp(ref) > 0.05  # the subsets differ clearly, so a mix-up of rows would show
    root = tmp_path_factory.mktemp("sweep_setup")
    ja.save_model(model, root / "model")
    np.save(root / "tokens.npy", tokens)
    return model, comps, tokens, ref, root


def loop_values(model, comps, rows, tokens, metric=ja.metrics.loss, ablation=None):
    """Independent reference: one (jitted, unbatched) model call per row, no vmap."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def one(state, masks):
        logits = nnx.merge(graphdef, state)(tokens, masks=masks, ablation=ablation)
        return metric(logits, tokens)

    out = [np.asarray(one(state, comps.masks(row)), np.float64).mean() for row in np.asarray(rows)]
    return np.array(out)


def run(setup, out, rows="all", fn=ja.sweep, **kw):
    """``fn`` (``ja.sweep`` or ``ja.sweep_chunks``) on the setup; ``(result, chunks computed)``."""
    model, comps, tokens, _, _ = setup
    computed = []
    kw.setdefault("chunk_size", 3)
    kw.setdefault("eval_chunk_size", 2)
    kw.setdefault("progress", False)
    result = fn(model, comps, rows, tokens, out, on_chunk=lambda c, a, b: computed.append(c), **kw)
    return result, computed


@pytest.mark.slow
def test_sweep_equals_loop_and_load_sweep(setup, tmp_path):
    _, comps, _, ref, _ = setup
    values, computed = run(setup, tmp_path / "s")
    assert values.dtype == np.float32 and values.shape == (16,)
    np.testing.assert_allclose(values, ref, rtol=1e-5, atol=1e-6)
    assert computed == list(range(6))  # 16 rows in chunks of 3
    loaded, meta = ja.load_sweep(tmp_path / "s")
    np.testing.assert_array_equal(loaded, values)
    assert meta["components"] == comps.names
    assert (meta["n_rows"], meta["chunk_size"], meta["n_chunks"]) == (16, 3, 6)
    assert meta["rows"] == "all" and "rows_array" not in meta
    assert meta["metric"]["name"] == "loss" and meta["ablation"]["kind"] == "zero"
    assert meta["tokens"]["shape"] == [3, 6] and len(meta["weights_sha256"]) == 64
    assert meta["plan"] == {"rows_per_device": 2, "inner": 2, "share_prefix": True}
    assert {"jax", "jaxablate", "numpy"} <= set(meta["versions"])
    assert sorted(os.listdir(tmp_path / "s" / "chunks"))[0] == "chunk_00000000.npz"
    assert ja.sweep_status(tmp_path / "s", verify=True).complete


@pytest.mark.slow
def test_resume_reads_finished_chunks_and_recomputes_bad_ones(setup, tmp_path, caplog):
    ref = setup[3]
    out = tmp_path / "s"
    first, computed = run(setup, out)
    assert computed == list(range(6))
    again, computed = run(setup, out)
    assert computed == []
    np.testing.assert_array_equal(again, first)

    chunks = out / "chunks"
    (chunks / "chunk_00000002.npz").unlink()  # missing
    path = chunks / "chunk_00000004.npz"
    path.write_bytes(path.read_bytes()[:50])  # truncated
    path = chunks / "chunk_00000001.npz"  # readable, right range, values changed: checksum
    with np.load(path) as d:
        parts = {k: d[k] for k in d.files}
    parts["values"] = parts["values"] + 1
    with open(path, "wb") as f:
        np.savez(f, **parts)
    path = chunks / "chunk_00000005.npz"  # a valid chunk file of another row range
    path.write_bytes((chunks / "chunk_00000000.npz").read_bytes())
    status = ja.sweep_status(out, verify=True)
    assert (status.missing, status.corrupt) == ((2,), (1, 4, 5))
    assert (status.chunks_done, status.rows_done, status.complete) == (2, 6, False)
    assert (status.n_rows, status.n_chunks, status.chunk_size) == (16, 6, 3)
    assert ja.sweep_status(out).missing == (2,)  # without verify only presence counts
    with pytest.raises(ValueError, match=r"1 of 6 chunks missing.*3 corrupt"):
        ja.load_sweep(out)
    with caplog.at_level("WARNING", logger="jaxablate.sweep"):
        values, computed = run(setup, out)
    assert sorted(computed) == [1, 2, 4, 5]
    assert "checksum mismatch" in caplog.text and "unreadable" in caplog.text
    assert "holds rows (0, 3), expected (15, 16)" in caplog.text
    np.testing.assert_allclose(values, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ja.load_sweep(out)[0], values)


@pytest.mark.slow
def test_explicit_rows_other_ablation_and_metric_object(setup, tmp_path):
    model, comps, tokens, _, _ = setup
    rows = ja.subsets.sample(jax.random.key(2), len(comps), 7)
    sources = np.roll(tokens, 1, axis=0)
    abl = ja.ablation.resample(model, sources)
    metric = ja.metrics.kl_to_clean(model, tokens)
    values, computed = run(setup, tmp_path / "s", rows=rows, ablation=abl, metric=metric)
    expected = loop_values(model, comps, rows, tokens, metric=metric, ablation=abl)
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-6)
    assert computed == [0, 1, 2]
    loaded, meta = ja.load_sweep(tmp_path / "s")
    np.testing.assert_array_equal(loaded, values)
    np.testing.assert_array_equal(meta["rows_array"], rows)
    assert meta["rows"]["kind"] == "explicit" and meta["rows"]["shape"] == [7, 4]
    assert meta["metric"]["name"] == "kl_to_clean" and meta["ablation"]["kind"] == "resample"


def _changes(setup):
    model, _, tokens, _, _ = setup
    return {
        "tokens": lambda: {"tokens": (tokens + 1) % CFG.vocab_size},
        "metric": lambda: {"metric": ja.metrics.accuracy},
        "ablation": lambda: {"ablation": ja.ablation.mean(model, tokens)},
        "chunk_size": lambda: {"chunk_size": 4},
        "components": lambda: {"comps": ja.heads(CFG, layers=[1]) + ja.heads(CFG, layers=[0])},
        "weights_sha256": lambda: {"model": ja.Transformer(CFG, rngs=nnx.Rngs(5))},
        "rows": lambda: {"rows": ja.subsets.all(4)},
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    "field",
    ["tokens", "metric", "ablation", "chunk_size", "components", "weights_sha256", "rows"],
)
def test_mismatched_manifest_is_refused(setup, tmp_path, field):
    model, comps, tokens, _, _ = setup
    out = tmp_path / "s"
    ja.sweep(model, comps, "all", tokens, out, chunk_size=3, eval_chunk_size=8, progress=False)
    before = (out / "manifest.json").read_bytes()
    args = {"model": model, "comps": comps, "rows": "all", "tokens": tokens, "chunk_size": 3}
    args.update(_changes(setup)[field]())
    with pytest.raises(ValueError, match=rf"different arguments(.|\n)*  {field}: .* vs "):
        ja.sweep(
            args["model"],
            args["comps"],
            args["rows"],
            args["tokens"],
            out,
            chunk_size=args["chunk_size"],
            metric=args.get("metric", ja.metrics.loss),
            ablation=args.get("ablation"),
            progress=False,
        )
    assert (out / "manifest.json").read_bytes() == before


@pytest.mark.slow
def test_equivalent_call_resumes(setup, tmp_path):
    """int64 tokens, an explicit zero ablation and chunk_size='auto' match the manifest."""
    _, _, tokens, ref, _ = setup
    out = tmp_path / "s"
    run(setup, out, chunk_size=5)
    model, comps = setup[0], setup[1]
    values, computed = run(setup, out, chunk_size="auto", ablation=ja.ablation.zero())
    assert computed == []
    np.testing.assert_allclose(values, ref, rtol=1e-5, atol=1e-6)
    assert json.loads((out / "manifest.json").read_text())["chunk_size"] == 5
    computed = []
    ja.sweep(
        model,
        comps,
        "all",
        tokens.astype(np.int64),
        out,
        progress=False,
        on_chunk=lambda *a: computed.append(a),
    )
    assert computed == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("n_rows", "worker", "chunk", "own"),
    [(16, (0, 1), 16, [0]), (16, (1, 2), 16, []), (3, (2, 4), 3, []), (4096, (3, 64), 256, [3])],
)
def test_auto_chunk_size(setup, tmp_path, n_rows, worker, chunk, own):
    """A function of the row count alone (never of the workers, so a split sweep computes the
    same chunks as an unsplit one): one chunk up to 256 rows, else about 64 of at least 256."""
    rows = np.resize(ja.subsets.all(4), (n_rows, 4))
    status, computed = run(
        setup, tmp_path / "s", rows=rows, fn=ja.sweep_chunks, chunk_size="auto", worker=worker
    )
    assert computed == own
    assert (status.n_rows, status.n_chunks) == (n_rows, -(-n_rows // chunk))
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["chunk_size"] == chunk


def test_workers_split_chunks_and_wait(setup, tmp_path):
    """sweep_chunks computes one worker's chunks and returns; sweep waits for all of them."""
    ref = setup[3]
    out = tmp_path / "s"
    status, computed = run(setup, out, fn=ja.sweep_chunks, worker=(0, 2))
    assert computed == [0, 2, 4]
    assert status == ja.sweep_status(out)
    assert isinstance(status, ja.SweepStatus) and not status.complete
    assert (status.missing, status.corrupt, status.rows_done) == ((1, 3, 5), (), 9)
    assert (status.n_rows, status.n_chunks, status.chunk_size) == (16, 6, 3)
    with pytest.raises(ValueError, match="3 of 6 chunks missing"):
        ja.load_sweep(out)
    with pytest.raises(
        TimeoutError,
        match=r"waiting for 3 of 6 chunks; 3 not started by any process \(first: \[1, 3, 5\]; chunks of worker\(s\) \[1\] of 2\)",
    ):
        run(setup, out, worker=(0, 2), timeout=0.1, poll_interval=0.02)
    values, computed = run(setup, out, worker=(1, 2))
    assert computed == [1, 3, 5]
    np.testing.assert_allclose(values, ref, rtol=1e-5, atol=1e-6)
    values, computed = run(setup, out, worker=(0, 2))
    assert computed == []
    np.testing.assert_allclose(values, ref, rtol=1e-5, atol=1e-6)
    status, computed = run(setup, out, fn=ja.sweep_chunks, worker=(1, 2))
    assert computed == [] and status.complete and status.chunks_done == 6


def test_short_last_chunk_does_not_recompile(setup, tmp_path):
    """The last on-disk chunk (1 of 16 rows) is padded to the compiled size of the others."""
    _, _, _, ref, _ = setup
    out = tmp_path / "s"
    kw = {"fn": ja.sweep_chunks, "share_prefix": False}  # shapes depend on the sizes alone
    _, computed = run(setup, out, worker=(0, 6), **kw)
    assert computed == [0]
    with no_new_compilations(_naive_chunk):
        _, computed = run(setup, out, worker=(5, 6), **kw)
    assert computed == [5]
    values, computed = run(setup, out, share_prefix=False)
    assert computed == [1, 2, 3, 4]
    np.testing.assert_allclose(values, ref, rtol=1e-5, atol=1e-6)


def test_progress_bar_only_on_a_terminal(setup, tmp_path, monkeypatch, capsys):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    run(setup, tmp_path / "a", progress=True)  # pytest's stderr is not a TTY
    assert capsys.readouterr().err == ""
    fake = Tty()
    monkeypatch.setattr(sys, "stderr", fake)
    run(setup, tmp_path / "b", progress=False)
    assert fake.getvalue() == ""
    run(setup, tmp_path / "c", progress=True, chunk_size=8)
    text = fake.getvalue()
    assert "16/16" in text and "subsets/s" in text


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"rows": "every"}, "rows must be 'all'"),
        ({"rows": np.ones((2, 3), bool)}, r"shape \[\.\.\., 4\]"),
        ({"worker": (2, 2)}, "0 <= index < count"),
        ({"chunk_size": 0}, "chunk_size must be"),
        ({"eval_chunk_size": "big"}, "eval_chunk_size must be"),
        ({"ablation": "zero"}, "ablation must be"),
        ({"mesh": "cpu"}, "mesh must be a jax.sharding.Mesh"),
        ({"rows": np.zeros((0, 4), bool)}, "at least one row"),
    ],
)
def test_invalid_arguments(setup, tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        run(setup, tmp_path / "s", **kw)
    assert not (tmp_path / "s" / "manifest.json").exists()


@pytest.mark.slow
def test_all_rows_limit(tmp_path):
    """rows='all' over more than 30 components is refused before anything is written."""
    cfg = ja.ModelConfig(
        n_layers=1, n_heads=31, d_model=4, d_head=1, d_mlp=4, vocab_size=5, n_ctx=4
    )
    model = ja.Transformer(cfg, rngs=nnx.Rngs(0))
    tokens = np.zeros((1, 4), np.int32)
    with pytest.raises(ValueError, match=r"2\^31 subsets \(limit 30\)"):
        ja.sweep(model, ja.heads(cfg), "all", tokens, tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()


def test_load_sweep_of_non_sweep_directory(tmp_path):
    with pytest.raises(ValueError, match="not a sweep directory"):
        ja.load_sweep(tmp_path)


# ------------------------------------------------------------------------ subprocesses


def _env():
    """A subprocess's environment: CPU, strict JAX, this checkout first on the import path."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUMPY_RANK_PROMOTION="raise")
    env["PYTHONPATH"] = os.pathsep.join([str(WORKER.parent.parent), env.get("PYTHONPATH", "")])
    env["XLA_FLAGS"] = subprocess_xla_flags()  # the run's opt level, no device-count flags
    return env


def _count_chunks(out):
    chunks = out / "chunks"
    return sorted(int(p.name[6:14]) for p in chunks.glob("chunk_*.npz")) if chunks.exists() else []


@pytest.mark.slow
def test_killed_sweep_resumes_without_recomputing(setup, tmp_path):
    _, _, _, ref, root = setup
    out = tmp_path / "s"
    cmd = [sys.executable, str(WORKER), str(root / "model"), str(root / "tokens.npy"), str(out)]
    proc = subprocess.Popen(
        [*cmd, "--chunk-size", "2", "--sleep", "1.0"], env=_env(), stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while len(_count_chunks(out)) < 2:
            if proc.poll() is not None:
                pytest.fail(f"worker exited early: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("worker wrote no chunks in 120 s")
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    finished = _count_chunks(out)
    assert 2 <= len(finished) < 8  # killed mid-run
    values, computed = run(setup, out, chunk_size=2)
    assert sorted(computed) == sorted(set(range(8)) - set(finished))
    assert not [p for p in (out / "chunks").iterdir() if p.suffix == ".tmp"]
    uninterrupted, _ = run(setup, tmp_path / "fresh", chunk_size=2)
    np.testing.assert_array_equal(values, uninterrupted)  # same computation, same machine
    np.testing.assert_allclose(values, ref, rtol=1e-5, atol=1e-6)


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_with_jax_distributed(setup, tmp_path):
    _, _, _, ref, root = setup
    out = tmp_path / "s"
    port = _free_port()
    cmd = [sys.executable, str(WORKER), str(root / "model"), str(root / "tokens.npy"), str(out)]
    procs = [
        subprocess.Popen(
            [
                *cmd,
                "--chunk-size",
                "2",
                "--distributed",
                str(port),
                str(i),
                "2",
                "--report",
                str(tmp_path / f"report{i}.json"),
            ],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    logs = [p.communicate(timeout=240)[0].decode() for p in procs]
    for p, text in zip(procs, logs, strict=True):
        assert p.returncode == 0, text[-3000:]
    reports = [json.loads((tmp_path / f"report{i}.json").read_text()) for i in range(2)]
    assert [r["process"] for r in reports] == [[0, 2], [1, 2]]
    assert sorted(reports[0]["computed"]) == [0, 2, 4, 6]
    assert sorted(reports[1]["computed"]) == [1, 3, 5, 7]
    single, _ = run(setup, tmp_path / "single", chunk_size=2)
    for r in reports:  # bit-identical: the same computation on one machine
        np.testing.assert_array_equal(np.float32(r["values"]), single)
    np.testing.assert_array_equal(ja.load_sweep(out)[0], single)
    np.testing.assert_allclose(single, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_position_metric_sweep_and_changed_position_is_refused(setup, tmp_path):
    """A last-position metric sweeps to the loop's values; moving its position is refused."""
    model, comps, tokens, _, _ = setup
    last = ja.metrics.logit_diff(1, 2)
    values, _ = run(setup, tmp_path / "s", metric=last)
    expected = loop_values(model, comps, ja.subsets.all(len(comps)), tokens, metric=last)
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-5)
    assert ja.load_sweep(tmp_path / "s")[1]["metric"]["positions"] == list(last.positions)
    with pytest.raises(ValueError, match=r"different arguments(.|\n)*  metric: .* vs "):
        run(setup, tmp_path / "s", metric=ja.metrics.logit_diff(1, 2, position=-2))


def test_resume_with_replacements_recomputed_elsewhere(setup, tmp_path, caplog):
    """A mean ablation whose last bits differ (another machine) resumes the sweep with a
    warning and reads the finished chunks back; a mean over other tokens is refused."""
    model, comps, tokens, _, _ = setup
    abl = ja.ablation.mean(model, tokens)
    ref = loop_values(model, comps, ja.subsets.all(len(comps)), tokens, ablation=abl)
    out = tmp_path / "s"
    _, computed = run(setup, out, fn=ja.sweep_chunks, worker=(0, 2), ablation=abl)
    assert computed == [0, 2, 4]
    with caplog.at_level("WARNING", logger="jaxablate.sweep"):
        values, computed = run(setup, out, ablation=recomputed_elsewhere(abl))
    assert computed == [1, 3, 5]  # the finished chunks were read back
    assert "ablation data differ from the sweep's in the last bits only" in caplog.text
    np.testing.assert_allclose(values, ref, rtol=1e-5, atol=1e-6)
    other = ja.ablation.mean(model, (tokens + 1) % CFG.vocab_size)
    with pytest.raises(ValueError, match=r"different arguments(.|\n)*  ablation: "):
        run(setup, out, ablation=other)
