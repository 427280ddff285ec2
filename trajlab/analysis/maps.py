"""Low-dimensional maps of models from their LL vectors: PCA, classical MDS and t-SNE.

All three work in KL units: the coordinates are scaled so that squared Euclidean distance between two models
in the full space equals the estimated KL (nats per text, or bits per byte with n_bytes). PCA and classical
MDS then give the same map (MDS double-centres -D/2 with D = KL, which is Q Q^T up to that scale).
Orientation: each axis is flipped so that the last row lies at a larger coordinate than the first, which makes
maps of one trajectory comparable across methods and runs.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse.linalg import eigsh
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits

from trajlab.analysis.config import tsne_perplexity
from trajlab.analysis.kl import as_ll, double_center, kl_matrix, kl_unit_factor

METHODS = ("pca", "mds", "tsne")


def _oriented(xy: np.ndarray) -> np.ndarray:
    """Returns xy with each axis flipped so that last row >= first row on it."""
    return xy * np.where(xy[-1] >= xy[0], 1.0, -1.0)


def _top_eigenpairs(gram: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns the top dim eigenvalues (dim,) and eigenvectors (M, dim) of a symmetric PSD (M, M) matrix.

    Lanczos (ARPACK) to machine precision, from a fixed random start: milliseconds for M in the thousands,
    where a dense eigendecomposition costs O(M^3). A zero matrix has zero eigenvalues and arbitrary vectors.
    """
    m = len(gram)
    if not gram.any():
        return np.zeros(dim), np.eye(m)[:, :dim]
    w, v = eigsh(gram, k=dim, which="LA", v0=np.random.default_rng(0).normal(size=m), tol=0)
    order = np.argsort(w)[::-1]
    return np.maximum(w[order], 0.0), v[:, order]


def kl_coordinates(ll: np.ndarray, n_bytes: np.ndarray | None = None) -> np.ndarray:
    """Returns Q * sqrt(unit factor / 2N), (K, N): squared distances between its rows are KL estimates."""
    q = double_center(ll)
    return q * np.sqrt(kl_unit_factor(n_bytes, q.shape[1]) / (2.0 * q.shape[1]))


def classical_mds(sq_dist: np.ndarray, dim: int = 2) -> np.ndarray:
    """Returns (K, dim) classical (Torgerson) MDS coordinates whose squared distances approximate sq_dist.

    B = -J D J / 2 with J the centring matrix; coordinates are the top eigenvectors times sqrt(eigenvalue).
    Negative eigenvalues (a non-Euclidean D) are set to 0.

    Args:
        sq_dist: (K, K) symmetric matrix of squared distances (e.g. a KL matrix), finite.
        dim: output dimension, 1 <= dim < K.
    """
    d = np.asarray(sq_dist, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"sq_dist must be a square (K, K) matrix, got shape {d.shape}")
    if not np.isfinite(d).all():
        raise ValueError("sq_dist must be finite; MDS cannot use NaN (unknown) distances")
    k = d.shape[0]
    if not 1 <= dim < k:
        raise ValueError(f"dim must be in [1, K-1] = [1, {k - 1}] for K={k} points, got {dim}")
    b = -0.5 * (d - d.mean(axis=0) - d.mean(axis=1)[:, None] + d.mean())  # (K, K)
    w, v = _top_eigenpairs((b + b.T) / 2, dim)
    return _oriented(v * np.sqrt(w))


def embed(
    ll: np.ndarray,
    method: str = "pca",
    dim: int = 2,
    n_bytes: np.ndarray | None = None,
    *,
    perplexity: float | None = None,
    random_state: int = 42,
    max_iter: int = 1000,
) -> np.ndarray:
    """Returns (K, dim) map coordinates of the K models (rows of ll).

    Methods:
      - "pca": top principal components of the double-centred Q scaled to KL units: exact top eigenpairs
        (Lanczos) of the (K, K) Gram matrix Q Q^T (or of Q^T Q if K > N). Costs one Q Q^T, like the KL
        matrix; with a KL matrix at hand, classical_mds(kl) gives the same map for the cost of the Lanczos
        step alone (analyze() does that).
      - "mds": classical MDS of the KL matrix; equals "pca" up to rounding.
      - "tsne": scikit-learn t-SNE on Q scaled to KL units (squared Euclidean distance = KL), init="pca",
        learning_rate="auto", random_state=42 as in the papers; perplexity defaults to min(30, (K - 1) / 3)
        (the papers use 30 with K in the hundreds, 20 for fine-tuning sets; sklearn needs perplexity < K, and
        with perplexity near K every point is every other's neighbour). Needs K >= 3, dim 2 or 3.

    Args:
        ll: (K, N) LL vectors.
        method: "pca", "mds" or "tsne".
        dim: map dimension (2 or 3 for plots); needs K > dim.
        n_bytes: optional (N,) byte counts; sets the scale to bits per byte (only the scale changes).
        perplexity: t-SNE perplexity, default min(30, (K - 1) / 3).
        random_state: t-SNE seed.
        max_iter: t-SNE optimisation steps (sklearn's default 1000; at least 250).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    a = as_ll(ll)
    k = a.shape[0]
    if not 1 <= dim < k:
        raise ValueError(f"a {dim}-D map needs more than {dim} models, got K={k}")
    if method == "mds":
        return classical_mds(kl_matrix(a, n_bytes), dim)
    x = kl_coordinates(a, n_bytes)  # (K, N)
    if method == "pca":
        if dim >= x.shape[1]:
            raise ValueError(f"a {dim}-D PCA map needs more than {dim} texts, got N={x.shape[1]}")
        if k <= x.shape[1]:
            w, u = _top_eigenpairs(x @ x.T, dim)  # (K, K) Gram: scores U S = u sqrt(w)
            return _oriented(u * np.sqrt(w))
        _, v = _top_eigenpairs(x.T @ x, dim)  # (N, N) when there are more models than texts
        return _oriented(x @ v)
    if dim not in (2, 3) or k < 3:
        raise ValueError(f"t-SNE needs dim 2 or 3 and at least 3 models, got dim={dim}, K={k}")
    perp = tsne_perplexity(k, perplexity)
    if not 0 < perp < k:
        raise ValueError(f"t-SNE perplexity must be in (0, K={k}), got {perp}")
    tsne = TSNE(
        dim, perplexity=perp, init="pca", learning_rate="auto", random_state=random_state, max_iter=max_iter
    )
    with threadpool_limits(1, user_api="openmp"):  # the same map; ~30x faster on a busy machine
        return _oriented(tsne.fit_transform(x))


def joint_maps(
    lls: list[np.ndarray],
    names: list[str],
    n_bytes: np.ndarray | None = None,
    tsne: bool = True,
    perplexity: float | None = None,
) -> dict | None:
    """Returns the joint PCA and t-SNE maps of several runs over the same texts, split back per run.

    Args:
        lls: (K_i, N) LL of each run.
        names: run names.
        n_bytes: optional (N,) byte counts (bits-per-byte scale).
        tsne: also the joint t-SNE map.
        perplexity: t-SNE perplexity; None: min(30, (K - 1) / 3) for all K = sum K_i snapshots.

    Returns:
        {"pca": {name: (K_i, 2)}, "tsne": {name: (K_i, 2)} or None, "tsne_perplexity", "n_points"}, or None
        for fewer than 2 runs or 3 snapshots.
    """
    k = sum(len(ll) for ll in lls)
    if len(lls) < 2 or k < 3:
        return None
    all_ll = np.concatenate(lls)
    bounds = np.cumsum([0] + [len(ll) for ll in lls])

    def split(xy: np.ndarray) -> dict:
        return {n: xy[a:b] for n, a, b in zip(names, bounds[:-1], bounds[1:], strict=True)}

    perp = tsne_perplexity(k, perplexity)
    return {
        "pca": split(embed(all_ll, "pca", 2, n_bytes)),
        "tsne": split(embed(all_ll, "tsne", 2, n_bytes, perplexity=perp)) if tsne else None,
        "tsne_perplexity": perp if tsne else None,
        "n_points": int(k),
    }
