"""KL divergence between language models, estimated from log-likelihood (LL) vectors.

For models p_i, p_j scored on the same N texts, with l_i(x) = log p_i(x) in nats,

    KL(p_i, p_j) ~ Var_x[l_i(x) - l_j(x)] / 2        (population variance, ddof = 0).

Var of the LL difference approximates the Jeffreys divergence J = KL(p_i, p_j) + KL(p_j, p_i) to second order
when the two models and the text distribution are close (Shimodaira 1993), so Var/2 ~ the symmetrised KL. The
released code of Oyama et al. / Kishino et al. divides by 2; some summaries of the method omit it. Here it is
always divided by 2.

When does it hold? Measured on enumerable autoregressive models (vocabulary 4, 5 tokens per text, texts
sampled from p_i, exact J by enumeration of all 4^5 texts; tests/analysis/test_analysis_kl.py), over five random
model pairs: Var/2 is within 6% of J/2 at J/2 ~ 0.01-0.02 nats per text (~0.003 nats per token) and
within 20% at J/2 ~ 0.1-0.2; at J/2 ~ 1 nat per text the error is 0-60% depending on the pair; at J/2 of 5-15
nats per text (1-3 nats per token) the estimate is 1.5-7x too large (the texts sample only one model's
typical set). Read large values as "far", not as a calibrated KL.

Units: nats per text by default; with per-text UTF-8 byte counts, bits per byte (divide by B ln 2, with B the
mean bytes per text of the texts used).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# A Gram-identity value below TOL * (the size of the terms it came from) has lost most of its digits to
# cancellation (two near-identical models); such pairs are recomputed directly from their difference.
_TOL_SQ = 1e-8  # for sum (q_i - q_j)^2 = s_i + s_j - 2 q_i.q_j
_TOL_M4 = 1e-6  # for sum (q_i - q_j)^4 expanded into four matrix products
_CHUNK_ELEMENTS = 1 << 22  # (pairs x N) block size of the direct recomputation, 32 MiB of float64


def as_ll(ll: np.ndarray, name: str = "ll") -> np.ndarray:
    """Returns ll as a finite float64 (K, N) array, or raises a ValueError saying what is wrong."""
    a = np.asarray(ll, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (K models, N texts) array, got shape {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 2:
        raise ValueError(f"{name} needs at least 1 model and 2 texts, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf; drop or clip those texts first (ta.prepare)")
    return a


def kl_unit_factor(n_bytes: np.ndarray | None, n_texts: int) -> float:
    """Returns the factor from nats per text to the output unit: 1, or 1 / (B ln 2) for bits per byte."""
    if n_bytes is None:
        return 1.0
    nb = np.asarray(n_bytes, dtype=np.float64)
    if nb.shape != (n_texts,):
        raise ValueError(f"n_bytes must have one entry per text, shape ({n_texts},), got {nb.shape}")
    if not (np.isfinite(nb).all() and (nb > 0).all()):
        raise ValueError("n_bytes must be positive byte counts (UTF-8 bytes per text)")
    return 1.0 / (nb.mean() * np.log(2.0))


def double_center(ll: np.ndarray) -> np.ndarray:
    """Returns Q = L - row means - column means + grand mean, shape (K, N).

    Rows of Q sum to zero, so q_i - q_j = (l_i - l_j) - mean(l_i - l_j): distances between rows are those of
    L; removing the column means (the per-text difficulty shared by all models) matters only for maps.
    """
    a = as_ll(ll)
    q = a - a.mean(axis=1, keepdims=True)
    q -= q.mean(axis=0, keepdims=True)  # column means of the row-centred L = column means - grand mean
    return q


def _pair_power_sums(q: np.ndarray, i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns sum_x d^2 and sum_x d^4 for d = q_i - q_j, computed directly, in blocks of pairs."""
    s2 = np.empty(len(i))
    s4 = np.empty(len(i))
    step = max(1, _CHUNK_ELEMENTS // q.shape[1])
    for lo in range(0, len(i), step):
        d = q[i[lo : lo + step]] - q[j[lo : lo + step]]  # (pairs, N)
        d2 = d * d
        s2[lo : lo + step] = d2.sum(axis=1)
        s4[lo : lo + step] = (d2 * d2).sum(axis=1)
    return s2, s4


def _symmetric(m: np.ndarray) -> np.ndarray:
    return (m + m.T) / 2


def kl_matrix(
    ll: np.ndarray, n_bytes: np.ndarray | None = None, *, return_se: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Returns the (K, K) matrix of estimated KL(p_i, p_j) = Var_x[l_i - l_j] / 2.

    Computed as ||q_i - q_j||^2 / (2N) on the double-centred Q with the Gram identity
    ||q_i||^2 + ||q_j||^2 - 2 q_i.q_j: one (K, N) x (N, K) matrix product, no loop over pairs. Pairs whose
    value is within rounding of zero (near-identical models, e.g. duplicated checkpoints) are recomputed
    directly, so the result is never negative and identical models give exactly 0. The diagonal is exactly 0.

    Args:
        ll: (K, N) LL vectors in nats (rows: models or checkpoints; columns: texts).
        n_bytes: optional (N,) UTF-8 byte counts per text; if given, the result is in bits per byte.
        return_se: also return the standard error of each entry: the delta-method SE of a sample variance,
            sqrt((m4 - s^4) / N) / 2 with s^2, m4 the second and fourth central moments of l_i - l_j. It costs
            two more (K, N) x (N, K) products (one of them not symmetric) and two (K, N) copies: about 5x
            the time of the KL matrix alone (scripts/bench_analysis.py).

    Returns:
        The (K, K) KL matrix, or (KL, SE) if return_se.
    """
    q = double_center(ll)  # (K, N)
    k, n = q.shape
    p2 = np.einsum("ij,ij->i", q, q)  # (K,)
    p2_pairs = p2[:, None] + p2[None, :]
    sq = _symmetric(p2_pairs - 2.0 * (q @ q.T))  # (K, K) sum of squared differences
    redo = sq <= _TOL_SQ * p2_pairs
    if return_se:
        q2 = q * q
        p4 = np.einsum("ij,ij->i", q2, q2)
        p4_pairs = p4[:, None] + p4[None, :]
        cross3 = (q2 * q) @ q.T  # [i, j] = sum q_i^3 q_j
        s4 = _symmetric(p4_pairs - 4.0 * (cross3 + cross3.T) + 6.0 * (q2 @ q2.T))  # sum of 4th powers
        redo |= s4 <= _TOL_M4 * p4_pairs
    i, j = np.nonzero(np.triu(redo, 1))
    if len(i):
        direct_sq, direct_s4 = _pair_power_sums(q, i, j)
        sq[i, j] = sq[j, i] = direct_sq
        if return_se:
            s4[i, j] = s4[j, i] = direct_s4
    np.fill_diagonal(sq, 0.0)
    factor = kl_unit_factor(n_bytes, n)
    kl = sq * (factor / (2.0 * n))
    if not return_se:
        return kl
    m2, m4 = sq / n, s4 / n
    se = np.sqrt(np.maximum(m4 - m2 * m2, 0.0) / n) * (factor / 2.0)  # m4 >= m2^2 up to rounding
    np.fill_diagonal(se, 0.0)
    return kl, se


def kl_paired(
    ll_a: np.ndarray, ll_b: np.ndarray, n_bytes: np.ndarray | None = None, *, return_se: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Returns KL(a_p, b_p) for each row pair p, the same estimate as kl_matrix, computed directly.

    Use it for a few chosen pairs (between trajectories, fine-tuned vs base) instead of a full matrix.

    Args:
        ll_a, ll_b: (P, N) LL vectors (or (N,) for one pair) over the same texts.
        n_bytes: optional (N,) byte counts; if given, bits per byte.
        return_se: also return the delta-method SE (see kl_matrix).

    Returns:
        (P,) KL estimates, or (KL, SE).
    """
    a = as_ll(np.atleast_2d(ll_a), "ll_a")
    b = as_ll(np.atleast_2d(ll_b), "ll_b")
    if a.shape != b.shape:
        raise ValueError(f"ll_a and ll_b must have the same shape, got {a.shape} and {b.shape}")
    n = a.shape[1]
    d = a - b
    d -= d.mean(axis=1, keepdims=True)  # (P, N)
    m2 = (d * d).mean(axis=1)
    factor = kl_unit_factor(n_bytes, n)
    kl = m2 * (factor / 2.0)
    if not return_se:
        return kl
    m4 = (d**4).mean(axis=1)
    return kl, np.sqrt(np.maximum(m4 - m2 * m2, 0.0) / n) * (factor / 2.0)


def prepare(
    ll: np.ndarray | Sequence[np.ndarray],
    n_bytes: np.ndarray | None = None,
    *,
    clip_quantile: float | None = None,
    drop_jump_fraction: float | None = None,
    jump_rows: Sequence[np.ndarray] | None = None,
) -> tuple[np.ndarray | list[np.ndarray], np.ndarray | None, np.ndarray]:
    """Returns the LL matrix cleaned with the papers' optional steps (both off by default).

    Steps, in the order of the authors' code (kl-scale/):
      1. clip_quantile (0.02): clip LL from below at that quantile of all values of all given matrices, pooled
         over all trajectories, so one threshold holds everywhere. -inf values are allowed only if clipping
         removes them.
      2. drop_jump_fraction (0.03): drop that fraction of texts with the largest jump
         max_k |l_{k+1} - l_k| between consecutive snapshots (within each trajectory, after clipping), over
         the rows that jump_rows selects (the paper: each run's snapshots after warm-up). The mean bytes per
         text B is then recomputed on the kept texts by kl_matrix, since the returned n_bytes holds only the
         kept texts.

    Args:
        ll: (K, N) LL array, or a list of (K_i, N) arrays (several trajectories over the same N texts, which
            are then cleaned jointly and keep a common set of texts).
        n_bytes: optional (N,) UTF-8 byte counts per text.
        clip_quantile: quantile in (0, 1) to clip from below at, or None.
        drop_jump_fraction: fraction in [0, 1) of texts to drop, or None.
        jump_rows: optional boolean (K_i,) mask per matrix: the rows whose consecutive jumps are ranked (the
            selected rows of one trajectory count as consecutive); None: all rows.

    Returns:
        (ll, n_bytes, kept_mask): ll in the form it was given (array or list) restricted to the kept texts,
        n_bytes restricted likewise (None if not given), and the (N,) boolean mask of kept texts.
    """
    single = isinstance(ll, np.ndarray) or not isinstance(ll, Sequence)
    mats = [np.asarray(m, dtype=np.float64) for m in ([ll] if single else ll)]
    if not mats:
        raise ValueError("prepare needs at least one LL matrix")
    n = mats[0].shape[-1]
    for m in mats:
        if m.ndim != 2 or m.shape[1] != n or m.shape[0] < 1:
            raise ValueError(f"each LL matrix must be (K, N) with the same N={n} texts, got shape {m.shape}")
        if np.isnan(m).any() or np.isposinf(m).any():
            raise ValueError("LL contains NaN or +inf; log-likelihoods must be finite or -inf")
    if n_bytes is not None:
        kl_unit_factor(n_bytes, n)  # validates shape and positivity
    if clip_quantile is not None:  # first, over all values of all matrices (the authors' code)
        if not 0.0 < clip_quantile < 1.0:
            raise ValueError(f"clip_quantile must be in (0, 1), got {clip_quantile}")
        floor = np.quantile(np.concatenate([m.ravel() for m in mats]), clip_quantile)
        if not np.isfinite(floor):
            raise ValueError(
                f"more than {clip_quantile:.0%} of LL values are -inf; cannot clip to a finite floor"
            )
        mats = [np.maximum(m, floor) for m in mats]
    kept = np.ones(n, dtype=bool)
    if drop_jump_fraction is not None:
        if not 0.0 <= drop_jump_fraction < 1.0:
            raise ValueError(f"drop_jump_fraction must be in [0, 1), got {drop_jump_fraction}")
        if jump_rows is None:
            ranked = mats
        else:
            if len(jump_rows) != len(mats):
                raise ValueError(
                    f"jump_rows needs one mask per LL matrix ({len(mats)}), got {len(jump_rows)}"
                )
            ranked = [m[np.asarray(r, dtype=bool)] for m, r in zip(mats, jump_rows, strict=True)]
        if all(m.shape[0] < 2 for m in ranked):
            raise ValueError(
                "drop_jump_fraction needs a trajectory with at least 2 snapshots "
                "(among the rows jump_rows selects)"
            )
        jumps = np.zeros(n)  # (N,) largest |delta l| per text; non-finite jumps rank first
        for m in ranked:
            if m.shape[0] >= 2:
                with np.errstate(invalid="ignore"):  # -inf - -inf = NaN: ranked as an infinite jump
                    step = np.abs(np.diff(m, axis=0))
                jumps = np.maximum(jumps, np.where(np.isfinite(step), step, np.inf).max(axis=0))
        n_drop = int(round(drop_jump_fraction * n))
        if n_drop >= n - 1:
            raise ValueError(f"drop_jump_fraction={drop_jump_fraction} would leave fewer than 2 of {n} texts")
        kept[np.argsort(jumps, kind="stable")[n - n_drop :]] = False
    mats = [m[:, kept] for m in mats]
    nb = None if n_bytes is None else np.asarray(n_bytes)[kept]
    return (mats[0] if single else mats), nb, kept
