"""How much a 2-D map path spirals: winding about a centre, turning of the heading, curvature, radius trend.

The papers call checkpoint trajectories on t-SNE maps "spirals" by eye; these numbers make that testable.
- winding: signed angle swept about a centre, in turns. A spiral of n turns about its centre gives n; a
  straight line sweeps at most 1/2 turn about any point (exactly 1/2 about a point on the line), and ~0
  about a far centre such as the circle fit of a nearly straight path.
- turning: signed sum of heading changes along the path, in turns; centre-free; 0 for a straight line, ~n for
  an n-turn spiral.
A map's axes point either way (PCA signs, t-SNE), so only |winding| means something, and even a random walk
winds about half a turn on a PCA map: findings use spiral_test (calibrate.py), which compares |winding| with
random walks embedded the same way.
"""

from __future__ import annotations

import numpy as np

TWO_PI = 2.0 * np.pi


def _as_path(xy: np.ndarray) -> np.ndarray:
    p = np.asarray(xy, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or p.shape[0] < 2:
        raise ValueError(f"xy must be a 2-D path of shape (K >= 2, 2), got {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError("xy contains NaN or inf")
    return p


def _wrapped(d: np.ndarray) -> np.ndarray:
    """Returns angle increments wrapped to [-pi, pi)."""
    return (d + np.pi) % TWO_PI - np.pi


def fit_center(xy: np.ndarray) -> np.ndarray | None:
    """Returns the least-squares circle centre (Kasa fit) of the points, or None if they are collinear.

    Solves x^2 + y^2 + D x + E y + F = 0 in the least-squares sense; the centre is (-D/2, -E/2).
    """
    p = _as_path(xy)
    a = np.column_stack([p, np.ones(len(p))])  # (K, 3)
    coef, _, rank, sv = np.linalg.lstsq(a, -(p**2).sum(axis=1), rcond=None)
    if rank < 3 or sv[-1] <= 1e-9 * sv[0]:
        return None
    return -coef[:2] / 2


def _center(p: np.ndarray, center: str | np.ndarray) -> np.ndarray | None:
    if isinstance(center, str):
        if center == "centroid":
            return p.mean(axis=0)
        if center == "fit":
            return fit_center(p)
        raise ValueError(f"center must be 'centroid', 'fit' or an (x, y) point, got {center!r}")
    c = np.asarray(center, dtype=np.float64)
    if c.shape != (2,) or not np.isfinite(c).all():
        raise ValueError(f"center must be a finite (x, y) point, got {center!r}")
    return c


def winding(xy: np.ndarray, center: str | np.ndarray = "centroid") -> float:
    """Returns the cumulative signed angle the path sweeps about a centre, in turns (counter-clockwise > 0).

    The sum of wrapped angle increments / 2 pi. Points exactly at the centre have no angle and are skipped.

    Args:
        xy: (K, 2) path, in order.
        center: "centroid" (mean point), "fit" (least-squares circle centre; collinear points have their
            centre at infinity and sweep 0 turns) or an explicit (x, y).
    """
    p = _as_path(xy)
    c = _center(p, center)
    if c is None:
        return 0.0
    rel = p - c
    rel = rel[np.hypot(rel[:, 0], rel[:, 1]) > 0]
    theta = np.arctan2(rel[:, 1], rel[:, 0])
    return float(_wrapped(np.diff(theta)).sum() / TWO_PI)


def spiral_stats(xy: np.ndarray, center: str | np.ndarray = "centroid") -> dict[str, float]:
    """Returns numbers that describe how a 2-D path spirals.

    Keys:
        winding_turns: see winding().
        turning_turns: sum of signed heading changes between consecutive segments / 2 pi (zero-length segments
            skipped).
        mean_abs_curvature: mean |heading change| / mean length of the two segments at each vertex, in
            1 / map units (map units of a KL map: sqrt(KL)).
        radius_trend: OLS slope of log(distance to the centre) against point index; > 0 spirals outward.
        path_length: total length of the path.
        straightness: |end - start| / path_length (1 for a straight path).
    """
    p = _as_path(xy)
    seg = np.diff(p, axis=0)  # (K-1, 2)
    seg_len = np.hypot(seg[:, 0], seg[:, 1])
    path_length = float(seg_len.sum())
    moving = seg_len > 0
    heading = np.arctan2(seg[moving, 1], seg[moving, 0])
    turn = _wrapped(np.diff(heading))  # (M-1,)
    mid_len = (seg_len[moving][1:] + seg_len[moving][:-1]) / 2
    c = _center(p, center)
    if c is None:
        radius_trend = float("nan")
    else:
        r = np.hypot(*(p - c).T)
        idx = np.flatnonzero(r > 0)
        radius_trend = float(np.polyfit(idx, np.log(r[idx]), 1)[0]) if len(idx) >= 2 else float("nan")
    return {
        "winding_turns": winding(p, center),
        "turning_turns": float(turn.sum() / TWO_PI),
        "mean_abs_curvature": float((np.abs(turn) / mid_len).mean()) if len(turn) else float("nan"),
        "radius_trend": radius_trend,
        "path_length": path_length,
        "straightness": float(np.hypot(*(p[-1] - p[0])) / path_length) if path_length > 0 else float("nan"),
    }
