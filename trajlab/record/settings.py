"""What a TrajectoryCallback is set to record (`RecordConfig`, checked before any training), the meta.json of
its store, and whether a resumed run may continue the store it names."""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from trajlab._options import replace_options
from trajlab.data.probe import ProbeSet
from trajlab.data.tokenizer import tokenizer_meta
from trajlab.record.schedule import snapshot_steps
from trajlab.scoring_config import ScoringConfig
from trajlab.store.meta import model_meta

# RecordConfig fields that say how the run is written and shown, not what is recorded: left out of the meta.
_NOT_RECORDED = ("map_every", "run_name", "queue_size")


def _count(name: str, value, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be an int >= {least}, got {value!r}")


@dataclass(frozen=True)
class RecordConfig:
    """What a `TrajectoryCallback` records and when (the scoring itself: `ScoringConfig`)."""

    probe: ProbeSet | str | None = None
    """What to score (`trajlab.record.probes.resolve_probe`): None (the data module's held-out probe texts),
    "default", "parent" (the pretraining store's probe, for fine-tuning), a store folder ("store:PATH" or
    PATH), a ProbeSet file, or a ProbeSet. The probe is saved in the store, so a later run can reuse it."""
    n_texts: int | None = None
    """Score only the first n_texts (>= 2) of the data module's held-out probe (a seeded sample, so its first
    texts are one too); only with that probe, since cutting a shared probe would make runs incomparable."""
    schedule: str | list[int] = "pythia"
    """Snapshot steps: "pythia[:SCALE]", "log[:N]", "every:N" or a list of steps (`trajlab.record.schedule`)."""
    layers: Literal["all", "last"] = "all"
    """ "all" (embedding output, each block, model output, through the logit lens) or "last" (the model's)."""
    layers_every: int = 1
    """With layers="all": every lens layer at every layers_every-th scheduled snapshot and at the run's last
    step, the model's output only at the others."""
    weights: Literal["sketch", "full", "none"] = "sketch"
    """ "sketch" (WeightSketch + exact squared distances to the previous `window` snapshots), "full" (the same,
    plus all parameters as safetensors at every full_every-th scheduled snapshot and at the end), "none"."""
    full_every: int = 4
    """See `weights`."""
    sketch_k: int = 4096
    """Weight sketch dimension."""
    window: int = 10
    """Previous snapshots each one gets an exact weight distance to."""
    final: bool = True
    """Also snapshot the end of training when it is not a scheduled step."""
    parent: str | None = None
    """The store this run continues from, "PATH" (its last snapshot) or "PATH@STEP", for the lineage (default:
    with probe="parent", the store the probe came from)."""
    map_every: int = 10
    """Redraw the PCA map of the trajectory (<store>/trajectory_map.png, and an image for TensorBoard / wandb
    loggers) every this many snapshots and at the end; 0: only at the end."""
    run_name: str | None = None
    """The store's meta["run"]; default the name of trainer.default_root_dir."""
    queue_size: int = 4
    """Snapshots waiting for the writer thread before training waits."""

    def __post_init__(self) -> None:
        if self.layers not in ("all", "last"):
            raise ValueError(f"layers must be 'all' or 'last', got {self.layers!r}")
        _count("layers_every", self.layers_every, 1)
        if self.layers_every > 1 and self.layers == "last":
            raise ValueError(
                f"layers_every={self.layers_every} needs layers='all' (with 'last' no lens layer is scored)"
            )
        if self.weights not in ("sketch", "full", "none"):
            raise ValueError(f"weights must be 'sketch', 'full' or 'none', got {self.weights!r}")
        for name in ("full_every", "sketch_k", "window", "queue_size"):
            _count(name, getattr(self, name), 1)
        _count("map_every", self.map_every, 0)
        if self.n_texts is not None:
            _count("n_texts (KL needs two texts)", self.n_texts, 2)
        snapshot_steps(self.schedule, 1)  # a bad spec fails here, before training

    def replace(self, **options) -> RecordConfig:
        """A copy with some options changed (`trajlab._options.replace_options`)."""
        return replace_options(self, **options)


def callback_settings(record: RecordConfig, scoring: ScoringConfig, world_size: int) -> dict:
    """What the store's meta["config"]["callback"] records: what and how the callback scores, and on how many
    ranks."""
    out = {f.name: getattr(record, f.name) for f in dataclasses.fields(record) if f.name not in _NOT_RECORDED}
    return out | dataclasses.asdict(scoring) | {"world_size": world_size}


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
    meta = {"run": run, "tokenizer": tokenizer_meta(tokenizer)}
    if callable(getattr(pl_module, "run_meta", None)):
        meta |= pl_module.run_meta()
    name = meta.get("preset") or meta.get("init_from") or type(model).__name__
    meta["model"] = model_meta(model, name)
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


def checked_resume(path, restored: dict | None, steps: list[int], order: list[int], start: int) -> dict | None:
    """The checkpoint's callback state when it names this store (else None), checked against the stored steps;
    warns about scheduled steps before the resume step that the store lacks.

    Raises:
        ValueError: the checkpoint names steps the store does not hold (a replaced or damaged store).
    """
    restored = restored if (restored or {}).get("out_dir") == str(Path(path).resolve()) else None
    if restored and (missing := sorted(set(restored["steps"]) - set(steps))):
        raise ValueError(
            f"{path} lacks steps {missing[:5]} that the checkpoint says were recorded: the "
            "store was replaced or damaged; resume into the original store or a new out_dir"
        )
    if gaps := [s for s in order if s < start and s not in steps]:
        warnings.warn(
            f"{path}: scheduled steps {gaps[:5]}{'...' if len(gaps) > 5 else ''} before the "
            f"resume step {start} are not in the store and will stay missing",
            stacklevel=3,
        )
    return restored
