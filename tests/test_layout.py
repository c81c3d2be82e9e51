"""Layout rules: one-way data flow, SQL only in the store, a role per module, no cycles."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGES = ("relay", "sidecar")
DATABASE_MODULES = {"sqlite3", "aiosqlite", "asyncpg"}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imports(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_relay_never_imports_the_sidecar() -> None:
    for name, path in _modules().items():
        if name.startswith("relay"):
            bad = {i for i in _imports(path, False) if i.split(".")[0] == "sidecar"}
            assert not bad, f"{name} imports {bad}"


def test_only_the_store_knows_its_database() -> None:
    for name, path in _modules().items():
        if name == "relay.store" or name.startswith("relay.store."):
            continue
        bad = {i for i in _imports(path, False) if i.split(".")[0] in DATABASE_MODULES}
        assert not bad, f"{name} imports {bad}: SQL belongs in relay/store/"


def test_every_module_states_its_role() -> None:
    for name, path in _modules().items():
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        assert doc and doc.strip(), f"{name} has no docstring"


def test_no_import_cycles_between_modules() -> None:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path, True):
            if imported in modules and imported != name:
                targets.add(imported)
        graph[name] = targets
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
