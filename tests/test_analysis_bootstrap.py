"""Paired text bootstrap of KLs and orderings, start-point bootstrap of exponents: coverage on known truth."""

from __future__ import annotations

import numpy as np
import pytest

from trajlab import analysis as ta
from trajlab.analysis.diffusion import FIT_DTYPE

N = 400


def gaussian_pair(mu: float, s: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """l_a with text difficulty, l_b = l_a + N(mu, s^2) i.i.d.: Var[l_b - l_a]/2 = s^2/2 in expectation."""
    l_a = -300 + 30 * rng.normal(size=N)
    return l_a, l_a + mu + s * rng.normal(size=N)


def test_bootstrap_kl_estimate_and_units():
    rng = np.random.default_rng(0)
    a, b = gaussian_pair(2.0, 1.5, rng)
    n_bytes = rng.integers(200, 1000, size=N)
    est, lo, hi = ta.bootstrap_kl(a, b, n_boot=500, seed=3)
    assert est == pytest.approx(np.var(a - b) / 2) and lo < est < hi
    bits = ta.bootstrap_kl(
        a, b, n_bytes, n_boot=500, seed=3
    )  # same resamples, one factor from the full probe
    np.testing.assert_allclose(bits, np.array([est, lo, hi]) / (n_bytes.mean() * np.log(2)), rtol=1e-12)
    assert ta.bootstrap_kl(a, b, n_boot=500, seed=3) == (est, lo, hi)


def test_bootstrap_kl_covers_the_true_kl():
    rng = np.random.default_rng(1)
    s = 1.3
    intervals = [ta.bootstrap_kl(*gaussian_pair(0.7, s, rng), n_boot=400, seed=r)[1:] for r in range(300)]
    hits = [lo <= s**2 / 2 <= hi for lo, hi in intervals]
    # nominal 0.95; the percentile interval of a variance runs slightly short at N = 400
    assert 0.90 <= np.mean(hits) <= 0.99


def test_bootstrap_order_covers_the_true_difference():
    rng = np.random.default_rng(2)
    s_small, s_large = 1.0, 1.2
    true_diff = (s_large**2 - s_small**2) / 2
    hits, p = [], []
    for r in range(200):
        base = -300 + 30 * rng.normal(size=N)
        ll = np.stack([base, base + s_small * rng.normal(size=N), base + 5 + s_large * rng.normal(size=N)])
        out = ta.bootstrap_order(ll, [(0, 1)], [(0, 2)], n_boot=400, seed=r)
        assert out["diff"] == pytest.approx(np.var(ll[0] - ll[2]) / 2 - np.var(ll[0] - ll[1]) / 2)
        hits.append(out["lo"] <= true_diff <= out["hi"])
        p.append(out["p_value"])
    assert 0.90 <= np.mean(hits) <= 0.99
    assert np.median(p) < 0.01  # the ordering holds clearly at this N


def test_bootstrap_order_resamples_texts_jointly():
    rng = np.random.default_rng(3)
    ll = -200 + rng.normal(size=(4, N))
    same = ta.bootstrap_order(ll, [(0, 1), (2, 3)], [(2, 3), (0, 1)], n_boot=200)
    assert same["diff"] == same["lo"] == same["hi"] == 0.0  # one resample for all rows: every difference is 0
    assert same["p_value"] == 1.0
    equal = [
        ta.bootstrap_order(-200 + rng.normal(size=(3, N)), [(0, 1)], [(0, 2)], n_boot=200, seed=s)["p_value"]
        for s in range(40)
    ]
    assert 0.3 < np.mean(equal) < 0.7  # no true ordering: p ~ uniform


def test_bootstrap_order_bad_input():
    ll = np.zeros((3, 10))
    with pytest.raises(ValueError, match="smaller"):
        ta.bootstrap_order(ll, [], [(0, 1)])
    with pytest.raises(ValueError, match="larger"):
        ta.bootstrap_order(ll, [(0, 1)], [(0, 3)])
    with pytest.raises(ValueError, match="level"):
        ta.bootstrap_kl(ll[0], ll[1], level=95)


def fits(t0, c) -> np.ndarray:
    return np.array([(t, v, 0.0, 1.0, 10) for t, v in zip(t0, c, strict=True)], dtype=FIT_DTYPE)


def test_bootstrap_exponent_order_paired_and_unpaired():
    rng = np.random.default_rng(4)
    c_ll = 0.4 + 0.1 * rng.normal(size=30)
    t0 = np.arange(30) * 100
    paired = ta.bootstrap_exponent_order(fits(t0, c_ll), fits(t0, c_ll + 1.0), n_boot=300)
    assert paired["paired"] and paired["n_starts"] == 30
    assert paired["diff"] == pytest.approx(1.0) and paired["lo"] == pytest.approx(1.0) == paired["hi"]
    assert paired["p_value"] == 0.0
    c_w = 0.45 + 0.1 * rng.normal(size=20)
    loose = ta.bootstrap_exponent_order(fits(t0, c_ll), fits(t0[:20] + 7, c_w), n_boot=2000, seed=1)
    assert not loose["paired"] and loose["diff"] == pytest.approx(np.median(c_w) - np.median(c_ll))
    assert loose["lo"] < loose["diff"] < loose["hi"] and 0 < loose["p_value"] < 1
    empty = ta.bootstrap_exponent_order(fits([], []), fits(t0, c_ll))
    assert empty["n_starts"] == 0 and np.isnan(empty["diff"])
