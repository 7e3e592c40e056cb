"""The package's house rules, checked from its source: every floor only looks down.

- No import circle among the package's modules (lazy imports inside functions count too).
- No public name of ``jaxablate`` hides a module of the same name.
- No function in ``jaxablate/`` is longer than :data:`MAX_FUNCTION_LINES`.
- Shape annotations take their array types from jaxtyping (numpy >= 2.5's
  ``numpy.typing.ArrayLike`` breaks ``Real[ArrayLike, ...]`` at import, on Python >= 3.12).
"""

import ast
import importlib
import pkgutil
from pathlib import Path

import jaxablate as ja

ROOT = Path(ja.__file__).parent
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _sources() -> dict[str, ast.Module]:
    return {
        _module_name(path): ast.parse(path.read_text(), str(path))
        for path in sorted(ROOT.rglob("*.py"))
    }


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """``module -> package modules it imports`` (anywhere in its body, lazy imports included).

    ``from package import name`` counts as importing ``package.name`` when that is a module,
    else ``package`` itself. A package's ``__init__`` (the face that re-exports) is left out:
    importing ``jaxablate.x`` runs it, but it only looks down at everything.
    """
    sources = _sources()
    modules = set(sources)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, tree in sources.items():
        is_package = (ROOT.parent / module.replace(".", "/") / "__init__.py").exists()
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, node, is_package)
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            for target in targets:
                if target in modules and target != module:
                    graph[module].add(target)
    faces = {m for m in modules if (ROOT.parent / m.replace(".", "/") / "__init__.py").exists()}
    return {m: deps - faces for m, deps in graph.items() if m not in faces}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_find_cycle_finds_a_planted_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circle():
    graph = import_graph()
    assert graph.get("jaxablate._evaluate")  # the walk sees edges
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_array_types_come_from_jaxtyping():
    """``from numpy.typing import ArrayLike`` made ``import jaxablate.plots`` fail under numpy 2.5
    (``TypeError: issubclass() arg 1 must be a class`` inside jaxtyping): jaxtyping's own
    ``ArrayLike`` (jax's) works with every numpy."""
    found = [
        f"{module}:{node.lineno}"
        for module, tree in _sources().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and node.module == "numpy.typing"
        and any(alias.name == "ArrayLike" for alias in node.names)
    ]
    assert not found, f"numpy.typing.ArrayLike imported at {found}; use jaxtyping's ArrayLike"


def test_no_public_name_hides_a_module():
    modules = {info.name for info in pkgutil.iter_modules(ja.__path__)}
    hidden = []
    for name in modules:
        if hasattr(ja, name):
            module = importlib.import_module(f"jaxablate.{name}")
            if getattr(ja, name) is not module:
                hidden.append(name)
    assert not hidden, f"public names that hide modules: {hidden}"


def test_no_long_functions():
    long = []
    for module, tree in _sources().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{module}.{node.name}: {length} lines")
    assert not long, "functions over the limit:\n" + "\n".join(long)
