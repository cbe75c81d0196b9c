"""The tree's design as tests: imports only go down the layers, no module imports itself back through others, and
docs/architecture.md's module map is what the modules' own first sentences say (scripts/module_map.py).

Layers, lowest first: the foundation (``types``, ``errors`` and the host settings); ``models/`` (finding and reading
files); the core ``engine/`` (token ids only) beside the text side ``output/`` (ids to text), then ``inputs/``
(text to ids, which may use ``output/``'s parsers); ``client/`` (the seam's reader side); the front ends (``api``,
``server/``, ``cli/``, ``web/``, ``bench/``, ``compat``). The package's own ``__init__`` re-exports the API lazily and
is exempt. Pure AST reading: nothing is imported.
"""

from __future__ import annotations

import ast
import importlib.util
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "qwen_stream"
FOUNDATION = {"types", "errors", "cpu", "devices", "openmp", "heap", "atomic_file"}
RANKS = {"models": 1, "engine": 2, "output": 2, "inputs": 3, "client": 4}  # anything else: a front end (5)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def room(module: str) -> str:
    """The module's top-level room under qwen_stream ("" for the package itself)."""
    return module.split(".")[1] if "." in module else ""


def rank(module: str) -> int:
    name = room(module)
    return 0 if name in FOUNDATION or not name else RANKS.get(name, 5)


def imported(path: Path) -> Iterator[tuple[str, bool]]:
    """(module imported, at module level at run time) for every import of ours in ``path``."""

    def walk(node: ast.AST, runtime: bool) -> Iterator[tuple[str, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for inner in child.body:
                    yield from walk_one(inner, False)
            else:
                yield from walk_one(child, runtime)

    def walk_one(node: ast.AST, runtime: bool) -> Iterator[tuple[str, bool]]:
        if isinstance(node, ast.Import):
            yield from ((alias.name, runtime) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, runtime
            yield from ((f"{node.module}.{alias.name}", runtime) for alias in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from walk(node, False)  # imported when called: no cycle at import time
        else:
            yield from walk(node, runtime)

    for name, runtime in walk(ast.parse(path.read_text(encoding="utf-8")), True):
        if name.startswith("qwen_stream"):
            while name not in MODULES and "." in name:
                name = name.rpartition(".")[0]
            if name in MODULES:
                yield name, runtime


def test_imports_only_go_down_the_layers() -> None:
    climbing = []
    for module, path in MODULES.items():
        if module == "qwen_stream":
            continue  # the lazy re-exports of the public API
        for target, _ in imported(path):
            upward = rank(target) > rank(module)
            sideways = rank(module) == rank(target) == 2 and room(module) != room(target)  # core vs text side
            if upward or sideways:
                climbing.append(f"{module} imports {target}")
    assert not climbing, "imports that climb a layer:\n" + "\n".join(sorted(set(climbing)))


def test_no_module_imports_itself_back_through_others() -> None:
    edges = {m: {t for t, runtime in imported(p) if runtime and t != m} for m, p in MODULES.items()}
    cycles = _strongly_connected(edges)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(sorted(c)) for c in cycles)


def _strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of modules that reach each other (only those of two or more)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []
    counter = itertools.count()

    def visit(v: str) -> None:
        index[v] = low[v] = next(counter)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(group)

    for vertex in edges:
        if vertex not in index:
            visit(vertex)
    return found


def _module_map_script() -> object:
    spec = importlib.util.spec_from_file_location("module_map", ROOT / "scripts" / "module_map.py")
    if spec is None or spec.loader is None:
        pytest.fail("scripts/module_map.py is missing")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_the_docs_module_map_is_what_the_modules_say() -> None:
    script = _module_map_script()
    made = script.module_map()  # type: ignore[attr-defined]
    documented = script.current_map(script.DOC.read_text(encoding="utf-8"))  # type: ignore[attr-defined]
    assert documented == made, ("docs/architecture.md's module map is stale or lacks a module: run "
                                "`python scripts/module_map.py --write`")


def test_the_layer_rules_catch_a_climbing_import() -> None:
    """The rule itself: the engine reading text, or the text side reaching the client, would fail."""
    assert rank("qwen_stream.output.processor") == rank("qwen_stream.engine.step")
    assert room("qwen_stream.output.processor") != room("qwen_stream.engine.step")  # so "sideways", refused
    assert rank("qwen_stream.client.engine_client") > rank("qwen_stream.inputs.processor")
    assert rank("qwen_stream.server.app") > rank("qwen_stream.client.loaded_model") > rank("qwen_stream.engine.loop")
