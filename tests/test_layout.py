"""The layout's import rules, read off the source: a module imports only from its own stage or stages above it
(README "Layout"), and the modules of one stage import each other without a cycle (at module level or inside
functions alike)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "trajlab"
# Stage of a module path (first match wins); a module may import its own stage and lower-ranked ones.
STAGES = [
    ("trajlab._io", "base", 0), ("trajlab._args", "base", 0), ("trajlab._options", "base", 0),
    ("trajlab.scoring_config", "base", 0), ("trajlab.analysis", "analysis", 1),
    ("trajlab.data", "data", 2), ("trajlab.train", "train", 3), ("trajlab._windows", "kernels", 4),
    ("trajlab._precision", "kernels", 4), ("trajlab.lens", "kernels", 4), ("trajlab.sketch", "kernels", 4),
    ("trajlab.store", "store", 5), ("trajlab.record", "record", 6), ("trajlab.hub", "hub", 6),
    ("trajlab.report", "report", 7), ("trajlab.cli", "cli", 8),
]


def stage(module: str) -> tuple[str, int] | None:
    for prefix, name, rank in STAGES:
        if module == prefix or module.startswith(prefix + "."):
            return name, rank
    return None


def imported(path: Path) -> set[str]:
    """trajlab modules a file imports (module level and inside functions; `from trajlab import x` -> x)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("trajlab")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("trajlab"):
            out |= {f"trajlab.{a.name}" if node.module == "trajlab" else node.module for a in node.names}
    return out


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    return {".".join(p.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__"): p
            for p in sorted(PKG.rglob("*.py"))}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of `graph` (module -> modules it imports): one path per strongly connected group of
    two or more modules, or a module importing itself (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = stack[stack.index(node):]
                    del stack[stack.index(node):]
                    if len(group) > 1 or node in graph[node]:
                        out.append(sorted(group))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in stack:
                low[node] = min(low[node], index[child])
    return out


def test_imports_flow_one_way():
    bad = []
    for name, path in modules().items():
        here = stage(name)
        if here is None:
            continue
        for mod in imported(path):
            there = stage(mod)
            if there and there[1] > here[1] or (there and there[1] == here[1] and there[0] != here[0]):
                bad.append(f"{name} ({here[0]}) imports {mod} ({there[0]})")
    assert not bad, "imports against the layout:\n" + "\n".join(bad)


def test_the_rule_catches_an_upward_import(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from trajlab.cli import main\nimport trajlab.store.meta\n")
    assert imported(f) == {"trajlab.cli", "trajlab.store.meta"}
    assert stage("trajlab.cli")[1] > stage("trajlab.report.demo")[1] > stage("trajlab.store.meta")[1]


def test_no_import_cycle_inside_a_stage():
    mods = modules()
    graph = {name: {m for m in imported(path) if m in mods and stage(m) == stage(name)}
             for name, path in mods.items()}
    found = cycles(graph)
    assert not found, "import cycles inside a stage:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_cycle_rule_catches_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}, "f": set()}
    assert cycles(graph) == [["a", "b", "c"], ["e"]]
