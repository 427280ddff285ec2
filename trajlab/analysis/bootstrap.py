"""Intervals for KL estimates and orderings: the paired text bootstrap; a start-point bootstrap for exponents.

A KL estimate from N texts carries sampling error. Resampling texts with replacement (the same resample for
every model, so pairs stay paired) gives percentile intervals for one KL and for the difference of two mean
KLs. The unit factor 1 / (B ln 2) is fixed from the full probe, so only the variances are resampled.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trajlab.analysis.kl import as_ll, kl_paired, kl_unit_factor

_CHUNK_ELEMENTS = 1 << 22  # resampled texts per block (32 MiB of int64 indices)


def _check(n_boot: int, level: float) -> None:
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")


def resampled_half_var(d: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Returns (n_boot, P) Var/2 of each row of d (P, N) over n_boot text resamples shared by all rows.

    Each resample draws N text indices with replacement; its counts c (N,) give Var = c.d^2/N - (c.d/N)^2, one
    (n_boot, N) x (N, P) product. Rows are centred first so the difference of moments does not cancel.
    """
    d = d - d.mean(axis=1, keepdims=True)
    p, n = d.shape
    out = np.empty((n_boot, p))
    block = max(1, _CHUNK_ELEMENTS // n)
    for lo in range(0, n_boot, block):
        b = min(block, n_boot - lo)
        idx = rng.integers(0, n, size=(b, n))
        counts = np.bincount((idx + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n)
        counts = counts.astype(np.float64)
        m1, m2 = counts @ d.T / n, counts @ (d * d).T / n  # (b, P)
        out[lo : lo + b] = np.maximum(m2 - m1 * m1, 0.0) / 2
    return out


def bootstrap_kl(
    l_a: np.ndarray,
    l_b: np.ndarray,
    n_bytes: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """Returns (estimate, lo, hi): KL(a, b) = Var[l_a - l_b]/2 and its percentile text-bootstrap interval.

    Args:
        l_a, l_b: (N,) LL vectors of two models over the same texts (nats).
        n_bytes: optional (N,) byte counts; bits per byte with B the mean over all N texts (not per resample).
        n_boot: resamples; seed: their seed; level: interval level.
    """
    _check(n_boot, level)
    a = as_ll(np.atleast_2d(l_a), "l_a")
    b = as_ll(np.atleast_2d(l_b), "l_b")
    if a.shape != b.shape or a.shape[0] != 1:
        raise ValueError(f"l_a and l_b must be two (N,) vectors of equal length, got {a.shape} and {b.shape}")
    factor = kl_unit_factor(n_bytes, a.shape[1])
    d = a - b
    estimate = float(kl_paired(a, b, n_bytes)[0])  # the one KL estimate; resamples below
    boot = resampled_half_var(d, n_boot, np.random.default_rng(seed))[:, 0] * factor
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
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
    """Returns how surely mean KL over the `smaller` pairs is below mean KL over the `larger` pairs.

    Paired text bootstrap: every resample uses the same resampled texts for all rows of ll.

    Args:
        ll: (K, N) LL vectors.
        smaller, larger: lists of (i, j) row-index pairs.
        n_bytes: optional (N,) byte counts (bits per byte, factor from the full probe).
        n_boot, seed, level: resamples, their seed, interval level.

    Returns:
        dict(diff = mean KL(larger) - mean KL(smaller) (> 0 when the ordering holds), lo, hi (percentile
        interval of diff), p_value = share of resamples with diff <= 0 (the ordering fails), smaller, larger
        (the two means), n_boot).
    """
    _check(n_boot, level)
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
        "p_value": float(np.mean(diff_boot <= 0)),
        "smaller": float(full[: len(s)].mean()),
        "larger": float(full[len(s) :].mean()),
        "n_boot": int(n_boot),
    }


def bootstrap_exponent_order(
    fits_small: np.ndarray,
    fits_large: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Returns how surely the median exponent of fits_small is below that of fits_large (e.g. c_LL < c_W).

    Bootstrap over the fits' start points: when the two sets share start steps t0, only the shared starts are
    used and resampled jointly (paired); otherwise each set is resampled on its own. Neighbouring windows
    overlap, so the fits are correlated and the interval is optimistic.

    Args:
        fits_small, fits_large: diffusion_exponents outputs (fields t0 and c).
        n_boot, seed, level: resamples, their seed, interval level.

    Returns:
        dict(diff = median c(large) - median c(small), lo, hi, p_value = share of resamples with diff <= 0,
        small, large (medians), n_starts, paired, n_boot); all NaN with n_starts 0 when a set has no fits.
    """
    _check(n_boot, level)
    a = {int(t): c for t, c in zip(fits_small["t0"], fits_small["c"], strict=True) if np.isfinite(c)}
    b = {int(t): c for t, c in zip(fits_large["t0"], fits_large["c"], strict=True) if np.isfinite(c)}
    common = sorted(set(a) & set(b))
    paired = len(common) >= 3
    if paired:
        ca, cb = np.array([a[t] for t in common]), np.array([b[t] for t in common])
    else:
        ca, cb = np.array(list(a.values())), np.array(list(b.values()))
    nan = float("nan")
    if len(ca) == 0 or len(cb) == 0:
        return {
            "diff": nan,
            "lo": nan,
            "hi": nan,
            "p_value": nan,
            "small": nan,
            "large": nan,
            "n_starts": 0,
            "paired": False,
            "n_boot": int(n_boot),
        }
    rng = np.random.default_rng(seed)
    ia = rng.integers(0, len(ca), size=(n_boot, len(ca)))
    ib = ia if paired else rng.integers(0, len(cb), size=(n_boot, len(cb)))
    diff_boot = np.median(cb[ib], axis=1) - np.median(ca[ia], axis=1)
    lo, hi = np.quantile(diff_boot, [(1 - level) / 2, (1 + level) / 2])
    return {
        "diff": float(np.median(cb) - np.median(ca)),
        "lo": float(lo),
        "hi": float(hi),
        "p_value": float(np.mean(diff_boot <= 0)),
        "small": float(np.median(ca)),
        "large": float(np.median(cb)),
        "n_starts": int(len(common) if paired else min(len(ca), len(cb))),
        "paired": bool(paired),
        "n_boot": int(n_boot),
    }
