"""Every option of `trajlab import` in one dataclass, `ImportConfig`, shared by the Python API and the CLI;
what an import did (`ImportResult`); the checks of options against a probe, a store to resume and a parent.

`import_checkpoints(model, revisions, out, config=None, **overrides)` takes an ImportConfig and/or keyword
overrides (the field names); `trajlab import` builds the same object from its flags or a ``--config`` YAML
file (`import_parser`, `config_from`: jsonargparse over the dataclass). Each default lives here once.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from trajlab._options import replace_options
from trajlab.hub.revisions import PYTHIA_MAIN_STEP
from trajlab.scoring_config import ScoringConfig

if TYPE_CHECKING:
    from trajlab.data.probe import ProbeSet
    from trajlab.hub.checkpoints import ModelRef
    from trajlab.store import TrajectoryStore

PYTHIA_WARMUP_STEPS = 1430  # 1% of 143000 optimizer steps, linear warm-up
Executor = Literal["local", "ray"]
EXECUTORS = get_args(Executor)
# `trajlab import` flags of earlier releases -> their place in the scoring group
SCORING_ALIASES = {f"--{n}": f"--scoring.{n}" for n in ("long_texts", "stride", "lens_dtype", "batch_size")}


@dataclass
class ImportConfig:
    """Options of one import (see `import_checkpoints` for the model, revisions and store)."""

    probe: object = None
    """A ProbeSet, a ProbeSet JSON path, a store whose probe to reuse, "default", or None (the existing
    store's probe, else ProbeSet.default())."""
    layers: Literal["all", "last"] = "all"
    """ "all" (logit lens at every layer) or "last"."""
    shard: str | tuple[int, int] | None = None
    """ "i/n": import only the i-th of n contiguous parts of the step-sorted revisions (a scheduler's job)."""
    window: int = 10
    """Exact squared weight distances to this many previous revisions (window x params x 4 bytes); 0: none."""
    sketch_k: int = 4096
    """WeightSketch size (0: none)."""
    sketch_seed: int = 0
    """Seed of the WeightSketch projection (stores to merge need the same sketch)."""
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    """How the probe is scored (--scoring.long_texts, --scoring.stride, --scoring.lens_dtype,
    --scoring.batch_size, ...; the flags without "scoring." still work)."""
    device: str | None = None
    """Torch device to score on ("cuda", "cpu", ...); None: where transformers loads it (the CPU)."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Model dtype for scoring ("float32" gives reference numbers)."""
    warmup_steps: int | None = None
    """Recorded in meta; None: 1430 for a Pythia model, else unknown."""
    max_steps: int | None = None
    """Recorded in meta; None: 143000 for a Pythia model, else unknown."""
    parent: str | None = None
    """ "STORE[@STEP]": the store (and step, default its last) this model derives from (meta["lineage"])."""
    cache_dir: str | os.PathLike | None = None
    """The HF cache (default $HF_HUB_CACHE). On a cluster: node-local disk, with clean_cache."""
    offline: bool | None = None
    """Read the cache only; None follows HF_HUB_OFFLINE."""
    clean_cache: bool = False
    """Delete each hub revision from the cache once stored (blobs other revisions use stay)."""
    trust_remote_code: bool = False
    """Let transformers run the model repo's own code (only for repos you trust)."""
    allow_pickle: bool = False
    """Load pytorch_model*.bin pickles (with weights_only=True); refused otherwise."""
    gguf_file: str | None = None
    """The .gguf file to read inside a hub repo or folder that holds several."""
    run: str | None = None
    """The store's run name (default the model's name)."""
    progress: bool = True
    """Show a progress bar (--no-progress: none)."""
    executor: Executor = "local"
    """ "local" (this process) or "ray" (contiguous shards as Ray tasks, merged into the store)."""
    workers: int | None = None
    """Ray tasks (contiguous shards) with executor="ray"; None: as many as the cluster runs at once (its CPUs
    / torch threads per task, or its GPUs with a CUDA device), at most one per revision."""
    ray_address: str | None = None
    """A Ray cluster to join ("auto", "ray://HOST:10001"); None: the connected one, else a new local one."""
    max_retries: int = 3
    """Times Ray reruns a shard whose worker died (the rerun resumes from the shard's store)."""

    def __post_init__(self) -> None:
        if isinstance(self.scoring, dict):  # from YAML or a parsed namespace
            self.scoring = ScoringConfig(**self.scoring)
        if self.layers not in ("all", "last"):
            raise ValueError(f"layers must be 'all' or 'last', got {self.layers!r}")
        if self.window < 0 or self.sketch_k < 0:
            raise ValueError(
                f"window and sketch_k must be >= 0 (0: none), got {self.window} and {self.sketch_k}"
            )
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        if (self.workers is not None and self.workers < 1) or self.max_retries < 0:
            raise ValueError(
                f"need workers >= 1 and max_retries >= 0, got {self.workers} and {self.max_retries}"
            )
        if self.executor == "ray" and self.shard is not None:
            raise ValueError("--shard and --executor ray both split the revisions; pass one of them")
        for name in ("warmup_steps", "max_steps"):
            if (v := getattr(self, name)) is not None and v < 0:
                raise ValueError(f"{name} must be >= 0, got {v}")

    def replace(self, **overrides) -> ImportConfig:
        """A copy with some fields changed, scoring fields by their own names too (``long_texts="truncate"``;
        `trajlab._options.replace_options`)."""
        return replace_options(self, **overrides)

    def schedule_for(self, pythia: bool) -> tuple[int | None, int | None]:
        """(warmup_steps, max_steps) to record: the given ones, else Pythia's for a Pythia model, else None"""
        warmup = (
            self.warmup_steps if self.warmup_steps is not None else PYTHIA_WARMUP_STEPS if pythia else None
        )
        total = self.max_steps if self.max_steps is not None else PYTHIA_MAIN_STEP if pythia else None
        return warmup, total


@dataclass
class ImportResult:
    """What an import did.

    Attributes:
        store: the store path.
        imported: steps appended by this run (duplicates included).
        duplicates: {step: the earlier step with identical weight files}.
        skipped: steps that were already in the store.
        failed: {revision: why it was not imported}.
    """

    store: Path
    imported: list[int] = field(default_factory=list)
    duplicates: dict[int, int] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def import_probe(probe: ProbeSet | str | os.PathLike | None, existing: TrajectoryStore | None) -> ProbeSet:
    """The probe to score on: given, a saved ProbeSet JSON, a store's probe, or the default."""
    from trajlab.data.probe import ProbeSet
    from trajlab.store import TrajectoryStore

    if isinstance(probe, ProbeSet):
        chosen = probe
    elif probe is None and existing is not None:
        chosen = existing.probe()
    elif probe is None or str(probe) == "default":
        chosen = ProbeSet.default()
    elif Path(probe).is_dir():
        chosen = TrajectoryStore.open(probe).probe()
    else:
        chosen = ProbeSet.load(probe)
    if existing is not None and chosen.fingerprint != existing.probe_fingerprint:
        raise ValueError(
            f"probe fingerprint {chosen.fingerprint[:12]} differs from the probe of the existing store "
            f"{existing.path} ({existing.probe_fingerprint[:12]}); omit --probe to reuse the store's probe, "
            "or write to a new --out"
        )
    return chosen


def check_resumable(store: TrajectoryStore, ref: ModelRef, cfg: ImportConfig) -> None:
    """Refuse to append to a store written by another model or with other settings (one line)."""
    from trajlab.sketch import WeightSketch

    meta = store.meta
    importer = meta.get("config", {}).get("importer")
    spec, sketch_spec = meta.get("weights", {}).get("sketch"), None
    if cfg.sketch_k:
        sketch_spec = WeightSketch(cfg.sketch_k, cfg.sketch_seed).spec
    long_texts, wanted = (meta.get("scoring") or {}).get("long_texts"), cfg.scoring.long_texts
    problem = (
        "it was not written by trajlab import" if importer is None
        else f"it holds model {meta['model']['name']}, not {ref.name}" if meta["model"]["name"] != ref.name
        else f"it was scored with layers={importer['layers']!r}" if importer["layers"] != cfg.layers
        else f"its weight sketch is {spec}, not {sketch_spec}" if spec != sketch_spec
        else f"it was scored with long_texts={long_texts!r}, not {wanted!r}"
        if long_texts not in (None, wanted)
        else None
    )  # fmt: skip
    if problem:
        raise ValueError(f"cannot resume {store.path}: {problem}; write to a new --out")


def parse_parent(spec: str) -> tuple[Path, int | None]:
    """("STORE", None) or ("STORE", STEP) from "STORE[@STEP]"."""
    m = re.fullmatch(r"(.+?)(?:@(\d+))?", str(spec))
    return Path(m.group(1)), None if m.group(2) is None else int(m.group(2))


def lineage_from_parent(spec: str) -> dict:
    """meta["lineage"] of a store derived from the parent "STORE[@STEP]": the parent's root and snapshot.

    Raises:
        ValueError: the parent is not a store, holds no snapshot, or lacks STEP (one line: what to pass).
    """
    from trajlab.store import TrajectoryStore

    path, step = parse_parent(spec)
    try:
        with TrajectoryStore.open(path) as parent:
            meta, steps = parent.meta, [int(s) for s in parent.steps]
    except (FileNotFoundError, ValueError) as e:
        raise ValueError(f"--parent {spec}: {e}; pass STORE[@STEP] naming an existing store") from None
    if not steps:
        raise ValueError(
            f"--parent {spec}: the store holds no snapshot; name a store with the parent's steps"
        )
    if step is not None and step not in steps:
        near = sorted(steps, key=lambda s: abs(s - step))[:3]
        raise ValueError(f"--parent {spec}: step {step} is not in {path}; nearest stored: {near}")
    parent_id = meta.get("id")
    root = (meta.get("lineage") or {}).get("root") or parent_id
    return {"root": root, "parent": {"id": parent_id, "step": steps[-1] if step is None else step}}


def import_parser():
    """The jsonargparse parser of `trajlab import`: MODEL, --revisions, --out, --dry_run and every
    ImportConfig field as a flag of its own name (the scoring group's as --scoring.NAME; defaults: the
    dataclasses'), with --config FILE and --print_config."""
    from trajlab._args import tool_parser

    p = tool_parser(
        "trajlab import", "Score public checkpoints into a store.",
        "Flags may use dashes or underscores (--batch-size); a bool flag alone means true (--clean-cache), "
        "--no-FLAG false (--no-progress).",
    )
    p.add_argument("model", type=str,
                   help="hub repo id, HF cache folder, save_pretrained folder or .gguf file")
    p.add_argument("--revisions", type=str | None, default=None,
                   help="comma list, 'pythia' (all 154) or a range stepA-stepB (default main)")
    p.add_argument("--out", type=str, required=True, help="store folder (created, or resumed)")
    p.add_argument("--dry_run", type=bool, default=False,
                   help="print revisions, download, disk, memory, wall time per worker count; touch nothing")
    p.add_class_arguments(ImportConfig, nested_key=None, as_group=False)
    return p


def config_from(ns) -> ImportConfig:
    """The ImportConfig of a parsed `import_parser` namespace (its checks raise ValueError in one line)."""
    values = {f.name: ns[f.name] for f in dataclasses.fields(ImportConfig)}
    values["scoring"] = ScoringConfig(**dict(vars(values["scoring"])))
    if values["probe"] is not None:  # a path or "default" (YAML reads a name like 12 as a number)
        values["probe"] = str(values["probe"])
    return ImportConfig(**values)
