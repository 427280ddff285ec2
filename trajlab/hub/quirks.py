"""Known defects of published checkpoints (trajlab/hub/quirks.json), matched to the revisions of an import.

The registry explains; it never decides. Duplicates are found by hashing weight files (trajlab.hub.importer);
an entry tells the user why a hash matched (Pythia's step0 = step1 = step2), what will fail (a missing
PolyPythia revision), or what the paper left out. `trajlab import --dry-run` lists the entries that apply,
and an import prints each once and records it in the store notes (kind "known-quirk").

Standard library only: the dry run imports neither torch nor huggingface_hub.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import re
from collections.abc import Sequence
from importlib import resources

from trajlab.hub.revisions import is_pythia, step_of

NOTE_KIND = "known-quirk"
_FIELDS = ("id", "repo", "revisions", "what", "reference", "excluded_by_paper")
_RANGE = re.compile(r"step(\d+)-step(\d+)")


@functools.cache
def registry() -> tuple[dict, ...]:
    """Every entry of quirks.json, checked (a malformed entry names itself)."""
    data = json.loads((resources.files("trajlab.hub") / "quirks.json").read_text(encoding="utf-8"))
    entries = tuple(data["quirks"])
    for e in entries:
        revs = e.get("revisions")
        names = isinstance(revs, list) and revs and all(isinstance(r, str) for r in revs)
        if (
            set(e) != set(_FIELDS)
            or not all(isinstance(e[k], str) and e[k] for k in ("id", "repo", "what", "reference"))
            or not isinstance(e["excluded_by_paper"], bool)
            or not (revs is None or names)
        ):
            raise ValueError(f"quirks.json entry {e.get('id', e)!r} must have exactly the fields {_FIELDS}")
        re.compile(e["repo"])
    if len({e["id"] for e in entries}) != len(entries):
        raise ValueError("quirks.json has two entries with one id")
    return entries


def _matches(pattern: str, name: str, pythia: bool) -> bool:
    if m := _RANGE.fullmatch(pattern):
        step = step_of(name, pythia=pythia)
        return step is not None and int(m.group(1)) <= step <= int(m.group(2))
    return fnmatch.fnmatchcase(name, pattern)


def quirks_for(repo: str, revisions: Sequence[str] | None = None) -> list[dict]:
    """The registry entries that apply to `repo` and some of `revisions` (None: every entry of the repo).

    Returns:
        One dict per entry, registry order: "id", "repo" (the entry's pattern), "revisions" (the given
        revisions it affects; with revisions=None, the entry's own patterns; None for an entry about the
        whole run), "what", "reference", "excluded_by_paper".
    """
    pythia = is_pythia(repo)
    out = []
    for e in registry():
        if not re.fullmatch(e["repo"], str(repo).strip("/"), flags=re.IGNORECASE):
            continue
        if revisions is None or e["revisions"] is None:
            affected = e["revisions"]
        else:
            affected = [r for r in revisions if any(_matches(p, r, pythia) for p in e["revisions"])]
            if not affected:
                continue
        out.append({**e, "revisions": affected})
    return out


def describe(quirk: dict, limit: int = 4) -> str:
    """One line: id, the revisions it affects, what, and its reference."""
    revs = quirk["revisions"]
    shown = "the whole run" if revs is None else ", ".join(revs[:limit]) + (
        f" (+{len(revs) - limit} more)" if len(revs) > limit else "")
    paper = "; excluded by the paper" if quirk["excluded_by_paper"] else ""
    return f"{quirk['id']} [{quirk['reference']}{paper}] {shown}: {quirk['what']}"


def report(repo: str, revisions: Sequence[str]) -> list[str]:
    """The lines an import or a dry run prints: a header and one line per applicable entry; [] when none."""
    found = quirks_for(repo, revisions)
    if not found:
        return []
    head = (f"known checkpoint quirks of {repo} ({len(found)}; from trajlab/hub/quirks.json: they explain, "
            "the weight hashes decide):")
    return [head, *(f"  {describe(q)}" for q in found)]
