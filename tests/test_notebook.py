"""notebooks/quickstart.ipynb is stored without outputs and runs end to end offline."""

import ast
import os
import shutil
import socket
import threading
import time
from datetime import datetime
from pathlib import Path

import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"

#: Seconds the model-loading cell may take offline (HF_HUB_OFFLINE=1: a cache miss, then the toy
#: model). Measured 0.65 s on 2 loaded cores; retrying the Hub used to cost about 23 s.
OFFLINE_LOAD_BOUND_S = 10.0


def _load_cell_functions() -> dict:
    """The functions the notebook's model-loading cell defines, without running the cell."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    (cell,) = [c for c in nb.cells if c.cell_type == "code" and "def load_gpt2" in c.source]
    tree = ast.parse(cell.source)
    tree.body = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    namespace: dict = {"os": os, "socket": socket, "threading": threading}
    exec(compile(tree, str(NOTEBOOK), "exec"), namespace)
    return namespace


@pytest.mark.parametrize(
    ("value", "offline"), [("1", True), ("true", True), ("0", False), ("", False)]
)
def test_notebook_reads_hf_hub_offline(monkeypatch, value, offline):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert _load_cell_functions()["hub_offline"]() is offline


def test_notebook_hub_probe_gives_up_quickly(monkeypatch):
    """No network: a refused connection, or one (or a DNS lookup) that hangs, answers False."""
    fns = _load_cell_functions()

    def refused(address, timeout=None):
        raise ConnectionRefusedError(address)

    def hangs(address, timeout=None):  # ignores the timeout, as a DNS lookup may
        time.sleep(3)
        raise TimeoutError(address)

    for fake in (refused, hangs):
        monkeypatch.setattr(socket, "create_connection", fake)
        start = time.perf_counter()
        assert fns["hub_reachable"](timeout=0.2) is False
        assert time.perf_counter() - start < 5.0


class _Shell:
    """Records the line magics a cell runs (a stand-in for IPython's ``get_ipython()``)."""

    def __init__(self):
        self.magics = []

    def run_line_magic(self, name, line):
        self.magics.append((name, line))


def _run_install_cell(monkeypatch, found: bool) -> list:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code")  # the first code cell
    import importlib.util

    real = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "jaxablate" and not found else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    shell = _Shell()
    exec(compile(cell.source, "install cell", "exec"), {"get_ipython": lambda: shell})
    return shell.magics


def test_notebook_install_cell(monkeypatch, tmp_path):
    """Importable: nothing is installed. Missing: pip installs the checkout (or
    JAXABLATE_SOURCE); a directory that is no checkout is refused with what to set."""
    assert _run_install_cell(monkeypatch, found=True) == []
    monkeypatch.chdir(NOTEBOOK.parent)
    monkeypatch.delenv("JAXABLATE_SOURCE", raising=False)
    checkout = str(NOTEBOOK.parents[1])
    assert _run_install_cell(monkeypatch, found=False) == [("pip", f"install -q {checkout}")]
    monkeypatch.setenv("JAXABLATE_SOURCE", "git+https://example.org/jaxablate")
    assert _run_install_cell(monkeypatch, found=False) == [
        ("pip", "install -q git+https://example.org/jaxablate")
    ]
    monkeypatch.setenv("JAXABLATE_SOURCE", str(tmp_path))
    with pytest.raises(RuntimeError, match="not a jaxablate checkout: set JAXABLATE_SOURCE"):
        _run_install_cell(monkeypatch, found=False)


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.get("outputs") == [] and cell.get("execution_count") is None, cell.source[:60]


@pytest.mark.slow
def test_notebook_executes_offline(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    copy = tmp_path / NOTEBOOK.name
    shutil.copy(NOTEBOOK, copy)
    nb = nbformat.read(copy, as_version=4)
    # the kernel inherits the environment: no network, an empty Hub cache (so a GPT-2 cached
    # on this machine is not picked up), the shipped toy model path
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_hub_cache"))
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("JAX_PLATFORMS", os.environ.get("JAX_PLATFORMS", "cpu"))
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    text = "\n".join(
        out.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )
    assert "induction-2l" in text
    assert "players: ['L0H0'" in text
    images = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if "image/png" in out.get("data", {})
    ]
    assert len(images) >= 3  # the three plot cells display their figures
    load = [c for c in nb.cells if c.cell_type == "code" and "def load_gpt2" in c.source]
    assert len(load) == 1
    seconds = _cell_seconds(load[0])
    assert seconds < OFFLINE_LOAD_BOUND_S, f"offline model loading took {seconds:.1f} s"


def _cell_seconds(cell) -> float:
    """Wall time of one executed cell, from the timestamps nbclient records in its metadata."""
    timing = cell.metadata["execution"]
    start, end = (
        datetime.fromisoformat(timing[k]) for k in ("iopub.execute_input", "shell.execute_reply")
    )
    return (end - start).total_seconds()
