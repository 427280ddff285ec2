"""The in-process import of a list of revisions: `run_import` and the `Importer` it drives.

`import_checkpoints` (trajlab.hub.importer) runs it on the whole plan or one `--shard`; each Ray task
(trajlab.hub.ray_executor) runs it on its shard after the previous shard's last revisions (`preload`). What it
does per revision (duplicates, resume, failures) is described in trajlab.hub.importer.
"""

from __future__ import annotations

import hashlib
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
    local_only,
    missing_message,
    resolve_checkpoint,
    weight_sha256,
)
from trajlab.hub.config import ImportConfig, ImportResult, check_resumable, import_probe, lineage_from_parent
from trajlab.store import TrajectoryStore, is_store
from trajlab.store.meta import model_meta

if TYPE_CHECKING:
    from trajlab.data.probe import ProbeSet


def weights_key(files: dict[str, str]) -> str:
    """One sha256 over a revision's weight files (names and hashes): equal keys mean identical weights."""
    return hashlib.sha256("".join(f"{n}:{h}\n" for n, h in sorted(files.items())).encode()).hexdigest()


class Importer:
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
                if weights_key(weight_sha256(ckpt)) != info["weights_sha256"]:
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
        from trajlab.data.tokenizer import tokenizer_fingerprint
        from trajlab.lens import score_model

        t0 = time.perf_counter()
        try:
            ckpt = ckpt or self.resolve(name, step, offline=False)
            files = weight_sha256(ckpt)
            key = weights_key(files)
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


def run_import(ref: ModelRef, plan: list[tuple[int, str]], out: Path, cfg: ImportConfig,
               preload: Sequence[tuple[int, str]] = (),
               on_revision: Callable[[int], None] | None = None) -> ImportResult:
    """Import the (step, revision) `plan` into `out` in this process, after the `preload` revisions (see
    `Importer`; the result leaves them out); `on_revision(step)` runs after each revision."""
    from tqdm.auto import tqdm

    local = local_only(ref, cfg.offline)
    existing = TrajectoryStore.open(out, writable=True) if is_store(out) else None
    imp: Importer | None = None
    try:
        imp = Importer(ref, out, import_probe(cfg.probe, existing), existing, cfg,
                        frozenset(s for s, _ in preload), local)
        if existing is not None:
            check_resumable(existing, ref, cfg)
        todo = todo_of(imp, sorted({*preload, *plan}))
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


def todo_of(imp: Importer, plan: list[tuple[int, str]]) -> list[tuple[int, str]]:
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
