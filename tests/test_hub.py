"""Hub ids resolve through a local Hub cache laid out in tmp_path (offline: HF_HUB_OFFLINE=1).

huggingface_hub reads ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` into constants at import, and the
test process has imported it already (through transformers), so loads run in subprocesses.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import jaxablate as ja
from tests._hf import hf_logits, tiny_causal_lm

MAIN = "a" * 40
OTHER = "b" * 40


def _model(seed: int):
    return tiny_causal_lm(
        "GPTNeoXConfig",
        "GPTNeoXForCausalLM",
        seed=seed,
        vocab_size=31,
        hidden_size=32,
        intermediate_size=40,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=32,
    )


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A Hub cache holding ``org/name`` at two commits; ``refs/main`` points at the first."""
    cache = tmp_path_factory.mktemp("hub")
    repo = cache / "models--org--name"
    models = {}
    for commit, seed in ((MAIN, 0), (OTHER, 1)):
        models[commit] = _model(seed)
        models[commit].save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(MAIN)
    return cache, models


def _load_in_subprocess(cache, tmp_path, call: str) -> subprocess.CompletedProcess:
    tokens = np.random.default_rng(0).integers(0, 31, (2, 9)).astype(np.int32)
    np.save(tmp_path / "tokens.npy", tokens)
    script = textwrap.dedent(
        f"""
        import sys, numpy as np
        import jaxablate as ja
        model = {call}
        np.save({str(tmp_path / "ours.npy")!r}, np.asarray(model(np.load({str(tmp_path / "tokens.npy")!r}))))
        assert "torch" not in sys.modules and "transformers" not in sys.modules
        """
    )
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("call", "commit"),
    [
        ('ja.from_hf("org/name")', MAIN),
        (f'ja.from_hf("org/name", revision="{MAIN}")', MAIN),
        (f'ja.from_hf("org/name", revision="{OTHER}")', OTHER),
    ],
)
def test_hub_id_resolves_from_offline_cache(hub, tmp_path, call, commit):
    cache, models = hub
    done = _load_in_subprocess(cache, tmp_path, call)
    assert done.returncode == 0, done.stderr
    tokens = np.load(tmp_path / "tokens.npy")
    ref = hf_logits(models[commit], tokens)
    np.testing.assert_allclose(np.load(tmp_path / "ours.npy"), ref, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_offline_and_not_cached_says_so(hub, tmp_path):
    cache, _ = hub
    done = _load_in_subprocess(cache, tmp_path, 'ja.from_hf("org/absent")')
    assert done.returncode != 0
    assert "ValueError" in done.stderr
    assert "'org/absent' is not in the local cache" in done.stderr
    assert "HF_HUB_OFFLINE is set" in done.stderr


def test_not_a_directory_nor_a_repo_id():
    for bad in ("/no/such/dir", "./relative/missing", "a/b/c", "org/../name", "bad id"):
        with pytest.raises(ValueError, match="is not a directory, nor a Hugging Face Hub repo id"):
            ja.from_hf(bad)


def test_revision_only_for_hub_ids(hub):
    cache, _ = hub
    with pytest.raises(ValueError, match="revision="):
        ja.from_hf(cache / "models--org--name" / "snapshots" / MAIN, revision="main")


@pytest.mark.slow
def test_snapshot_layout_is_a_plain_directory(hub):
    """The same snapshot loads as a directory (the cache layout holds ordinary files)."""
    cache, models = hub
    snapshot = cache / "models--org--name" / "snapshots" / MAIN
    assert json.loads((snapshot / "config.json").read_text())["model_type"] == "gpt_neox"
    tokens = np.random.default_rng(1).integers(0, 31, (1, 7)).astype(np.int32)
    np.testing.assert_allclose(
        np.asarray(ja.from_hf(snapshot)(tokens)), hf_logits(models[MAIN], tokens), atol=1e-4
    )
