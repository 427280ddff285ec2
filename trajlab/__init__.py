"""trajlab: a testbed for language-model trajectories in log-likelihood space.

Pipeline (imports flow this way only):
    corpus -> tokenizer -> models -> probe -> lens (scoring) -> store -> callback / importers
    -> analysis (numpy only) -> report

The torch-heavy names are imported lazily, so ``from trajlab import analysis`` does not import torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "ProbeSet": "trajlab.probe",
    "Unembed": "trajlab.lens",
    "score_model": "trajlab.lens",
    "TrajectoryStore": "trajlab.store",
    "open_stores": "trajlab.store",
    "TrajectoryCallback": "trajlab.callback",
    "import_checkpoints": "trajlab.importers",
    "merge_stores": "trajlab.importers",
    "ImportConfig": "trajlab.import_config",
    "build_model": "trajlab.models",
    "PRESETS": "trajlab.models",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trajlab' has no attribute {name!r}")
