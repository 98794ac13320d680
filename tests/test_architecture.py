"""The package's shape: no import circles between its subpackages and top-level modules, and the
boundaries ARCHITECTURE.md draws (export never reaches devices; drivers never import twins).

Every import counts, also the ones inside functions: a lazy import is still a dependency."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hwnas_deploy"


def unit(module: str) -> str:
    """`hwnas_deploy.devices.adb` -> `devices`; `hwnas_deploy.store` -> `store`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def import_graph() -> dict[str, dict[str, list[str]]]:
    """{unit: {imported unit: ["file:line", ...]}} over every import of the package."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent)
        src = unit(".".join(rel.with_suffix("").parts))
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names] * (node.module == "hwnas_deploy")
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name.startswith("hwnas_deploy.") and unit(name) != src:
                    graph[src][unit(name)].append(f"{rel}:{node.lineno}")
    return graph


def cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_lazy_imports():
    graph = import_graph()
    # profiling imports the lab inside a function only: the walk must still see it
    assert "lab" in graph["profiling"], dict(graph["profiling"])
    assert {"devices", "export", "store"} <= set(graph["measurement"])


def test_no_import_circles_between_subpackages():
    graph = import_graph()
    found = cycles(graph)
    detail = [f"{a} -> {b} at {graph[a][b][0]}" for comp in found for a in comp for b in comp if b in graph[a]]
    assert not found, f"import circles {found}: " + "; ".join(detail)


def test_a_circle_is_found_when_there_is_one():
    assert cycles({"a": {"b": []}, "b": {"c": []}, "c": {"a": []}, "d": {"a": []}}) == [["a", "b", "c"]]


def test_export_never_imports_devices_or_twins_and_drivers_never_import_twins():
    graph = import_graph()
    assert not {"devices", "sim", "lab", "measurement"} & set(graph["export"]), dict(graph["export"])
    assert not {"sim", "lab", "measurement"} & set(graph["devices"]), dict(graph["devices"])
    assert not {"devices", "sim", "export", "lab"} & set(graph["mcu"]), dict(graph["mcu"])
    assert "profiling" not in graph["lab"], dict(graph["lab"])
