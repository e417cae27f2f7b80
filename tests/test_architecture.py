"""The package's shape: no import cycles, so every module can be read (and loaded) alone."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "archiver"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imported(node: ast.AST, here: str, is_package: bool, known: set[str]) -> Iterator[str]:
    """The package modules one import statement names (lazy and TYPE_CHECKING ones too)."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            anchor = here.split(".")
            anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in node.names:
            candidate = f"{base}.{alias.name}"
            yield candidate if candidate in known else base


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its body."""
    modules = _modules()
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        targets = {
            target
            for node in ast.walk(tree)
            for target in _imported(node, name, is_package, known)
            if target in known and target != name
        }
        graph[name] = targets
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycles_inside_the_package() -> None:
    """No module of archiver/ imports itself back through others, lazily or not."""
    assert find_cycles(import_graph()) == []


def test_the_cycle_finder_sees_a_cycle() -> None:
    """The finder reports a planted three-module cycle (so the test above can fail)."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]


def test_the_graph_sees_lazy_and_relative_imports() -> None:
    """Imports inside functions and `from . import x` count as edges."""
    graph = import_graph()
    assert "archiver.storage.local" in graph["archiver.storage"]
    assert "archiver.service.schedule" in graph["archiver.service.daemon"]


def test_status_and_health_load_neither_the_daemon_nor_the_http_server() -> None:
    """`status` and `health` reach the schedule's arithmetic without the daemon or aiohttp.web."""
    graph = import_graph()
    for start in ("archiver.commands.status", "archiver.service.health"):
        reachable, pending = set(), [start]
        while pending:
            for target in graph[pending.pop()] - reachable:
                reachable.add(target)
                pending.append(target)
        assert "archiver.service.daemon" not in reachable
        assert "archiver.service.http" not in reachable


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    pending = [start]
    while pending:
        for target in graph[pending.pop()] - seen:
            seen.add(target)
            pending.append(target)
    return seen


def _modules_under(graph: dict[str, set[str]], package: str) -> list[str]:
    return [name for name in graph if name == package or name.startswith(package + ".")]


def test_the_api_knows_no_storage_and_storage_knows_no_api() -> None:
    """cloud66/ and storage/ never reach each other, the state or the pass (ARCHITECTURE.md)."""
    graph = import_graph()
    pass_modules = {"archiver.sync.sync_pass", "archiver.state.store", "archiver.transfer.download", "archiver.transfer.join"}
    for side, other in (
        ("archiver.cloud66", "archiver.storage"),
        ("archiver.storage", "archiver.cloud66"),
    ):
        for module in _modules_under(graph, side):
            if module == "archiver.storage":
                continue  # the package's __init__ picks a backend from the config, nothing more
            reached = _reachable(graph, module)
            assert not {m for m in reached if m.startswith(other)}, module
            assert not reached & pass_modules, module


def test_the_transfer_knows_no_cloud66_and_no_state() -> None:
    """download and join get URLs from their caller: no Cloud 66 client, no state inside."""
    graph = import_graph()
    for module in ("archiver.transfer.download", "archiver.transfer.join"):
        reached = _reachable(graph, module)
        assert not {m for m in reached if m.startswith("archiver.cloud66")}
        assert "archiver.state.store" not in reached
        assert "archiver.sync.sync_pass" not in reached


def test_the_simulator_stands_alone() -> None:
    """The embedded Cloud 66 imports nothing of the archiver it is there to test."""
    graph = import_graph()
    for module in _modules_under(graph, "archiver.simulator"):
        outside = {m for m in graph[module] if not m.startswith("archiver.simulator")}
        assert outside == set(), module
