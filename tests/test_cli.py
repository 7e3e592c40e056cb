"""The ``jaxablate`` command line: a light top level, one-line errors for every subcommand
(bad input, a full disk, Ctrl-C), the shipped tasks' metrics by name, ``show`` in cost sign and
its advice on an unfinished sweep, and the DataFrame export."""

import errno
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

import jaxablate as ja
from jaxablate import cli, demo, estimate_cli, export, sweep_cli

CFG = ja.ModelConfig(
    n_layers=2, n_heads=2, d_model=8, d_head=4, d_mlp=16, vocab_size=11, n_ctx=8, init_std=0.4
)
HEAVY = ("jax", "jaxlib", "flax", "orbax", "optax", "matplotlib", "torch", "transformers")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_files")
    ja.save_model(ja.Transformer(CFG, rngs=nnx.Rngs(3)), root / "model")
    tokens = np.asarray(jax.random.randint(jax.random.key(4), (3, 6), 0, CFG.vocab_size))
    np.save(root / "tokens.npy", tokens)
    return root


def _sweep_argv(files, out, *extra):
    return [
        "sweep", "--model", str(files / "model"), "--tokens", str(files / "tokens.npy"),
        "--components", "L0H0,L1H1", "--out", str(out), "--no-progress", *extra,
    ]  # fmt: skip


def _estimate_argv(files, out, *extra):
    return [
        "estimate", "--model", str(files / "model"), "--tokens", str(files / "tokens.npy"),
        "--components", "L0H0,L1H1,L1.mlp", "--budget", "8", "--out", str(out), *extra,
    ]  # fmt: skip


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


# ------------------------------------------------------------------------------ top level


def test_help_and_version_import_no_jax():
    """``jaxablate``, ``--help`` and ``--version`` answer without loading jax, flax or orbax."""
    code = (
        "import sys\n"
        "from jaxablate.cli import main\n"
        "for argv in ([], ['--help'], ['--version']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print('HEAVY', sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert "HEAVY []" in done.stdout, done.stdout[-400:]
    for name in cli.SUBCOMMANDS:  # --help lists every subcommand (a new one included)
        assert f"    {name} " in done.stdout
    assert f"jaxablate {ja.__version__}" in done.stdout


@pytest.mark.slow
def test_no_module_needs_torch_or_pandas():
    """Every module of the package (and every public name) imports without torch, transformers
    or pandas: a plain ``pip install -e .`` never needs them."""
    code = (
        "import importlib, pkgutil, sys\n"
        "import jaxablate\n"
        "for m in pkgutil.walk_packages(jaxablate.__path__, 'jaxablate.'):\n"
        "    if m.name != 'jaxablate.__main__':\n"
        "        importlib.import_module(m.name)\n"
        "[getattr(jaxablate, name) for name in jaxablate.__all__]\n"
        "print('OPTIONAL', sorted({m.split('.')[0] for m in sys.modules}"
        " & {'torch', 'transformers', 'pandas'}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert "OPTIONAL []" in done.stdout, done.stdout[-400:]


def test_no_command_lists_the_subcommands(capsys):
    assert cli.main([]) == 2
    out = capsys.readouterr().out
    for name, sub in cli.SUBCOMMANDS.items():
        assert name in out and sub.help.split()[0] in out
    assert "the following arguments are required" not in out


def test_unknown_command_names_the_choices(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["swep"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "'swep'" in err and all(name in err for name in cli.SUBCOMMANDS)


def test_every_subcommand_builds_its_parser():
    for name in cli.SUBCOMMANDS:
        parser = cli.build_parser(name)
        assert parser.prog == f"jaxablate {name}"


# ------------------------------------------------------------------------------ errors


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.fixture()
def argv_of(files, tmp_path):
    """A valid command line of each subcommand, and the function to patch to make it fail."""
    return {
        "demo": (["demo", "--out", str(tmp_path / "d"), "--fast"], demo, "run_demo_study"),
        "sweep": (_sweep_argv(files, tmp_path / "s"), sweep_cli, "sweep"),
        "show": (["show", str(tmp_path / "s")], sweep_cli, "sweep_status"),
        "estimate": (_estimate_argv(files, tmp_path / "e"), estimate_cli, "_run"),
    }


def test_every_subcommand_is_covered(argv_of):
    assert set(argv_of) == set(cli.SUBCOMMANDS), "add a failing command line for it here"


@pytest.mark.parametrize("command", sorted(cli.SUBCOMMANDS))
def test_disk_full_and_ctrl_c_are_one_line(command, argv_of, monkeypatch, capsys):
    argv, module, name = argv_of[command]
    rerun = cli.SUBCOMMANDS[command].rerun
    monkeypatch.setattr(module, name, _enospc)
    assert cli.main(argv) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"jaxablate {command}: error: no space left on the device")
    assert line.endswith(rerun)
    monkeypatch.setattr(module, name, _interrupt)
    assert cli.main(argv) == 130
    line = _one_line(capsys.readouterr().err)
    assert line == f"jaxablate {command}: interrupted (Ctrl-C); {rerun}"


def test_sweep_on_a_full_disk(files, tmp_path, monkeypatch, capsys):
    """The atomic writer's first write (the manifest) fails: one line naming the file."""
    monkeypatch.setattr(os, "fsync", _enospc)
    assert cli.main(_sweep_argv(files, tmp_path / "s")) == 2
    line = _one_line(capsys.readouterr().err)
    assert "no space left on the device" in line and str(tmp_path / "s") in line
    assert line.endswith("rerun the same command to resume from the chunks already on disk")


def test_bad_arguments_are_one_line(files, tmp_path, capsys):
    base = _sweep_argv(files, tmp_path / "s")
    assert cli.main([*base, "--metric", "task"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("jaxablate sweep: error: --metric task needs --model to be a shipped")
    assert "got '" + str(files / "model") + "'" in line
    assert cli.main(["show", str(tmp_path / "nothing")]) == 2
    assert "not a sweep directory" in _one_line(capsys.readouterr().err)
    assert cli.main([*base[:5], "--components", "L0H7", *base[7:]]) == 2
    assert "--components L0H7: the model has heads 0..1, got head 7" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["show", str(tmp_path), "--top", "0"])
    assert "argument --top: expected a positive int, got '0'" in capsys.readouterr().err


def test_task_metrics_by_name():
    names = sweep_cli.task_metrics("induction-2l")
    assert set(names) == {"task", "task:repeat_loss", "task:first_half_loss",
                          "task:repeat_accuracy"}  # fmt: skip
    _, task = ja.load_pretrained("induction-2l")
    assert names["task"] == task.metric == names["task:repeat_loss"]
    assert set(sweep_cli.task_metrics("modadd-1l")) == {"task", "task:answer_loss", "task:accuracy"}


@pytest.mark.slow
def test_sweep_with_the_task_metric(tmp_path, capsys):
    """``--metric task`` scores with the metric the demo reports, not the all-position loss."""
    model, task = ja.load_pretrained("induction-2l")
    tokens = np.asarray(task.batch(jax.random.key(0), 8))
    np.save(tmp_path / "tokens.npy", tokens)
    argv = ["sweep", "--model", "induction-2l", "--tokens", str(tmp_path / "tokens.npy")]
    argv += ["--components", "L1H0,L1H1", "--metric", "task", "--out", str(tmp_path / "s")]
    assert cli.main([*argv, "--no-progress"]) == 0
    values, meta = ja.load_sweep(tmp_path / "s")
    comps = ja.Components(model.config, (ja.Component("head", 1, 0), ja.Component("head", 1, 1)))
    want = ja.evaluate(model, comps, ja.subsets.all(2), tokens, metric=task.metric)
    np.testing.assert_allclose(values, want, rtol=1e-5, atol=1e-6)
    assert meta["metric"]["name"] == "repeat_loss"
    assert cli.main([*argv[:-2], "--metric", "task:nope", "--out", str(tmp_path / "t")]) == 2
    assert "has the metrics task, task:repeat_loss" in capsys.readouterr().err


# ------------------------------------------------------------------------------ show


def _interrupt_after_first_chunk(real):
    def sweep(*args, **kwargs):
        def on_chunk(index, start, stop):
            raise KeyboardInterrupt

        return real(*args, **kwargs, on_chunk=on_chunk)

    return sweep


@pytest.mark.slow
def test_interrupted_sweep_then_show(files, tmp_path, monkeypatch, capsys):
    """Ctrl-C after one chunk; show names the command that finishes it; the rerun resumes; show
    prints removal costs (a loss: minus the presence game's values), --raw the game's values."""
    out = tmp_path / "s"
    argv = _sweep_argv(files, out, "--chunk-size", "1")
    with monkeypatch.context() as m:
        m.setattr(sweep_cli, "sweep", _interrupt_after_first_chunk(sweep_cli.sweep))
        assert cli.main(argv) == 130
    assert "interrupted (Ctrl-C); rerun the same command to resume" in capsys.readouterr().err
    assert json.loads((out / sweep_cli.COMMAND_FILE).read_text())["argv"] == ["jaxablate", *argv]
    assert cli.main(["show", str(out)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "3 of 4 chunks missing" in line
    assert line.endswith("finish it with: jaxablate sweep --model " + " ".join(argv[2:]))

    assert cli.main(argv) == 0  # the same command resumes
    capsys.readouterr()
    values, meta = ja.load_sweep(out)
    assert cli.main(["show", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Removal cost (nats, higher = more important)" in text
    phi = np.asarray(ja.interactions.shapley(values))
    assert f"{-phi[0]:+12.6f}" in text and f"{values[1] - values[3]:+12.6f}" in text
    assert cli.main(["show", str(out), "--raw"]) == 0
    raw = capsys.readouterr().out
    assert f"{phi[0]:+12.6f}" in raw and "Raw values of the presence game" in raw

    frame = export.sweep_frame(values, meta)
    np.testing.assert_allclose(frame["cost"], values - values[3], atol=1e-7)


def test_show_command_advice_strips_workers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert sweep_cli._resume_command(
        ["jaxablate", "sweep", "--worker", "1/4", "--no-wait", "--worker=2/4", "--out", "x"]
    ) == ["jaxablate", "sweep", "--out", "x"]
    (tmp_path / sweep_cli.COMMAND_FILE).write_text(
        json.dumps({"argv": ["jaxablate", "sweep", "--out", "a b"], "cwd": "/elsewhere"})
    )
    assert sweep_cli.recorded_command(tmp_path) == "cd /elsewhere && jaxablate sweep --out 'a b'"


# ------------------------------------------------------------------------------ export


def _meta(names, metric="loss", rows="all"):
    return {"components": names, "rows": rows, "metric": {"name": metric},
            "ablation": {"kind": "zero"}}  # fmt: skip


def test_sweep_frame_of_all_subsets():
    pd = pytest.importorskip("pandas")
    values = np.arange(8, dtype=np.float32) * 0.5
    frame = export.sweep_frame(values, _meta(["a", "b", "c"]))
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["a", "b", "c", "value", "cost"]
    assert frame.loc[5, ["a", "b", "c"]].tolist() == [True, False, True]  # bitmask 0b101
    np.testing.assert_allclose(frame["cost"], values - values[-1])
    assert frame.attrs["cost_label"] == "removal cost (nats, higher = more important)"
    higher = export.sweep_frame(values, _meta(["a", "b", "c"], "logit_diff"))
    np.testing.assert_allclose(higher["cost"], values[-1] - values)
    with pytest.raises(ValueError, match="direction of metric 'mine' is unknown"):
        export.sweep_frame(values, _meta(["a", "b", "c"], "mine"))
    mine = export.sweep_frame(values, _meta(["a", "b", "c"], "mine"), lower_is_better=False)
    np.testing.assert_allclose(mine["cost"], higher["cost"])


def test_sweep_frame_of_explicit_rows(monkeypatch):
    pytest.importorskip("pandas")
    rows = np.array([[True, False], [False, False]])
    meta = {**_meta(["a", "b"], rows="explicit"), "rows_array": rows}
    frame = export.sweep_frame(np.array([1.0, 2.0]), meta)
    assert frame.index.name == "row" and np.isnan(frame["cost"]).all()  # no full row to compare
    with pytest.raises(ValueError, match=r"do not fit the sweep's rows of shape \(2, 2\)"):
        export.sweep_frame(np.array([1.0, 2.0, 3.0]), meta)
    monkeypatch.setitem(sys.modules, "pandas", None)  # pandas not installed
    with pytest.raises(ImportError, match="pip install pandas"):
        export.sweep_frame(np.array([1.0, 2.0]), meta)


def test_metric_directions():
    for name in ("loss", "repeat_loss", "answer_loss", "kl_to_clean"):
        assert export.loss_like(name) is True
    for name in ("accuracy", "repeat_accuracy", "logit_diff"):
        assert export.loss_like(name) is False
    assert export.loss_like("my_metric") is None


# ------------------------------------------------------------------------------ estimate


def test_estimate_command_exact_at_full_budget_resumes_and_reports(files, tmp_path, capsys):
    """A budget of 2^n makes the kernel estimate exact: it equals ja.interactions.shapley of
    the full table; the rerun reads every evaluation from --out; JSON and HTML are written."""
    paths = ["--json", str(tmp_path / "e.json"), "--report", str(tmp_path / "e.html")]
    argv = _estimate_argv(files, tmp_path / "e", *paths)
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("Shapley value of 3 components, ") and "L1.mlp" in out
    record = json.loads((tmp_path / "e.json").read_text())
    model = ja.load_model(files / "model")
    comps = ja.heads(CFG, layers=[0], heads=[0]) + ja.heads(CFG, layers=[1], heads=[1])
    comps = comps + ja.blocks(CFG, "mlp", layers=[1])
    assert record["components"] == comps.names == ["L0H0", "L1H1", "L1.mlp"]
    tokens = np.load(files / "tokens.npy")
    table = ja.evaluate(model, comps, ja.subsets.all(3), tokens)
    want = np.asarray(ja.interactions.shapley(np.asarray(table, np.float64)))
    np.testing.assert_allclose(record["values"], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(record["stderr"], 0.0, atol=1e-6)
    html = (tmp_path / "e.html").read_text()
    assert "<h2>Shapley value</h2>" in html and "L1.mlp" in html
    assert cli.main(argv) == 0  # resumed: nothing evaluated again
    assert "(0 run, 8 read back from --out, 1 calls)" in capsys.readouterr().out
    assert json.loads((tmp_path / "e.json").read_text())["values"] == record["values"]
