"""Revision names, their training steps, and shards of a revision list (pure Python; no hub access).

Steps: ``stepN`` -> N; an OLMo branch ``stage1-step101000-tokens424B`` (or ``step1000-tokens4B``,
``stage2-ingredient1-step500-tokens3B``) -> its step M; ``main`` of a Pythia model -> 143000. A single revision
with another name gets step 0; several revisions none of which has a step get their position in the given order
(0, 1, ...). Names mixing both are refused, as are two names with one step (e.g. ``main`` and ``step143000`` of
Pythia, or branches of two OLMo stages whose step counts restart: import each stage into its own store).

Pythia publishes 154 revisions: step0, step1, step2, step4, ..., step512, then step1000, step2000, ...,
step143000 (= main); so do the PolyPythias (``pythia-410m-seed3``, ``pythia-160m-data-seed1``,
``pythia-160m-weight-seed1``). Names of a Pythia model are checked against that list. Other models' revision
lists come from the hub's branch list (`expand_revisions`' ``branches``): ``olmo`` takes the OLMo branches of
the first stage, ``olmo:PREFIX`` those of one group (``olmo:stage2-ingredient1``), and a range
``[PREFIX-]stepA-stepB`` those with A <= step <= B.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence

PYTHIA_MAIN_STEP = 143000
PYTHIA_REVISIONS: tuple[str, ...] = tuple(
    f"step{s}" for s in [0, *(2**i for i in range(10)), *range(1000, PYTHIA_MAIN_STEP + 1, 1000)]
)
_STEP = re.compile(r"step(\d+)")
_RANGE = re.compile(r"(?:(.+)-)?step(\d+)-step(\d+)")
_PYTHIA_NAME = re.compile(r"pythia-(\d+(?:\.\d+)?[mb])(-deduped)?(?:-(data-|weight-)?seed(\d+))?")
# OLMo branch names: [group-]stepM-tokensK with a unit (B, T, ...); group e.g. stage1, stage2-ingredient1
_OLMO_BRANCH = re.compile(r"(?:(stage\d+(?:-[a-z]+\d+)*)-)?step(\d+)-tokens\d+[a-z]*", re.IGNORECASE)


def is_pythia(model_name: str) -> bool:
    """Whether a repo id or path names a Pythia model (its last component contains "pythia")."""
    return "pythia" in model_name.rstrip("/").rsplit("/", 1)[-1].lower()


def pythia_meta(model_name: str) -> dict:
    """Store meta of a Pythia model: "size" ("70m"), "seed" (the original run: 0), "dataset", and for a
    PolyPythia run "seed_varies": "both" (``-seedN``: initialisation and data order), "data" or "weight"
    (``-data-seedN``, ``-weight-seedN``: only that one); else {}."""
    m = _PYTHIA_NAME.fullmatch(model_name.rstrip("/").rsplit("/", 1)[-1].lower())
    if m is None:
        return {}
    dataset = "pile-deduped" if m.group(2) else "pile"
    out = {"size": m.group(1), "seed": int(m.group(4) or 0), "dataset": dataset}
    if m.group(4) is not None:
        out["seed_varies"] = (m.group(3) or "both-")[:-1]
    return out


def step_of(name: str, *, pythia: bool = False) -> int | None:
    """The step a revision name states: stepN, an OLMo branch, or Pythia's main; None when it states none."""
    if pythia and name == "main":
        return PYTHIA_MAIN_STEP
    m = _STEP.fullmatch(name) or _OLMO_BRANCH.fullmatch(name)
    return None if m is None else int(m.groups()[-1])


def _group(name: str) -> str | None:
    """The branch group of a stepped name ("" for stepN and ungrouped OLMo names), None for other names."""
    if _STEP.fullmatch(name):
        return ""
    m = _OLMO_BRANCH.fullmatch(name)
    return None if m is None else (m.group(1) or "").lower()


def branch_revisions(branches: Sequence[str], group: str | None = None, lo: int = 0,
                     hi: int | None = None) -> list[str]:
    """The branches of one group (None: the first, e.g. "stage1") with lo <= step <= hi, sorted by step.

    Raises:
        ValueError: no branch of that group in the range (naming the groups there are).
    """
    stepped = [(g, step_of(b), b) for b in branches if (g := _group(b)) is not None]
    groups = sorted({g for g, _, _ in stepped})
    chosen = (groups[0] if groups else "") if group is None else group.lower()
    out = sorted((s, b) for g, s, b in stepped if g == chosen and s >= lo and (hi is None or s <= hi))
    if not out:
        known = ", ".join(repr(g) for g in groups) or "none"
        raise ValueError(
            f"no branch of group {chosen!r} with a step in [{lo}, {hi if hi is not None else 'end'}] among "
            f"{len(branches)} branch(es) (stepped groups: {known}); check --revisions"
        )
    return [b for _, b in out]


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


def expand_revisions(spec: str | Sequence[str] | None, *, pythia: bool,
                     branches: Callable[[], Sequence[str]] | None = None) -> list[str]:
    """Revision names from "a,b,c", "pythia" (all 154), "olmo" / "olmo:GROUP" (the hub's OLMo branches),
    "[GROUP-]stepA-stepB" (the revisions with A <= step <= B), a list of such items, or None ("main").

    Args:
        pythia: a Pythia model: names are checked against the published list (an unknown one is refused,
            naming the nearest valid ones) and ranges select from it.
        branches: returns the model's branch names (called only when needed: "olmo", or a range of a
            non-Pythia model); None: ranges select from Pythia's list.
    """
    items = ["main"] if spec is None else spec.split(",") if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for item in (str(i).strip() for i in items):
        if item == "pythia":
            names += PYTHIA_REVISIONS
        elif item == "olmo" or item.startswith("olmo:"):
            if branches is None:
                raise ValueError(f"--revisions {item} needs the branch list of a hub model; pass a repo id")
            names += branch_revisions(branches(), item.partition(":")[2] or None)
        elif m := _RANGE.fullmatch(item):
            lo, hi = int(m.group(2)), int(m.group(3))
            if lo > hi:
                raise ValueError(f"revision range {item!r} is empty: write the smaller step first")
            if pythia or (branches is None and m.group(1) is None):
                names += [r for r in PYTHIA_REVISIONS if lo <= int(r[4:]) <= hi]
            elif branches is None:
                raise ValueError(
                    f"revision range {item!r} needs the branch list of a hub model; pass a repo id"
                )
            else:
                names += branch_revisions(branches(), m.group(1), lo, hi)
        elif item:
            names.append(_checked_pythia(item) if pythia else item)
    if not names:
        raise ValueError(
            f"no revisions in {spec!r}: pass names like step1000,main, 'pythia' or a range step1000-step10000"
        )
    return names


def revision_steps(names: Sequence[str], *, pythia: bool) -> list[int]:
    """The step of each revision (rules in the module docstring)."""
    parsed = [step_of(n, pythia=pythia) for n in names]
    if None not in parsed:
        steps = parsed
    elif len(names) == 1:
        steps = [0]
    elif any(s is not None for s in parsed):
        odd = [n for n, s in zip(names, parsed, strict=True) if s is None]
        raise ValueError(
            f"revisions mix stepN names with others ({', '.join(odd[:3])}); name them all stepN (or OLMo "
            "branches stageK-stepM-tokensT), or none of them (then steps are positions in the list)"
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
