"""Maps (PCA, classical MDS, t-SNE) and spiral measures."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.manifold import TSNE

from trajlab import analysis as ta


@pytest.fixture(scope="module")
def walk():
    rng = np.random.default_rng(0)
    # 40 snapshots x 500 texts: shared text difficulty + a random walk (trajectory-like decaying spectrum)
    return -200 + 30 * rng.normal(size=500) + np.cumsum(rng.normal(size=(40, 500)), axis=0)


def exact_pca(ll: np.ndarray, dim: int, n_bytes=None) -> np.ndarray:
    n = ll.shape[1]
    unit = 1.0 if n_bytes is None else 1.0 / (np.mean(n_bytes) * np.log(2))
    x = ll - ll.mean(axis=0) - ll.mean(axis=1, keepdims=True) + ll.mean()
    u, s, _ = np.linalg.svd(x * np.sqrt(unit / (2 * n)), full_matrices=False)
    return u[:, :dim] * s[:dim]


def same_up_to_sign(a: np.ndarray, b: np.ndarray, rtol: float) -> None:
    signs = np.sign((a * b).sum(axis=0))
    np.testing.assert_allclose(a, b * signs, rtol=rtol, atol=rtol * np.abs(b).max())


def test_pca_matches_exact_svd(walk):
    n_bytes = np.full(walk.shape[1], 900)
    xy = ta.embed(walk, "pca", 3, n_bytes)
    same_up_to_sign(xy, exact_pca(walk, 3, n_bytes), rtol=1e-6)
    assert (xy[-1] >= xy[0]).all()  # orientation convention


def test_pca_with_more_models_than_texts(walk):
    wide = walk[:, :25]  # K=40 > N=25: eigenpairs of Q^T Q instead of Q Q^T
    same_up_to_sign(ta.embed(wide, "pca", 2), exact_pca(wide, 2), rtol=1e-6)


def test_identical_models_map_to_one_point(walk):
    xy = ta.embed(np.repeat(walk[:1], 4, axis=0), "pca", 2)
    assert xy.shape == (4, 2) and (xy == 0).all()


def test_mds_of_kl_equals_pca(walk):
    same_up_to_sign(ta.embed(walk, "mds", 2), ta.embed(walk, "pca", 2), rtol=1e-6)


def test_pca_distances_are_kl_for_planar_trajectory():
    rng = np.random.default_rng(1)
    basis = rng.normal(size=(2, 800))
    path = np.column_stack([np.linspace(0, 3, 15), np.sin(np.linspace(0, 3, 15))])  # (15, 2)
    ll = path @ basis + 5 * rng.normal(size=800)  # rank 2 around a shared difficulty
    xy = ta.embed(ll, "pca", 2)
    d2 = ((xy[:, None] - xy[None]) ** 2).sum(-1)
    np.testing.assert_allclose(d2, ta.kl_matrix(ll), rtol=1e-8, atol=1e-10)


def test_classical_mds_recovers_points():
    pts = np.random.default_rng(2).normal(size=(10, 2))
    d2 = ((pts[:, None] - pts[None]) ** 2).sum(-1)
    xy = ta.classical_mds(d2, 2)
    np.testing.assert_allclose(((xy[:, None] - xy[None]) ** 2).sum(-1), d2, atol=1e-10)


def test_tsne_runs_sklearn_on_kl_scaled_coordinates(walk):
    n_bytes = np.full(walk.shape[1], 1000)
    sub = walk[:8]  # default perplexity min(30, (K - 1) / 3) = 7/3
    x = sub - sub.mean(axis=0) - sub.mean(axis=1, keepdims=True) + sub.mean()
    x = x / np.sqrt(2 * x.shape[1] * 1000 * np.log(2))
    ref = TSNE(
        2, perplexity=7 / 3, init="pca", learning_rate="auto", random_state=42, max_iter=250
    ).fit_transform(x)
    same_up_to_sign(ta.embed(sub, "tsne", 2, n_bytes, max_iter=250), ref, rtol=1e-9)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "umap"}, "unknown method"),
        ({"dim": 5}, "more than 5 models"),
        ({"method": "tsne", "dim": 4}, "dim 2 or 3"),
        ({"method": "tsne", "perplexity": 9}, "perplexity"),
    ],
)
def test_embed_rejects_bad_arguments(walk, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ta.embed(walk[:5], **kwargs)


# --- spirals


def spiral(kind: str, turns: float = 3.0, k: int = 300) -> np.ndarray:
    th = np.linspace(0.5, 0.5 + 2 * np.pi * turns, k)
    r = th if kind == "archimedean" else np.exp(0.15 * th)
    return np.column_stack([r * np.cos(th), r * np.sin(th)])


@pytest.mark.parametrize("kind", ["archimedean", "log"])
def test_spiral_of_three_turns(kind):
    xy = spiral(kind) + [5.0, -2.0]
    assert ta.winding(xy, center=np.array([5.0, -2.0])) == pytest.approx(3.0, abs=1e-9)
    assert ta.winding(xy) == pytest.approx(3.0, abs=0.25)  # the centroid is off the spiral's centre
    assert ta.winding(xy[::-1]) == pytest.approx(-ta.winding(xy))  # clockwise is negative
    stats = ta.spiral_stats(xy)
    assert stats["turning_turns"] == pytest.approx(3.0, abs=0.2)


def test_log_spiral_radius_trend_and_curvature():
    xy = spiral("log")
    stats = ta.spiral_stats(xy, center=np.zeros(2))
    dtheta = 2 * np.pi * 3 / 299
    assert stats["radius_trend"] == pytest.approx(0.15 * dtheta, rel=1e-9)
    # curvature of r = e^{b theta} is 1 / (r sqrt(1 + b^2)); the discrete mean is close to the continuous one
    th = np.linspace(0.5, 0.5 + 6 * np.pi, 300)[1:-1]
    assert stats["mean_abs_curvature"] == pytest.approx(
        np.mean(1 / (np.exp(0.15 * th) * np.sqrt(1 + 0.15**2))), rel=0.05
    )


def test_straight_line():
    xy = np.column_stack([np.linspace(-1, 1, 21), np.ones(21)])
    assert ta.winding(xy, center=np.zeros(2)) == pytest.approx(-0.25)  # from 135 to 45 degrees
    assert ta.winding(xy, center="fit") == 0.0  # collinear: centre at infinity
    stats = ta.spiral_stats(xy)
    assert stats["turning_turns"] == 0.0 and stats["mean_abs_curvature"] == 0.0
    assert stats["straightness"] == pytest.approx(1.0) and stats["path_length"] == pytest.approx(2.0)


def test_random_walks_wind_much_less_than_spirals():
    turns = [
        abs(ta.winding(np.cumsum(np.random.default_rng(s).normal(size=(300, 2)), axis=0))) for s in range(50)
    ]
    assert np.mean(turns) < 1.0 < 2.7 < ta.winding(spiral("archimedean"))


def test_fit_center_of_a_circle_arc():
    th = np.linspace(0, 4, 30)
    xy = np.column_stack([2 + 3 * np.cos(th), -1 + 3 * np.sin(th)])
    np.testing.assert_allclose(ta.fit_center(xy), [2, -1], atol=1e-9)


def test_spiral_bad_input():
    with pytest.raises(ValueError, match="shape"):
        ta.winding(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="center"):
        ta.winding(spiral("log"), center="middle")


def test_joint_maps_split_one_embedding_per_run(walk):
    out = ta.joint_maps([walk[:15], walk[15:]], ["a", "b"], tsne=True)
    pca = ta.embed(walk, "pca", 2)
    np.testing.assert_allclose(np.vstack([out["pca"]["a"], out["pca"]["b"]]), pca)
    assert out["tsne"]["b"].shape == (25, 2) and out["tsne_perplexity"] == pytest.approx(13.0)
    assert ta.joint_maps([walk], ["a"]) is None
