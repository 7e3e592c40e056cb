"""``benchmarks/device.py --quick`` runs on the CPU and writes its report (CI-sized)."""

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
    assert report["peaks"]["peak_flops_per_s"]["float32"] > 0  # measured on a CPU
    assert {c["dtype"] for c in report["evaluate"]} == {"float32", "bfloat16"}
    for case in report["evaluate"]:
        assert case["c_default"]["subsets_per_s"] > 0
        assert case["b_naive"]["fraction_of_peak"][case["dtype"]] > 0
    assert report["interactions"][0]["entries_per_s"] > 0
    assert report["recovery"][0]["run_steps_per_s"]["vmapped"] > 0
    assert report["peak_memory_after"]["recovery"]["bytes"] > 0
