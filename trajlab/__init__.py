"""trajlab: a testbed for language-model trajectories in log-likelihood space.

The pipeline, one folder per stage (a module imports only from stages above it; ``analysis`` is a torch-free
leaf that ``record`` and ``report`` both use)::

    _io                 atomic writes, CSV logs (standard library)
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
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

_LAZY = {
    "ProbeSet": "trajlab.data.probe",
    "Unembed": "trajlab.lens",
    "LensAdapter": "trajlab.lens",
    "ScoreInfo": "trajlab.lens",
    "score_model": "trajlab.lens",
    "WeightSketch": "trajlab.sketch",
    "TrajectoryStore": "trajlab.store",
    "open_stores": "trajlab.store",
    "merge_stores": "trajlab.store",
    "TrajectoryCallback": "trajlab.record.callback",
    "import_checkpoints": "trajlab.hub.importer",
    "ImportConfig": "trajlab.hub.config",
    "ImportResult": "trajlab.hub.config",
    "build_model": "trajlab.train.models",
    "PRESETS": "trajlab.train.models",
    "LitLM": "trajlab.train.lit",
    "LMDataModule": "trajlab.train.lit",
}

__all__ = ["__version__", *_LAZY]

# Module paths before the stage folders (0.1); kept for one release so old imports and YAML class paths work.
MOVED = {
    "trajlab.corpus": "trajlab.data.corpus",
    "trajlab.tokenizer": "trajlab.data.tokenizer",
    "trajlab.probe": "trajlab.data.probe",
    "trajlab.models": "trajlab.train.models",
    "trajlab.lit": "trajlab.train.lit",
    "trajlab.store_files": "trajlab.store.files",
    "trajlab.store_meta": "trajlab.store.meta",
    "trajlab.merge": "trajlab.store.merge",
    "trajlab.callback": "trajlab.record.callback",
    "trajlab.schedule": "trajlab.record.schedule",
    "trajlab.revisions": "trajlab.hub.revisions",
    "trajlab.checkpoints": "trajlab.hub.checkpoints",
    "trajlab.importers": "trajlab.hub.importer",
    "trajlab.demo": "trajlab.report.demo",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old module path (MOVED) to the module at its new path: the same module object."""

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec):
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module) -> None:
        pass


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.append(_MovedModules())


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trajlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
