"""Numbers the page derives from a summary: KL per token (for the beyond-range flag), losses at a snapshot.

The analysis flags the pairs of its comparison table; the page flags every other KL it prints (KL to the first
snapshot, to the parent, between consecutive snapshots) by the same rule: KL per scored token above the
analysis option ``max_nats_per_token`` (default 1 nat/token) lies beyond the range where Var/2 was checked
against the exact KL.
"""

from __future__ import annotations

import bisect
import math

FLAG_KEYS = ("beyond_checked_range", "flagged")
MIN_TSNE_SNAPSHOTS = 10
"""t-SNE maps and their spiral tests are drawn from this many snapshots on (perplexity must be < K, and on a
handful of points every point is every other's neighbour, so the layout says nothing PCA does not)."""


def max_nats_per_token(summary: dict) -> float:
    return float((summary.get("options") or {}).get("max_nats_per_token") or 1.0)


def tsne_min_snapshots(summary: dict) -> int:
    """The analysis' own minimum when it records one, else MIN_TSNE_SNAPSHOTS."""
    return int((summary.get("options") or {}).get("tsne_min_snapshots") or MIN_TSNE_SNAPSHOTS)


def mean_tokens(rec: dict) -> float | None:
    """Mean scored tokens per text of a run (meta["scoring"]["n_tokens"]), or None when not recorded."""
    n_tokens = ((rec.get("meta") or {}).get("scoring") or {}).get("n_tokens")
    if not n_tokens:
        return None
    return sum(n_tokens) / len(n_tokens)


def nats_per_token(value, summary: dict, rec: dict) -> float | None:
    """A run's KL (in the summary's units) per scored token, or None without recorded token counts."""
    tokens = mean_tokens(rec)
    if value is None or not tokens or not math.isfinite(value):
        return None
    per_text = value * summary["mean_bytes"] * math.log(2) if summary.get("units") == "bits/byte" else value
    return per_text / tokens


def beyond(value, summary: dict, rec: dict) -> bool | None:
    """True when a run's KL lies beyond the checked range, None when that cannot be told."""
    npt = nats_per_token(value, summary, rec)
    return None if npt is None else npt > max_nats_per_token(summary)


def row_flag(row: dict, limit: float = 1.0) -> bool | None:
    """The beyond-range flag of a table row from the analysis: its flag key, or nats per token > limit."""
    for key in FLAG_KEYS:
        if row.get(key) is not None:
            return bool(row[key])
    for key in ("nats_per_token", "kl_nats_per_token"):
        if isinstance(row.get(key), int | float):
            return row[key] > limit
    return None


def loss_at(curve: list, step: int) -> tuple[int, float] | None:
    """The last logged (step, loss) at or before `step` from a sorted [(step, loss), ...] curve, or None."""
    if not curve:
        return None
    steps = [s for s, _ in curve]
    i = bisect.bisect_right(steps, step) - 1
    return None if i < 0 else (int(curve[i][0]), float(curve[i][1]))
