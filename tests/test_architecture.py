"""The shape of the Python code: no import cycles between the modules of pipeline/ and serving/.

The import graph is read from the source with `ast`, so every `import` counts, including the ones
inside functions (a cycle hidden in a function is still two modules that need each other).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "serving")

# Known cycles, each the exact set of modules of one strongly connected component. The test fails
# on any other cycle, and on this one if it grows.
ALLOWED_CYCLES: set[frozenset[str]] = set()  # none: the change reader (pipeline/changes.py) broke the last one


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported module of pipeline/ or serving/: line of the first such import}."""
    modules = _modules()

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                # `from pipeline import store` imports the module pipeline.store
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                found = owner(target)
                if found and found != name:
                    edges[found] = min(edges.get(found, node.lineno), node.lineno)
        graph[name] = edges
    return graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[set[str]]:
    """Tarjan's algorithm (iterative): the components with more than one module are the cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(component)
    return out


def _shortest_cycle(graph: dict[str, dict[str, int]], component: set[str]) -> list[str]:
    """One shortest cycle inside a component, as a path that ends where it starts."""
    best: list[str] = []
    for start in sorted(component):
        parent: dict[str, str] = {}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            for child in sorted(graph[node]):
                if child not in component:
                    continue
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    cycle = [start, *reversed(path[:-1]), start]
                    if not best or len(cycle) < len(best):
                        best = cycle
                    queue.clear()
                    break
                if child not in parent:
                    parent[child] = node
                    queue.append(child)
    return best


def describe(graph: dict[str, dict[str, int]], component: set[str]) -> str:
    cycle = _shortest_cycle(graph, component)
    steps = [f"{a} (line {graph[a][b]}) -> {b}" for a, b in zip(cycle, cycle[1:])]
    return f"{len(component)} modules {sorted(component)}; e.g. " + ", ".join(steps)


def test_the_graph_sees_every_module_and_function_level_imports() -> None:
    graph = import_graph()
    assert {"pipeline.cli", "pipeline.runlog", "serving.app", "serving.metrics", "serving.api.profiles"} <= set(graph)
    assert "serving.server" in graph["pipeline.cli"]  # imported inside the `serve` command
    assert "pipeline.store" in graph["pipeline.runlog"]  # `from pipeline import store`


def test_no_import_cycles() -> None:
    graph = import_graph()
    cycles = strongly_connected(graph)
    unexpected = [describe(graph, c) for c in cycles if frozenset(c) not in ALLOWED_CYCLES]
    assert not unexpected, "import cycles between modules of pipeline/ and serving/:\n" + "\n".join(unexpected)


def test_the_allowed_cycles_still_exist() -> None:
    """So that the exception is deleted together with the cycle it excuses."""
    present = {frozenset(c) for c in strongly_connected(import_graph())}
    assert ALLOWED_CYCLES <= present, (
        f"fixed, delete from ALLOWED_CYCLES: {sorted(map(sorted, ALLOWED_CYCLES - present))}"
    )


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}
    assert strongly_connected(graph) == [{"a", "b", "c"}]
    assert (
        describe(graph, {"a", "b", "c"})
        == "3 modules ['a', 'b', 'c']; e.g. a (line 1) -> b, b (line 2) -> c, c (line 3) -> a"
    )


def test_the_cli_and_the_run_log_import_no_web_framework() -> None:
    """`sendtime runs` reads the run log through pipeline.runlog without importing Flask."""
    code = (
        "import sys, pipeline.cli, pipeline.runlog, pipeline.config; "
        "print(sorted(m for m in ('flask', 'werkzeug', 'prometheus_client') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- the rooms picture

DOC = ROOT / "docs" / "architecture.md"
FOUNDATION = "foundation"  # every room uses it; the picture leaves those edges out


def _rooms_doc() -> tuple[dict[str, list[str]], set[tuple[str, str]]]:
    """docs/architecture.md "Rooms": room -> its module paths (a folder ends with /), and the edges
    of the mermaid picture."""
    text = DOC.read_text()
    section = text[text.index("## Rooms") : text.index("## Packages and who owns what")]
    picture = section[section.index("```mermaid") : section.index("```", section.index("```mermaid") + 3)]
    edges = {(a, b) for a, b in re.findall(r"^\s*(\w+) --> (\w+)\s*$", picture, flags=re.M)}
    rooms: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[1].startswith("`"):
            rooms[cells[0]] = re.findall(r"`([^`]+)`", cells[1])
    return rooms, edges


def room_of() -> dict[str, str]:
    """module -> room: an exact path wins over a folder, a longer folder over a shorter one."""
    rooms, _ = _rooms_doc()
    claims: list[tuple[int, str, str]] = []  # (specificity, path or folder, room)
    for room, paths in rooms.items():
        claims += [(10_000 if not p.endswith("/") else len(p), p, room) for p in paths]
    out: dict[str, str] = {}
    for module, path in _modules().items():
        rel = str(path.relative_to(ROOT))
        matches = [(s, room) for s, p, room in claims if rel == p or (p.endswith("/") and rel.startswith(p))]
        if matches:
            out[module] = max(matches)[1]
    return out


def test_every_module_sits_in_one_room_of_the_picture() -> None:
    rooms, _ = _rooms_doc()
    assert FOUNDATION in rooms and len(rooms) >= 8
    placed = room_of()
    assert not sorted(set(_modules()) - set(placed)), "modules in no room of docs/architecture.md"
    listed = [p for paths in rooms.values() for p in paths if not p.endswith("/")]
    assert len(listed) == len(set(listed)), "a module listed in two rooms"
    assert all((ROOT / p).exists() for paths in rooms.values() for p in paths), "a room lists a missing file"


def test_the_picture_shows_exactly_the_imports_between_rooms() -> None:
    _, drawn = _rooms_doc()
    placed = room_of()
    actual = {
        (placed[a], placed[b])
        for a, targets in import_graph().items()
        for b in targets
        if placed[a] != placed[b] and placed[b] != FOUNDATION
    }
    assert not actual - drawn, f"imports between rooms the picture lacks: {sorted(actual - drawn)}"
    assert not drawn - actual, f"arrows of the picture no import makes: {sorted(drawn - actual)}"


def test_the_rooms_are_layered() -> None:
    """No cycle between rooms either, and foundation imports no other room."""
    placed = room_of()
    rooms: dict[str, dict[str, int]] = {room: {} for room in set(placed.values())}
    for a, targets in import_graph().items():
        for b in targets:
            if placed[a] != placed[b]:
                rooms[placed[a]][placed[b]] = 1
    assert strongly_connected(rooms) == []
    assert rooms[FOUNDATION] == {}
