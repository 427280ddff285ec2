"""`executor="ray"`: an import's revisions as contiguous shards run as Ray tasks, then merged into the store.

The step-sorted revisions not yet in STORE are split into `workers` contiguous shards. Shard i runs as one
Ray task (one GPU with a CUDA device, else as many CPUs as torch threads) and writes its own store
STORE.shards/<i> beside STORE (a shared filesystem, as on any cluster). Before its own revisions it imports
the previous shard's last max(window, 1) revisions ("preload": stored in the shard, no notes), so the exact
weight distances across the boundary and duplicates of those revisions come out as in a serial import; the
merge (trajlab.store.merge.merge_stores, in step order) checks that both copies of a preloaded step are identical.
Every task sets the driver's torch thread count, so scores are bitwise those of the serial import.

Resume: STORE.shards/plan.json keeps the split; a finished shard leaves <i>.done.json and is skipped on a
rerun; a half-done shard continues from its own store (also when Ray retries a task whose worker died,
`max_retries`). After the merge, STORE.shards is removed. Limits: a duplicate of a revision more than
max(window, 1) revisions before its shard is scored again (same rows, no "duplicate" note). With `clean_cache`
online, every task downloads into a cache of its own (HF_HUB_CACHE/trajlab-task-*, removed when it ends), so
one task's deletions never pull files from under another; a preloaded revision is downloaded twice.

Test and debugging hook: with TRAJLAB_RAY_HOLD=PATH in the driver's environment, every task waits after each
revision of its own while PATH exists (to stop a task at a known point); <i>.pid names the process running
shard i.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from pathlib import Path

from trajlab._io import write_atomic
from trajlab.hub.checkpoints import ModelRef
from trajlab.hub.config import ImportConfig, ImportResult, check_resumable, import_probe
from trajlab.hub.revisions import shard_part
from trajlab.hub.serial import run_import
from trajlab.store import TrajectoryStore, is_store
from trajlab.store.merge import merge_stores

Plan = list[tuple[int, str]]


def _ray():
    try:
        import ray
    except ImportError:
        raise RuntimeError(
            "--executor ray needs Ray, which is not installed: pip install 'trajlab[ray]' (or pip install "
            "ray), or drop --executor ray to import in this process"
        ) from None
    return ray


def _shard_task(
    ref: ModelRef,
    part: Plan,
    preload: Plan,
    folder: Path,
    i: int,
    cfg: ImportConfig,
    threads: int,
    hold: str | None,
) -> ImportResult:
    """One shard, in a Ray worker: the driver's thread count, a pid file, the import, a done file."""
    import dataclasses
    import hashlib

    import torch

    from trajlab.hub.checkpoints import local_only

    torch.set_num_threads(threads)
    (folder / f"{i}.pid").write_text(str(os.getpid()))
    private = None
    if cfg.clean_cache and not local_only(ref, cfg.offline):  # a cache of its own: deletions never race
        from huggingface_hub import constants

        tag = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:12]
        private = Path(ref.cache_dir or constants.HF_HUB_CACHE) / f"trajlab-task-{tag}-{i}"
        ref, cfg = dataclasses.replace(ref, cache_dir=private), cfg.replace(cache_dir=private)

    own = {s for s, _ in part}

    def wait_while_held(step: int) -> None:
        while hold and step in own and os.path.exists(hold):
            time.sleep(0.05)

    result = run_import(ref, part, folder / str(i), cfg, preload, on_revision=wait_while_held)
    if private is not None:
        shutil.rmtree(private, ignore_errors=True)
    write_atomic(folder / f"{i}.done.json", json.dumps({"imported": result.imported, "failed": result.failed}))
    return result


def _stored(out: Path) -> tuple[TrajectoryStore | None, Plan]:
    """STORE (read-only) if it exists, and its (step, revision) sequence."""
    if not is_store(out):
        return None, []
    store = TrajectoryStore.open(out)
    return store, [
        (int(s), store.snapshot_info(int(s))["info"].get("checkpoint", {}).get("revision", ""))
        for s in store.steps
    ]


def _split(folder: Path, ref: ModelRef, todo: Plan, workers: int) -> list[Plan]:
    """Contiguous shards of `todo`: the saved split of an unfinished run, else a new one (saved)."""
    saved = folder / "plan.json"
    if saved.is_file():
        plan = json.loads(saved.read_text())
        parts = [[(int(s), n) for s, n in part] for part in plan["parts"]]
        if plan["model"] != ref.name or sorted(x for p in parts for x in p) != todo:
            raise ValueError(
                f"{folder} holds an unfinished Ray import of other revisions; rerun it with the same model "
                f"and --revisions to finish it, or delete {folder}"
            )
        return parts
    parts = [p for p in (shard_part(todo, i, workers) for i in range(workers)) if p]
    folder.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps({"model": ref.name, "parts": parts}))
    return parts


def _resources(ray, cfg: ImportConfig, threads: int, n_todo: int) -> tuple[int, dict]:
    """(workers, Ray task options)."""
    if cfg.device is not None and str(cfg.device).startswith("cuda"):
        opts, fit = {"num_gpus": 1}, int(ray.cluster_resources().get("GPU", 0))
        if fit < 1:
            raise RuntimeError(
                f"--device {cfg.device}: the Ray cluster has no GPU; drop --device or add GPU nodes"
            )
    else:
        per_node = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]), default=1)
        cpus = max(1, min(threads, int(per_node)))
        opts, fit = {"num_cpus": cpus}, max(1, int(ray.cluster_resources().get("CPU", 1)) // cpus)
    return min(cfg.workers or fit, n_todo), opts | {"max_retries": cfg.max_retries}


def import_with_ray(ref: ModelRef, plan: Plan, out: Path, cfg: ImportConfig) -> ImportResult:
    """Import `plan` into `out` with Ray tasks (module docstring); the driver shows progress and merges."""
    ray = _ray()
    import torch
    from tqdm.auto import tqdm

    existing, sequence = _stored(out)
    result = ImportResult(out)
    try:
        probe = import_probe(cfg.probe, existing)
        if existing is not None:
            check_resumable(existing, ref, cfg)
    finally:
        if existing is not None:
            existing.close()
    last = sequence[-1][0] if sequence else -1
    done_steps = {s for s, _ in sequence}
    result.skipped = [s for s, _ in plan if s in done_steps]
    late = [n for s, n in plan if s not in done_steps and s < last]
    if late:
        result.failed = {n: f"below the store's last step {last}" for n in late}
        warnings.warn(
            f"{len(late)} revision(s) ({', '.join(late[:5])}) lie below the last step {last} of {out}, "
            "where nothing can be inserted; import them into another store and merge",
            stacklevel=3,
        )
    todo = [(s, n) for s, n in plan if s > last]
    if not todo:
        return result
    if not ray.is_initialized():
        ray.init(address=cfg.ray_address, log_to_driver=True, include_dashboard=False)
    threads = torch.get_num_threads()
    workers, task_opts = _resources(ray, cfg, threads, len(todo))
    folder = out.with_name(out.name + ".shards")
    parts = _split(folder, ref, todo, workers)
    n_pre = max(cfg.window, 1)
    full = sequence + todo
    starts = [full.index(part[0]) for part in parts]
    preloads = [full[max(0, k - n_pre) : k] for k in starts]  # the revisions just before each shard
    task_cfg = cfg.replace(probe=probe, progress=False, executor="local", workers=None)
    remote = ray.remote(_shard_task).options(**task_opts)
    refs = {}
    for i, part in enumerate(parts):
        if not (folder / f"{i}.done.json").is_file():
            refs[i] = remote.remote(
                ref,
                part,
                preloads[i],
                folder,
                i,
                task_cfg.replace(shard=(i, len(parts))),
                threads,
                os.environ.get("TRAJLAB_RAY_HOLD"),
            )
    bar = tqdm(
        total=len(todo),
        desc=f"import {ref.run_name} ({len(parts)} Ray tasks)",
        unit="rev",
        disable=not cfg.progress,
    )
    pending = list(refs.values())
    try:
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
            bar.update(_count_stored(folder, parts) - bar.n)
        for i, r in refs.items():
            ray.get(r)  # raises the task's own error, or Ray's after max_retries
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        raise (
            cause if isinstance(cause, (ValueError, OSError, RuntimeError)) else RuntimeError(str(e))
        ) from None
    except ray.exceptions.RayError as e:  # a worker that kept dying, a lost node, ...
        raise RuntimeError(
            f"a Ray shard failed after {cfg.max_retries} retries ({type(e).__name__}); "
            f"rerun the same command to resume from {folder}"
        ) from None
    finally:
        bar.close()
    # failures from the done files; what landed from the merged store (a retried task skips its own)
    for i in range(len(parts)):
        result.failed |= json.loads((folder / f"{i}.done.json").read_text())["failed"]
    _merge_into(
        out,
        [folder / str(i) for i in range(len(parts)) if is_store(folder / str(i))],
        existing is not None,
    )
    new = {s for s, _ in todo}
    if is_store(out):
        with TrajectoryStore.open(out) as merged:
            result.imported = [int(s) for s in merged.steps if int(s) in new]
            result.duplicates = {
                n["payload"]["step"]: n["payload"]["duplicate_of"]
                for n in merged.notes("duplicate")
                if n["payload"]["step"] in new
            }
    shutil.rmtree(folder)
    return result


def _count_stored(folder: Path, parts: list[Plan]) -> int:
    """Revisions of their own part the shard stores hold now (for the driver's progress bar)."""
    n = 0
    for i, part in enumerate(parts):
        try:
            with TrajectoryStore.open(folder / str(i)) as s:
                n += len({int(x) for x in s.steps} & {step for step, _ in part})
        except (FileNotFoundError, ValueError, OSError):
            pass
    return n


def _merge_into(out: Path, shards: list[Path], out_exists: bool) -> None:
    """Merge the shard stores (after STORE, if it exists) into STORE, replacing it only once complete."""
    if not shards:
        return
    if not out_exists:
        merge_stores(shards, out)
        return
    new, old = out.with_name(f".{out.name}.ray-new"), out.with_name(f".{out.name}.ray-old")
    shutil.rmtree(new, ignore_errors=True)
    merge_stores([out, *shards], new)
    os.replace(out, old)
    os.replace(new, out)
    shutil.rmtree(old)
