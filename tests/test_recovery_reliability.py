"""Recovery checkpoints under damage (issue 14): a step whose files were changed, truncated or
deleted is reported and the previous good step resumed, giving exactly the curves of an
uninterrupted run; damaged or missing configuration files are refused naming the file; a
temporary file left by a kill does not make the directory unusable.

The curves are compared exactly: both sides run the same compiled programs on the same inputs
on one machine (see tests/test_recovery.py).
"""

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

import jaxablate as ja
from jaxablate._recovery_ckpt import CHECKSUMS
from jaxablate.recovery import recover

CFG = ja.ModelConfig(n_layers=1, n_heads=2, d_model=8, d_head=4, d_mlp=16, vocab_size=8, n_ctx=6)
ROWS = np.array([[True, False], [False, True]])
LOGGER = "jaxablate.recover"
pytestmark = pytest.mark.slow  # every test resumes the trained fixture's checkpoints


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The model, its inputs, the curves of a run without checkpoints, and a checkpoint
    directory of the same run (steps 2 and 4)."""
    model = ja.Transformer(CFG, rngs=nnx.Rngs(0))
    tokens = np.asarray(jax.random.randint(jax.random.key(1), (8, 6), 0, CFG.vocab_size))
    straight = _recover(model, tokens, None)
    pristine = tmp_path_factory.mktemp("recover") / "ckpt"
    np.testing.assert_array_equal(_recover(model, tokens, pristine), straight)
    assert sorted(os.listdir(pristine)) == ["2", "4", "recover_config.json"]
    return model, tokens, straight, pristine


def _recover(model, tokens, directory):
    return recover(
        model, ja.heads(CFG), ROWS, tokens, steps=4, eval_tokens=tokens[:4], eval_every=2,
        batch_size=4, key=jax.random.key(0), checkpoint_dir=None if directory is None
        else str(directory), progress=False,
    ).metric  # fmt: skip


def _copy(setup, tmp_path):
    directory = tmp_path / "ckpt"
    shutil.copytree(setup[3], directory)
    return directory


def _largest_data_file(step_dir):
    """The file orbax reads the arrays from (``<step>/<item>/d/<hash>``, the largest one)."""
    files = [p for p in step_dir.glob("*/d/*") if p.is_file()]
    return max(files, key=lambda p: p.stat().st_size)


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def _resume_warns(setup, directory, caplog, *, fallback="resuming from step 2"):
    """Resume from a damaged ``directory``: the curves of the uninterrupted run, a warning
    that names the bad step, and a rewritten step that a second resume reads silently."""
    model, tokens, straight, _ = setup
    caplog.clear()
    with caplog.at_level("WARNING", logger=LOGGER):
        curves = _recover(model, tokens, directory)
    assert f"checkpoint step 4 in {str(directory)!r} is bad" in caplog.text
    assert fallback in caplog.text
    np.testing.assert_array_equal(curves, straight)
    caplog.clear()
    with caplog.at_level("WARNING", logger=LOGGER):
        np.testing.assert_array_equal(_recover(model, tokens, directory), straight)
    assert "is bad" not in caplog.text


def test_byte_flips_in_the_newest_data_file_fall_back_to_the_previous_step(setup, tmp_path, caplog):
    """The issue's case: 10 byte flips (one at a time) in the newest step's data file."""
    size = _largest_data_file(setup[3] / "4").stat().st_size
    for k, offset in enumerate(np.linspace(0, size - 1, 10).astype(int)):
        directory = _copy(setup, tmp_path / str(k))
        _flip(_largest_data_file(directory / "4"), int(offset))
        _resume_warns(setup, directory, caplog)


@pytest.mark.parametrize(
    "damage",
    [
        "truncate data", "delete data", "truncate metadata", "delete metadata",
        "change checksums", "delete checksums",
    ],
)  # fmt: skip
def test_damaged_step_falls_back_to_the_previous_step(setup, tmp_path, caplog, damage):
    directory = _copy(setup, tmp_path)
    step = directory / "4"
    target = {
        "data": _largest_data_file(step),
        "metadata": next(step.glob("*/_METADATA")),
        "checksums": step / CHECKSUMS,  # deleted: as if killed before it was written
    }[damage.split()[1]]
    if damage.startswith("truncate"):
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif damage.startswith("delete"):
        target.unlink()
    else:
        record = json.loads(target.read_text())
        target.write_text(json.dumps({**record, "arrays_sha256": "0" * 64}))
    _resume_warns(setup, directory, caplog)


def test_every_step_damaged_starts_over(setup, tmp_path, caplog):
    directory = _copy(setup, tmp_path)
    for step in ("2", "4"):
        _largest_data_file(directory / step).unlink()
    _resume_warns(setup, directory, caplog, fallback="starting over from step 0")


def _dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_temporary_config_files_do_not_block_the_directory(setup, tmp_path):
    """A kill before the configuration file's rename leaves its temporary file: the directory
    is still usable (a gone writer's file is removed, a fresh one of unknown writer ignored)."""
    model, tokens, straight, _ = setup
    directory = tmp_path / "ckpt"
    directory.mkdir()
    gone = f".recover_config.json~{socket.gethostname()}~{_dead_pid()}~x.tmp"
    unknown = ".recover_config.json.q8z1.tmp"  # an older version's name
    for name in (gone, unknown):
        (directory / name).write_text('{"form')
    np.testing.assert_array_equal(_recover(model, tokens, directory), straight)
    assert sorted(os.listdir(directory)) == [unknown, "2", "4", "recover_config.json"]


def test_damaged_or_missing_config_is_refused_naming_it(setup, tmp_path):
    model, tokens, _, _ = setup
    directory = _copy(setup, tmp_path)
    path = directory / "recover_config.json"
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=rf"{path} is unreadable .*delete the directory"):
        _recover(model, tokens, directory)
    path.write_text(json.dumps({**json.loads(text), "format": "jaxablate.recover/1"}))
    with pytest.raises(ValueError, match=r"format 'jaxablate.recover/1'; this jaxablate reads"):
        _recover(model, tokens, directory)
    path.unlink()
    with pytest.raises(ValueError, match=r"holds checkpoints \(steps \[2, 4\]\) but no "):
        _recover(model, tokens, directory)
    assert sorted(os.listdir(directory)) == ["2", "4"]  # nothing was changed


def test_steps_record_their_configuration(setup, tmp_path, caplog):
    """A step copied from another run's directory (another configuration) is not used."""
    model, tokens, straight, _ = setup
    directory = _copy(setup, tmp_path)
    path = directory / "4" / CHECKSUMS
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "config_sha256": "f" * 64}))
    with caplog.at_level("WARNING", logger=LOGGER):
        np.testing.assert_array_equal(_recover(model, tokens, directory), straight)
    assert "records another configuration's fingerprint" in caplog.text
    assert Path(directory / "4" / CHECKSUMS).is_file()  # written again
