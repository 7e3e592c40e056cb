"""``jaxablate demo``, its decomposition and summary, the plots and the HTML report."""

import base64
import re

import numpy as np
import pytest

from jaxablate import cli, demo, export, plots, report, tasks
from jaxablate.recovery import RecoveryResult


def _brute(values: np.ndarray, sign: float) -> dict[str, np.ndarray]:
    """Costs straight from the definitions, by loops over the table (float64)."""
    n = int(np.log2(values.size))
    full = 2**n - 1

    def cost(removed: int) -> float:
        return sign * (values[full & ~removed] - values[full])

    loco = np.array([cost(1 << i) for i in range(n)])
    pair = np.array([[cost((1 << i) | (1 << j)) for j in range(n)] for i in range(n)])
    excess = pair - loco[:, None] - loco[None, :]
    np.fill_diagonal(excess, 0.0)
    shap = np.zeros(n)
    from math import factorial

    for i in range(n):
        for s in range(2**n):
            if s >> i & 1:
                continue
            k = bin(s).count("1")
            w = factorial(k) * factorial(n - k - 1) / factorial(n)
            shap[i] += w * (values[s | 1 << i] - values[s])
    return {
        "loco_cost": loco,
        "pair_cost": pair,
        "pair_excess": excess,
        "shapley_cost": -sign * shap,
    }


@pytest.mark.parametrize("lower_is_better", [True, False])
def test_removal_costs_match_definitions(lower_is_better):
    rng = np.random.default_rng(0)
    values = rng.normal(size=2**5)
    got = export.removal_costs(values, lower_is_better=lower_is_better)
    want = _brute(values, 1.0 if lower_is_better else -1.0)
    for k, w in want.items():
        np.testing.assert_allclose(got[k], w, rtol=1e-6, atol=1e-6, err_msg=k)
    # removing everything costs the sum of the Shapley costs (efficiency)
    sign = 1.0 if lower_is_better else -1.0
    np.testing.assert_allclose(
        got["shapley_cost"].sum(), sign * (values[0] - values[-1]), rtol=1e-6
    )
    np.testing.assert_allclose(got["spectrum"].sum(), 1.0, rtol=1e-6)


def _planted_result() -> demo.DemoResult:
    """4 players: A and B back each other up (either suffices); C and D are in series."""
    names = ["A", "B", "C", "D"]
    values = np.zeros(16)
    for r in range(16):
        a_or_b = bool(r & 1 or r & 2)
        values[r] = 0.1 + (0.0 if a_or_b else 2.0) + (0.0 if (r & 4 and r & 8) else 1.0)
    parts = export.removal_costs(values, lower_is_better=True)
    return demo.DemoResult(
        model_name="planted",
        task=tasks.induction(),
        names=names,
        values=values,
        sign=float(parts.pop("sign")),
        **parts,
    )


def test_summary_names_pairs_from_the_data():
    res = _planted_result()
    text = demo.summarize(res)
    synergy, overlap = text.split("Important alone, overlapping together")
    # A, B: each costs 0 alone, 2 together
    assert "costs: removal cost (nats, higher = more important)" in synergy
    assert "A + B: alone +0.000 and +0.000 nats, together +2.000 nats" in synergy
    # C, D: each costs 1 alone, only 1 together
    assert "C + D: alone +1.000 and +1.000 nats, together only +1.000" in overlap
    assert "C + D" not in synergy and "A + B" not in overlap


def test_report_of_a_planted_study(tmp_path):
    """Skipped stages leave a note in their section; recovery curves come from the arrays."""
    res = _planted_result()
    res.summary = demo.summarize(res)
    res.notes["mask_front"] = "learned masks skipped (learn_steps=0)"
    res.recovery_labels = ["A removed", "A + B removed"]
    res.recovery = RecoveryResult(
        steps=np.array([0, 10]),
        metric=np.array([[0.1, 0.1], [2.1, 0.5]]),
        baseline=0.1,
        recovered_fraction=np.array([[np.nan, np.nan], [0.0, 0.8]]),
        rows=np.array([[False, True, True, True], [False, False, True, True]]),
        names=tuple(res.names),
        metric_name="loss",
    )
    path = demo.write_demo_report(res, tmp_path / "out")
    assert path == res.files["report"] == tmp_path / "out" / "report.html"
    html = path.read_text()
    assert "Not available: learned masks skipped (learn_steps=0)." in html
    assert not (tmp_path / "out" / demo.PNGS["mask_front"]).exists()
    assert html.count('src="data:image/png;base64,') == 5
    assert "A removed, A + B removed" in html
    fig = demo.make_figures(res)["recovery"]
    lines = fig.axes[0].get_lines()
    np.testing.assert_array_equal(lines[1].get_ydata(), [2.1, 0.5])
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["A removed", "A + B removed", "unablated"]


def test_stages_are_announced_as_they_start(capsys):
    stages = demo.Stages(3, enabled=True)
    with stages.run("first", "doing one thing"):
        assert capsys.readouterr().err == "[1/3] doing one thing ...\n"  # before the work ends
    stages.skip("another thing")
    with pytest.raises(RuntimeError), stages.run("third", "failing"):
        raise RuntimeError
    err = capsys.readouterr().err.splitlines()
    assert err[0].strip().startswith("done in") and err[0].endswith(" s")
    assert err[1:] == ["[2/3] another thing: skipped", "[3/3] failing ..."]
    assert list(stages.seconds) == ["first"]  # a failed stage has no time
    quiet = demo.Stages(1, enabled=False)
    with quiet.run("x", "silent"):
        pass
    assert capsys.readouterr().err == "" and set(quiet.seconds) == {"x"}


def test_run_demo_study_checks_its_arguments():
    with pytest.raises(ValueError, match="unknown model"):
        demo.run_demo_study("no-such-model")
    with pytest.raises(ValueError, match="learn_steps must be a non-negative int"):
        demo.run_demo_study(learn_steps=-1)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        demo.run_demo_study(batch_size=0)
    with pytest.raises(ValueError, match=r"single jax\.random key"):
        demo.run_demo_study(key=0)


def test_report_is_self_contained(tmp_path):
    fig = plots.spectrum_bars([0.0, 1.0])
    doc = report.page(
        "t <&>",
        [report.section("S", report.table(["a", "b"], [("x<y", 1.5)]), report.image(fig, "spec"))],
    )
    assert "t &lt;&amp;&gt;" in doc and "x&lt;y" in doc and "+1.5000" in doc
    b64 = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', doc).group(1)
    assert base64.b64decode(b64).startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="expected 2"):
        report.table(["a", "b"], [(1,)])


@pytest.mark.slow
def test_cli_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out), "--fast"]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "Dispensable alone, not together" in printed
    stages = [line for line in captured.err.splitlines() if line.startswith("[")]
    assert [line[:5] for line in stages] == [f"[{k}/6]" for k in range(1, 7)], captured.err
    assert "evaluating all 256 subsets of 8 components" in stages[1]
    assert re.search(r"^elapsed: \d+\.\d s \(load \d+\.\d s, sweep ", printed, re.M)
    html = (out / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert 'src="http' not in html and "<link" not in html  # nothing external
    n_images = html.count('src="data:image/png;base64,')
    assert "note:" not in printed  # --fast runs every stage
    for key in demo.PNGS:
        png = out / demo.PNGS[key]
        assert png.read_bytes().startswith(b"\x89PNG"), key
    assert n_images == len(demo.PNGS)
    for name in [f"L{layer}H{h}" for layer in range(2) for h in range(4)]:
        assert name in html
    # the summary names a pair from the data: one of the printed pair lines is in the report
    pair_line = re.search(r"^  (L\dH\d \+ L\dH\d): alone", printed, re.M)
    assert pair_line is not None and pair_line.group(1) in html
