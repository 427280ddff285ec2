"""Diffusion exponents on synthetic motions with known exponents (checkpoints 1000 steps apart, as Pythia)."""

from __future__ import annotations

import numpy as np
import pytest

from trajlab import analysis as ta

STEPS = np.arange(1, 61) * 1000  # 60 checkpoints, 1000 steps apart


def sq_dists(x: np.ndarray) -> np.ndarray:
    return ((x[:, None] - x[None]) ** 2).sum(-1)


def brownian(dim: int = 2000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.normal(size=(len(STEPS), dim)) * np.sqrt(1000), axis=0)  # variance per step: 1


def test_brownian_motion_has_exponent_one():
    fits = ta.diffusion_exponents(sq_dists(brownian()), STEPS, window=10)
    assert len(fits) == len(STEPS) - 3  # the last 3 starts have < 3 lags
    assert fits["t0"][0] == 1000 and (fits["n_lags"][:50] == 10).all()
    s = ta.summarize_exponents(fits)
    assert abs(s["median"] - 1) < 0.15 and s["ci_low"] <= s["median"] <= s["ci_high"] and s["n"] == len(fits)
    assert np.median(fits["r2"]) > 0.9


def test_ballistic_motion_has_exponent_two():
    rng = np.random.default_rng(1)
    x = STEPS[:, None] * rng.normal(size=500) + 0.1 * rng.normal(size=(len(STEPS), 500))
    s = ta.summarize_exponents(ta.diffusion_exponents(sq_dists(x), STEPS))
    assert abs(s["median"] - 2) < 0.15


def test_ornstein_uhlenbeck_past_relaxation_is_subdiffusive():
    rng = np.random.default_rng(2)
    theta, dim = 1 / 2000, 2000  # relaxation time 2000 steps: sampled every 1000, window spans 10000
    a = np.exp(-theta * 1000)
    x = np.zeros((len(STEPS), dim))
    x[0] = rng.normal(size=dim)
    for t in range(1, len(STEPS)):
        x[t] = a * x[t - 1] + np.sqrt(1 - a * a) * rng.normal(size=dim)
    s = ta.summarize_exponents(ta.diffusion_exponents(sq_dists(x), STEPS))
    assert s["median"] < 0.5


def test_brownian_motion_in_ll_space_via_kl_matrix():
    # LL vectors that random-walk over 3000 texts: KL is proportional to squared displacement
    ll = -300 + 20 * np.random.default_rng(3).normal(size=3000) + brownian(3000, seed=3) / 30
    s = ta.summarize_exponents(ta.diffusion_exponents(ta.kl_matrix(ll), STEPS))
    assert abs(s["median"] - 1) < 0.15


def test_single_fit_matches_numpy_polyfit_and_skips_unusable_lags():
    rng = np.random.default_rng(4)
    k = 8
    steps = np.array([0, 1, 2, 4, 8, 16, 32, 64]) * 1000
    sq = rng.uniform(1, 5, size=(k, k))
    sq = np.triu(sq, 1) + np.triu(sq, 1).T
    sq[0, 3] = np.nan  # unknown ...
    sq[3, 0] = np.nan
    sq[0, 5] = sq[5, 0] = 0.0  # ... and identical snapshots: both left out
    fits = ta.diffusion_exponents(sq, steps, window=7)
    f = fits[fits["t0"] == 0][0]
    j = np.array([1, 2, 4, 6, 7])
    c, b = np.polyfit(np.log(steps[j]), np.log(sq[0, j]), 1)
    assert f["n_lags"] == 5 and f["c"] == pytest.approx(c) and f["b"] == pytest.approx(b)
    pred = c * np.log(steps[j]) + b
    y = np.log(sq[0, j])
    assert f["r2"] == pytest.approx(1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())
    # a lower-triangle-only matrix gives the same fits
    lower = np.tril(sq) + np.triu(np.full((k, k), np.nan), 1)
    np.testing.assert_array_equal(ta.diffusion_exponents(lower, steps, window=7), fits)


def test_summarize_bootstrap_matches_direct_resampling():
    fits = np.zeros(7, dtype=ta.diffusion.FIT_DTYPE)
    fits["c"] = [0.2, 0.5, 0.3, np.nan, 0.9, 0.4, 0.1]
    s = ta.summarize_exponents(fits, n_boot=500, seed=3)
    c = np.array([0.2, 0.5, 0.3, 0.9, 0.4, 0.1])
    boot = np.median(c[np.random.default_rng(3).integers(0, 6, size=(500, 6))], axis=1)
    assert s == {
        "median": 0.35,
        "ci_low": np.quantile(boot, 0.025),
        "ci_high": np.quantile(boot, 0.975),
        "n": 6,
    }
    empty = ta.summarize_exponents(fits[:0])
    assert empty["n"] == 0 and np.isnan(empty["median"])


def test_pairwise_sq_dist_is_exact_far_from_origin():
    x = 1e6 + np.random.default_rng(5).normal(size=(4, 50)) * 1e-4
    np.testing.assert_allclose(ta.pairwise_sq_dist(x), sq_dists(x - 1e6), rtol=1e-6)


@pytest.mark.parametrize(
    "args, match",
    [
        ((np.zeros((3, 4)), np.arange(3)), "square"),
        ((np.zeros((3, 3)), np.arange(4)), "one entry per snapshot"),
        ((np.zeros((3, 3)), np.array([0, 2, 1])), "strictly increasing"),
        ((np.zeros((3, 3)), np.arange(3), 2), "window must be >= 3"),
    ],
)
def test_diffusion_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        ta.diffusion_exponents(*args)


def test_fits_after_warmup_with_full_windows_only():
    steps = np.arange(0, 200, 10)  # 20 snapshots
    sq = (steps[:, None] - steps[None, :]).astype(float) ** 2
    all_fits = ta.diffusion_exponents(sq, steps, 5)
    assert all_fits["t0"].tolist() == list(range(0, 170, 10))  # the last starts keep 3 or 4 lags
    fits = ta.diffusion_exponents(sq, steps, 5, min_t0=35, full_window=True)
    assert fits["t0"].tolist() == list(range(40, 150, 10)) and (fits["n_lags"] == 5).all()
    np.testing.assert_allclose(fits["c"], 2.0)
