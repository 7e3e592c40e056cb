"""The persistent compilation cache: where it goes, the opt-out, and that it never overrides."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from jaxablate import _compile_cache

ROOT = Path(__file__).resolve().parents[1]

BUILD = """
import jax
from flax import nnx
import jaxablate as ja
cfg = ja.ModelConfig(n_layers=1, n_heads=2, d_model=16, d_head=8, d_mlp=32, vocab_size=32, n_ctx=8)
ja.Transformer(cfg, rngs=nnx.Rngs(0))
print(jax.config.jax_compilation_cache_dir)
"""


def _fresh_process(env: dict[str, str]) -> str:
    """Build a tiny model in a fresh interpreter; the cache directory it ended up with."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    full = {k: v for k, v in os.environ.items() if not k.startswith(("JAXABLATE_", "JAX_COMP"))}
    full.update(env, PYTHONPATH=path)
    done = subprocess.run(
        [sys.executable, "-c", BUILD], env=full, capture_output=True, text=True, check=True
    )
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "xdg/jaxablate/xla"),
        ("", "xdg/jaxablate/xla"),
        ("1", "xdg/jaxablate/xla"),
        ("on", "xdg/jaxablate/xla"),
        ("0", None),
        ("false", None),
        ("OFF", None),
        ("elsewhere/xla", "elsewhere/xla"),
    ],
)
def test_cache_dir_follows_the_environment(monkeypatch, tmp_path, value, expected):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if value is None:
        monkeypatch.delenv(_compile_cache.ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(_compile_cache.ENV_VAR, value.replace("elsewhere", str(tmp_path)))
    got = _compile_cache.cache_dir()
    if expected is None:
        assert got is None
    else:
        want = tmp_path / expected if expected.startswith("xdg") else tmp_path / "xla"
        assert got == want


def test_cache_dir_without_xdg_is_under_home(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv(_compile_cache.ENV_VAR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert _compile_cache.cache_dir() == tmp_path / ".cache" / "jaxablate" / "xla"


def test_enable_keeps_a_directory_already_set_and_the_opt_out(monkeypatch, tmp_path):
    # only config values change here (nothing compiles), and they are restored at once
    before = jax.config.jax_compilation_cache_dir
    monkeypatch.setenv(_compile_cache.ENV_VAR, str(tmp_path / "ours"))
    try:
        jax.config.update("jax_compilation_cache_dir", str(tmp_path / "theirs"))
        assert _compile_cache.enable() == str(tmp_path / "theirs")
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "theirs")
        jax.config.update("jax_compilation_cache_dir", None)
        monkeypatch.setenv(_compile_cache.ENV_VAR, "0")
        assert _compile_cache.enable() is None
        assert jax.config.jax_compilation_cache_dir is None
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
    assert not (tmp_path / "ours").exists()


@pytest.mark.slow
def test_a_fresh_process_writes_its_programs_to_the_cache(tmp_path):
    xdg = tmp_path / "xdg"
    assert _fresh_process({"XDG_CACHE_HOME": str(xdg)}) == str(xdg / "jaxablate" / "xla")
    written = list((xdg / "jaxablate" / "xla").glob("*-cache"))
    assert any(p.name.startswith("jit__standard_normal") for p in written), written


@pytest.mark.slow
def test_a_cache_directory_set_through_jax_wins(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg"), "JAX_COMPILATION_CACHE_DIR": str(tmp_path)}
    assert _fresh_process(env) == str(tmp_path)
    assert not (tmp_path / "xdg").exists()
