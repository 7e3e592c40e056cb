"""``benchmarks/device.py --quick`` runs on the CPU and writes its report (CI-sized), case by
case, so that a run cut short keeps what it measured."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_device_benchmark_quick_mode_writes_its_report(tmp_path):
    out = tmp_path / "device.json"
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=path, JAX_PLATFORMS="cpu")
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "device.py"), "--quick", "--out", str(out)],
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    report = json.loads(out.read_text())
    assert report["quick"] and report["device"]["platform"] == "cpu"
    assert report["complete"] and report["sections"] == ["evaluate", "interactions", "recovery"]
    assert report["peaks"]["peak_flops_per_s"]["float32"] > 0  # measured on a CPU
    assert {c["dtype"] for c in report["evaluate"]} == {"float32", "bfloat16"}
    for case in report["evaluate"]:
        assert case["c_default"]["subsets_per_s"] > 0
        assert case["b_naive"]["fraction_of_peak"][case["dtype"]] > 0
    assert report["interactions"][0]["entries_per_s"] > 0
    assert report["recovery"][0]["run_steps_per_s"]["vmapped"] > 0
    assert report["peak_memory_after"]["recovery"]["bytes"] > 0


def _device_module():
    spec = importlib.util.spec_from_file_location("device_bench", ROOT / "benchmarks" / "device.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_run_cut_short_keeps_the_sections_it_finished(tmp_path, monkeypatch):
    """The report is on disk after each case: a crash (or a time limit) in the recovery section
    leaves the interactions results, marked incomplete."""
    device = _device_module()

    def cut_short(*args):
        raise RuntimeError("cut short")

    monkeypatch.setattr(device, "recovery_section", cut_short)
    out = tmp_path / "device.json"
    argv = ["device.py", "--quick", "--sections", "recovery,interactions", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(RuntimeError, match="cut short"):
        device.main()
    report = json.loads(out.read_text())
    assert not report["complete"] and report["sections"] == ["interactions", "recovery"]
    assert report["interactions"][0]["n"] == 8 and report["interactions"][0]["entries_per_s"] > 0
    assert "recovery" not in report and "evaluate" not in report
    assert list(report["section_seconds"]) == ["interactions"]
    assert not list(tmp_path.glob("*.tmp"))  # written atomically


def test_sections_must_be_known():
    device = _device_module()
    assert device.parse_sections("recovery, evaluate") == ["evaluate", "recovery"]
    for bad in ("", "evaluate,training"):
        with pytest.raises(Exception, match="comma-separated subset of evaluate, interactions"):
            device.parse_sections(bad)
