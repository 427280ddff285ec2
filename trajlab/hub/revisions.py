"""Revision names, their training steps, and shards of a revision list (pure Python; no hub access).

Steps: ``stepN`` -> N; ``main`` of a Pythia model -> 143000. A single revision with another name gets step 0;
several revisions none of which is ``stepN`` get their position in the given order (0, 1, ...). Names mixing
both are refused, as are two names with one step (e.g. ``main`` and ``step143000`` of Pythia).

Pythia publishes 154 revisions: step0, step1, step2, step4, ..., step512, then step1000, step2000, ...,
step143000 (= main). Names of a Pythia model are checked against that list.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

PYTHIA_MAIN_STEP = 143000
PYTHIA_REVISIONS: tuple[str, ...] = tuple(
    f"step{s}" for s in [0, *(2**i for i in range(10)), *range(1000, PYTHIA_MAIN_STEP + 1, 1000)]
)
_STEP = re.compile(r"step(\d+)")
_RANGE = re.compile(r"step(\d+)-step(\d+)")
_PYTHIA_NAME = re.compile(r"pythia-(\d+(?:\.\d+)?[mb])(-deduped)?(?:-seed(\d+))?")


def is_pythia(model_name: str) -> bool:
    """Whether a repo id or path names a Pythia model (its last component contains "pythia")."""
    return "pythia" in model_name.rstrip("/").rsplit("/", 1)[-1].lower()


def pythia_meta(model_name: str) -> dict:
    """Store meta of a Pythia model: "size" ("70m"), "seed" (the original run: 0) and "dataset"; else {}."""
    m = _PYTHIA_NAME.fullmatch(model_name.rstrip("/").rsplit("/", 1)[-1].lower())
    if m is None:
        return {}
    dataset = "pile-deduped" if m.group(2) else "pile"
    return {"size": m.group(1), "seed": int(m.group(3) or 0), "dataset": dataset}


def _close_names(name: str) -> list[str]:
    """Published Pythia revisions nearest to `name`: numeric neighbours first, then similar spellings."""
    near = []
    if m := _STEP.fullmatch(name):
        n, steps = int(m.group(1)), [int(r[4:]) for r in PYTHIA_REVISIONS]
        near = [f"step{s}" for s in [s for s in steps if s < n][-1:] + [s for s in steps if s > n][:1]]
    near += difflib.get_close_matches(name, [*PYTHIA_REVISIONS, "main"], n=5, cutoff=0.5)
    return list(dict.fromkeys(near))[:5]


def _checked_pythia(name: str) -> str:
    if name != "main" and name not in PYTHIA_REVISIONS:
        raise ValueError(
            f"unknown Pythia revision {name!r}; nearest valid: {', '.join(_close_names(name))} (published: "
            "step0, step1, step2, step4, ..., step512, step1000, step2000, ..., step143000, main)"
        )
    return name


def expand_revisions(spec: str | Sequence[str] | None, *, pythia: bool) -> list[str]:
    """Revision names from "a,b,c", "pythia" (all 154), "stepA-stepB" (the published Pythia revisions with
    A <= step <= B), a list of such items, or None ("main"). With `pythia`, names are checked against the
    published list (an unknown one is refused, naming the nearest valid ones)."""
    items = ["main"] if spec is None else spec.split(",") if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for item in (str(i).strip() for i in items):
        if item == "pythia":
            names += PYTHIA_REVISIONS
        elif m := _RANGE.fullmatch(item):
            lo, hi = int(m.group(1)), int(m.group(2))
            if lo > hi:
                raise ValueError(f"revision range {item!r} is empty: write the smaller step first")
            names += [r for r in PYTHIA_REVISIONS if lo <= int(r[4:]) <= hi]
        elif item:
            names.append(_checked_pythia(item) if pythia else item)
    if not names:
        raise ValueError(
            f"no revisions in {spec!r}: pass names like step1000,main, 'pythia' or a range step1000-step10000"
        )
    return names


def revision_steps(names: Sequence[str], *, pythia: bool) -> list[int]:
    """The step of each revision (rules in the module docstring)."""
    parsed = [
        PYTHIA_MAIN_STEP if pythia and n == "main" else int(m.group(1)) if (m := _STEP.fullmatch(n)) else None
        for n in names
    ]
    if None not in parsed:
        steps = parsed
    elif len(names) == 1:
        steps = [0]
    elif any(s is not None for s in parsed):
        odd = [n for n, s in zip(names, parsed, strict=True) if s is None]
        raise ValueError(
            f"revisions mix stepN names with others ({', '.join(odd[:3])}); name them all stepN, or none of "
            "them (then steps are positions in the list)"
        )
    else:
        steps = list(range(len(names)))
    first: dict[int, str] = {}
    for n, s in zip(names, steps, strict=True):
        if s in first:
            raise ValueError(f"revisions {first[s]} and {n} both map to step {s}; list only one of them")
        first[s] = n
    return steps


def parse_shard(shard: str | tuple[int, int]) -> tuple[int, int]:
    """(i, n) from "i/n" or a tuple, with 0 <= i < n."""
    try:
        i, n = (int(x) for x in (shard.split("/") if isinstance(shard, str) else shard))
    except (ValueError, TypeError):
        raise ValueError(f"shard must look like i/n (e.g. 0/4), got {shard!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"shard {i}/{n} is out of range: need 0 <= i < n")
    return i, n


def shard_part(items: Sequence, i: int, n: int) -> list:
    """Contiguous part i of n of `items` (sizes differ by at most one).

    Contiguous, not round-robin, so the exact weight distances to the previous W revisions mostly stay inside
    a shard: only each shard's first W revisions lack distances to the previous shard's last ones (NaN after a
    merge). Round-robin would lose nearly all of them.
    """
    q, r = divmod(len(items), n)
    start = i * q + min(i, r)
    return list(items[start : start + q + (i < r)])
