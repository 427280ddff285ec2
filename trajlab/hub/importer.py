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
* Merging shards: trajlab.store.merge (`merge_stores`, `merge_main`, re-exported here). `executor="ray"` runs
  the shards as Ray tasks and merges them (trajlab.hub.ray_executor); `--dry-run` sizes an import first
  (trajlab.hub.dryrun). Options: `ImportConfig` (trajlab.hub.config).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from trajlab.hub.checkpoints import (
    Checkpoint,
    ModelRef,
    RefusedCheckpointError,
    cached_commit,
    delete_from_cache,
    load_checkpoint,
    hub_branches,
    local_only,
    missing_message,
    model_ref,
    resolve_checkpoint,
    weight_sha256,
)
from trajlab.hub.config import (
    SCORING_ALIASES,
    ImportConfig,
    ImportResult,
    check_resumable,
    config_from,
    import_parser,
    import_probe,
    lineage_from_parent,
)
from trajlab.hub.quirks import NOTE_KIND, quirks_for, report
from trajlab.store.merge import merge_main, merge_stores
from trajlab.hub.revisions import expand_revisions, parse_shard, revision_steps, shard_part
from trajlab.store import TrajectoryStore, is_store
from trajlab.store.meta import model_meta

if TYPE_CHECKING:
    from trajlab.data.probe import ProbeSet

__all__ = ["ImportConfig", "ImportResult", "import_checkpoints", "import_main", "merge_main", "merge_stores"]


def _weights_key(files: dict[str, str]) -> str:
    """One sha256 over a revision's weight files (names and hashes): equal keys mean identical weights."""
    return hashlib.sha256("".join(f"{n}:{h}\n" for n, h in sorted(files.items())).encode()).hexdigest()


class _Importer:
    """One import run: the store (created with the first scored revision), weight geometry, hashes seen.

    `preload`: steps imported only so that the next ones get their distances and duplicates (a Ray shard's
    copy of the previous shard's last revisions): stored, but no notes and no result entries. With clean_cache
    they leave the cache right after use only when online (the owning shard, which needs them last, downloads
    them again if they are gone); offline, the owning shard deletes them.
    """

    def __init__(self, ref: ModelRef, out: Path, probe: ProbeSet, existing, cfg: ImportConfig,
                 preload: frozenset[int] = frozenset(), local: bool = True):
        from trajlab.sketch import WeightHistory, WeightSketch

        self.ref, self.out, self.probe, self.layers, self.cfg = ref, out, probe, cfg.layers, cfg
        self.preload, self.local = preload, local
        self.store: TrajectoryStore | None = existing
        self.sketcher = WeightSketch(cfg.sketch_k, cfg.sketch_seed) if cfg.sketch_k else None
        self.history = WeightHistory(cfg.window) if cfg.window else None
        self.by_hash: dict[str, int] = {}  # weights key -> first step with those weights
        self.by_file: dict[str, int] = {}  # sha256 of one weight file -> first step with it
        self.result = ImportResult(out)
        for step in map(int, existing.steps if existing is not None else []):
            self._remember(existing.snapshot_info(step)["info"], step)

    def _remember(self, info: dict, step: int) -> None:
        if "weights_sha256" in info:
            self.by_hash.setdefault(info["weights_sha256"], step)
        for sha in info.get("checkpoint", {}).get("files", {}).values():
            self.by_file.setdefault(sha, step)

    @property
    def sketch_spec(self) -> dict | None:
        return None if self.sketcher is None else self.sketcher.spec

    def resolve(self, name: str, step: int, *, offline: bool) -> Checkpoint:
        c = self.cfg
        return resolve_checkpoint(self.ref, name, step, offline=offline, allow_pickle=c.allow_pickle,
                                  trust_remote_code=c.trust_remote_code)

    def resolved_all(self, todo: list[tuple[int, str]]) -> list[Checkpoint]:
        """Every revision's local files, resolved before anything is written; cache misses in one error."""
        ckpts, missing = [], []
        for step, name in todo:
            try:
                ckpts.append(self.resolve(name, step, offline=True))
            except FileNotFoundError:
                missing.append(name)
        if missing:
            raise FileNotFoundError(missing_message(self.ref, missing))
        return ckpts

    def load(self, ckpt: Checkpoint, *, tokenizer: bool):
        c = self.cfg
        return load_checkpoint(ckpt, dtype=c.dtype, device=c.device, trust_remote_code=c.trust_remote_code,
                               tokenizer=tokenizer)

    def _create_store(self, model, tok, sinfo, ckpt: Checkpoint) -> None:
        from trajlab.data.tokenizer import tokenizer_meta
        from trajlab.hub.cards import card_meta

        c = self.cfg
        warmup, total = c.schedule_for(self.ref.pythia)
        meta = {
            "run": c.run or self.ref.run_name,
            "model": model_meta(model, self.ref.name),
            "tokenizer": tokenizer_meta(tok),
            "config": {"importer": {"layers": self.layers, "dtype": c.dtype, "kind": self.ref.kind}},
            "weights": {"sketch": self.sketch_spec, "window": c.window},
            "n_params": sum(p.numel() for p in model.parameters()),
            "warmup_steps": warmup,
            "max_steps": total,
            **self.ref.meta,
        }
        meta["scoring"] = sinfo.scoring()
        if c.parent is not None:
            meta["lineage"] = lineage_from_parent(c.parent)
        elif self.ref.kind == "hub" and (card := card_meta(self.ref.name, ckpt.folder)):
            meta |= card  # the card's base_model: lineage to "hf:BASE" (trajlab.hub.cards)
            base = card["base_model"]
            print(f"{self.ref.name}: model card names base model {base['repo'] or base['repos']}; "
                  + ("recorded as its lineage parent" if base["recorded"] else f"not recorded: {base['why']}"))
        if c.shard is not None:
            meta["shard"] = list(c.shard)
        self.store = TrajectoryStore.create(self.out, probe=self.probe, meta=meta, n_layers=sinfo.n_layers)

    def prime_history(self) -> None:
        """Reload the last `window` stored revisions from local files, so resumed revisions get distances."""
        if self.history is None or self.store is None or not len(self.store):
            return
        lost = {}
        for step in map(int, self.store.steps[-self.history.window :]):
            info = self.store.snapshot_info(step)["info"]
            try:
                ckpt = self.resolve(info["checkpoint"]["revision"], step, offline=True)
                if _weights_key(weight_sha256(ckpt)) != info["weights_sha256"]:
                    raise ValueError("its weight files changed since it was imported")
                self.history.push(step, self.load(ckpt, tokenizer=False)[0])
            except FileNotFoundError:
                lost[step] = "no longer in the local cache"
            except Exception as e:  # best effort: only distances go missing
                lost[step] = str(e)
        if lost:
            why = "; ".join(f"step {s}: {e}" for s, e in list(lost.items())[:3])
            warnings.warn(f"resume: step(s) {list(lost)} cannot be reloaded ({why}); exact weight distances "
                          "from the next revisions to them stay missing (NaN)", stacklevel=3)

    def fail(self, name: str, step: int, error: BaseException) -> None:
        why = f"{type(error).__name__}: {error}"
        self.result.failed[name] = why
        if self.store is not None and step not in self.preload:
            self.store.add_note("import-failed", {"revision": name, "step": step, "error": why})
        warnings.warn(f"{self.ref.name}@{name} (step {step}) was not imported: {why}. Fix it, then import it "
                      "into another store and merge (steps in a store only increase)", stacklevel=3)

    def import_one(self, step: int, name: str, ckpt: Checkpoint | None, log) -> None:
        """Load, score (or copy a duplicate), sketch and append one revision; a read failure is recorded."""
        from trajlab.lens import score_model
        from trajlab.data.tokenizer import tokenizer_fingerprint

        t0 = time.perf_counter()
        try:
            ckpt = ckpt or self.resolve(name, step, offline=False)
            files = weight_sha256(ckpt)
            key = _weights_key(files)
            dup_of = self.by_hash.get(key)
            need_model = dup_of is None or self.history is not None  # a duplicate needs it for distances only
            model, tok = self.load(ckpt, tokenizer=dup_of is None) if need_model else (None, None)
            fp = tokenizer_fingerprint(tok) if tok is not None else None
            if fp and self.store is not None and fp != self.store.meta["tokenizer"]["fingerprint"]:
                raise ValueError(f"its tokenizer ({fp}) differs from the store's; import it separately")
        except RefusedCheckpointError:
            raise
        except Exception as e:  # a revision that cannot be read is reported and skipped; the rest import
            self.fail(name, step, e)
            return
        load_s = time.perf_counter() - t0
        source = {"model": self.ref.name, "revision": name, "commit": ckpt.commit, "files": files,
                  "format": ckpt.format}
        info = {"checkpoint": source, "weights_sha256": key, "load_s": round(load_s, 3)}
        if dup_of is None:
            t1 = time.perf_counter()
            rows, sinfo = score_model(model, tok, self.probe, self.layers, scoring=self.cfg.scoring,
                                      progress=self.cfg.progress, return_info=True)
            # rows: (R, N)
            score_s = time.perf_counter() - t1
            n_tokens = int((sinfo.n_tokens + 1).sum())  # tokens through the forward, unscored first ones too
            info |= {"score_s": round(score_s, 3), "n_tokens": n_tokens, "n_truncated": sinfo.n_truncated,
                     "tokens_per_s": round(n_tokens / max(score_s, 1e-9), 1)}
            layer_rows = list(sinfo.rows)
            if self.store is None:
                self._create_store(model, tok, sinfo, ckpt)
            what = f"scored in {score_s:.1f} s ({info['tokens_per_s']:,.0f} tokens/s)"
        else:
            rows = self.store.snapshot_array(dup_of, "ll")
            layer_rows = self.store.snapshot_info(dup_of)["layers"]
            info["duplicate_of"] = dup_of
            what = f"DUPLICATE of step {dup_of} (identical weight files): LL copied, not scored"
        sketch = None  # (k,)
        if self.sketcher is not None and model is not None:
            sketch = self.sketcher.sketch(model)
        elif self.sketcher is not None:
            sketch = self.store.snapshot_array(dup_of, "sketch")
        dists = self.history.push(step, model) if self.history is not None else None
        self.store.append(step, rows, layers=layer_rows, probe_fingerprint=self.probe.fingerprint,
                          source=ckpt.source, weight_sketch=sketch, sq_dists=dists, info=info)
        if step in self.preload:
            self._remember(info, step)
            if self.cfg.clean_cache and not self.local:
                delete_from_cache(ckpt, self.ref)
            log(f"{ckpt.source} -> step {step}: preloaded (the previous shard's; distances and duplicates)")
            return
        if dup_of is not None:
            self.store.add_note("duplicate", {"step": step, "revision": name, "duplicate_of": dup_of,
                                              "weights_sha256": key})
            self.result.duplicates[step] = dup_of
            warnings.warn(f"{ckpt.source} (step {step}) has the same weight files as step {dup_of}; recorded "
                          "as a duplicate (LL copied, info['duplicate_of'])", stacklevel=3)
        elif shared := {n: self.by_file[sha] for n, sha in files.items() if sha in self.by_file}:
            # e.g. a sharded checkpoint serving another revision's shard: scored, but worth knowing
            self.store.add_note("shared-weight-file", {"step": step, "revision": name, "same_as": shared})
            warnings.warn(f"{ckpt.source} (step {step}) shares weight file(s) with earlier steps: {shared}",
                          stacklevel=3)
        self._remember(info, step)
        self.result.imported.append(step)
        freed = delete_from_cache(ckpt, self.ref) if self.cfg.clean_cache else 0
        log(f"{ckpt.source} -> step {step}: {what}; load {load_s:.1f} s"
            + (f"; freed {freed / 2**20:,.0f} MiB of cache" if freed else ""))


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
        TypeError: an unknown option name.
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


def run_import(ref: ModelRef, plan: list[tuple[int, str]], out: Path, cfg: ImportConfig,
               preload: Sequence[tuple[int, str]] = (),
               on_revision: Callable[[int], None] | None = None) -> ImportResult:
    """Import the (step, revision) `plan` into `out` in this process, after the `preload` revisions (see
    `_Importer`; the result leaves them out); `on_revision(step)` runs after each revision."""
    from tqdm.auto import tqdm

    local = local_only(ref, cfg.offline)
    existing = TrajectoryStore.open(out, writable=True) if is_store(out) else None
    imp: _Importer | None = None
    try:
        imp = _Importer(ref, out, import_probe(cfg.probe, existing), existing, cfg,
                        frozenset(s for s, _ in preload), local)
        if existing is not None:
            check_resumable(existing, ref, cfg)
        todo = _todo(imp, sorted({*preload, *plan}))
        ckpts = imp.resolved_all(todo) if local else [None] * len(todo)
        if todo:
            imp.prime_history()
        bar = tqdm(total=len(todo), desc=f"import {ref.run_name}", unit="rev", disable=not cfg.progress)
        for (step, name), ckpt in zip(todo, ckpts, strict=True):
            imp.import_one(step, name, ckpt, bar.write if cfg.progress else print)
            bar.update()
            if on_revision is not None:
                on_revision(step)
        bar.close()
        r, skip = imp.result, imp.preload
        r.skipped = [s for s in r.skipped if s not in skip]
        r.failed = {n: why for n, why in r.failed.items() if n not in {name for s, name in preload}}
        return r
    finally:
        for store in (existing, imp and imp.store):
            if store is not None:
                store.close()


def _todo(imp: _Importer, plan: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Revisions still to import; records those already stored and those the store can no longer take."""
    store, todo, late = imp.store, [], []
    stored = {} if store is None else {int(s): store.snapshot_info(int(s)) for s in store.steps}
    last = max(stored, default=-1)
    for step, name in plan:
        if step in stored:
            imp.result.skipped.append(step)
            recorded = stored[step]["info"].get("checkpoint", {}).get("commit")
            now = cached_commit(imp.ref, name)
            if recorded and now and recorded != now:
                warnings.warn(f"step {step} is in {store.path} from commit {recorded[:12]}, but {name} now "
                              f"points to {now[:12]}; kept the stored one", stacklevel=3)
        elif step < last:
            late.append(name)
        else:
            todo.append((step, name))
    if late:
        imp.result.failed |= {n: f"below the store's last step {last}" for n in late}
        warnings.warn(f"{len(late)} revision(s) ({', '.join(late[:5])}) lie below the last step {last} of "
                      f"{store.path}, where nothing can be inserted; import them into another store and "
                      "merge", stacklevel=3)
    return todo


def import_main(argv: list[str]) -> int:
    """`trajlab import`: returns 0, 1 when some revision failed, 2 on an error that stopped the import."""
    from trajlab._args import one_line, parse_tool_args

    try:
        args = parse_tool_args(import_parser(), argv, SCORING_ALIASES)
        cfg = config_from(args)
        if args.dry_run:
            from trajlab.hub.dryrun import dry_run

            print(dry_run(args.model, args.revisions, args.out, cfg))
            return 0
        r = import_checkpoints(args.model, args.revisions, args.out, config=cfg)
    except (ValueError, OSError, RuntimeError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    print(f"{r.store}: imported {len(r.imported)} revision(s) ({len(r.duplicates)} duplicate), skipped "
          f"{len(r.skipped)} already stored, failed {len(r.failed)}")
    for name, why in r.failed.items():
        print(f"  failed {name}: {why}", file=sys.stderr)
    return 1 if r.failed else 0
