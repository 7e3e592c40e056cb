"""ja.recover: vmapped runs equal separate runs, removed parts stay removed, recovery happens,
checkpoints resume exactly, one compilation, memory refusal; and the recovery plot."""

import functools
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxablate as ja
from jaxablate import recovery
from jaxablate.plots_recovery import recovery_curves
from jaxablate.recovery import RecoveryResult, recover

CFG = ja.ModelConfig(n_layers=2, n_heads=2, d_model=32, d_head=8, d_mlp=64, vocab_size=8, n_ctx=12)
PERIOD, SEQ, BATCH = 3, 12, 16
TX = optax.chain(optax.add_decayed_weights(0.05), optax.sgd(0.1))
HEAD_PARAMS = ("W_Q", "W_K", "W_V", "b_Q", "b_K", "b_V", "W_O")


def periodic_tokens(key: jax.Array, n: int) -> np.ndarray:
    """Sequences that repeat a random 3-token motif: learnable only by attending back."""
    motif = jax.random.randint(key, (n, PERIOD), 0, CFG.vocab_size)
    return np.asarray(jnp.tile(motif, (1, SEQ // PERIOD)), np.int32)


@functools.partial(jax.jit, static_argnums=0)
def _pretrain(graphdef, key, tokens):
    """Initialise and train the model in one compiled program (300 Adam steps)."""
    k_init, k_fit = jax.random.split(key)
    state = nnx.split(ja.Transformer(CFG, rngs=nnx.Rngs(k_init)))[1]
    tx = optax.adam(1e-2)

    def step(carry, t):
        state, opt = carry
        idx = jax.random.randint(jax.random.fold_in(k_fit, t), (BATCH,), 0, tokens.shape[0])
        batch = tokens[idx]

        def f(s):
            return ja.metrics.loss(nnx.merge(graphdef, s)(batch), batch).mean()

        updates, opt = tx.update(jax.grad(f)(state), opt, state)
        return (optax.apply_updates(state, updates), opt), None

    (state, _), _ = jax.lax.scan(step, (state, tx.init(state)), jnp.arange(300))
    return state


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, tokens, masks):
    return nnx.merge(graphdef, state)(tokens, masks=masks)


@pytest.fixture(scope="module")
def setup():
    """A tiny model trained for 300 steps on the periodic task, and its data."""
    k_model, k_train, k_eval = jax.random.split(jax.random.key(0), 3)
    train = periodic_tokens(k_train, 256)
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: ja.Transformer(CFG, rngs=nnx.Rngs(0))))
    model = nnx.merge(graphdef, _pretrain(graphdef, k_model, train))
    comps = ja.heads(CFG) + ja.blocks(CFG, "mlp")
    return model, comps, train, periodic_tokens(k_eval, 32)


def _rows(*removed: list[str]) -> np.ndarray:
    names = (ja.heads(CFG) + ja.blocks(CFG, "mlp")).names
    return np.array([[n not in r for n in names] for r in removed], bool)


# Rows used by most tests (same K and shapes: one compilation serves them all).
ROWS = _rows([], ["L0H0", "L0H1"], ["L1H1", "L0.mlp"])


def _params(model) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in ja.models.io.model_arrays(model).items()}


def _run(setup, rows=ROWS, **kw):
    model, comps, train, ev = setup
    args = dict(steps=6, eval_every=3, batch_size=BATCH, key=jax.random.key(7), progress=False)
    return recover(model, comps, rows, train, eval_tokens=ev, **(args | kw))


# ------------------------------------------------------------------ reference: a plain loop
def reference_run(model, row, train, ev, *, steps, eval_every, key, ablation):
    """One configuration trained step by step in Python with its own jitted update."""
    comps = ja.heads(CFG) + ja.blocks(CFG, "mlp")
    graphdef, state = nnx.split(model)
    ok = jax.tree.map(lambda x: np.ones(x.shape, np.float32), state)
    removed = [n for n, kept in zip(comps.names, row, strict=True) if not kept]
    for name in removed:
        layer = int(name[1])
        if "H" in name:
            head = int(name[3])
            for p in HEAD_PARAMS:
                ok["attn"][p].value[layer, head] = 0.0
        else:
            for p in ("W_in", "b_in", "W_out", "b_out"):
                ok["mlp"][p].value[layer] = 0.0
            ok["ln2"]["w"].value[layer] = 0.0
            ok["ln2"]["b"].value[layer] = 0.0
    for layer in range(CFG.n_layers):
        if all(f"L{layer}H{h}" in removed for h in range(CFG.n_heads)):
            ok["ln1"]["w"].value[layer] = 0.0
            ok["ln1"]["b"].value[layer] = 0.0
    masks = comps.masks(row)
    opt = TX.init(state)
    curve = []
    for t in range(steps + 1):
        if t % eval_every == 0 or t == steps:
            m = nnx.merge(graphdef, state)
            curve.append(ja.evaluate(m, comps, row[None], ev, ablation=ablation)[0])
        if t == steps:
            break
        idx = jax.random.randint(jax.random.fold_in(key, t), (BATCH,), 0, train.shape[0])
        state, opt = _ref_step(graphdef, state, opt, masks, ok, jnp.asarray(train)[idx], ablation)
    return np.array(curve), nnx.merge(graphdef, state)


@functools.partial(jax.jit, static_argnums=0)
def _ref_step(graphdef, state, opt, masks, ok, batch, ablation):
    def f(s):
        return ja.metrics.loss(nnx.merge(graphdef, s)(batch, masks, ablation), batch).mean()

    grads = jax.tree.map(lambda g, a: g * a, jax.grad(f)(state), ok)
    updates, opt = TX.update(grads, opt, state)
    updates = jax.tree.map(lambda u, a: u * a, updates, ok)
    return optax.apply_updates(state, updates), opt


# ------------------------------------------------------------------ tests
def test_vmapped_runs_equal_separate_runs_and_a_plain_loop(setup):
    """K = 3 together == 3 recover calls with K = 1 == an independent step-by-step loop.

    Mean ablation, so that a removed head's W_O rows receive nonzero gradients and must be held;
    weight decay, which would move frozen parameters unless the updates are masked; plain SGD, so
    that parameters with (numerically) zero gradients are not amplified to noise as Adam would.
    """
    model, comps, train, ev = setup
    abl = ja.ablation.mean(model, train)
    key = jax.random.key(3)
    together = _run(setup, ablation=abl, key=key, optimizer=TX, return_params=True)
    start = _params(model)
    for k, row in enumerate(ROWS):
        curve, ref_model = reference_run(
            model, row, train, ev, steps=6, eval_every=3, key=key, ablation=abl
        )
        np.testing.assert_allclose(together.metric[k], curve, rtol=1e-5, atol=1e-6)
        got, want = _params(together.model(k)), _params(ref_model)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)
        # a removed head's own parameters (W_O rows included) are bit-identical to the start
        for name in (n for n, kept in zip(comps.names, row, strict=True) if not kept and "H" in n):
            layer, head = int(name[1]), int(name[3])
            for p in HEAD_PARAMS:
                np.testing.assert_array_equal(
                    got[f"attn.{p}"][layer, head], start[f"attn.{p}"][layer, head]
                )
    # the test can fail: kept parameters did move
    assert not np.array_equal(_params(together.model(0))["attn.W_O"], start["attn.W_O"])
    np.testing.assert_array_equal(together.steps, [0, 3, 6])


@pytest.fixture(scope="module")
def recovered(setup):
    """200 recovery steps of ROWS with zero ablation, final parameters kept."""
    return _run(setup, steps=200, eval_every=50, return_params=True)


def test_zero_ablation_damage_partly_recovers(setup, recovered):
    r = recovered
    np.testing.assert_array_equal(r.steps, [0, 50, 100, 150, 200])
    assert r.metric.shape == r.recovered_fraction.shape == (3, 5)
    model, comps, _, ev = setup
    assert r.baseline == pytest.approx(float(ja.evaluate(model, comps, ROWS[:1], ev)[0]))
    np.testing.assert_allclose(r.metric[:, 0], ja.evaluate(model, comps, ROWS, ev), rtol=1e-5)
    # the unablated row stays within noise of its start
    np.testing.assert_allclose(r.metric[0], r.metric[0, 0], atol=0.05)
    assert np.isnan(r.recovered_fraction[0]).all()
    for k in (1, 2):
        assert r.metric[k, 0] > r.baseline + 1.0  # the ablation did real damage ...
        assert r.metric[k, -1] < r.metric[k, 0] - 0.3  # ... and part of it is undone
        m0 = float(r.metric[k, 0])
        want = (m0 - r.metric[k].astype(np.float64)) / (m0 - r.baseline)
        np.testing.assert_allclose(r.recovered_fraction[k], want, rtol=1e-5, atol=1e-6)
        assert 0.1 < r.recovered_fraction[k, -1] <= 1.05


def test_removed_components_stay_removed(setup, recovered):
    """Perturbing a removed head's or MLP's own weights does not change the ablated output."""
    model, comps, _, ev = setup
    start = _params(model)
    rng = np.random.default_rng(0)
    ones = ja.Masks.ones(CFG)
    for k, row in enumerate(ROWS[1:], start=1):
        graphdef, state = nnx.split(recovered.model(k))
        masks = jax.tree.map(lambda x: x[0], comps.masks(row[None]))
        before = np.asarray(_forward(graphdef, state, ev, masks))
        unmasked = np.asarray(_forward(graphdef, state, ev, ones))
        perturbed = jax.tree.map(np.array, state)  # numpy copies
        removed = [n for n, kept in zip(comps.names, row, strict=True) if not kept]
        owned = []
        for name in removed:
            layer = int(name[1])
            if "H" in name:
                owned += [(f"attn.{p}", (layer, int(name[3]))) for p in HEAD_PARAMS]
            else:
                owned += [(f"mlp.{p}", (layer,)) for p in ("W_in", "b_in", "W_out", "b_out")]
                owned += [(f"ln2.{p}", (layer,)) for p in ("w", "b")]
        for name, index in owned:
            group, leaf = name.split(".")
            value = perturbed[group][leaf].value
            np.testing.assert_array_equal(value[index], start[name][index], err_msg=name)
            value[index] += 3.0 * rng.standard_normal(value[index].shape, np.float32)
        np.testing.assert_array_equal(_forward(graphdef, perturbed, ev, masks), before)
        # the same perturbation with the components kept does change the output (test can fail)
        assert not np.allclose(_forward(graphdef, perturbed, ev, ones), unmasked, atol=1e-3)
    # and recovery did move the parameters that remain
    assert not np.array_equal(_params(recovered.model(1))["attn.W_Q"][1], start["attn.W_Q"][1])


def test_step_compiles_once(setup, recovered):
    before = recovery._train_steps._cache_size()
    _run(setup, rows=ROWS[::-1], steps=7, eval_every=2)
    after_one = recovery._train_steps._cache_size()
    _run(setup, rows=~ROWS, steps=5, eval_every=5)
    assert after_one - before <= 1  # several chunks of one call: at most one compilation
    assert recovery._train_steps._cache_size() == after_one  # new rows, steps: no compilation
    assert recovery._eval_runs._cache_size() >= 1


def test_trainable_selects_what_changes(setup):
    model, _, _, _ = setup
    start = _params(model)
    for trainable in ("mlp", nnx.PathContains("mlp")):
        r = _run(
            setup, rows=ROWS[:1], steps=3, eval_every=3, trainable=trainable, return_params=True
        )
        got = _params(r.model(0))
        for name in got:
            if name.startswith("mlp."):
                assert not np.array_equal(got[name], start[name]), name
            else:
                np.testing.assert_array_equal(got[name], start[name], err_msg=name)
    with pytest.raises(ValueError, match="selects no parameters"):
        _run(setup, trainable="nothing.*")


def test_memory_estimate_is_linear_and_refuses(setup):
    model, _, _, _ = setup
    est = functools.partial(
        recovery.memory_estimate, model, batch_size=BATCH, seq=SEQ, eval_batch=32, eval_seq=SEQ
    )
    per_run = est(n_runs=2) - est(n_runs=1)
    assert per_run > 0
    assert est(n_runs=7) - est(n_runs=3) == 4 * per_run
    with pytest.raises(ValueError, match=r"K=3 configurations need about .* at most 1 fit"):
        _run(setup, memory_budget=est(n_runs=1) + per_run // 2)


def test_bad_arguments_are_refused(setup):
    model, _, train, _ = setup
    with pytest.raises(ValueError, match="binary"):
        _run(setup, rows=ROWS * 0.5)
    with pytest.raises(ValueError, match="shared by every example"):
        _run(setup, ablation=ja.ablation.resample(model, train[:BATCH]))
    with pytest.raises(ValueError, match="checkpoint_dir"):
        _run(setup, checkpoint_every=2)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        _run(setup, steps=0)


def test_checkpoint_of_another_configuration_is_refused(setup, tmp_path):
    first = _run(setup, checkpoint_dir=str(tmp_path))
    again = _run(setup, checkpoint_dir=str(tmp_path))  # finished: restored, not retrained
    np.testing.assert_array_equal(again.metric, first.metric)
    with pytest.raises(ValueError, match=r"different configuration \(differing fields: rows\)"):
        _run(setup, rows=ROWS[::-1], checkpoint_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"differing fields: key, steps\)"):
        _run(setup, steps=9, key=jax.random.key(8), checkpoint_dir=str(tmp_path))
    with pytest.raises(ValueError, match="differing fields: optimizer"):
        _run(setup, optimizer=optax.adamw(2e-3), checkpoint_dir=str(tmp_path))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="not a recover checkpoint directory"):
        _run(setup, checkpoint_dir=str(tmp_path / "other"))


@pytest.mark.slow
def test_killed_run_resumes_to_identical_curves(setup, tmp_path):
    model, comps, train, ev = setup
    ja.save_model(model, str(tmp_path / "model"))
    steps, eval_every, seed = 40, 10, 5
    np.savez(
        tmp_path / "data.npz", rows=ROWS, train=train, eval=ev, steps=steps,
        eval_every=eval_every, batch_size=BATCH, seed=seed,
    )  # fmt: skip
    ckpt_dir = tmp_path / "ckpt"
    worker = os.path.join(os.path.dirname(__file__), "_recovery_worker.py")
    args = [str(tmp_path / "model"), str(tmp_path / "data.npz"), str(ckpt_dir)]
    with subprocess.Popen(
        [sys.executable, worker, *args], stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            line = proc.stdout.readline()  # blocks until the first checkpoint is complete
            assert line.startswith("saved "), line
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == -signal.SIGKILL
    saved = sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
    assert saved and saved[-1] < steps  # interrupted part-way
    loaded = ja.load_model(str(tmp_path / "model"))
    kw = dict(steps=steps, eval_every=eval_every, batch_size=BATCH, key=jax.random.key(seed))
    resumed = recover(loaded, comps, ROWS, train, eval_tokens=ev, checkpoint_dir=str(ckpt_dir),
                      checkpoint_every=eval_every, progress=False, **kw)  # fmt: skip
    straight = recover(model, comps, ROWS, train, eval_tokens=ev, progress=False, **kw)
    np.testing.assert_array_equal(resumed.metric, straight.metric)
    np.testing.assert_array_equal(resumed.recovered_fraction, straight.recovered_fraction)


def test_recovery_plot():
    names = ("L0H0", "L0H1")
    result = RecoveryResult(
        steps=np.array([0, 5, 10]),
        metric=np.array([[2.0, 1.5, 1.2], [1.0, 1.0, 1.0]], np.float32),
        baseline=1.0,
        recovered_fraction=np.array([[0.0, 0.5, 0.8], [np.nan] * 3], np.float32),
        rows=np.array([[False, True], [True, True]]),
        names=names,
        metric_name="loss",
    )
    fig = recovery_curves(result)
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert len(lines) == 3
    np.testing.assert_array_equal(lines[0].get_ydata(), result.metric[0])
    assert lines[-1].get_linestyle() == "--"
    np.testing.assert_array_equal(lines[-1].get_ydata(), [1.0, 1.0])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["-{L0H0}", "none removed", "unablated"]
    fig2 = recovery_curves(result, ax=ax, names=["a", "b"])
    assert fig2 is fig
    with pytest.raises(ValueError, match="one label per configuration"):
        recovery_curves(result, names=["a"])


def test_runs_sharded_over_devices_equal_one_device_and_resume_across(setup, tmp_path):
    """K = 3 runs on 2 CPU devices (padded to 4) == one device; a checkpoint written on 2
    devices resumes on 1 to the same curves."""
    model, _, train, ev = setup
    ja.save_model(model, str(tmp_path / "model"))
    np.savez(tmp_path / "data.npz", rows=ROWS, train=train, eval=ev)
    script = textwrap.dedent(
        f"""
        import jax, numpy as np, optax
        import jaxablate as ja
        from jaxablate.recovery import recover
        assert len(jax.devices()) == 2, jax.devices()
        model = ja.load_model({str(tmp_path / "model")!r})
        data = np.load({str(tmp_path / "data.npz")!r})
        comps = ja.heads(model.config) + ja.blocks(model.config, "mlp")
        out = recover(model, comps, data["rows"], data["train"], eval_tokens=data["eval"],
                      steps=6, eval_every=3, batch_size={BATCH}, key=jax.random.key(7),
                      progress=False, return_params=True,
                      checkpoint_dir={str(tmp_path / "ckpt")!r})
        np.savez({str(tmp_path / "out.npz")!r}, metric=out.metric,
                 w_in=np.asarray(out.params["mlp"]["W_in"].value))
        """
    )
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu"
    )
    subprocess.run([sys.executable, "-c", script], env=env, check=True)
    sharded = np.load(tmp_path / "out.npz")
    one = _run(setup, return_params=True)
    assert len(jax.devices()) == 1
    np.testing.assert_allclose(sharded["metric"], one.metric, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        sharded["w_in"], np.asarray(one.params["mlp"]["W_in"].value), rtol=1e-5, atol=1e-6
    )
    # drop the final checkpoint: resuming from step 3 on one device gives the same curves
    shutil.rmtree(tmp_path / "ckpt" / "6")
    resumed = _run(setup, checkpoint_dir=str(tmp_path / "ckpt"))
    np.testing.assert_allclose(resumed.metric, one.metric, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="mesh must be 1-D"):
        mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(1, 1), ("a", "b"))
        _run(setup, mesh=mesh)
