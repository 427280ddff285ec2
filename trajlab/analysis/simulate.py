"""Seeded simulations with a known truth, for calibrating trajlab's tests (false positives, power, coverage).

Each generator names the case it simulates; tests/analysis/ and scripts/calibrate.py share them. numpy only.
"""

from __future__ import annotations

import numpy as np

from trajlab.analysis.diffusion import diffusion_exponents

TEXT_KINDS = ("normal", "t5", "t3")


def lognormal_kls(rng: np.random.Generator, n: int, mean: float, cv: float) -> np.ndarray:
    """Returns n pair KLs, lognormal with the given mean and coefficient of variation (sd / mean)."""
    s2 = np.log1p(cv * cv)
    return np.exp(rng.normal(np.log(mean) - s2 / 2, np.sqrt(s2), size=n))


def same_distribution_pairs(
    rng: np.random.Generator, n_small: int, n_large: int, cv: float = 0.17, mean: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Case "runs from one distribution" (no ordering): both sides' pair KLs from one lognormal (CV cv)."""
    return lognormal_kls(rng, n_small, mean, cv), lognormal_kls(rng, n_large, mean, cv)


def two_distribution_pairs(
    rng: np.random.Generator,
    n_small: int,
    n_large: int,
    mean_small: float = 1.0,
    mean_large: float = 2.0,
    cv: float = 0.17,
) -> tuple[np.ndarray, np.ndarray]:
    """Case "runs from two distributions" (a true ordering): lognormal pair KLs, mean_small < mean_large."""
    return lognormal_kls(rng, n_small, mean_small, cv), lognormal_kls(rng, n_large, mean_large, cv)


def text_differences(
    rng: np.random.Generator, n: int, kind: str = "normal", rows: int = 1, var: float = 1.0
) -> np.ndarray:
    """Returns (rows, n) per-text LL differences with population variance var: true KL = Var/2 = var / 2.

    Cases: "normal" (light tails), "t5" and "t3" (Student t scaled to variance var: heavy tails, where
    percentile intervals of a variance under-cover).
    """
    if kind == "normal":
        x = rng.normal(size=(rows, n))
    elif kind in ("t5", "t3"):
        nu = int(kind[1:])
        x = rng.standard_t(nu, size=(rows, n)) / np.sqrt(nu / (nu - 2))
    else:
        raise ValueError(f"kind must be one of {', '.join(TEXT_KINDS)}, got {kind!r}")
    return np.sqrt(var) * x


def pair_records(
    rng: np.random.Generator, kls: np.ndarray, n_texts: int, kind: str = "normal", factor: float = 1.0
) -> list[dict]:
    """Returns order_test records {"d", "factor"}, one per pair: per-text differences whose true
    Var/2 * factor is the given KL (each record's sample KL scatters around it by the text sampling error)."""
    return [{"d": text_differences(rng, n_texts, kind, var=2 * k / factor)[0], "factor": factor} for k in kls]


def ll_for_pairs(rng: np.random.Generator, kls: np.ndarray, n_texts: int) -> tuple[np.ndarray, list]:
    """Returns (ll (2P, N), pairs [(0, 1), (2, 3), ...]): LL rows whose pair i has true Var/2 = kls[i].

    Rows share a text difficulty (as real models do); pair i's second row adds normal noise of variance 2 kl.
    """
    base = -300 + 30 * rng.normal(size=n_texts)
    rows = []
    for k in kls:
        rows += [base, base + 1.0 + np.sqrt(2 * k) * rng.normal(size=n_texts)]
    return np.stack(rows), [(2 * i, 2 * i + 1) for i in range(len(kls))]


def fbm_sq_dist(rng: np.random.Generator, n_snapshots: int, dim: int, exponent: float) -> np.ndarray:
    """Returns (K, K) squared distances between snapshots of a fractional Brownian motion in dim coordinates.

    Case "diffusion with a known exponent": E||x_t - x_s||^2 = dim |t - s|^exponent (exponent = 2H in (0, 2);
    1 is a random walk). Neighbouring start points share most of their fit window, as in real trajectories.
    """
    if not 0 < exponent < 2:
        raise ValueError(f"exponent must be in (0, 2) (twice the Hurst index), got {exponent}")
    t = np.arange(1, n_snapshots + 1, dtype=np.float64)
    cov = (t[:, None] ** exponent + t[None] ** exponent - np.abs(t[:, None] - t[None]) ** exponent) / 2
    x = np.linalg.cholesky(cov) @ rng.normal(size=(n_snapshots, dim))  # (K, dim)
    sq = (x * x).sum(axis=1)
    return np.maximum(sq[:, None] + sq[None] - 2 * x @ x.T, 0.0)


def walk_fits(
    rng: np.random.Generator, n_starts: int = 50, window: int = 10, exponent: float = 1.0, dim: int = 64
) -> np.ndarray:
    """Returns diffusion_exponents fits (n_starts full windows) of one fbm_sq_dist walk (one run)."""
    k = n_starts + window
    return diffusion_exponents(
        fbm_sq_dist(rng, k, dim, exponent), np.arange(k) * 1000, window, full_window=True
    )
