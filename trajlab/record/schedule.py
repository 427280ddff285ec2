"""Snapshot schedules: at which optimizer steps a trajectory is recorded.

A schedule is a spec resolved against the run length (``max_steps``) into a sorted list of distinct steps in
``[0, max_steps]``:

- ``"pythia"`` / ``"pythia:SCALE"``: Pythia's checkpoint steps 0, 1, 2, 4, ..., 512, then every 1000, each
  multiplied by SCALE (default 1) and rounded half up; duplicates merge. SCALE gives a short run the same shape:
  ``pythia:0.1`` on 600 steps is 0, 1, 2, 3, 6, 13, 26, 51, 100, 200, ..., 600.
- ``"log"`` / ``"log:N"``: step 0 plus N (default 20) log-spaced steps from 1 to max_steps, rounded; on short
  runs several round to the same step, so fewer than N + 1 may remain.
- ``"every:N"``: 0, N, 2N, ... up to max_steps.
- a list of ints: those steps (the ones beyond max_steps are dropped).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PYTHIA_LOG_STEPS = (0, *(2**i for i in range(10)))  # 0, 1, 2, 4, ..., 512
PYTHIA_EVERY = 1000
_HELP = "use 'pythia[:SCALE]', 'log[:N]', 'every:N' or a list of steps"


def _rounded(x: np.ndarray) -> np.ndarray:
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)  # half up, unlike np.round


def _parsed(schedule: str) -> tuple[str, float | None]:
    kind, _, arg = schedule.partition(":")
    if kind not in ("pythia", "log", "every") or (kind == "every" and not arg):
        raise ValueError(f"unknown snapshot schedule {schedule!r}: {_HELP}")
    if not arg:
        return kind, None
    try:
        value = float(arg)
    except ValueError:
        raise ValueError(f"snapshot schedule {schedule!r}: {arg!r} is not a number; {_HELP}") from None
    if not value > 0 or (kind != "pythia" and value != int(value)):
        raise ValueError(
            f"snapshot schedule {schedule!r}: the {'scale' if kind == 'pythia' else 'count'} must be a "
            f"positive {'number' if kind == 'pythia' else 'integer'}"
        )
    return kind, value


def snapshot_steps(schedule: str | Sequence[int], max_steps: int) -> list[int]:
    """Sorted distinct optimizer steps in [0, max_steps] at which to snapshot (see the module docstring).

    Raises:
        ValueError: an unknown spec, a non-positive scale or count, a negative or non-integer listed step.
    """
    if isinstance(max_steps, bool) or not isinstance(max_steps, int | np.integer) or max_steps < 0:
        raise ValueError(f"max_steps must be a non-negative int, got {max_steps!r}")
    if not isinstance(schedule, str):
        steps = list(schedule)
        bad = [s for s in steps if isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 0]
        if bad or not steps:
            raise ValueError(
                f"a listed snapshot schedule needs non-negative int steps, got {bad[:3] or steps}"
            )
        return sorted({int(s) for s in steps if s <= max_steps})
    kind, value = _parsed(schedule)
    if kind == "every":
        return list(range(0, max_steps + 1, int(value)))
    if kind == "log":
        n = int(value or 20)
        spaced = _rounded(np.geomspace(1, max(max_steps, 1), n)) if max_steps >= 1 else []
        return sorted({0, *map(int, spaced)})
    scale = value or 1.0
    every = PYTHIA_EVERY * scale
    base = _rounded(
        np.array([*(s * scale for s in PYTHIA_LOG_STEPS), *np.arange(1, max_steps / every + 1) * every])
    )
    return sorted({int(s) for s in base if s <= max_steps})
