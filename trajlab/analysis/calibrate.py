"""Nulls for the map and layer findings: does a trajectory spiral more than a random walk, do layers thread?

- spiral_test: PCA (or t-SNE) of a high-dimensional random walk already draws Lissajous arcs that wind about
  half a turn (Antognini & Sohl-Dickstein 2018), so a map's winding is compared with walks embedded the same
  way. The default null puts random signs on the trajectory's own increments (a sign-flip null): it keeps
  their sizes and covariance and destroys any systematic rotation. An isotropic Gaussian walk with the same
  step sizes (null="gaussian") is nearly deterministic in N dimensions, so anisotropy or an early transient
  decide against it (tests/analysis/test_spiral_null.py measures both).
- thread_test: adjacent layers are closer than non-adjacent ones for any path that moves steadily. Two nulls:
  the same layer rows in shuffled order ("layer order matters") and a random walk across layers with the
  observed steps, i.e. random signs on the layer increments ("more thread-like than a random walk").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import permutations, product

import numpy as np
import scipy.linalg
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits

from trajlab.analysis.config import tsne_perplexity
from trajlab.analysis.kl import as_ll, double_center, kl_matrix
from trajlab.analysis.maps import _top_eigenpairs, embed, kl_coordinates
from trajlab.analysis.spiral import winding
from trajlab.analysis.threads import as_layer_ll

SPIRAL_METHODS = ("pca", "tsne")
SPIRAL_NULLS = ("signflip", "gaussian")
_DENSE_EIGH_MAX = 200  # up to this many points a dense eigh beats Lanczos on the (K, K) Gram
_BATCH_ELEMENTS = 1 << 21  # (draws x K x K) Gram block of the batched sign-flip PCA, 16 MiB of float64
_EXACT_MAX = 10**4  # enumerate layer orders / sign patterns up to this many
_MIN_ORDER_DRAWS = 2000
_REL_TIE = 1e-9  # null values within this relative distance of the observed one count as ties


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


def sign_patterns(n_inc: int, n_draw: int, rng: np.random.Generator, exact: bool) -> np.ndarray:
    """Returns (M, n_inc) +-1 signs: all 2^(n_inc-1) patterns with a first sign of +1 if exact, else n_draw draws.

    Flipping every sign mirrors a walk (every distance, map winding and thread score stays), so fixing the
    first sign enumerates each distinct walk once.
    """
    if exact:
        rest = np.array(list(product((1.0, -1.0), repeat=n_inc - 1))).reshape(-1, n_inc - 1)
        return np.column_stack([np.ones(len(rest)), rest])
    return rng.choice((-1.0, 1.0), size=(n_draw, n_inc))


def _pca2(points: np.ndarray) -> np.ndarray:
    """Returns (K, 2) top-two principal-component scores of the points, from the (K, K) Gram matrix."""
    x = points - points.mean(axis=0)
    return _gram_pca2(x @ x.T)


def _gram_pca2(gram: np.ndarray) -> np.ndarray:
    """Returns (K, 2) top-two PC scores from a centred (K, K) Gram matrix."""
    k = len(gram)
    if k <= _DENSE_EIGH_MAX:
        # the top two only: twice as fast as the full decomposition at K = 56
        w, v = scipy.linalg.eigh(gram, subset_by_index=[k - 2, k - 1], check_finite=False)
        w, v = np.maximum(w[::-1], 0.0), v[:, ::-1]
    else:
        w, v = _top_eigenpairs(gram, 2)
    return v * np.sqrt(w)


def _signflip_pca_windings(x: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """Returns |winding| of the PCA map of each sign-flipped walk, from the (K-1, K-1) Gram of the increments.

    Points P = S diag(s) D (S: (K, K-1) cumulative sum with a zero first row, D: (K-1, N) increments), so their
    Gram is S diag(s) G diag(s) S^T with G = D D^T: two cumulative sums of G * s s^T, then centring. Each
    draw costs O(K^3) (the eigendecomposition) instead of O(K N).
    """
    d = np.diff(x, axis=0)
    g = d @ d.T  # (K-1, K-1)
    k = len(x)
    out = np.empty(len(signs))
    per = max(1, _BATCH_ELEMENTS // (k * k))
    for lo in range(0, len(signs), per):
        s = signs[lo : lo + per]  # (b, K-1)
        gram = np.zeros((len(s), k, k))
        gram[:, 1:, 1:] = np.cumsum(np.cumsum(g * s[:, :, None] * s[:, None, :], axis=1), axis=2)
        gram -= gram.mean(axis=1, keepdims=True)  # C M C: centre the points
        gram -= gram.mean(axis=2, keepdims=True)
        out[lo : lo + len(s)] = [abs(winding(_gram_pca2(m))) for m in gram]
    return out


def _cumulated(signs: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Returns the (K, N) walk from the origin whose increments are the (K-1, N) rows of d times the signs."""
    return np.vstack([np.zeros((1, d.shape[1])), np.cumsum(signs[:, None] * d, axis=0)])


def _tsne2(points: np.ndarray, perplexity: float, max_iter: int) -> np.ndarray:
    """Returns the (K, 2) t-SNE map of the points with the settings of embed().

    One OpenMP thread: the map is identical, and on a busy machine sklearn's OpenMP threads wait on each
    other 30x longer than the few hundred points take to embed (0.4 s against 12 s measured on 2 shared cores).
    """
    tsne = TSNE(
        2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=42, max_iter=max_iter
    )
    with threadpool_limits(1, user_api="openmp"):
        return tsne.fit_transform(points - points.mean(axis=0))


def _after_warmup(
    a: np.ndarray, steps: Sequence[int] | np.ndarray | None, warmup_steps: int | None
) -> tuple[np.ndarray, int]:
    """Returns (rows of a at step >= warmup_steps, number left out); all rows unless both are given."""
    if warmup_steps is not None and steps is None:
        raise ValueError("warmup_steps needs steps (the training step of each snapshot) to leave warm-up out")
    if steps is None:
        return a, 0
    st = np.asarray(steps)
    if st.shape != (len(a),):
        raise ValueError(f"steps must have one entry per snapshot, shape ({len(a)},), got {st.shape}")
    if warmup_steps is None:
        return a, 0
    keep = st >= warmup_steps
    return a[keep], int(np.count_nonzero(~keep))


def _two_sided(observed: float, null: np.ndarray, exact: bool) -> tuple[float, float, float]:
    """Returns (p_more, p_less, min_p): exact shares of all patterns, else (1 + #) / (1 + n)."""
    more = np.count_nonzero(null >= observed * (1 - _REL_TIE))
    less = np.count_nonzero(null <= observed * (1 + _REL_TIE))
    n = len(null)
    if exact:
        return more / n, less / n, 1.0 / n
    return (1 + more) / (1 + n), (1 + less) / (1 + n), 1.0 / (1 + n)


def _verdict(first: tuple[float, str], second: tuple[float, str], neither: str) -> str:
    """The words of a test read in two directions, each one-sided at 0.05: the first that fires, else neither."""
    for p, words in (first, second):
        if p < 0.05:
            return words
    return neither


def spiral_test(
    ll: np.ndarray,
    method: str = "pca",
    n_null: int = 200,
    seed: int = 0,
    n_bytes: np.ndarray | None = None,
    *,
    perplexity: float | None = None,
    max_iter: int = 1000,
    null: str = "signflip",
    steps: Sequence[int] | np.ndarray | None = None,
    warmup_steps: int | None = None,
) -> dict:
    """Returns how much a trajectory's 2-D map winds, against walks embedded the same way (two-sided).

    The observed map is embed(ll, method, 2, n_bytes); its winding is |winding(xy, "centroid")| in turns (the
    sign only says which way the map's axes happen to point). Nulls, each walk embedded by the same method
    (t-SNE: the same perplexity, init, seed and iterations) and wound about its centroid:
      - "signflip": the trajectory's own increments (consecutive differences of the kl_coordinates rows) with
        independent random signs, cumulated. Keeps every step's size and the steps' covariance, destroys any
        systematic rotation. When 2^(K-2) <= n_null all distinct sign patterns are enumerated (exact).
      - "gaussian": random walks in the (N-1)-dimensional space of double-centred LL vectors whose k-th
        increment is isotropic Gaussian with the observed k-th step's expected squared length.

    The sign-flip null is exact when the steps are independent and symmetric (any covariance). A
    deterministic early transient is neither and can pass for a spiral (measured: PCA 7 of 40 for a fast
    move the size of the later walk, t-SNE 5 of 10 for one 3x that size); leaving warm-up out (steps,
    warmup_steps) brought both to 0 (tests/analysis/test_spiral_null.py).

    Verdict: "spiral beyond the null" when p_more < 0.05, "winds less than the null" when p_less < 0.05 (a
    drift or a straight path), else "not distinguishable".

    Args:
        ll: (K, N) LL vectors of one trajectory's snapshots in order, K >= 3 (after warm-up).
        method: "pca" or "tsne".
        n_null: number of null walks (each a t-SNE run for "tsne": keep it small).
        seed: seed of the null walks.
        n_bytes: optional (N,) byte counts (only the scale of the map changes; the winding does not).
        perplexity: t-SNE perplexity; None: min(30, (K - 1) / 3) of the snapshots tested.
        max_iter: t-SNE iterations.
        null: "signflip" or "gaussian".
        steps: optional (K,) training step of each snapshot.
        warmup_steps: with steps, snapshots with step < warmup_steps are left out before anything else.

    Returns:
        dict with method, null, winding_turns (observed |turns|), null_mean, null_sd, null_q05, null_q95,
        p_more = (1 + #null >= observed) / (1 + n), p_less = (1 + #null <= observed) / (1 + n) (exact shares
        when exact), p_value = p_more, min_p, verdict, n_null (walks used), exact, seed, perplexity (t-SNE
        only, else None), n_left_out, warmup_steps (as given), null_turns
        (n_null,) and xy (the observed (K, 2) map).
    """
    if method not in SPIRAL_METHODS:
        raise ValueError(f"spiral_test method must be one of {SPIRAL_METHODS}, got {method!r}")
    if null not in SPIRAL_NULLS:
        raise ValueError(f"spiral_test null must be one of {SPIRAL_NULLS}, got {null!r}")
    if n_null < 1:
        raise ValueError(f"n_null must be >= 1, got {n_null}")
    a, n_left_out = _after_warmup(as_ll(ll), steps, warmup_steps)
    k, n = a.shape
    if k < 3 or n < 3:
        raise ValueError(
            f"a spiral test needs at least 3 snapshots and 3 texts, got K={k}, N={n}"
            + (f" after leaving out {n_left_out} warm-up snapshots" if n_left_out else "")
        )
    perp = tsne_perplexity(k, perplexity) if method == "tsne" else None
    xy = embed(a, method, 2, n_bytes, perplexity=perp, max_iter=max_iter)
    observed = abs(winding(xy))
    x = kl_coordinates(a, n_bytes)  # (K, N); its rows are double-centred, so they move in N - 1 dimensions
    rng = np.random.default_rng(seed)
    exact = null == "signflip" and 2 ** (k - 2) <= n_null
    if null == "signflip":
        signs = sign_patterns(k - 1, n_null, rng, exact)
        if method == "pca":
            turns = _signflip_pca_windings(x, signs)
        else:
            d = np.diff(x, axis=0)
            turns = np.array([abs(winding(_tsne2(_cumulated(s, d), perp, max_iter))) for s in signs])
    else:
        sizes = np.linalg.norm(np.diff(x, axis=0), axis=1)  # (K-1,)
        turns = np.empty(n_null)
        for i in range(n_null):
            pts = random_walk_points(sizes, n - 1, rng)
            turns[i] = abs(winding(_pca2(pts) if method == "pca" else _tsne2(pts, perp, max_iter)))
    p_more, p_less, min_p = _two_sided(observed, turns, exact)
    verdict = _verdict(
        (p_more, "spiral beyond the null"), (p_less, "winds less than the null"), "not distinguishable"
    )
    return {
        "method": method,
        "null": null,
        "winding_turns": float(observed),
        "null_mean": float(turns.mean()),
        "null_sd": float(turns.std(ddof=1)) if len(turns) > 1 else float("nan"),
        "null_q05": float(np.quantile(turns, 0.05)),
        "null_q95": float(np.quantile(turns, 0.95)),
        "p_value": float(p_more),
        "p_more": float(p_more),
        "p_less": float(p_less),
        "verdict": verdict,
        "n_null": len(turns),
        "exact": bool(exact),
        "seed": int(seed),
        "perplexity": perp,
        "min_p": float(min_p),
        "n_left_out": n_left_out,
        "warmup_steps": warmup_steps,
        "null_turns": turns,
        "xy": xy,
    }


def _walk_scores(gram: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """Returns the thread score of each sign-flipped layer walk, from the (L, L) Gram of the layer increments.

    With increments d_0..d_{L-1}, layers i < j lie ||sum_{k=i}^{j-1} s_k d_k||^2 apart, so the sum over all
    layer pairs is s^T (G * C) s with C[k, l] = (min(k, l) + 1) (L - max(k, l)) the number of pairs whose
    span holds both increments. Adjacent distances are the diagonal of G whatever the signs.
    """
    n_inc = len(gram)
    idx = np.arange(n_inc)
    cover = (np.minimum.outer(idx, idx) + 1) * (n_inc - np.maximum.outer(idx, idx))
    total = np.einsum("nk,kl,nl->n", signs, gram * cover, signs)
    adjacent = np.trace(gram)
    n_adj, n_non = n_inc, (n_inc + 1) * n_inc // 2 - n_inc
    return (adjacent / n_adj) / ((total - adjacent) / n_non)


def thread_test(
    ll_layers: np.ndarray | Sequence[np.ndarray],
    n_null: int = 500,
    seed: int = 0,
    n_bytes: np.ndarray | None = None,
    *,
    n_walk: int | None = None,
) -> dict:
    """Returns the layer thread score against shuffled layer orders and against random walks across layers.

    Score (as in layer_threads): mean adjacent-layer KL / mean KL over non-adjacent layer pairs, pooled over
    snapshots; small when each layer sits next to its neighbours.
    - Layer order (p_value = order_p): the same layer rows in a random order, one order for every snapshot.
      All pairwise KLs stay, only which pairs count as adjacent changes. Exact over all (L+1)! orders when
      (L+1)! <= 10^4 (p = share of orders scoring <= the observed one; the identity and its reversal tie, so
      the smallest p is 2 / (L+1)!), else max(n_null, 2000) drawn orders, p = (1 + #drawn <=) / (1 + n).
      Any path that moves steadily passes: a residual stream has an order by construction.
    - Beyond a random walk across layers: each snapshot's layer increments (rows of its double-centred LL)
      get random signs, one sign per layer transition shared by every snapshot and text. Adjacent KLs stay;
      the score asks whether the path is straighter than a random walk of those steps. walk_p_less = share
      of sign patterns scoring <= the observed one (a thread), walk_p_more the share >=; exact over all
      2^(L-1) distinct patterns when that is <= 10^4 (smallest p 1 / 2^(L-1): L >= 6 transitions are needed
      to reach p < 0.05), else n_walk drawn patterns with (1 + #) / (1 + n).

    Args:
        ll_layers: (K, L+1, N) LL of every layer of each snapshot, or one model's (L+1, N); L + 1 >= 3.
        n_null: orders drawn when (L+1)! > 10^4 (at least 2000 are drawn).
        seed: seed of the drawn orders and sign patterns.
        n_bytes: optional (N,) byte counts (the score is unit-free; mean KLs are reported in bits per byte).
        n_walk: sign patterns drawn when 2^(L-1) > 10^4; None: n_null.

    Returns:
        dict with thread_score, null_mean, null_q05, p_value = order_p, n_perms, exact, min_p, verdict_order,
        walk_null_mean, walk_null_q05, walk_p_less, walk_p_more, walk_min_p, walk_n, walk_exact,
        verdict_walk, adjacent_kl and nonadjacent_kl (means), and note: sentences for the tests that cannot
        reach p < 0.05 with this many layers, else None.
    """
    a = np.asarray(ll_layers, dtype=np.float64)
    a = as_layer_ll(a[None] if a.ndim == 2 else a)
    m = a.shape[1]
    n_walk = n_null if n_walk is None else n_walk
    if n_null < 1 or n_walk < 1:
        raise ValueError(f"n_null and n_walk must be >= 1, got n_null={n_null}, n_walk={n_walk}")
    kl = np.mean([kl_matrix(s, n_bytes) for s in a], axis=0)  # (L+1, L+1) averaged over snapshots
    total = kl[np.triu_indices(m, 1)].sum()
    n_adj, n_non = m - 1, m * (m - 1) // 2 - (m - 1)

    def scores(adj_sum: np.ndarray) -> np.ndarray:
        return (adj_sum / n_adj) / ((total - adj_sum) / n_non)

    rng = np.random.default_rng(seed)
    observed = np.trace(kl, offset=1)
    exact = math.factorial(m) <= _EXACT_MAX
    if exact:
        perms = np.array(list(permutations(range(m))))  # (m!, m)
    else:
        perms = np.argsort(rng.random((max(n_null, _MIN_ORDER_DRAWS), m)), axis=1)  # uniform permutations
    adj = kl[perms[:, :-1], perms[:, 1:]].sum(axis=1)
    at_most = np.count_nonzero(adj <= observed * (1 + _REL_TIE) + 1e-300)
    p = at_most / len(perms) if exact else (1 + at_most) / (1 + len(perms))
    min_p = 2.0 / len(perms) if exact else 1.0 / (1 + len(perms))
    null = scores(adj)

    inc = np.diff(np.stack([double_center(s) for s in a]), axis=1)  # (K, L, N) layer increments
    gram = np.einsum("kin,kjn->ij", inc, inc)  # (L, L) pooled over snapshots
    walk_exact = 2 ** (m - 2) <= _EXACT_MAX
    walk_null = _walk_scores(gram, sign_patterns(m - 1, n_walk, rng, walk_exact))
    walk_obs = _walk_scores(gram, np.ones((1, m - 1)))[0]  # equals thread_score up to rounding
    walk_p_more, walk_p_less, walk_min_p = _two_sided(walk_obs, walk_null, walk_exact)
    verdict_walk = _verdict(
        (walk_p_less, "more thread-like than a random walk across layers"),
        (walk_p_more, "less thread-like than a random walk across layers"),
        "not distinguishable from a random walk across layers",
    )
    notes = []
    if min_p >= 0.05:
        notes.append(
            f"with {m} layer states the smallest reachable p is {min_p:.2g}: "
            "this test cannot show threads at the 5% level"
        )
    if walk_min_p >= 0.05:
        notes.append(
            f"beyond a random walk across layers: with {m - 1} layer transitions the smallest reachable p is "
            f"{walk_min_p:.2g}, so the 5% level cannot be reached"
        )
    return {
        "thread_score": float(scores(observed)),
        "null_mean": float(null.mean()),
        "null_q05": float(np.quantile(null, 0.05)),
        "p_value": float(p),
        "order_p": float(p),
        "n_perms": len(perms),
        "exact": bool(exact),
        "min_p": float(min_p),
        "verdict_order": "layer order matters" if p < 0.05 else "layer order not shown to matter",
        "walk_null_mean": float(walk_null.mean()),
        "walk_null_q05": float(np.quantile(walk_null, 0.05)),
        "walk_p_less": float(walk_p_less),
        "walk_p_more": float(walk_p_more),
        "walk_min_p": float(walk_min_p),
        "walk_n": len(walk_null),
        "walk_exact": bool(walk_exact),
        "verdict_walk": verdict_walk,
        "adjacent_kl": float(observed / n_adj),
        "nonadjacent_kl": float((total - observed) / n_non),
        "note": "; ".join(notes) if notes else None,
    }
