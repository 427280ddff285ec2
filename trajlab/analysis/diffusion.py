"""Local diffusion exponents of a trajectory: how squared displacement grows with the step lag.

As in Kishino et al.: for each start snapshot t0 and the next `window` snapshots, y(dt) = squared displacement
between t0 and t0 + dt (the KL estimate in LL space, or ||theta_{t0+dt} - theta_{t0}||^2 in weight space), and
the local exponent c(t0) is the OLS slope of ln y on ln dt. c = 1: normal diffusion (random walk); c = 2:
ballistic (straight drift); c < 1: subdiffusive (confined or slowing).
"""

from __future__ import annotations

import numpy as np

FIT_DTYPE = np.dtype(
    [("t0", np.int64), ("c", np.float64), ("b", np.float64), ("r2", np.float64), ("n_lags", np.int64)]
)
MIN_LAGS = 3


def diffusion_exponents(
    sq_dist: np.ndarray,
    steps: np.ndarray,
    window: int = 10,
    *,
    min_t0: int | None = None,
    full_window: bool = False,
) -> np.ndarray:
    """Returns one local fit ln y = c ln dt + b per start snapshot, as a structured array.

    For start index i and k = 1..window: dt = steps[i+k] - steps[i], y = sq_dist[i, i+k] (or sq_dist[i+k, i]
    where the upper entry is NaN, so the matrix may be filled on one side only). Lags with y not finite or
    not > 0 (unknown, or identical snapshots) are left out; starts with fewer than 3 usable lags are skipped.

    Args:
        sq_dist: (K, K) squared displacements between snapshots; NaN where unknown. Any positive scale
            (nats, bits per byte, squared weight norm): c does not depend on it.
        steps: (K,) strictly increasing training steps of the snapshots.
        window: number of following snapshots per fit, >= 3.
        min_t0: start only at steps >= min_t0 (the paper: after warm-up); None: every start.
        full_window: keep only starts whose window holds `window` usable lags (no truncated fits at the end).

    Returns:
        Structured array with fields t0 (start step), c (slope), b (intercept), r2 (coefficient of
        determination; NaN if all y are equal) and n_lags, sorted by t0.
    """
    y_all = np.asarray(sq_dist, dtype=np.float64)
    st = np.asarray(steps)
    if y_all.ndim != 2 or y_all.shape[0] != y_all.shape[1]:
        raise ValueError(f"sq_dist must be a square (K, K) matrix, got shape {y_all.shape}")
    if st.shape != (y_all.shape[0],):
        raise ValueError(f"steps must have one entry per snapshot, shape ({y_all.shape[0]},), got {st.shape}")
    if not np.issubdtype(st.dtype, np.integer) and not np.array_equal(st, np.round(st)):
        raise ValueError("steps must be integer training steps")
    if len(st) > 1 and not (np.diff(st) > 0).all():
        raise ValueError("steps must be strictly increasing; sort the snapshots by step first")
    if window < MIN_LAGS:
        raise ValueError(f"window must be >= {MIN_LAGS} (a fit needs at least {MIN_LAGS} lags), got {window}")
    y_all = np.where(np.isnan(y_all), y_all.T, y_all)
    st = st.astype(np.int64)
    fits = []
    for i in range(len(st)):
        j = np.arange(i + 1, min(i + 1 + window, len(st)))
        y = y_all[i, j]
        ok = np.isfinite(y) & (y > 0)
        if ok.sum() < (window if full_window else MIN_LAGS) or (min_t0 is not None and st[i] < min_t0):
            continue
        x = np.log((st[j] - st[i])[ok].astype(np.float64))
        ly = np.log(y[ok])
        xc, yc = x - x.mean(), ly - ly.mean()
        c = (xc @ yc) / (xc @ xc)
        ss_tot = yc @ yc
        r2 = 1.0 - ((yc - c * xc) @ (yc - c * xc)) / ss_tot if ss_tot > 0 else np.nan
        fits.append((st[i], c, ly.mean() - c * x.mean(), r2, ok.sum()))
    return np.array(fits, dtype=FIT_DTYPE)


def pairwise_sq_dist(x: np.ndarray) -> np.ndarray:
    """Returns the (K, K) squared Euclidean distances between the rows of x (K, D), from row differences.

    Computed directly rather than by the Gram identity: weight vectors (or their sketches) far from the origin
    and close to each other would lose the distance to cancellation. Loops over rows: O(K^2 D) work.
    """
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or not np.isfinite(a).all():
        raise ValueError(f"x must be a finite (K, D) array, got shape {a.shape}")
    out = np.zeros((len(a), len(a)))
    for i in range(len(a) - 1):
        d = a[i + 1 :] - a[i]  # (K-i-1, D)
        out[i, i + 1 :] = out[i + 1 :, i] = np.einsum("ij,ij->i", d, d)
    return out


def summarize_exponents(
    fits: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> dict[str, float | int]:
    """Returns the median exponent c over start points with a percentile-bootstrap confidence interval.

    The windows of neighbouring starts overlap, so the fits are correlated and the interval is optimistic
    (as in the paper); read it as the spread of the median, not a strict coverage guarantee.

    Args:
        fits: output of diffusion_exponents (NaN exponents are ignored).
        n_boot: bootstrap resamples of the starts.
        seed: bootstrap seed.
        level: confidence level of the interval.

    Returns:
        dict(median, ci_low, ci_high, n); all NaN with n = 0 when there are no fits.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    c = np.asarray(fits["c"], dtype=np.float64)
    c = c[np.isfinite(c)]
    if len(c) == 0:
        return {"median": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    rng = np.random.default_rng(seed)
    boot = np.median(c[rng.integers(0, len(c), size=(n_boot, len(c)))], axis=1)  # (n_boot,)
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return {"median": float(np.median(c)), "ci_low": float(lo), "ci_high": float(hi), "n": len(c)}
