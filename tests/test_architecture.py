"""The package's shape: no import cycles, so every module can be read (and loaded) alone."""

from __future__ import annotations

import ast
import re
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


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def test_the_api_knows_no_storage_and_storage_knows_no_api() -> None:
    """cloud66/ and storage/ never reach each other, the state or the pass (ARCHITECTURE.md)."""
    graph = import_graph()
    forbidden = ("archiver.state", "archiver.sync", "archiver.transfer", "archiver.lifecycle")
    for side, other in (
        ("archiver.cloud66", "archiver.storage"),
        ("archiver.storage", "archiver.cloud66"),
    ):
        for module in _modules_under(graph, side):
            reached = _reachable(graph, module)
            assert not {m for m in reached if _under(m, (other,))}, module
            assert not {m for m in reached if _under(m, forbidden)}, module


def test_the_transfer_knows_no_cloud66_and_no_state() -> None:
    """The transfer modules get URLs from their caller: no Cloud 66 client, no state inside."""
    graph = import_graph()
    transfer = (
        "archiver.transfer.download", "archiver.transfer.join", "archiver.transfer.backup_fetch",
        "archiver.transfer.part_fetch", "archiver.transfer.segment_fetch",
        "archiver.transfer.segments", "archiver.transfer.range_request",
        "archiver.transfer.part_writer", "archiver.transfer.part_source", "archiver.transfer.urls",
    )
    for module in transfer:
        reached = _reachable(graph, module)
        assert not {m for m in reached if _under(m, ("archiver.cloud66", "archiver.state"))}
        assert not {m for m in reached if _under(m, ("archiver.sync",))}


def test_the_simulator_stands_alone() -> None:
    """The embedded Cloud 66 imports nothing of the archiver it is there to test."""
    graph = import_graph()
    for module in _modules_under(graph, "archiver.simulator"):
        outside = {m for m in graph[module] if not m.startswith("archiver.simulator")}
        assert outside == set(), module


# --- the layer table of ARCHITECTURE.md ---------------------------------------------------

ARCHITECTURE = PACKAGE.parent / "ARCHITECTURE.md"
_TABLE = re.compile(r"<!-- layers:.*?-->\n(.*?)<!-- end layers -->", re.S)
_FIRST_CELL_NAMES = re.compile(r"`([^`]+)`")
# Outside every layer, with rules of their own (the simulator stands alone, above).
_OUTSIDE_LAYERS = ("archiver.simulator",)


def layer_table(text: str) -> list[tuple[str, tuple[str, ...]]]:
    """(layer, dotted module prefixes) rows of the table, lowest layer first."""
    match = _TABLE.search(text)
    assert match, "ARCHITECTURE.md has no layer table between its markers"
    rows = []
    for line in match.group(1).splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 2 or cells[0] in ("layer", "") or set(cells[0]) <= {"-"}:
            continue
        names = _FIRST_CELL_NAMES.findall(cells[1])
        prefixes = tuple(
            "archiver" if name == "archiver" else "archiver." + name.rstrip("/").replace("/", ".")
            for name in names
        )
        rows.append((cells[0], prefixes))
    return rows


def layers_of(module: str, table: list[tuple[str, tuple[str, ...]]]) -> list[int]:
    """The rows (by index) whose packages or modules hold `module`."""
    found = []
    for index, (_layer, prefixes) in enumerate(table):
        exact = [prefix for prefix in prefixes if prefix == "archiver"]
        nested = tuple(prefix for prefix in prefixes if prefix != "archiver")
        if module in exact or _under(module, nested):
            found.append(index)
    return found


def layer_violations(graph: dict[str, set[str]], text: str) -> list[str]:
    """Every module in no layer or in two, and every import of a layer above its own."""
    table = layer_table(text)
    problems = []
    level: dict[str, int] = {}
    for module in sorted(graph):
        if _under(module, _OUTSIDE_LAYERS):
            continue
        rows = layers_of(module, table)
        if len(rows) != 1:
            named = [table[row][0] for row in rows] or ["none"]
            problems.append(f"{module} is in layers: {', '.join(named)}")
        else:
            level[module] = rows[0]
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if module in level and target in level and level[target] > level[module]:
                problems.append(
                    f"{module} ({table[level[module]][0]}) imports {target} "
                    f"({table[level[target]][0]})"
                )
    return problems


def test_every_module_is_in_one_layer_and_imports_no_layer_above_its_own() -> None:
    """ARCHITECTURE.md's layer table holds: each module in exactly one layer, no upward import."""
    assert layer_violations(import_graph(), ARCHITECTURE.read_text()) == []


def test_the_layer_check_sees_a_new_module_and_an_upward_import() -> None:
    """A module the table does not name, and a data module importing a command, are reported."""
    graph = import_graph()
    planted = dict(graph)
    planted["archiver.newthing"] = set()
    planted["archiver.model.manifest"] = graph["archiver.model.manifest"] | {
        "archiver.commands.status"
    }
    problems = layer_violations(planted, ARCHITECTURE.read_text())
    assert "archiver.newthing is in layers: none" in problems
    upward = "archiver.model.manifest (data) imports archiver.commands"
    assert any(problem.startswith(upward) for problem in problems)
