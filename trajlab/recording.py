"""The parts of TrajectoryCallback that need no Lightning: its settings checks, which probe a run scores and which
store it continues (lineage), keeping the training state across a snapshot, running on rank zero and assembling
DDP shares of the scores, the store's meta, the numbers and map logged per snapshot (from trajlab.analysis, the
one KL estimate), and the background thread that writes to the store."""

from __future__ import annotations

import json
import os
import queue
import random
import threading
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trajlab.analysis import embed, kl_paired
from trajlab.analysis.figures import map_figure
from trajlab.probe import ProbeSet
from trajlab.store import TrajectoryStore, check_comparable
from trajlab.store_meta import LONG_TEXTS
from trajlab.tokenizer import tokenizer_meta


def resolve_probe(
    probe: ProbeSet | str | None,
    datamodule: Any = None,
    init_from: str | None = None,
    n_texts: int | None = None,
) -> tuple[ProbeSet, dict | None]:
    """The ProbeSet a `TrajectoryCallback` scores, and the parent run ({"run", "step", "store"}) for "parent".

    Args:
        probe: a ProbeSet; None for the data module's held-out ``probe_texts``; "default" for
            ``ProbeSet.default()``; "parent" for the probe of the store beside the model being fine-tuned
            (``<init_from>/../trajectory``, the layout of a trajlab run folder: ``<run>/hf`` beside
            ``<run>/trajectory``), or, for a run that is no fine-tune (or whose parent has no store: with a
            warning), the data module's held-out probe; a store folder (or "store:PATH") for that store's
            probe; or a file saved with ProbeSet.save.
        datamodule: where probe=None finds ``probe_texts`` (and ``hparams.corpus`` for the name).
        init_from: the folder the fine-tuned model was loaded from, for probe="parent".
        n_texts: keep the first n_texts of the data module's held-out probe (refused with any other probe).
    """
    if n_texts is not None and probe is not None and (probe != "parent" or init_from):
        raise ValueError(
            f"n_texts={n_texts} cuts only the data module's held-out probe, not probe={str(probe)!r}: pass a "
            "probe of the size you want (ProbeSet.subset) and n_texts=None"
        )
    if isinstance(probe, ProbeSet):
        return probe, None
    if probe is None:
        dm = datamodule
        texts = getattr(dm, "probe_texts", None)
        if not texts:
            raise ValueError(
                f"no probe given and {type(dm).__name__} has no held-out probe_texts: pass probe='default', a "
                "ProbeSet, a ProbeSet file or a trajectory store folder"
            )
        corpus = getattr(getattr(dm, "hparams", None), "corpus", None) or type(dm).__name__
        texts = texts[:n_texts] if n_texts else texts
        domains = (getattr(dm, "probe_domains", None) or None) and dm.probe_domains[: len(texts)]
        name = "+".join(map(str, corpus)) if isinstance(corpus, dict) else Path(str(corpus)).name  # a mixture
        return ProbeSet(texts, name=f"{name}-heldout-{len(texts)}", domains=domains), None
    if probe == "default":
        return ProbeSet.default(), None
    if probe == "parent":
        path = Path(init_from or ".").parent / "trajectory"
        if init_from and (path / "meta.json").is_file():
            return _store_probe(path, parent=True)
        if init_from:
            warnings.warn(
                f"probe='parent': no trajectory store beside model.init_from ({path}); scoring the data module's "
                "held-out probe, so this run's KL to its parent cannot be measured",
                stacklevel=2,
            )
        return resolve_probe(None, datamodule, n_texts=n_texts)
    path = Path(str(probe).removeprefix("store:"))
    if path.is_dir():
        return _store_probe(path, parent=False)
    if path.is_file():
        return ProbeSet.load(path), None
    raise FileNotFoundError(
        f"probe {probe!r}: no such store folder or probe file; use None, 'default', 'parent', a ProbeSet, a "
        "trajectory store folder or a file written by ProbeSet.save"
    )


def _store_probe(path: Path, parent: bool) -> tuple[ProbeSet, dict | None]:
    with TrajectoryStore.open(path) as store:
        stored = store.probe()
        steps = store.steps
        info = {
            "run": store.meta.get("run"),
            "step": int(steps[-1]) if len(steps) else None,
            "store": str(path),
        }
    try:
        probe = ProbeSet.from_dict(stored.to_dict())  # keeps the texts' domains where ProbeSet has them
    except ValueError as e:
        raise ValueError(f"{path}/probe.json: {e}; the store is corrupted") from None
    return probe, info if parent else None


def check_settings(
    layers: str,
    weights: str,
    long_texts: str,
    layers_every: int,
    full_every: int,
    window: int,
    batch_size: int,
    queue_size: int,
    n_texts: int | None,
    map_every: int,
) -> None:
    """Refuse, in one line, a TrajectoryCallback setting that cannot work (before any training)."""
    if layers not in ("all", "last"):
        raise ValueError(f"layers must be 'all' or 'last', got {layers!r}")
    if long_texts not in LONG_TEXTS:
        raise ValueError(f"long_texts must be one of {LONG_TEXTS}, got {long_texts!r}")
    if isinstance(layers_every, bool) or not isinstance(layers_every, int) or layers_every < 1:
        raise ValueError(
            f"layers_every must be an int >= 1 (1: every layer at every snapshot), got {layers_every!r}"
        )
    if layers_every > 1 and layers == "last":
        raise ValueError(
            f"layers_every={layers_every} needs layers='all' (with 'last' no lens layer is scored)"
        )
    if weights not in ("sketch", "full", "none"):
        raise ValueError(f"weights must be 'sketch', 'full' or 'none', got {weights!r}")
    if min(full_every, window, batch_size, queue_size, n_texts or 2) < 1 or map_every < 0 or n_texts == 1:
        raise ValueError(
            "full_every, window, batch_size and queue_size must be >= 1, n_texts >= 2 (KL needs "
            "two texts), map_every >= 0"
        )


def on_rank_zero(trainer: Any, what: str, fn: Callable, *args):
    """fn(*args) on rank zero; its error is raised there and, under DDP, on every other rank as well (so
    none waits in a collective for a rank that stopped). Returns fn's result (None elsewhere)."""
    result, error = None, None
    if trainer.is_global_zero:
        try:
            result = fn(*args)
        except Exception as e:  # noqa: BLE001 - re-raised below
            error = e
    if trainer.world_size > 1:
        failed = trainer.strategy.broadcast(None if error is None else f"{type(error).__name__}: {error}")
        if error is None and failed:
            raise RuntimeError(f"TrajectoryCallback stopped: {what} failed on rank 0: {failed}")
    if error is not None:
        raise error
    return result


def parent_lineage(
    spec: str | os.PathLike, probe_fingerprint: str, long_texts: str, label: str
) -> tuple[dict, dict, dict]:
    """Lineage of a run that continues from a parent store's snapshot, checked for comparability.

    Args:
        spec: the parent store folder, "PATH@STEP" for its snapshot at STEP (default: its last snapshot).
        probe_fingerprint, long_texts: what this run scores and how, for `check_comparable`.
        label: names this run in its message.

    Returns:
        (meta["lineage"]: the parent's root and {"id", "step"}, meta["parent"]: {"run", "step", "store"}, the
        parent store's meta).

    Raises:
        ValueError: the parent truncated long texts and this run scores whole texts (or the reverse), or it
            holds no such step.
    """
    path, at, step = str(spec).rpartition("@")
    if not at or not step.isdigit():
        path, step = str(spec), None
    with TrajectoryStore.open(path) as store:
        meta = store.meta
        this = {"probe_fingerprint": probe_fingerprint, "scoring": {"long_texts": long_texts}}
        check_comparable([store, (label, this)])
        lineage = store.lineage_of_child(None if step is None else int(step))
    parent = {"run": meta.get("run"), "step": lineage["parent"]["step"], "store": str(path)}
    return lineage, parent, meta


@contextmanager
def training_state_preserved(module: torch.nn.Module | None):
    """Restore every submodule's train flag and the torch (CPU, CUDA), numpy and Python RNG states on exit."""
    modes = [(m, m.training) for m in module.modules()] if isinstance(module, torch.nn.Module) else []
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    states = (
        random.getstate(),
        np.random.get_state(),
        torch.get_rng_state(),
        torch.cuda.get_rng_state_all() if cuda else None,
    )
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda:
            torch.cuda.set_rng_state_all(states[3])
        for m, training in modes:
            m.training = training


def assembled_shards(indices: np.ndarray, values: np.ndarray, n_texts: int) -> np.ndarray:
    """(R, N) scores from all-gathered shards: indices (W, M) text index per slot (-1: padding), values (W, R, M).

    Raises:
        RuntimeError: a text index that occurs twice, or a text no rank scored.
    """
    idx = indices.reshape(-1)
    vals = np.moveaxis(values, 1, 0).reshape(values.shape[1], -1)  # (R, W*M)
    keep = idx >= 0
    if (idx >= n_texts).any():
        raise RuntimeError(f"a rank scored text {int(idx.max())} of a probe of {n_texts} texts")
    counts = np.bincount(idx[keep], minlength=n_texts)
    if (counts != 1).any():
        bad = int(np.flatnonzero(counts != 1)[0])
        raise RuntimeError(
            f"probe text {bad} was scored {counts[bad]} times across ranks (expected exactly once)"
        )
    out = np.empty((values.shape[1], n_texts))
    out[:, idx[keep]] = vals[:, keep]
    return out


def scores_across_ranks(
    score: Callable[[list[str]], np.ndarray],
    texts: list[str],
    rank: int,
    world: int,
    strategy: Any,
    step: int,
) -> np.ndarray:
    """(R, N) scores of all texts, each scored on one rank: rank r scores texts r, r + world, ...

    Every rank calls this with the same arguments but its rank; the shares are all-gathered with the Lightning
    strategy's ``all_gather`` (on its ``root_device``) and each text index is checked to occur exactly once. A
    failure on any rank raises on every rank, naming the step, so no rank is left waiting in a collective.
    """
    all_gather, device = strategy.all_gather, strategy.root_device
    mine = np.arange(rank, len(texts), world)
    local, error = None, None
    try:
        local = score([texts[i] for i in mine])  # (R, len(mine))
    except Exception as e:  # noqa: BLE001 - re-raised below, after every rank has learnt of it
        error = e
    if world > 1:
        failed = all_gather(torch.tensor([int(error is not None)], device=device)).reshape(-1).cpu()
        if error is None and failed.any():
            ranks = failed.nonzero().reshape(-1).tolist()
            raise RuntimeError(f"trajectory snapshot at step {step}: scoring failed on rank(s) {ranks}")
    if error is not None:
        where = f" (text indices count within rank {rank}'s share {rank}::{world})" if world > 1 else ""
        kind = ValueError if isinstance(error, ValueError) else RuntimeError
        raise kind(f"trajectory snapshot at step {step}: {error}{where}") from error
    if world == 1:
        return local
    m = -(-len(texts) // world)  # the largest share; smaller ones are padded with index -1
    ids = torch.full((m,), -1, dtype=torch.int64)
    ids[: len(mine)] = torch.from_numpy(mine)
    vals = torch.zeros((len(local), m), dtype=torch.float64)
    vals[:, : len(mine)] = torch.from_numpy(local)
    gathered = [all_gather(t.to(device)).cpu().numpy() for t in (ids, vals)]  # (W, M), (W, R, M)
    return assembled_shards(*gathered, len(texts))


def store_meta(
    run: str,
    pl_module: Any,
    model: Any,
    tokenizer: Any,
    settings: dict,
    parent: dict | None,
    *,
    max_steps: int | None = None,
    lineage: dict | None = None,
) -> dict:
    """The meta.json of a callback's store: run, model, tokenizer, settings and hyper-parameters, seed, parent,
    lineage, warmup_steps (the module's hparams["warmup_steps"], when it has one) and max_steps.

    A trajlab LitLM describes its model and tokenizer itself (``run_meta``); any other module gets the model's
    class (and transformers config) and the tokenizer's fingerprint. The scoring block is added by the caller
    once the first snapshot is scored.
    """
    meta = {"run": run}
    if callable(getattr(pl_module, "run_meta", None)):
        meta |= pl_module.run_meta()
    else:
        cfg = getattr(model, "config", None)
        meta["model"] = {"class": type(model).__name__, **(cfg.to_diff_dict() if cfg else {})}
        meta["tokenizer"] = tokenizer_meta(tokenizer)
    meta["config"] = {"callback": settings, "hparams": dict(getattr(pl_module, "hparams", {}))}
    meta["n_params"] = sum(
        p.numel() for p in (model if isinstance(model, torch.nn.Module) else pl_module).parameters()
    )
    if "PL_GLOBAL_SEED" in os.environ:
        meta["seed"] = int(os.environ["PL_GLOBAL_SEED"])
    if parent:
        meta["parent"] = parent
    warmup = dict(getattr(pl_module, "hparams", {})).get("warmup_steps")
    meta["warmup_steps"] = warmup if isinstance(warmup, int) and not isinstance(warmup, bool) else None
    meta["max_steps"] = max_steps
    if lineage:
        meta["lineage"] = lineage
    return json.loads(json.dumps(meta, default=str))  # tuples, dtypes, paths: JSON values


def snapshot_metrics(
    ll: np.ndarray, earlier: list[np.ndarray], n_bytes: np.ndarray, sq_dists: dict[int, float]
) -> dict[str, float]:
    """Logged numbers of one snapshot: KL to the first and previous snapshot (bits/byte and nats), between
    adjacent lens layers (bits/byte) and the weight distance to the previous snapshot.

    Args:
        ll: (R, N) this snapshot's LL rows; the last row is the model's output.
        earlier: [] or [first, previous] (N,) last-layer LL of earlier snapshots.
        n_bytes: (N,) UTF-8 bytes per probe text.
        sq_dists: {earlier step: exact squared weight distance}.
    """
    out = {}
    for name, ref in zip(("first", "prev"), earlier):
        out[f"traj/kl_{name}"] = float(kl_paired(ref, ll[-1], n_bytes)[0])
        out[f"traj/kl_{name}_nats"] = float(kl_paired(ref, ll[-1])[0])
    if len(ll) > 1:
        for layer, kl in enumerate(kl_paired(ll[:-1], ll[1:], n_bytes), start=1):
            out[f"traj/kl_layer_{layer}"] = float(kl)  # KL(layer - 1, layer)
    if sq_dists:
        out["traj/w_dist_prev"] = float(np.sqrt(sq_dists[max(sq_dists)]))
    return out


def trajectory_map(steps: np.ndarray, ll: np.ndarray, n_bytes: np.ndarray, title: str):
    """PCA map (KL units, bits/byte) of the (K, N) last-layer LL rows; line width: consecutive KL. K >= 3."""
    return map_figure(
        {"PCA": embed(ll, "pca", 2, n_bytes)}, steps, kl_paired(ll[:-1], ll[1:], n_bytes), title
    )


class Writer:
    """One daemon thread that runs store writes in submission order; its first error re-raises on the caller.

    After an error, later writes are dropped (never written behind a failed one), so the store keeps a prefix.
    """

    def __init__(self, maxsize: int):
        self._queue: queue.Queue[Callable[[], Any] | None] = queue.Queue(maxsize)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="trajlab-store-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                if self._error is None:
                    job()
            except BaseException as e:  # noqa: BLE001 - handed to the training thread
                self._error = e
            finally:
                self._queue.task_done()

    def check(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, job: Callable[[], Any]) -> None:
        self.check()
        self._queue.put(job)

    def flush(self) -> None:
        self._queue.join()
        self.check()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self.check()
