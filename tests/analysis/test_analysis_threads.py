"""Layer threads: adjacent-layer KL table, thread score and the joint layer map."""

from __future__ import annotations

import numpy as np
import pytest

from trajlab import analysis as ta

K, LAYERS, N = 4, 7, 400  # 4 snapshots, layers 0..6


@pytest.fixture(scope="module")
def layer_ll():
    rng = np.random.default_rng(0)
    difficulty = -300 + 20 * rng.normal(size=N)
    drift = rng.normal(size=(K, N))  # each snapshot's layers move along their own direction ...
    speed = np.array([0.5, 0.5, 1.0, 1.5, 1.5, 1.0])  # ... at a per-transition speed
    pos = np.concatenate([[0], np.cumsum(speed)])  # (L+1,)
    return difficulty + pos[None, :, None] * drift[:, None, :] + 0.05 * rng.normal(size=(K, LAYERS, N))


def test_adjacent_kl_table_matches_direct_variances(layer_ll):
    n_bytes = np.full(N, 800)
    out = ta.layer_threads(layer_ll, n_bytes)
    to_bits = 1 / (800 * np.log(2))
    direct = np.array(
        [
            [np.var(layer_ll[s, la] - layer_ll[s, la + 1]) / 2 * to_bits for la in range(LAYERS - 1)]
            for s in range(K)
        ]
    )
    np.testing.assert_allclose(out["adjacent_kl"], direct, rtol=1e-9)
    np.testing.assert_allclose(out["per_layer"], direct.mean(axis=0), rtol=1e-9)
    per_layer = direct.mean(axis=0)
    assert out["thirds"] == pytest.approx(
        {"early": per_layer[:2].mean(), "middle": per_layer[2:4].mean(), "last": per_layer[4:].mean()}
    )
    nonadj = np.mean(
        [
            np.var(layer_ll[s, la] - layer_ll[s, m]) / 2 * to_bits
            for s in range(K)
            for la in range(LAYERS)
            for m in range(la + 2, LAYERS)
        ]
    )
    assert out["nonadjacent_kl"] == pytest.approx(nonadj)
    assert out["thread_score"] == pytest.approx(direct.mean() / nonadj)


def test_thread_score_separates_paths_from_unordered_layers(layer_ll):
    assert ta.layer_threads(layer_ll)["thread_score"] < 0.2  # layers on a path: adjacent ones are close
    shuffled = np.random.default_rng(1).normal(size=(K, LAYERS, N))  # independent layers
    assert ta.layer_threads(shuffled)["thread_score"] == pytest.approx(1.0, abs=0.1)


def test_list_input_equals_array_input(layer_ll):
    a = ta.layer_threads(layer_ll)
    b = ta.layer_threads(list(layer_ll))
    np.testing.assert_array_equal(a["adjacent_kl"], b["adjacent_kl"])


def test_layer_map_is_one_joint_pca(layer_ll):
    coords = ta.layer_map(layer_ll, 2)
    assert coords.shape == (K, LAYERS, 2)
    x = layer_ll.reshape(K * LAYERS, N)
    x = x - x.mean(axis=0) - x.mean(axis=1, keepdims=True) + x.mean()
    u, s, _ = np.linalg.svd(x / np.sqrt(2 * N), full_matrices=False)
    ref = (u[:, :2] * s[:2]).reshape(K, LAYERS, 2)
    signs = np.sign((coords * ref).sum(axis=(0, 1)))
    np.testing.assert_allclose(coords, ref * signs, rtol=1e-6, atol=1e-6 * np.abs(ref).max())


def test_layer_threads_bad_input():
    with pytest.raises(ValueError, match="K snapshots, L\\+1 layers"):
        ta.layer_threads(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="at least 3 layers"):
        ta.layer_threads(np.zeros((2, 2, 5)))
    with pytest.raises(ValueError, match="NaN"):
        ta.layer_threads(np.full((2, 3, 5), np.nan))
