"""The layout's import rule, read off the source: a module imports only from its own stage or stages above it
(README "Layout"); analysis imports no torch and no other stage."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "trajlab"
# Stage of a module path (first match wins); a module may import its own stage and lower-ranked ones.
STAGES = [
    ("trajlab._io", "io", 0), ("trajlab._args", "io", 0), ("trajlab.analysis", "analysis", 1),
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


def test_imports_flow_one_way():
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        name = ".".join(path.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__")
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
