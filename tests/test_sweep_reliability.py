"""Sweeps under stress (issue 14): the values are bit-identical however a sweep is run (killed
under load and resumed, split over workers, on 1 or 2 devices); every file a sweep writes is
checked (a damaged, deleted or truncated one is recomputed, or refused with a message naming
it, never used); concurrent processes share the chunks; a full disk or Ctrl-C leaves only
files a rerun can trust.

Bit-identical comparisons are between runs of the same computation on one machine.
"""

import errno
import json
import os
import shutil
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
from jaxablate._files import atomic_write, remove_stale_temps
from tests._xla import subprocess_xla_flags
from tests.test_sweep import CFG, WORKER, _env, loop_values

ALL = list(range(6))  # 16 rows in chunks of 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model = ja.Transformer(CFG, rngs=nnx.Rngs(0))
    tokens = np.asarray(jax.random.randint(jax.random.key(1), (3, 6), 0, CFG.vocab_size))
    comps = ja.heads(CFG)
    ref = loop_values(model, comps, ja.subsets.all(len(comps)), tokens)
    root = tmp_path_factory.mktemp("reliability")
    ja.save_model(model, root / "model")
    np.save(root / "tokens.npy", tokens)
    return model, comps, tokens, ref, root


def run(setup, out, rows="all", fn=ja.sweep, tokens=None, **kw):
    """``fn`` on the setup (chunks of 3 rows); ``(result, chunks this call computed)``."""
    model, comps, setup_tokens, _, _ = setup
    computed = []
    kw.setdefault("chunk_size", 3)
    kw.setdefault("progress", False)
    kw.setdefault("poll_interval", 0.05)
    tokens = setup_tokens if tokens is None else tokens
    result = fn(model, comps, rows, tokens, out, on_chunk=lambda c, a, b: computed.append(c), **kw)
    return result, computed


def leftovers(out):
    """Temporary and claim files left in a sweep directory."""
    return sorted(p.name for p in Path(out).rglob("*") if p.suffix in (".tmp", ".claim"))


def spawn(setup, out, *args, env=None, report=None):
    root = setup[4]
    cmd = [sys.executable, str(WORKER), str(root / "model"), str(root / "tokens.npy"), str(out)]
    if report is not None:
        args = (*args, "--report", str(report))
    return subprocess.Popen(
        [*cmd, *args], env=env or _env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def finish(procs, timeout=240):
    logs = [p.communicate(timeout=timeout)[0].decode() for p in procs]
    for p, text in zip(procs, logs, strict=True):
        assert p.returncode == 0, text[-3000:]


def chunk_files(out):
    return sorted(int(p.name[6:14]) for p in (Path(out) / "chunks").glob("chunk_*.npz"))


def as_float32(hex_text):
    return np.frombuffer(bytes.fromhex(hex_text), np.float32)


# ------------------------------------------------------------------------ determinism


@pytest.mark.slow
def test_killed_under_load_resumes_bit_identical(setup, tmp_path):
    """The first run works while busy processes load the machine (the old timed probe chose
    another vmap width there) and is killed; the resume, unloaded, gives exactly the values of
    an uninterrupted unloaded run, with the same recorded plan."""
    out = tmp_path / "s"
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        proc = spawn(setup, out, "--chunk-size", "4", "--eval-chunk-size", "auto", "--sleep", "1")
        deadline = time.monotonic() + 120
        while len(chunk_files(out)) < 2:
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the worker wrote no chunks in 120 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    finally:
        for p in busy:
            p.kill()
            p.wait()
    finished = chunk_files(out)
    assert 2 <= len(finished) < 4
    values, computed = run(setup, out, chunk_size=4)
    assert sorted(computed) == sorted(set(range(4)) - set(finished))
    fresh, _ = run(setup, tmp_path / "fresh", chunk_size=4)
    np.testing.assert_array_equal(values, fresh)
    plans = [ja.load_sweep(d)[1]["plan"] for d in (out, tmp_path / "fresh")]
    assert plans[0] == plans[1] == {"rows_per_device": 4, "inner": 4, "share_prefix": True}
    assert not leftovers(out)


@pytest.mark.slow
def test_split_over_workers_and_devices_is_bit_identical(setup, tmp_path):
    """Worker 0/2 on two (forced CPU) devices and worker 1/2 on one device, at the same time,
    return exactly the table of one unsplit process on one device."""
    out = tmp_path / "s"
    two = dict(_env(), XLA_FLAGS=subprocess_xla_flags("--xla_force_host_platform_device_count=2"))
    args = ("--chunk-size", "4", "--eval-chunk-size", "auto")
    reports = [tmp_path / f"report{i}.json" for i in range(2)]
    procs = [
        spawn(setup, out, *args, "--worker", "0", "2", env=two, report=reports[0]),
        spawn(setup, out, *args, "--worker", "1", "2", report=reports[1]),
    ]
    finish(procs)
    got = [json.loads(r.read_text()) for r in reports]
    assert [g["devices"] for g in got] == [2, 1]
    assert [sorted(g["computed"]) for g in got] == [[0, 2], [1, 3]]
    single, _ = run(setup, tmp_path / "single", chunk_size=4)
    for g in got:
        np.testing.assert_array_equal(as_float32(g["hex"]), single)
    np.testing.assert_array_equal(ja.load_sweep(out)[0], single)
    np.testing.assert_allclose(single, setup[3], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_auto_sizes_do_not_depend_on_the_worker_count(setup, tmp_path):
    """A split sweep with every size "auto" computes the chunks of an unsplit one."""
    first, _ = run(setup, tmp_path / "a", fn=ja.sweep_chunks, chunk_size="auto", worker=(0, 3))
    single, computed = run(setup, tmp_path / "b", chunk_size="auto")
    assert computed == [0] and first.n_chunks == 1
    metas = [ja.load_sweep(tmp_path / d)[1] for d in "ab"]
    assert metas[0]["chunk_size"] == metas[1]["chunk_size"] == 16
    assert metas[0]["plan"] == metas[1]["plan"]
    np.testing.assert_array_equal(ja.load_sweep(tmp_path / "a")[0], single)


# ------------------------------------------------------------------------ concurrency


@pytest.mark.slow
def test_concurrent_unsplit_processes_share_the_chunks(setup, tmp_path):
    """Two identical processes on one directory: no chunk computed twice, both return what is
    on disk, no claim or temporary file left."""
    out = tmp_path / "s"
    reports = [tmp_path / f"report{i}.json" for i in range(2)]
    args = ("--chunk-size", "2", "--sleep", "0.4", "--barrier", str(tmp_path / "barrier"), "2")
    procs = [spawn(setup, out, *args, report=r) for r in reports]
    finish(procs)
    got = [json.loads(r.read_text()) for r in reports]
    computed = [g["computed"] for g in got]
    assert sorted(computed[0] + computed[1]) == list(range(8)), computed  # each chunk once
    assert computed[0] and computed[1]  # both worked
    on_disk = ja.load_sweep(out)[0]
    for g in got:
        np.testing.assert_array_equal(as_float32(g["hex"]), on_disk)
    np.testing.assert_allclose(on_disk, setup[3], rtol=1e-5, atol=1e-6)
    assert not leftovers(out)


def _claim(out, index, pid):
    path = Path(out) / "chunks" / f"chunk_{index:08d}.claim"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"host": socket.gethostname(), "pid": pid, "token": f"t{pid}", "time": time.time()}
    path.write_text(json.dumps(record))


def _dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_claims_of_running_processes_are_awaited_and_stale_ones_taken_over(setup, tmp_path):
    model, comps, tokens, ref, _ = setup
    out = tmp_path / "s"
    run(setup, out, fn=ja.sweep_chunks, worker=(5, 6))  # manifest and chunk 5
    sleeper = subprocess.Popen(["sleep", "60"])
    _claim(out, 1, sleeper.pid)  # a running process computes chunk 1
    _claim(out, 2, _dead_pid())  # a killed one left chunk 2's claim
    computed = []

    def on_chunk(c, a, b):
        computed.append(c)
        if c == 4:  # the claimant of chunk 1 stops once the others are done
            sleeper.kill()
            sleeper.wait()

    values = ja.sweep(
        model, comps, "all", tokens, out, chunk_size=3, progress=False, poll_interval=0.05,
        on_chunk=on_chunk,
    )  # fmt: skip
    assert computed == [0, 2, 3, 4, 1]  # chunk 1 awaited, then taken over
    np.testing.assert_allclose(values, ref, rtol=1e-5, atol=1e-6)
    assert not leftovers(out)


def test_a_worker_without_partner_says_what_it_waits_for(setup, tmp_path, caplog):
    out = tmp_path / "s"
    with caplog.at_level("INFO", logger="jaxablate.sweep"):
        with pytest.raises(TimeoutError, match=r"gave up after 0.2 s without progress"):
            run(setup, out, worker=(0, 2), timeout=0.2)
    assert "waiting for 3 of 6 chunks; 3 not started by any process (first: [1, 3, 5]" in (
        caplog.text
    )


# ------------------------------------------------------------------------ damaged files


@pytest.mark.slow
def test_chunks_of_another_sweep_are_not_used(setup, tmp_path, caplog):
    """Delete only manifest.json and sweep other tokens: the old chunks are recomputed. With
    the original arguments, the chunks (which record their manifest) are kept."""
    model, comps, tokens, _, _ = setup
    out = tmp_path / "s"
    run(setup, out)
    (out / "manifest.json").unlink()
    other = (tokens + 1) % CFG.vocab_size
    with caplog.at_level("WARNING", logger="jaxablate.sweep"):
        values, computed = run(setup, out, tokens=other)
    assert computed == ALL and "belongs to another sweep" in caplog.text
    expected = loop_values(model, comps, ja.subsets.all(len(comps)), other)
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-6)
    (out / "manifest.json").unlink()
    again, computed = run(setup, out, tokens=other)
    assert computed == []
    np.testing.assert_array_equal(again, values)


def test_damaged_manifest_is_refused_naming_it(setup, tmp_path):
    out = tmp_path / "s"
    first, _ = run(setup, out)
    path = out / "manifest.json"
    text = path.read_text()
    for damaged in (text[: len(text) // 2], "", "[1, 2]", json.dumps({"format": "x"})):
        path.write_text(damaged)
        for call in (ja.load_sweep, ja.sweep_status, lambda d: run(setup, d)):
            with pytest.raises(ValueError, match=rf"{path}|{out} holds no"):
                call(out)
    manifest = json.loads(text)
    path.write_text(json.dumps({**manifest, "format_version": 1}))
    with pytest.raises(ValueError, match=r"format version 1; this jaxablate reads and writes"):
        run(setup, out)
    path.write_text(json.dumps({k: v for k, v in manifest.items() if k != "plan"}))
    with pytest.raises(ValueError, match=r"manifest.json lacks the fields \['plan'\]"):
        ja.load_sweep(out)
    path.unlink()  # as the message says: delete it and rerun, the chunks are kept
    again, computed = run(setup, out)
    assert computed == []
    np.testing.assert_array_equal(again, first)


@pytest.mark.slow
def test_rows_file_is_checked(setup, tmp_path, caplog):
    out = tmp_path / "s"
    rows = np.asarray(ja.subsets.sample(jax.random.key(3), 4, 7))
    run(setup, out, rows=rows)
    path = out / "rows.npy"
    np.save(path, ~rows)  # modified
    with pytest.raises(ValueError, match=r"rows.npy does not match the manifest's rows"):
        ja.load_sweep(out)
    with caplog.at_level("WARNING", logger="jaxablate.sweep"):
        _, computed = run(setup, out, rows=rows)  # rewritten, values kept
    assert computed == [] and "rows.npy does not match" in caplog.text
    np.testing.assert_array_equal(ja.load_sweep(out)[1]["rows_array"], rows)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=rf"{path} is unreadable"):
        ja.load_sweep(out)
    path.unlink()
    with pytest.raises(ValueError, match=rf"{path} is missing: the rows of this sweep"):
        ja.load_sweep(out)
    run(setup, out, rows=rows)
    np.testing.assert_array_equal(ja.load_sweep(out)[1]["rows_array"], rows)


def test_every_kind_of_damaged_chunk_is_recomputed(setup, tmp_path, caplog):
    out = tmp_path / "s"
    first, _ = run(setup, out)
    chunks = out / "chunks"
    for c, offset in ((1, 170), (2, 60)):  # a byte of the values, of the array header
        path = chunks / f"chunk_{c:08d}.npz"
        damaged = bytearray(path.read_bytes())
        damaged[offset] ^= 0x40
        path.write_bytes(bytes(damaged))
    (chunks / "chunk_00000003.npz").write_bytes(b"")
    (chunks / "chunk_00000004.npz").unlink()
    status = ja.sweep_status(out, verify=True)
    assert (status.missing, status.corrupt) == ((4,), (1, 2, 3))
    with caplog.at_level("WARNING", logger="jaxablate.sweep"):
        values, computed = run(setup, out)
    assert sorted(computed) == [1, 2, 3, 4]
    np.testing.assert_array_equal(values, first)


def test_a_directory_where_a_chunk_belongs_is_refused(setup, tmp_path):
    out = tmp_path / "s"
    run(setup, out)
    path = out / "chunks" / "chunk_00000002.npz"
    path.unlink()
    path.mkdir()
    (path / "x").write_text("x")
    assert ja.sweep_status(out, verify=True).corrupt == (2,)
    with pytest.raises(ValueError, match="1 corrupt"):
        ja.load_sweep(out)
    with pytest.raises(ValueError, match=rf"{path} is a directory where chunk 2 .* remove it"):
        run(setup, out)
    shutil.rmtree(path)
    _, computed = run(setup, out)
    assert computed == [2]


# ------------------------------------------------------------------------ temporary files


def test_only_temporary_files_of_gone_writers_are_removed(tmp_path):
    host = socket.gethostname()
    names = {
        f".chunk_00000001.npz~{host}~{_dead_pid()}~a.tmp": False,  # writer gone
        f".chunk_00000002.npz~{host}~{os.getpid()}~b.tmp": True,  # writer alive (us)
        ".chunk_00000003.npz~otherhost~123~c.tmp": True,  # another host, fresh
        ".chunk_00000004.npz~otherhost~123~d.tmp": False,  # another host, an hour old
        ".chunk_00000005.npz.e7q2x.tmp": True,  # an older version's, fresh
    }
    for name in names:
        (tmp_path / name).write_text("x")
    hour_ago = time.time() - 3600
    os.utime(tmp_path / ".chunk_00000004.npz~otherhost~123~d.tmp", (hour_ago, hour_ago))
    assert remove_stale_temps(tmp_path) == 2
    assert sorted(os.listdir(tmp_path)) == sorted(n for n, kept in names.items() if kept)


def test_atomic_write_survives_its_temporary_file_vanishing(tmp_path):
    """An older version's startup cleanup deleted live temporary files; the write retries."""
    seen = []

    def write(f):
        (temp,) = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
        if not seen:
            os.unlink(tmp_path / temp)  # what the careless cleanup did
        seen.append(temp)
        f.write(b"whole")

    assert atomic_write(tmp_path / "a.bin", write)
    assert (tmp_path / "a.bin").read_bytes() == b"whole" and len(seen) == 2
    assert os.listdir(tmp_path) == ["a.bin"]


def test_disk_full_and_ctrl_c_leave_finished_chunks_and_nothing_half_written(
    setup, tmp_path, monkeypatch
):
    out = tmp_path / "s"
    savez = np.savez
    calls = []

    def full_disk(f, **arrays):
        calls.append(1)
        if len(calls) == 3:
            f.write(b"PK\x03\x04 half a chunk")
            raise OSError(errno.ENOSPC, "No space left on device")
        savez(f, **arrays)

    monkeypatch.setattr(np, "savez", full_disk)
    with pytest.raises(OSError) as info:
        run(setup, out)
    assert info.value.errno == errno.ENOSPC
    assert info.value.filename == str(out / "chunks" / "chunk_00000002.npz")
    monkeypatch.undo()
    assert chunk_files(out) == [0, 1] and not leftovers(out)
    assert ja.sweep_status(out, verify=True).chunks_done == 2

    def interrupt(c, a, b):
        if c == 3:
            raise KeyboardInterrupt

    model, comps, tokens, ref, _ = setup
    with pytest.raises(KeyboardInterrupt):
        ja.sweep(model, comps, "all", tokens, out, chunk_size=3, progress=False, on_chunk=interrupt)
    assert chunk_files(out) == [0, 1, 2, 3] and not leftovers(out)
    values, computed = run(setup, out)
    assert computed == [4, 5]
    np.testing.assert_allclose(values, ref, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------ prompts


def test_prompts_fingerprint_lengths_answers_and_positions(setup, tmp_path):
    """Prompts that differ only in lengths, answers or named positions are other sweeps."""
    model, comps, tokens, _, _ = setup
    base = {
        "tokens": tokens,
        "lengths": np.array([6, 5, 4]),
        "correct": np.array([1, 2, 3]),
        "wrong": np.array([4, 5, 6]),
        "positions": {"S": np.array([0, 1, 2])},
    }
    out = tmp_path / "s"

    def call(**change):
        # worker 1 of 2 owns no chunk of 16 rows: only the manifest is made or checked
        p = ja.Prompts(**{**base, **change})
        ja.sweep_chunks(model, comps, "all", p, out, worker=(1, 2), progress=False)

    call()
    call()  # the same prompts match
    assert ja.sweep_status(out).n_chunks == 1
    for change in (
        {"lengths": np.array([6, 6, 4])},
        {"correct": np.array([1, 2, 4])},
        {"wrong": None},
        {"positions": {"S": np.array([0, 1, 1])}},
        {"positions": {"T": np.array([0, 1, 2])}},
    ):
        with pytest.raises(ValueError, match=r"different arguments(.|\n)*  tokens: "):
            call(**change)
    with pytest.raises(ValueError, match=r"tokens: .*\"kind\": \"prompts\".* vs .*\"array\""):
        ja.sweep_chunks(model, comps, "all", tokens, out, worker=(1, 2), progress=False)
