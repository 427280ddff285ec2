"""Intervals and tests for KL estimates and orderings, with the unit each resamples said out loud.

- bootstrap_kl: one KL with a text-bootstrap interval (BCa by default).
- For claims about settings (seeds, sizes) use trajlab.analysis.order (order_test, paired_order_test,
  order_family, holm): runs or pairs of runs as the unit.
- bootstrap_order: the paired text bootstrap of an ordering: texts only, runs fixed. It answers "would other
  probe texts order these runs the same way", not "would other runs".
- Exponents: trajlab.analysis.exponent_order (blocks of start points, or runs, as the unit).

Every p-value is (1 + #{resamples or splits at least as extreme}) / (1 + n), or an exact enumeration; each
result carries min_p, the smallest p its design can reach.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trajlab.analysis.kl import as_ll, kl_paired, kl_unit_factor
from trajlab.analysis.resample import (
    bca_bounds,
    central_moments,
    check_boot,
    half_var_se,
    jackknife_half_var,
    resampled_half_var,
    resampled_moments,
    studentized_bounds,
)

KL_METHODS = ("bca", "percentile", "studentized")


def kl_intervals(
    d: np.ndarray, factor: float, n_boot: int, rng: np.random.Generator, level: float, method: str = "bca"
) -> np.ndarray:
    """Returns (P, 3) rows (estimate, lo, hi): Var/2 * factor of each row of d (P, N) and its interval.

    All rows share the text resamples. Methods:
    - "bca": bias-corrected and accelerated percentile interval; z0 from the share of resamples below the
      estimate, the acceleration from the leave-one-text-out jackknife (closed form, O(N) per row).
    - "percentile": the plain percentile interval (under-covers with heavy-tailed per-text differences).
    - "studentized": bootstrap-t on log(Var/2) with the delta-method standard error of the sample variance
      (from the 4th central moment) in every resample; the log keeps the bounds positive.
    """
    if method not in KL_METHODS:
        raise ValueError(f"method must be one of {', '.join(KL_METHODS)}, got {method!r}")
    d = np.asarray(d, dtype=np.float64)
    n = d.shape[1]
    estimate = d.var(axis=1) / 2
    if method == "studentized":
        m2, m4 = central_moments(resampled_moments(d, n_boot, rng, 4))  # (n_boot, P) each
        c = d - d.mean(axis=1, keepdims=True)
        se = half_var_se((c**2).mean(axis=1), (c**4).mean(axis=1), n)
        boot = m2 / 2
        with np.errstate(divide="ignore", invalid="ignore"):  # zero variances: se 0, bounds = estimate
            log_se = np.where(estimate > 0, se / estimate, 0.0)
            boot_log_se = np.where(boot > 0, half_var_se(m2, m4, n) / boot, 0.0)
            bounds = np.exp(
                studentized_bounds(
                    np.log(np.maximum(boot, 1e-300)),
                    boot_log_se,
                    np.log(np.maximum(estimate, 1e-300)),
                    log_se,
                    level,
                )
            )
        bounds = np.where(estimate > 0, bounds, 0.0)
    else:
        boot = resampled_half_var(d, n_boot, rng)  # (n_boot, P)
        if method == "bca":
            bounds = bca_bounds(boot, estimate, jackknife_half_var(d), level)
        else:
            bounds = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return np.column_stack([estimate, bounds[0], bounds[1]]) * factor


def bootstrap_kl(
    l_a: np.ndarray,
    l_b: np.ndarray,
    n_bytes: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    method: str = "bca",
) -> tuple[float, float, float]:
    """Returns (estimate, lo, hi): KL(a, b) = Var[l_a - l_b]/2 and its text-bootstrap interval.

    Texts only, runs fixed: the interval is the sampling error of the probe texts for these two models.
    Coverage measured at N = 256 (tests/analysis/test_bootstrap_calibration.py): see kl_intervals' methods.

    Args:
        l_a, l_b: (N,) LL vectors of two models over the same texts (nats).
        n_bytes: optional (N,) byte counts; bits per byte with B the mean over all N texts (not per resample).
        n_boot: resamples; seed: their seed; level: interval level.
        method: "bca" (default), "percentile" or "studentized" (kl_intervals).
    """
    check_boot(n_boot, level)
    if method not in KL_METHODS:
        raise ValueError(f"method must be one of {', '.join(KL_METHODS)}, got {method!r}")
    a = as_ll(np.atleast_2d(l_a), "l_a")
    b = as_ll(np.atleast_2d(l_b), "l_b")
    if a.shape != b.shape or a.shape[0] != 1:
        raise ValueError(f"l_a and l_b must be two (N,) vectors of equal length, got {a.shape} and {b.shape}")
    factor = kl_unit_factor(n_bytes, a.shape[1])
    estimate = float(kl_paired(a, b, n_bytes)[0])  # the one KL estimate; resamples below
    _, lo, hi = kl_intervals(a - b, factor, n_boot, np.random.default_rng(seed), level, method)[0]
    return estimate, float(lo), float(hi)


def _pairs(pairs: Sequence, k: int, name: str) -> np.ndarray:
    p = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if len(p) == 0 or (p < 0).any() or (p >= k).any():
        raise ValueError(f"{name} must be a non-empty list of (i, j) row indices in [0, {k}), got {pairs!r}")
    return p


def bootstrap_order(
    ll: np.ndarray,
    smaller: Sequence[tuple[int, int]],
    larger: Sequence[tuple[int, int]],
    n_bytes: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Returns how surely mean KL over the `smaller` pairs is below mean KL over the `larger` pairs: texts
    only, runs fixed.

    Paired text bootstrap: every resample uses the same resampled texts for all rows of ll. The trained runs
    are held fixed, so this is not a test of an ordering of settings (other seeds): use order_test for that.
    On designs whose pair KLs come from one distribution it declares orderings far more often than 5%.

    Args:
        ll: (K, N) LL vectors.
        smaller, larger: lists of (i, j) row-index pairs.
        n_bytes: optional (N,) byte counts (bits per byte, factor from the full probe).
        n_boot, seed, level: resamples, their seed, interval level.

    Returns:
        dict(diff = mean KL(larger) - mean KL(smaller) (> 0 when the ordering holds), lo, hi (percentile
        interval of diff), p_value = (1 + #{resamples with diff <= 0}) / (1 + n_boot),
        min_p = 1 / (1 + n_boot),
        smaller, larger (the two means), n_boot, unit = "texts (runs fixed)").
    """
    check_boot(n_boot, level)
    a = as_ll(ll)
    s, g = _pairs(smaller, len(a), "smaller"), _pairs(larger, len(a), "larger")
    both = np.vstack([s, g])
    d = a[both[:, 0]] - a[both[:, 1]]  # (P, N)
    factor = kl_unit_factor(n_bytes, a.shape[1])
    full = kl_paired(a[both[:, 0]], a[both[:, 1]], n_bytes)  # (P,) the one KL estimate
    boot = resampled_half_var(d, n_boot, np.random.default_rng(seed)) * factor  # (n_boot, P)
    diff_boot = boot[:, len(s) :].mean(axis=1) - boot[:, : len(s)].mean(axis=1)
    lo, hi = np.quantile(diff_boot, [(1 - level) / 2, (1 + level) / 2])
    return {
        "diff": float(full[len(s) :].mean() - full[: len(s)].mean()),
        "lo": float(lo),
        "hi": float(hi),
        "p_value": float((1 + np.sum(diff_boot <= 0)) / (1 + n_boot)),
        "min_p": 1.0 / (1 + n_boot),
        "smaller": float(full[: len(s)].mean()),
        "larger": float(full[len(s) :].mean()),
        "n_boot": int(n_boot),
        "unit": "texts (runs fixed)",
    }
