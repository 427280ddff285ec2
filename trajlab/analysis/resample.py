"""Resampling kernels shared by the bootstrap tests: text resamples, BCa and bootstrap-t intervals, blocks.

Everything here works on many rows at once: a (P, N) matrix of per-text LL differences d gives P KL estimates
Var[d]/2, all resampled with the same text resamples (one (n_boot, N) x (N, P) product per moment).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy.special import ndtr, ndtri

_CHUNK_ELEMENTS = 1 << 22  # resampled texts per block (32 MiB of int64 indices)


def _resample_counts(n: int, n_boot: int, rng: np.random.Generator) -> Iterator[tuple[int, np.ndarray]]:
    """Yields (first resample, counts (b, n) float64): how often each text is drawn, in blocks."""
    block = max(1, _CHUNK_ELEMENTS // n)
    for lo in range(0, n_boot, block):
        b = min(block, n_boot - lo)
        idx = rng.integers(0, n, size=(b, n))
        counts = np.bincount((idx + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n)
        yield lo, counts.astype(np.float64)


def resampled_moments(d: np.ndarray, n_boot: int, rng: np.random.Generator, order: int) -> np.ndarray:
    """Returns (n_boot, P, order) raw moments mean(d^k), k = 1..order, of the row-centred d, text resampled.

    Rows are centred on their full-sample mean first so differences of moments do not cancel; the resamples
    (shared by all rows) are those of resampled_half_var for the same rng state.
    """
    d = d - d.mean(axis=1, keepdims=True)
    p, n = d.shape
    powers = np.stack([d**k for k in range(1, order + 1)], axis=-1)  # (P, N, order)
    flat = powers.transpose(1, 0, 2).reshape(n, p * order)
    out = np.empty((n_boot, p, order))
    for lo, counts in _resample_counts(n, n_boot, rng):
        out[lo : lo + len(counts)] = (counts @ flat / n).reshape(len(counts), p, order)
    return out


def resampled_half_var(d: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Returns (n_boot, P) Var/2 of each row of d (P, N) over n_boot text resamples shared by all rows.

    Each resample draws N text indices with replacement; its counts c (N,) give Var = c.d^2/N - (c.d/N)^2.
    """
    m = resampled_moments(d, n_boot, rng, 2)
    return np.maximum(m[..., 1] - m[..., 0] ** 2, 0.0) / 2


def central_moments(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns (m2, m4), central moments from raw moments r1..r4 on the last axis."""
    r1, r2, r3, r4 = (raw[..., k] for k in range(4))
    m2 = r2 - r1 * r1
    m4 = r4 - 4 * r1 * r3 + 6 * r1 * r1 * r2 - 3 * r1**4
    return m2, m4


def half_var_se(m2: np.ndarray, m4: np.ndarray, n: int) -> np.ndarray:
    """Returns the delta-method standard error of Var/2 (ddof 0): sqrt((m4 - m2^2) / n) / 2."""
    return np.sqrt(np.maximum(m4 - m2 * m2, 0.0) / n) / 2


def jackknife_half_var(d: np.ndarray) -> np.ndarray:
    """Returns (P, N) leave-one-text-out Var/2 (ddof 0) of each row of d (P, N), O(N) from sums of d, d^2."""
    d = d - d.mean(axis=1, keepdims=True)
    n = d.shape[1]
    s1, s2 = d.sum(axis=1, keepdims=True), (d * d).sum(axis=1, keepdims=True)
    mean = (s1 - d) / (n - 1)
    return np.maximum((s2 - d * d) / (n - 1) - mean * mean, 0.0) / 2


def column_quantiles(boot: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Returns boot's quantile q[j] of column j, for boot (n_boot, P), q (P,); np.quantile's linear rule."""
    s = np.sort(boot, axis=0)
    pos = np.clip(q, 0.0, 1.0) * (len(s) - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, len(s) - 1)
    cols = np.arange(s.shape[1])
    return s[lo, cols] + (pos - lo) * (s[hi, cols] - s[lo, cols])


def bca_bounds(boot: np.ndarray, estimate: np.ndarray, jack: np.ndarray, level: float) -> np.ndarray:
    """Returns (2, P) BCa interval bounds per column of boot (n_boot, P).

    Bias correction z0 = Phi^-1(share of resamples below the estimate, ties counted half), acceleration
    a = sum u^3 / (6 (sum u^2)^1.5) with u the jackknife deviations (mean - leave-one-out) of jack (P, N).
    A column without spread (all resamples equal) gets that value as both bounds.
    """
    b = len(boot)
    share = ((boot < estimate).sum(axis=0) + 0.5 * (boot == estimate).sum(axis=0)) / b
    z0 = ndtri(np.clip(share, 0.5 / b, 1 - 0.5 / b))
    u = jack.mean(axis=1, keepdims=True) - jack
    den = 6 * (u * u).sum(axis=1) ** 1.5
    a = np.divide((u**3).sum(axis=1), den, out=np.zeros(len(u)), where=den > 0)
    out = np.empty((2, boot.shape[1]))
    for k, z in enumerate(ndtri([(1 - level) / 2, (1 + level) / 2])):
        out[k] = column_quantiles(boot, ndtr(z0 + (z0 + z) / (1 - a * (z0 + z))))
    return out


def studentized_bounds(
    boot: np.ndarray, boot_se: np.ndarray, estimate: np.ndarray, se: np.ndarray, level: float
) -> np.ndarray:
    """Returns (2, P) bootstrap-t bounds: estimate - t*_{1-alpha/2} se, estimate - t*_{alpha/2} se.

    t* = (boot - estimate) / boot_se per resample (boot, boot_se: (n_boot, P); estimate, se: (P,)). A
    resample with zero standard error counts as t* = 0; a column with se = 0 gets the estimate as both bounds.
    """
    ok = boot_se > 0
    t = np.where(ok, (boot - estimate) / np.where(ok, boot_se, 1.0), 0.0)
    tq = np.quantile(t, [(1 + level) / 2, (1 - level) / 2], axis=0)  # (2, P)
    return estimate - tq * se


def moving_block_indices(n: int, block: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Returns (n_boot, n) indices of moving-block resamples of a series of length n.

    Blocks of `block` consecutive positions start anywhere in [0, n - block]; ceil(n / block) of them are
    drawn with replacement, concatenated and cut to n. block = 1 is the i.i.d. bootstrap.
    """
    block = int(min(max(block, 1), n))
    n_blocks = -(-n // block)
    starts = rng.integers(0, n - block + 1, size=(n_boot, n_blocks))
    return (starts[:, :, None] + np.arange(block)).reshape(n_boot, -1)[:, :n]


def check_boot(n_boot: int, level: float) -> None:
    """Raises a ValueError unless n_boot >= 1 and 0 < level < 1."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
