"""Nulls of map and layer findings: spiral_test against random walks, thread_test against shuffled layers."""

from __future__ import annotations

from itertools import permutations

import numpy as np
import pytest

from trajlab import analysis as ta
from trajlab.analysis.calibrate import random_walk_points


def spiral_ll(k: int = 60, n: int = 400, turns: float = 3.0, seed: int = 0) -> np.ndarray:
    """An Archimedean spiral of `turns` turns on a random plane of N-dim text space, plus small noise."""
    rng = np.random.default_rng(seed)
    th = np.linspace(0.5, 0.5 + 2 * np.pi * turns, k)
    xy = np.column_stack([th * np.cos(th), th * np.sin(th)])
    plane = np.linalg.qr(rng.normal(size=(n, 2)))[0].T * np.sqrt(n)  # (2, N)
    return -300 + 20 * rng.normal(size=n) + xy @ plane + 0.02 * np.sqrt(n) * rng.normal(size=(k, n))


def walk_ll(k: int = 40, n: int = 200, seed: int = 0) -> np.ndarray:
    """A random walk in text space whose step sizes follow a cosine learning-rate profile."""
    rng = np.random.default_rng(seed)
    lr = 0.1 + 0.45 * (1 + np.cos(np.pi * np.arange(k - 1) / (k - 1)))
    steps = lr[:, None] * rng.normal(size=(k - 1, n))
    return -300 + 20 * rng.normal(size=n) + np.vstack([np.zeros(n), np.cumsum(steps, axis=0)])


def test_three_turn_spiral_beats_random_walks():
    out = ta.spiral_test(spiral_ll(), "pca", n_null=200, seed=0)  # sign-flip null
    assert out["null"] == "signflip" and out["verdict"] == "spiral beyond the null"
    assert out["winding_turns"] == pytest.approx(3.0, abs=0.3)
    # its own steps with random signs: a random walk in the spiral's plane, which winds more than in N dims
    assert out["null_q95"] < 2.0 and out["winding_turns"] > 2.5
    wider = np.count_nonzero(out["null_turns"] >= out["winding_turns"])
    assert out["p_value"] == pytest.approx((1 + wider) / 201) and out["p_value"] < 0.05
    assert out["min_p"] == pytest.approx(1 / 201) and out["n_null"] == 200 and out["method"] == "pca"
    gauss = ta.spiral_test(spiral_ll(), "pca", n_null=200, seed=0, null="gaussian")
    assert gauss["null"] == "gaussian" and gauss["null_q95"] < 1.0
    assert gauss["p_value"] == pytest.approx(1 / 201)
    assert gauss["winding_turns"] == out["winding_turns"]


def test_random_walks_are_rejected_at_the_nominal_rate():
    # the sign-flip null (default)
    p = np.array([ta.spiral_test(walk_ll(seed=s), n_null=100, seed=s)["p_value"] for s in range(40)])
    # Binomial(40, 0.05) exceeds 6 rejections with probability 0.003
    assert np.count_nonzero(p <= 0.05) <= 6
    assert 0.35 < p.mean() < 0.65  # roughly uniform: mean 1/2


def test_spiral_null_is_reproducible_by_seed():
    ll = walk_ll(seed=3)
    a, b, c = (ta.spiral_test(ll, n_null=30, seed=s) for s in (7, 7, 8))
    np.testing.assert_array_equal(a["null_turns"], b["null_turns"])
    assert a["p_value"] == b["p_value"] and not np.array_equal(a["null_turns"], c["null_turns"])
    assert a["winding_turns"] == c["winding_turns"]


def test_random_walk_points_have_gaussian_step_statistics():
    """The Bartlett shortcut (dof >= K - 1) and the direct draw give the moments of N(0, s^2/dof I) steps."""
    sizes = np.array([1.0, 2.0, 0.5, 3.0])
    for dof in (50, 3):  # Bartlett factor, then direct Gaussian steps in 3 dimensions
        rng = np.random.default_rng(0)
        steps = np.stack([np.diff(random_walk_points(sizes, dof, rng), axis=0) for _ in range(20000)])
        sq = (steps**2).sum(axis=2)  # (draws, K-1): squared lengths ~ s^2 chi2(dof) / dof
        np.testing.assert_allclose(sq.mean(axis=0), sizes**2, rtol=0.03)
        np.testing.assert_allclose(sq.var(axis=0), 2 * sizes**4 / dof, rtol=0.08)
        cross = np.einsum(
            "dk,dk->d", steps[:, 0], steps[:, 3]
        )  # independent steps: mean 0, var s0^2 s3^2 / dof
        assert abs(cross.mean()) < 4 * np.sqrt(9 / dof / 20000)
        assert cross.var() == pytest.approx(9 / dof, rel=0.08)


def test_spiral_test_bad_input():
    with pytest.raises(ValueError, match="method"):
        ta.spiral_test(walk_ll(), "mds")
    with pytest.raises(ValueError, match="at least 3 snapshots"):
        ta.spiral_test(walk_ll()[:2])


# --- threads

K, N = 3, 300


def layer_path(n_layers: int, seed: int = 0) -> np.ndarray:
    """(K, n_layers, N): each snapshot's layers along a noisy path (layer l at distance l from layer 0)."""
    rng = np.random.default_rng(seed)
    drift = rng.normal(size=(K, 1, N))
    pos = np.arange(n_layers)[None, :, None]
    return -200 + 10 * rng.normal(size=N) + pos * drift + 0.1 * rng.normal(size=(K, n_layers, N))


def brute_force_p(ll_layers: np.ndarray) -> float:
    observed = ta.layer_threads(ll_layers)["thread_score"]
    scores = [
        ta.layer_threads(ll_layers[:, list(p)])["thread_score"]
        for p in permutations(range(ll_layers.shape[1]))
    ]
    return float(np.mean(np.array(scores) <= observed * (1 + 1e-9)))


def test_thread_test_exact_enumeration_matches_brute_force():
    rng = np.random.default_rng(1)
    for ll in (layer_path(5), rng.normal(size=(K, 5, N)), layer_path(5)[:, [0, 2, 1, 3, 4]]):
        out = ta.thread_test(ll, n_null=500)
        assert out["exact"] and out["n_perms"] == 120
        assert out["p_value"] == pytest.approx(brute_force_p(ll))
        assert out["thread_score"] == pytest.approx(ta.layer_threads(ll)["thread_score"])
    assert ta.thread_test(layer_path(5))["p_value"] == pytest.approx(2 / 120)  # the path and its reversal


def test_thread_test_sampled_permutations():
    out = ta.thread_test(layer_path(8), n_null=500, seed=0)  # 8! > 10^4 orders: at least 2000 drawn
    assert not out["exact"] and out["n_perms"] == 2000
    assert out["p_value"] == pytest.approx(1 / 2001) and out["min_p"] == pytest.approx(1 / 2001)
    assert out["thread_score"] < 0.2 < out["null_mean"] and out["note"] is None
    again = ta.thread_test(layer_path(8), n_null=500, seed=0)
    assert again == out
    # one model's (L+1, N) rows
    one = ta.thread_test(layer_path(7)[0], n_null=100, seed=0)
    assert one["thread_score"] == pytest.approx(ta.layer_threads(layer_path(7)[:1])["thread_score"])


def test_unordered_layers_give_uniform_p_values():
    p = np.array(
        [ta.thread_test(np.random.default_rng(s).normal(size=(K, 5, N)))["p_value"] for s in range(60)]
    )
    assert 0.38 < p.mean() < 0.62
    assert np.count_nonzero(p <= 0.05) <= 8  # smallest reachable p is 2/120; Binomial(60, ~0.05)


def test_few_layers_say_that_threads_cannot_be_shown():
    out = ta.thread_test(layer_path(3))
    assert out["exact"] and out["n_perms"] == 6
    assert out["min_p"] == pytest.approx(1 / 3) and out["p_value"] == pytest.approx(1 / 3)
    assert "smallest reachable p is 0.33" in out["note"]


def test_analysis_config_refuses_bad_options():
    cfg = ta.AnalysisConfig()
    assert cfg.replace(n_boot=50).n_boot == 50 and cfg.n_boot == 1000
    with pytest.raises(ValueError, match="unknown (analysis|AnalysisConfig) option"):
        cfg.replace(n_boots=5)
    with pytest.raises(ValueError, match="n_boot must be an integer >= 1"):
        cfg.replace(n_boot=0)
    with pytest.raises(ValueError, match="level"):
        ta.AnalysisConfig(level=95)
    with pytest.raises(ValueError, match="lag_fraction"):
        ta.AnalysisConfig(target_fractions=(0.5, 7.0))
