"""The import graph of `app/` points one way: routers -> services -> inventory, repositories
and models -> core. Read from the source with `ast` (nothing is imported), so an import
written inside a function counts as much as one at the top of a file."""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app"

# The HTTP layer: FastAPI routers, request dependencies and the admin console's views.
HTTP_LAYER = {"router", "deps", "views", "console"}
# Entry points that wire everything together; they may import any layer.
ENTRY_POINTS = {"app.main", "app.cli", "app.worker", "app.__main__"}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path = APP) -> dict[str, set[str]]:
    """Each module of the package under `root` with the modules of that package it imports."""
    files = {_module_name(path, root): path for path in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                for alias in node.names:
                    submodule = f"{source}.{alias.name}"
                    targets.add(submodule if submodule in files else source)
        graph[module] = {t for t in targets if t in files and t != module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that starts and ends at the same module, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def _layer(module: str) -> str:
    if module in ENTRY_POINTS:
        return "entry"
    if module == "app.core" or module.startswith("app.core."):
        return "core"
    if module.rpartition(".")[2] in HTTP_LAYER:
        return "http"
    return "domain"


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for module, targets in sorted(graph.items()):
        layer = _layer(module)
        for target in sorted(targets):
            target_layer = _layer(target)
            if layer == "core" and target_layer != "core":
                found.append(f"{module} -> {target}: core imports nothing of the domains")
            elif layer == "domain" and target_layer in ("http", "entry"):
                found.append(f"{module} -> {target}: a service never imports routers or deps")
            elif layer != "entry" and target.rpartition(".")[2] == "router":
                found.append(f"{module} -> {target}: routers are mounted by app.main only")
    return found


def test_the_app_has_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_imports_point_from_routers_to_services_to_core():
    assert layering_violations(import_graph()) == []


def test_the_graph_check_sees_a_cycle_and_a_backwards_import(tmp_path):
    # The checker itself: a tree with a cycle inside core, a service that takes a dependency
    # module, and core reaching into a domain (imports inside functions count too).
    package = tmp_path / "app"
    for folder in ("core", "shop"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "core" / "errors.py").write_text("def f():\n    from app.core import db_errors\n")
    (package / "core" / "db_errors.py").write_text("from app.core.errors import f\n")
    (package / "core" / "db.py").write_text("from app.shop.models import Item\n")
    (package / "shop" / "models.py").write_text("Item = 1\n")
    (package / "shop" / "deps.py").write_text("from .models import Item\n")
    (package / "shop" / "service.py").write_text("from app.shop.deps import Item\n")
    graph = import_graph(package)
    assert find_cycle(graph) == ["app.core.db_errors", "app.core.errors", "app.core.db_errors"]
    assert layering_violations(graph) == [
        "app.core.db -> app.shop.models: core imports nothing of the domains",
        "app.shop.service -> app.shop.deps: a service never imports routers or deps",
    ]
