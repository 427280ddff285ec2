"""Text bootstrap of KLs and orderings, block randomisation of exponents: direct formulas, known truth."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import norm

from trajlab import analysis as ta
from trajlab.analysis.diffusion import FIT_DTYPE
from trajlab.analysis.resample import jackknife_half_var

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
    with pytest.raises(ValueError, match="method must be one of bca, percentile, studentized"):
        ta.bootstrap_kl(ll[0], ll[1], method="basic")


def test_bootstrap_order_p_counts_the_observed_and_labels_its_unit():
    rng = np.random.default_rng(5)
    ll = -200 + rng.normal(size=(3, 50))
    out = ta.bootstrap_order(ll, [(0, 1)], [(0, 2)], n_boot=300, seed=2)
    d = ll[[0, 0]] - ll[[1, 2]]  # (2, N) the two pairs; one text resample for both
    idx = np.random.default_rng(2).integers(0, 50, size=(300, 50))
    boot = np.stack([d[k][idx].var(axis=1) / 2 for k in range(2)], axis=1)  # (n_boot, 2)
    below = np.sum(boot[:, 1] - boot[:, 0] <= 0)
    assert out["p_value"] == pytest.approx((1 + below) / 301) and out["min_p"] == pytest.approx(1 / 301)
    assert out["unit"] == "texts (runs fixed)"


def direct_intervals(d: np.ndarray, n_boot: int, seed: int, level: float = 0.95) -> dict:
    """The three intervals of Var(d)/2 by their textbook formulas, with loops (trajlab's resample draw)."""
    n = len(d)
    x = d[np.random.default_rng(seed).integers(0, n, size=(n_boot, n))]  # (n_boot, N) resampled texts
    est, boot = d.var() / 2, x.var(axis=1) / 2
    q = np.array([(1 - level) / 2, (1 + level) / 2])
    z0 = norm.ppf(np.mean(boot < est) + 0.5 * np.mean(boot == est))
    jack = np.array([np.delete(d, i).var() / 2 for i in range(n)])
    u = jack.mean() - jack
    a = (u**3).sum() / (6 * ((u**2).sum()) ** 1.5)
    z = norm.ppf(q)
    bca = np.quantile(boot, norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z))))

    def se_log(v):  # delta-method SE of log(Var/2): SE of the variance from the 4th central moment
        c = v - v.mean()
        return np.sqrt(((c**4).mean() - (c**2).mean() ** 2) / n) / 2 / (v.var() / 2)

    t = np.array([(np.log(xb.var() / 2) - np.log(est)) / se_log(xb) for xb in x])
    stud = np.exp(np.log(est) - np.quantile(t, q[::-1]) * se_log(d))
    return {"percentile": np.quantile(boot, q), "bca": bca, "studentized": stud, "estimate": est}


@pytest.mark.parametrize("method", ["bca", "percentile", "studentized"])
def test_bootstrap_kl_methods_match_their_formulas(method):
    rng = np.random.default_rng(6)
    l_a = -300 + 30 * rng.normal(size=60)
    l_b = l_a + 0.5 + rng.standard_t(4, size=60)  # skewed variance: BCa's corrections are far from 0
    want = direct_intervals(l_a - l_b, 400, seed=9)
    est, lo, hi = ta.bootstrap_kl(l_a, l_b, n_boot=400, seed=9, method=method)
    assert est == pytest.approx(want["estimate"], rel=1e-9)
    np.testing.assert_allclose([lo, hi], want[method], rtol=1e-9)
    assert method != "bca" or ta.bootstrap_kl(l_a, l_b, n_boot=400, seed=9) == (est, lo, hi)  # the default


def test_jackknife_half_var_is_leave_one_out():
    d = np.random.default_rng(7).normal(size=(3, 25)) + 100  # far from 0: the closed form must not cancel
    want = np.array([[np.delete(row, i).var() / 2 for i in range(25)] for row in d])
    np.testing.assert_allclose(jackknife_half_var(d), want, rtol=1e-10)


def fits(t0, c, n_lags: int = 10) -> np.ndarray:
    return np.array([(t, v, 0.0, 1.0, n_lags) for t, v in zip(t0, c, strict=True)], dtype=FIT_DTYPE)


def brute_signflip_p(a: np.ndarray, b: np.ndarray, block: int) -> float:
    """p over all 2^k swaps of the two sides within whole blocks, enumerated with itertools."""
    k = -(-len(a) // block)
    obs, hits = np.median(b) - np.median(a), 0
    for flips in itertools.product([False, True], repeat=k):
        sw = np.repeat(flips, block)[: len(a)]
        hits += np.median(np.where(sw, a, b)) - np.median(np.where(sw, b, a)) >= obs - 1e-12
    return hits / 2**k


def test_bootstrap_exponent_order_paired_block_signflip():
    rng = np.random.default_rng(4)
    c_ll = 0.4 + 0.1 * rng.normal(size=30)
    t0 = np.arange(30) * 100
    paired = ta.bootstrap_exponent_order(fits(t0, c_ll), fits(t0, c_ll + 1.0), n_boot=300)
    assert paired["paired"] and paired["n_starts"] == 30 and paired["block"] == 10  # block = the window
    assert paired["diff"] == pytest.approx(1.0) and paired["lo"] == pytest.approx(1.0) == paired["hi"]
    # 3 blocks of 10 starts: 2^3 sign patterns, the observed one alone at the top
    assert paired["n_effective"] == 3 and paired["n_units"] == [3, 3]
    assert paired["p_value"] == paired["min_p"] == 1 / 8 and not paired["holds"]
    assert paired["reason"] == "not testable at this design (smallest reachable p 0.125 with 3 vs 3 units)"
    assert paired["test"] == "block sign-flip (exact)" and paired["method"] == "moving blocks"
    fine = ta.bootstrap_exponent_order(fits(t0, c_ll), fits(t0, c_ll + 1.0), n_boot=300, block=3)
    assert fine["p_value"] == 1 / 1024 and fine["holds"] and fine["reason"] is None
    noisy = c_ll + 0.05 + 0.1 * rng.normal(size=30)
    out = ta.bootstrap_exponent_order(fits(t0, c_ll), fits(t0, noisy), block=4)
    assert out["p_value"] == pytest.approx(brute_signflip_p(c_ll, noisy, 4)) and out["min_p"] == 1 / 256


def test_bootstrap_exponent_order_unpaired_permutes_blocks():
    rng = np.random.default_rng(8)
    c_ll, c_w = 0.4 + 0.1 * rng.normal(size=30), 0.45 + 0.1 * rng.normal(size=20)
    t0 = np.arange(30) * 100
    out = ta.bootstrap_exponent_order(fits(t0, c_ll), fits(t0[:20] + 7, c_w), n_boot=500, seed=1, block=5)
    assert not out["paired"] and out["diff"] == pytest.approx(np.median(c_w) - np.median(c_ll))
    blocks = [c_ll[i : i + 5] for i in range(0, 30, 5)] + [c_w[i : i + 5] for i in range(0, 20, 5)]
    stats = []
    for small in itertools.combinations(range(10), 6):
        s = np.concatenate([blocks[i] for i in small])
        g = np.concatenate([blocks[i] for i in range(10) if i not in small])
        stats.append(np.median(g) - np.median(s))
    assert out["p_value"] == pytest.approx(np.mean(np.array(stats) >= out["diff"] - 1e-12))
    assert out["min_p"] == pytest.approx(1 / 210) and out["n_units"] == [6, 4] and out["n_effective"] == 4
    assert out["lo"] < out["diff"] < out["hi"] and out["test"] == "block permutation (exact)"
    empty = ta.bootstrap_exponent_order(fits([], []), fits(t0, c_ll))
    assert empty["n_starts"] == 0 and np.isnan(empty["diff"]) and not empty["holds"]


def test_bootstrap_exponent_order_runs_as_units():
    rng = np.random.default_rng(9)
    t0 = np.arange(20) * 100
    small = [fits(t0, 0.5 + 0.05 * rng.normal(size=20)) for _ in range(4)]
    large = [fits(t0, m + 0.05 * rng.normal(size=20)) for m in (0.45, 0.9, 1.0, 1.1)]
    out = ta.bootstrap_exponent_order(None, None, n_boot=300, runs_small=small, runs_large=large)
    pooled = [np.concatenate([f["c"] for f in side]) for side in (small, large)]
    assert out["diff"] == pytest.approx(np.median(pooled[1]) - np.median(pooled[0]))
    stats = []
    for pick in itertools.combinations(range(8), 4):  # every split of the 8 runs into 4 + 4
        runs = small + large
        s = np.concatenate([runs[i]["c"] for i in pick])
        g = np.concatenate([runs[i]["c"] for i in range(8) if i not in pick])
        stats.append(np.median(g) - np.median(s))
    assert out["p_value"] == pytest.approx(np.mean(np.array(stats) >= out["diff"] - 1e-12))
    assert out["min_p"] == pytest.approx(1 / 70) and out["n_units"] == [4, 4] and out["method"] == "runs"
    assert out["unit"] == "runs" and out["n_effective"] == 8 and out["lo"] < out["diff"] < out["hi"]
    one = ta.bootstrap_exponent_order(small[0], None, runs_large=large[:1])
    assert one["min_p"] == 0.5 and "not testable" in one["reason"]
    with pytest.raises(ValueError, match="runs_small must hold at least one"):
        ta.bootstrap_exponent_order(None, large[0], runs_small=[])
