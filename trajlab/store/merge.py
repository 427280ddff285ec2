"""Merge trajectory stores of one model and probe (e.g. the shards of an import) into one, in step order.

``trajlab merge STORE... --out STORE`` calls `merge_main`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from trajlab.store.meta import check_comparable, settings_mismatch
from trajlab.store.trajectory import TrajectoryStore


def merge_stores(
    paths: Sequence[str | os.PathLike], out: str | os.PathLike, *, run: str | None = None
) -> Path:
    """Merge stores of one model and probe (e.g. import shards) into a new store `out`, in step order.

    A step held by several stores must be identical in all (same layers, LL rows, sketch), and all must be
    scored alike (meta["scoring"], `check_comparable` first). Snapshots keep their source, info and exact
    distances; notes are copied. The merged store gets a new id; it keeps the shards' lineage when they all
    name the same parent, else it is its own root. The result is written beside `out`, then renamed into
    place, so a failed merge leaves no partial store at `out`.

    Raises:
        ValueError: no stores, different probes / models / tokenizers / sketches / scorings, or a step that
            differs.
        FileExistsError: `out` exists and is not an empty folder.
    """
    stores = [TrajectoryStore.open(p) for p in paths]
    if not stores:
        raise ValueError("merge needs at least one store")
    first = stores[0]
    check_comparable(stores)
    for s in stores[1:]:
        for what, a, b in (
            ("probe fingerprint", first.probe_fingerprint, s.probe_fingerprint),
            ("n_layers", first.n_layers, s.n_layers),
            ("model", first.meta["model"], s.meta["model"]),
            ("tokenizer", first.meta["tokenizer"]["fingerprint"], s.meta["tokenizer"]["fingerprint"]),
            ("weight sketch", *(x.meta.get("weights", {}).get("sketch") for x in (first, s))),
        ):
            if a != b:
                raise ValueError(f"cannot merge {s.path} into {first.path}: {what} {b} differs from {a}")
        if problem := settings_mismatch(first.meta, scoring=s.meta["scoring"]) or settings_mismatch(
            s.meta, scoring=first.meta["scoring"]
        ):
            raise ValueError(
                f"cannot merge {s.path} into {first.path}: {problem}; merge only shards scored alike"
            )
    owner: dict[int, TrajectoryStore] = {}
    for s in stores:
        for step in map(int, s.steps):
            if step in owner and not _same_snapshot(owner[step], s, step):
                raise ValueError(
                    f"step {step} is in {owner[step].path} and {s.path} with different contents; "
                    "merge only stores whose shared steps are identical"
                )
            owner.setdefault(step, s)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists; merge into a new path")
    tmp = out.with_name(f".{out.name}.merge-tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # a previous merge that crashed
    meta = {k: v for k, v in first.meta.items() if k not in ("shard", "id", "lineage")}
    meta |= {"run": run or meta["run"], "merged_from": [str(s.path) for s in stores]}
    parents = [s.meta["lineage"]["parent"] for s in stores]
    if parents[0] is not None and all(p == parents[0] for p in parents):
        meta["lineage"] = first.meta["lineage"]
    with TrajectoryStore.create(tmp, probe=first.probe(), meta=meta, n_layers=first.n_layers) as merged:
        for step in sorted(owner):
            s = owner[step]
            rec = s.snapshot_info(step)
            merged.append(
                step, s.snapshot_array(step, "ll"), layers=rec["layers"], source=rec["source"],
                probe_fingerprint=s.probe_fingerprint, info=rec["info"],
                weight_sketch=s.snapshot_array(step, "sketch") if "sketch" in rec["files"] else None,
                sq_dists={int(a): d for a, d in rec["sq_dists"].items()} if "sq_dists" in rec else None,
                full_weights=s.full_weights(step) if "weights" in rec["files"] else None,
            )
        for s in stores:
            for note in s.notes():
                merged.add_note(note["kind"], note["payload"])
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    return out


def _same_snapshot(a: TrajectoryStore, b: TrajectoryStore, step: int) -> bool:
    ra, rb = a.snapshot_info(step), b.snapshot_info(step)
    if ra["layers"] != rb["layers"] or set(ra["files"]) != set(rb["files"]):
        return False
    return all(np.array_equal(a.snapshot_array(step, k), b.snapshot_array(step, k))
               for k in ("ll", "sketch") if k in ra["files"])


def merge_main(argv: list[str]) -> int:
    """`trajlab merge STORE... --out STORE [--run NAME]` (options: `merge_stores`'s): returns 0; a mistake
    raises (trajlab.cli prints it)."""
    from trajlab._args import parse_tool_args, tool_parser

    p = tool_parser("trajlab merge", "Merge stores of one model (e.g. shards) into a new store, step-sorted")
    p.add_argument("stores", type=str, nargs="+", help="the stores to merge (e.g. OUT/shards/*)")
    p.add_argument("--out", type=str, required=True, help="the merged store (a new folder)")
    p.add_function_arguments(merge_stores, nested_key=None, skip={"paths", "out"}, as_group=False)
    a = parse_tool_args(p, argv)
    out = merge_stores(a.stores, a.out, run=a.run)
    with TrajectoryStore.open(out) as s:
        print(f"{out}: {len(s)} snapshots, steps {s.steps[0]}..{s.steps[-1]}" if len(s) else f"{out}: empty")
    return 0
