"""The front door and the manual point at things that exist: every repository path named in README.md and
docs/*.md (a markdown link, or a path under one of the repository's top folders anywhere in the text) is there,
and README.md stays a front door (at most 200 lines)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP = ("trajlab", "tests", "scripts", "docs", "configs")
# A path under a top folder: not part of a longer path, URL or word (kl-scale/data/ is the authors' repository).
PATH = re.compile(rf"(?<![\w./<-])(?:{'|'.join(TOP)})/[\w./*-]*")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def named_paths(text: str, folder: Path) -> set[str]:
    """Repository paths a document in `folder` names, relative to the repository root."""
    out = {m.group(0).rstrip(".,:;") for m in PATH.finditer(text)}
    for target in LINK.findall(text):
        if not re.match(r"[a-z]+:", target) and not target.startswith("#"):
            out.add((folder / target.split("#")[0]).resolve().relative_to(ROOT).as_posix())
    return out


def exists(path: str) -> bool:
    return any(ROOT.glob(path)) if "*" in path else (ROOT / path).exists()


def test_every_named_path_exists():
    missing = [f"{doc.relative_to(ROOT)}: {p}" for doc in DOCS
               for p in sorted(named_paths(doc.read_text(), doc.parent)) if not exists(p)]
    assert not missing, "paths named in the docs that do not exist:\n" + "\n".join(missing)


def test_the_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= 200, f"README.md has {lines} lines; move the manual's parts to docs/"
    assert {"store.md", "import.md", "cluster.md", "analysis.md", "precision.md"} <= {p.name for p in DOCS}


def test_the_rule_reads_paths_and_links():
    text = ("see `trajlab/store/meta.py`, trajlab/no_such.py. and [a](store.md), [b](../README.md#top), "
            "[c](https://example.org/docs/a.md), kl-scale/data/texts.json, `tests/record/test_callback*.py`")
    assert named_paths(text, ROOT / "docs") == {"trajlab/store/meta.py", "trajlab/no_such.py",
                                                "tests/record/test_callback*.py", "docs/store.md", "README.md"}
    assert exists("tests/record/test_callback*.py") and not exists("trajlab/no_such.py")
