"""Nulls for the map and layer findings: does a trajectory spiral more than a random walk, do layers thread?

- spiral_test: PCA (or t-SNE) of a high-dimensional random walk already draws Lissajous arcs that wind about
  half a turn (Antognini & Sohl-Dickstein 2018), so a map's winding is compared with random walks in text
  space whose steps have the observed sizes, embedded the same way.
- thread_test: adjacent layers are closer than non-adjacent ones for any path that moves steadily, so the
  thread score is compared with the same layer rows in shuffled order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import permutations

import numpy as np
from sklearn.manifold import TSNE

from trajlab.analysis.config import tsne_perplexity
from trajlab.analysis.kl import as_ll, kl_matrix
from trajlab.analysis.maps import _top_eigenpairs, embed, kl_coordinates
from trajlab.analysis.spiral import winding
from trajlab.analysis.threads import as_layer_ll

SPIRAL_METHODS = ("pca", "tsne")
_DENSE_EIGH_MAX = 200  # up to this many points a dense eigh beats Lanczos on the (K, K) Gram


def random_walk_points(sizes: np.ndarray, dof: int, rng: np.random.Generator) -> np.ndarray:
    """Returns (K, m) points of a random walk with isotropic Gaussian increments in dof dimensions.

    Increment k is N(0, sizes[k]^2 / dof * I_dof), so its expected squared length is sizes[k]^2. The walk is
    returned in an orthonormal basis of the span of its increments, m = min(K - 1, dof) coordinates: distances
    (and so PCA and t-SNE maps) are those of the walk in dof dimensions. When dof >= K - 1 the (K-1, K-1)
    Bartlett factor of the increments' Wishart Gram matrix stands in for the (K-1, dof) Gaussian increments:
    O(K^2) numbers per walk instead of O(K N).

    Args:
        sizes: (K-1,) target root-mean-square step lengths.
        dof: dimension of the space the walk moves in (N - 1 for N double-centred texts).
        rng: random generator.
    """
    k1 = len(sizes)
    if dof >= k1:
        a = np.tril(rng.standard_normal((k1, k1)), -1)
        a[np.diag_indices(k1)] = np.sqrt(rng.chisquare(dof - np.arange(k1)))  # Bartlett: A A^T ~ Wishart(dof)
    else:
        a = rng.standard_normal((k1, dof))
    steps = a * (np.asarray(sizes, dtype=np.float64) / np.sqrt(dof))[:, None]
    return np.vstack([np.zeros((1, steps.shape[1])), np.cumsum(steps, axis=0)])


def _pca2(points: np.ndarray) -> np.ndarray:
    """Returns (K, 2) top-two principal-component scores of the points, from the (K, K) Gram matrix."""
    x = points - points.mean(axis=0)
    gram = x @ x.T
    if len(gram) <= _DENSE_EIGH_MAX:
        w, v = np.linalg.eigh(gram)
        w, v = np.maximum(w[::-1][:2], 0.0), v[:, ::-1][:, :2]
    else:
        w, v = _top_eigenpairs(gram, 2)
    return v * np.sqrt(w)


def _tsne2(points: np.ndarray, perplexity: float, max_iter: int) -> np.ndarray:
    tsne = TSNE(
        2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=42, max_iter=max_iter
    )
    return tsne.fit_transform(points - points.mean(axis=0))


def spiral_test(
    ll: np.ndarray,
    method: str = "pca",
    n_null: int = 200,
    seed: int = 0,
    n_bytes: np.ndarray | None = None,
    *,
    perplexity: float | None = None,
    max_iter: int = 1000,
) -> dict:
    """Returns how much a trajectory's 2-D map winds, against random walks with the same step sizes.

    The observed map is embed(ll, method, 2, n_bytes); its winding is |winding(xy, "centroid")| in turns (the
    sign only says which way the map's axes happen to point). Null: n_null random walks in the
    (N-1)-dimensional space of double-centred LL vectors, whose k-th increment is isotropic Gaussian with the
    expected squared length of the observed k-th consecutive displacement (KL units), each embedded by the
    same method (t-SNE: the same perplexity, init, seed and iterations) and wound about its centroid.

    Args:
        ll: (K, N) LL vectors of one trajectory's snapshots in order, K >= 3.
        method: "pca" or "tsne".
        n_null: number of random walks (each a t-SNE run for "tsne": keep it small).
        seed: seed of the random walks.
        n_bytes: optional (N,) byte counts (only the scale of the map changes; the winding does not).
        perplexity: t-SNE perplexity; None: min(30, (K - 1) / 3).
        max_iter: t-SNE iterations.

    Returns:
        dict with method, winding_turns (observed |turns|), null_mean, null_sd, null_q95 (95% quantile of the
        null's |turns|), p_value = (1 + #null >= observed) / (1 + n_null), n_null, seed, perplexity (t-SNE
        only,
        else None), min_p = 1 / (1 + n_null), null_turns (n_null,) and xy (the observed (K, 2) map).
    """
    if method not in SPIRAL_METHODS:
        raise ValueError(f"spiral_test method must be one of {SPIRAL_METHODS}, got {method!r}")
    if n_null < 1:
        raise ValueError(f"n_null must be >= 1, got {n_null}")
    a = as_ll(ll)
    k, n = a.shape
    if k < 3 or n < 3:
        raise ValueError(f"a spiral test needs at least 3 snapshots and 3 texts, got K={k}, N={n}")
    perp = tsne_perplexity(k, perplexity) if method == "tsne" else None
    xy = embed(a, method, 2, n_bytes, perplexity=perp, max_iter=max_iter)
    observed = abs(winding(xy))
    x = kl_coordinates(a, n_bytes)  # (K, N); its rows are double-centred, so they move in N - 1 dimensions
    sizes = np.linalg.norm(np.diff(x, axis=0), axis=1)  # (K-1,)
    rng = np.random.default_rng(seed)
    null = np.empty(n_null)
    for i in range(n_null):
        pts = random_walk_points(sizes, n - 1, rng)
        null[i] = abs(winding(_pca2(pts) if method == "pca" else _tsne2(pts, perp, max_iter)))
    return {
        "method": method,
        "winding_turns": float(observed),
        "null_mean": float(null.mean()),
        "null_sd": float(null.std(ddof=1)) if n_null > 1 else float("nan"),
        "null_q95": float(np.quantile(null, 0.95)),
        "p_value": float((1 + np.count_nonzero(null >= observed * (1 - 1e-12))) / (1 + n_null)),
        "n_null": int(n_null),
        "seed": int(seed),
        "perplexity": perp,
        "min_p": 1.0 / (1 + n_null),
        "null_turns": null,
        "xy": xy,
    }


def thread_test(
    ll_layers: np.ndarray | Sequence[np.ndarray],
    n_null: int = 500,
    seed: int = 0,
    n_bytes: np.ndarray | None = None,
) -> dict:
    """Returns the layer thread score against the same layer rows in shuffled order.

    Score (as in layer_threads): mean adjacent-layer KL / mean KL over non-adjacent layer pairs, pooled over
    snapshots; small when each layer sits next to its neighbours. Under the null the layer order is a random
    permutation, one permutation for every snapshot. All pairwise KLs stay the same, only which pairs count as
    adjacent changes, so each permutation costs a sum over L + 1 entries of the snapshot-averaged KL matrix.

    p = share of permutations scoring <= the observed order: over all (L+1)! orders when (L+1)! <= n_null (the
    identity and its reversal always tie, so the smallest reachable p is 2 / (L+1)!), else (1 + #drawn <=) /
    (1 + n_null) over n_null random permutations (smallest p 1 / (1 + n_null)).

    Args:
        ll_layers: (K, L+1, N) LL of every layer of each snapshot, or one model's (L+1, N); L + 1 >= 3.
        n_null: permutations drawn; enumeration instead when (L+1)! <= n_null.
        seed: seed of the drawn permutations.
        n_bytes: optional (N,) byte counts (the score is unit-free; mean KLs are reported in bits per byte).

    Returns:
        dict with thread_score, null_mean, null_q05, p_value, n_perms, exact, min_p, adjacent_kl and
        nonadjacent_kl (means), and note: a sentence when min_p >= 0.05 (the test cannot show threads), else
        None.
    """
    a = np.asarray(ll_layers, dtype=np.float64)
    a = as_layer_ll(a[None] if a.ndim == 2 else a)
    m = a.shape[1]
    if n_null < 1:
        raise ValueError(f"n_null must be >= 1, got {n_null}")
    kl = np.mean([kl_matrix(s, n_bytes) for s in a], axis=0)  # (L+1, L+1) averaged over snapshots
    total = kl[np.triu_indices(m, 1)].sum()
    n_adj, n_non = m - 1, m * (m - 1) // 2 - (m - 1)

    def scores(adj_sum: np.ndarray) -> np.ndarray:
        return (adj_sum / n_adj) / ((total - adj_sum) / n_non)

    observed = np.trace(kl, offset=1)
    exact = math.factorial(m) <= n_null
    if exact:
        perms = np.array(list(permutations(range(m))))  # (m!, m)
    else:
        rng = np.random.default_rng(seed)
        perms = np.argsort(rng.random((n_null, m)), axis=1)  # (n_null, m) uniform permutations
    adj = kl[perms[:, :-1], perms[:, 1:]].sum(axis=1)
    at_most = np.count_nonzero(adj <= observed * (1 + 1e-9) + 1e-300)
    p = at_most / len(perms) if exact else (1 + at_most) / (1 + n_null)
    min_p = 2.0 / len(perms) if exact else 1.0 / (1 + n_null)
    null = scores(adj)
    note = None
    if min_p >= 0.05:
        note = (
            f"with {m} layer states the smallest reachable p is {min_p:.2g}: "
            "this test cannot show threads at the 5% level"
        )
    return {
        "thread_score": float(scores(observed)),
        "null_mean": float(null.mean()),
        "null_q05": float(np.quantile(null, 0.05)),
        "p_value": float(p),
        "n_perms": len(perms),
        "exact": bool(exact),
        "min_p": float(min_p),
        "adjacent_kl": float(observed / n_adj),
        "nonadjacent_kl": float((total - observed) / n_non),
        "note": note,
    }
