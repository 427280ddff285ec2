"""Runs and snapshots left out of an analysis by name (AnalysisConfig.exclude; kishino2025's exclusions)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trajlab.analysis.config import AnalysisConfig


def _matches(name: str, meta: dict, pattern: str) -> bool:
    """True when a store's run name (or its repo id) is `pattern` or ends with '/pattern'."""
    ids = [name, str(meta.get("run") or ""), str((meta.get("source") or {}).get("repo") or "")]
    return any(i == pattern or i.endswith("/" + pattern) for i in ids if i)


class _Excluded:
    """A read view of a store without some snapshots' LL rows (AnalysisConfig.exclude "run@step").

    Weight snapshots (weight_steps, weight distances) are not filtered: an excluded checkpoint's weights still
    enter the weight-space exponents, which the note in summary.json says."""

    def __init__(self, store, steps: set[int]):
        self._s, self._drop = store, steps
        all_steps = np.asarray(store.steps, dtype=np.int64)
        self._keep = ~np.isin(all_steps, sorted(steps))
        self.steps = all_steps[self._keep]

    def __getattr__(self, name):
        return getattr(self._s, name)

    def __len__(self) -> int:
        return len(self.steps)

    def loglik(self, layer: int = -1, steps=None):
        if steps is not None:  # the caller names its steps: excluded ones are theirs to avoid
            return self._s.loglik(layer, steps=steps)
        return np.asarray(self._s.loglik(layer))[self._keep]

    def loglik_all(self, steps=None):
        return self._s.loglik_all(steps=self.steps if steps is None else steps)

    def full_layer_steps(self):
        return [int(x) for x in self._s.full_layer_steps() if int(x) not in self._drop]


def apply_exclusions(stores: list, cfg: AnalysisConfig, notes: list[str]) -> list:
    """Returns the stores without the runs and snapshots cfg.exclude names, each exclusion noted."""
    if not cfg.exclude:
        return stores
    kept = []
    for s in stores:
        name = str(s.meta.get("run") or Path(s.path).stem)
        runs = [e for e in cfg.exclude if "@" not in e and _matches(name, s.meta, e)]
        if runs:
            notes.append(f"excluded run {name} ({runs[0]}; {cfg.preset_name or 'exclude option'})")
            continue
        drop = {
            int(e.split("@")[1]) for e in cfg.exclude if "@" in e and _matches(name, s.meta, e.split("@")[0])
        }
        drop &= {int(x) for x in s.steps}
        if drop:
            notes.append(
                f"excluded snapshot(s) {sorted(drop)} of {name} ({cfg.preset_name or 'exclude option'}; "
                "their LL rows only, not their weights)"
            )
            s = _Excluded(s, drop)
        kept.append(s)
    return kept
