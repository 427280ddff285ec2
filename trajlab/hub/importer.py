"""Public checkpoints into a TrajectoryStore: `import_checkpoints` (``trajlab import``).

Each revision (trajlab.hub.revisions: names and steps; trajlab.hub.checkpoints: files, safety, loading) is scored
with `score_model` on a probe set at every layer (or the last) and appended in step order, with the weight
sketch and the exact squared distances to the previous `window` revisions that the training callback records.

* Duplicates: every weight file is hashed (sha256). A revision whose files equal an earlier one's is not
  scored: its LL rows are copied, its info says {"duplicate_of": step}, a "duplicate" note is added and a
  warning shown.
  Pythia's step0 and step1 are identical, so the store keeps both steps, as published. A revision sharing only
  some files (a shard) with an earlier one is scored and gets a "shared-weight-file" note and a warning.
* Resume: rerunning skips steps already in the store (warning when the cached commit differs from the recorded
  one), and reloads the last `window` stored revisions from local files, if still there, for distances.
* Failures: a revision that cannot be read (corrupt file, failed download) is reported, noted in the store and
  skipped; the rest import. Steps in a store only increase, so import it later into another store and merge.
  Refusals (pickles without allow_pickle, not a causal LM) and offline cache misses stop the import before it
  writes anything.
* Known quirks and lineage: the documented defects of the requested revisions (trajlab.hub.quirks) are
  printed once and recorded as "known-quirk" notes; they explain what the hashes find, never replace them. A
  hub model whose card names one ``base_model`` gets it as its lineage parent (trajlab.hub.cards).
* Where: the in-process import of a list of revisions is trajlab.hub.serial (`run_import`); `executor="ray"`
  runs contiguous shards of it as Ray tasks and merges them (trajlab.hub.ray_executor; merging shards by hand:
  trajlab.store.merge); `--dry-run` sizes an import first (trajlab.hub.dryrun). Options: `ImportConfig`
  (trajlab.hub.config).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from trajlab.hub.checkpoints import ModelRef, hub_branches, model_ref
from trajlab.hub.config import (
    SCORING_ALIASES,
    ImportConfig,
    ImportResult,
    config_from,
    import_parser,
    lineage_from_parent,
)
from trajlab.hub.quirks import NOTE_KIND, quirks_for, report
from trajlab.hub.revisions import expand_revisions, parse_shard, revision_steps, shard_part
from trajlab.hub.serial import run_import
from trajlab.store import TrajectoryStore, is_store

if TYPE_CHECKING:
    from trajlab.data.probe import ProbeSet

__all__ = ["ImportConfig", "ImportResult", "import_checkpoints", "import_main"]


def import_checkpoints(
    model: str | os.PathLike,
    revisions: str | Sequence[str] | None,
    out: str | os.PathLike,
    probe: ProbeSet | str | os.PathLike | None = None,
    layers: str | None = None,
    shard: str | tuple[int, int] | None = None,
    *,
    config: ImportConfig | None = None,
    **overrides,
) -> ImportResult:
    """Score revisions of a model on a probe set and append them, in step order, to the store `out`.

    Args:
        model: hub repo id, HF cache folder (models--ORG--NAME), save_pretrained folder or GGUF file.
        revisions: "step0,step1000,main", "pythia" (all 154), "step1000-step10000", a list, or None ("main").
            A folder or GGUF file holds one revision (its name sets the step: stepN -> N, else 0).
        out: the store; created, or resumed if it exists (steps already there are skipped).
        probe, layers, shard: shorthands for the ImportConfig fields of those names (an ImportConfig in
            the place of `probe` is taken as `config`).
        config: the options (`ImportConfig`; default ImportConfig()); `overrides` (field names, e.g.
            window=0, executor="ray") change single fields of it.

    Raises:
        ValueError: bad revisions, layers, shard, window, options; a probe differing from the existing
            store's; an existing store written with other settings.
        RefusedCheckpointError: see trajlab.hub.checkpoints.
        FileNotFoundError: a missing model path, or (offline) revisions missing from the cache.
        UnknownOptionError: an unknown option name (a TypeError and a ValueError).
    """
    if isinstance(probe, ImportConfig):
        config, probe = probe, None
    given = {k: v for k, v in (("probe", probe), ("layers", layers), ("shard", shard)) if v is not None}
    cfg = (config or ImportConfig()).replace(**given, **overrides)
    ref = model_ref(model, gguf_file=cfg.gguf_file, cache_dir=cfg.cache_dir)
    branches = (lambda: hub_branches(ref, cfg.offline)) if ref.kind == "hub" else None
    names = expand_revisions(revisions, pythia=ref.pythia, branches=branches)
    if ref.kind != "hub" and len(names) > 1:
        raise ValueError(f"{ref.name} holds one revision, got {len(names)} names; pass one (or none)")
    plan = sorted(zip(revision_steps(names, pythia=ref.pythia), names, strict=True))
    if cfg.parent is not None:
        lineage_from_parent(cfg.parent)  # a bad parent is refused before anything is downloaded or written
    if cfg.shard is not None:  # never with executor="ray" (ImportConfig refuses both)
        cfg = cfg.replace(shard=parse_shard(cfg.shard))
        plan = shard_part(plan, *cfg.shard)
    for line in report(ref.name, [n for _, n in plan]):
        print(line)
    if cfg.executor == "ray":
        from trajlab.hub.ray_executor import import_with_ray

        return _noted(import_with_ray(ref, plan, Path(out), cfg), ref, plan)
    return _noted(run_import(ref, plan, Path(out), cfg), ref, plan)


def _noted(result: ImportResult, ref: ModelRef, plan: list[tuple[int, str]]) -> ImportResult:
    """Record each known quirk of the imported revisions (trajlab.hub.quirks) in the store notes, once."""
    found = quirks_for(ref.name, [n for _, n in plan])
    if found and is_store(result.store):
        with TrajectoryStore.open(result.store, writable=True) as store:
            noted = {n["payload"].get("id") for n in store.notes(NOTE_KIND)}
            for q in found:
                if q["id"] not in noted:
                    store.add_note(NOTE_KIND, q)
    return result


def import_main(argv: list[str]) -> int:
    """`trajlab import`: returns 0, or 1 when some revision failed; an error that stops the import raises (one
    line from trajlab.cli, exit 2)."""
    from trajlab._args import parse_tool_args

    args = parse_tool_args(import_parser(), argv, SCORING_ALIASES)
    cfg = config_from(args)
    if args.dry_run:
        from trajlab.hub.dryrun import dry_run

        print(dry_run(args.model, args.revisions, args.out, cfg))
        return 0
    r = import_checkpoints(args.model, args.revisions, args.out, config=cfg)
    print(f"{r.store}: imported {len(r.imported)} revision(s) ({len(r.duplicates)} duplicate), skipped "
          f"{len(r.skipped)} already stored, failed {len(r.failed)}")
    for name, why in r.failed.items():
        print(f"  failed {name}: {why}", file=sys.stderr)
    return 1 if r.failed else 0
