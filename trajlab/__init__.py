"""trajlab: a testbed for language-model trajectories in log-likelihood space.

The pipeline, one folder per stage (a module imports only from stages above it; ``analysis`` is a torch-free
leaf that ``record`` and ``report`` both use)::

    _io, _args, _options, scoring_config
                        atomic writes, CLI parser pieces, option replace(), ScoringConfig (standard library)
    analysis/           KL, maps, spirals, threads, diffusion, nulls and intervals (numpy/scipy/sklearn)
    data/               corpora, tokenizer, ProbeSet
    train/              model presets, LightningModule + DataModule
    lens.py, sketch.py  the two measurement kernels: logit-lens scoring, weight sketches
    store/              the on-disk trajectory format
    record/             the Lightning callback that writes stores during training
    hub/                public checkpoints into stores (serial, sharded, Ray)
    report/             the page, the analyze/report commands, the demo
    cli.py              the ``trajlab`` command

The names below are imported lazily, so ``import trajlab.analysis`` does not import torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "ProbeSet": "trajlab.data.probe",
    "Unembed": "trajlab.lens",
    "LensAdapter": "trajlab.lens",
    "ScoreInfo": "trajlab.lens",
    "score_model": "trajlab.lens",
    "ScoringConfig": "trajlab.scoring_config",
    "WeightSketch": "trajlab.sketch",
    "TrajectoryStore": "trajlab.store",
    "open_stores": "trajlab.store",
    "merge_stores": "trajlab.store",
    "TrajectoryCallback": "trajlab.record.callback",
    "RecordConfig": "trajlab.record.settings",
    "import_checkpoints": "trajlab.hub.importer",
    "ImportConfig": "trajlab.hub.config",
    "ImportResult": "trajlab.hub.config",
    "quantize_model": "trajlab.hub.quantize",
    "QuantizeConfig": "trajlab.hub.quantize",
    "exact_sequence_kl": "trajlab.hub.quantize",
    "build_model": "trajlab.train.models",
    "PRESETS": "trajlab.train.models",
    "LitLM": "trajlab.train.lit",
    "LMDataModule": "trajlab.train.lit",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trajlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
