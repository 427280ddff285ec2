"""Layer "threads": how a model's logit-lens predictions move from layer to layer, per snapshot.

Layer l = 0 is the embedding output and l = L the model's own logits. Adjacent layers that are close in KL
compared with other layer pairs make the layers of one snapshot form a thread on a map (Kishino et al.,
Table 3 reports the mean adjacent-layer KL over the early, middle and last thirds of the layers).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trajlab.analysis.kl import kl_matrix
from trajlab.analysis.maps import embed

THIRDS = ("early", "middle", "last")


def as_layer_ll(ll_layers: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """Returns the per-snapshot, per-layer LL as a float64 (K, L+1, N) array, checked."""
    a = np.asarray(ll_layers, dtype=np.float64)  # a list of (L+1, N) arrays stacks to (K, L+1, N)
    if a.ndim != 3:
        raise ValueError(
            f"layer LL must be (K snapshots, L+1 layers, N texts) or a list of (L+1, N), got {a.shape}"
        )
    if a.shape[1] < 3:
        raise ValueError(f"layer threads need at least 3 layers (0..L with L >= 2), got {a.shape[1]}")
    if not np.isfinite(a).all():
        raise ValueError("layer LL contains NaN or inf")
    return a


def layer_threads(ll_layers: np.ndarray | Sequence[np.ndarray], n_bytes: np.ndarray | None = None) -> dict:
    """Returns the adjacent-layer KL table and a thread score.

    Args:
        ll_layers: (K, L+1, N) array, or a list of K (L+1, N) arrays: LL of every layer (0 = embeddings,
            L = final logits) of each snapshot.
        n_bytes: optional (N,) byte counts; if given, KL in bits per byte, else nats per text.

    Returns:
        dict with
          adjacent_kl: (K, L) KL(layer l, layer l+1) per snapshot;
          per_layer: (L,) adjacent KL averaged over snapshots;
          thirds: {"early", "middle", "last"}: mean adjacent KL over the first, middle and last third of the L
              layer transitions (np.array_split, so the early third is the longest when L % 3 != 0);
          nonadjacent_kl: mean KL over all layer pairs |l - m| >= 2 of the same snapshot, i.e. the expected KL
              of a random non-adjacent pair (all pairs enumerated, no sampling);
          thread_score: mean adjacent KL / nonadjacent_kl (< 1: thread-like);
          thread_score_per_snapshot: (K,) the same ratio per snapshot.
    """
    a = as_layer_ll(ll_layers)
    k, n_layer_states, _ = a.shape
    kl = np.stack([kl_matrix(a[s], n_bytes) for s in range(k)])  # (K, L+1, L+1)
    adjacent = np.diagonal(kl, offset=1, axis1=1, axis2=2).copy()  # (K, L)
    li, mi = np.triu_indices(n_layer_states, k=2)
    nonadjacent = kl[:, li, mi]  # (K, pairs)
    per_snapshot = adjacent.mean(axis=1) / nonadjacent.mean(axis=1)
    per_layer = adjacent.mean(axis=0)
    parts = np.array_split(per_layer, 3)  # with L = 2 the last third is empty: NaN
    thirds = {
        name: float(p.mean()) if len(p) else float("nan") for name, p in zip(THIRDS, parts, strict=True)
    }
    return {
        "adjacent_kl": adjacent,
        "per_layer": per_layer,
        "thirds": thirds,
        "nonadjacent_kl": float(nonadjacent.mean()),
        "thread_score": float(adjacent.mean() / nonadjacent.mean()),
        "thread_score_per_snapshot": per_snapshot,
    }


def layer_map(
    ll_layers: np.ndarray | Sequence[np.ndarray], dim: int = 2, n_bytes: np.ndarray | None = None
) -> np.ndarray:
    """Returns (K, L+1, dim) coordinates of every (snapshot, layer) in one joint PCA map (KL units).

    All K * (L+1) LL vectors are double-centred together, so the layer paths of all snapshots share axes.
    """
    a = as_layer_ll(ll_layers)
    k, n_layer_states, n = a.shape
    xy = embed(a.reshape(k * n_layer_states, n), "pca", dim, n_bytes)
    return xy.reshape(k, n_layer_states, dim)
