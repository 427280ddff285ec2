"""Orderings of settings with pairs of runs as the unit: a permutation test, a two-level bootstrap, Holm.

"KL between seeds < KL between sizes" is a claim about runs: other seeds give other KLs (between-seed CV ~17%
in the toy). So each pair of runs is one unit: the test permutes pairs between the two sides, and its interval
resamples pairs (and texts within each pair when they are given). A text bootstrap alone (bootstrap_order)
holds the runs fixed and declares such orderings far more often than its nominal level.

p-values are exact enumerations over all splits, or (1 + #{drawn splits at least as extreme}) / (1 + n); each
result carries min_p, the smallest p its design can reach (3 vs 2 pairs: 0.1, so never below 0.05).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np

from trajlab.analysis.resample import check_boot, resampled_half_var

ALPHA = 0.05  # an ordering "holds" only at p < ALPHA
MAX_EXACT_SPLITS = 100_000  # enumerate every split of the pairs up to this many
ALTERNATIVES = ("less", "two-sided")


def _order_side(values: Sequence, name: str) -> tuple[np.ndarray, list[tuple[np.ndarray, float] | None]]:
    """Returns (kl (n,), texts): each pair's KL and, where given, its (d, factor) for the text level."""
    if isinstance(values, (str, bytes, Mapping)) or len(values) == 0:
        raise ValueError(
            f"{name} must be a non-empty sequence of pair KLs or pair records, got {values!r:.80}"
        )
    kls, texts = [], []
    for i, v in enumerate(values):
        if not isinstance(v, Mapping):
            kls.append(float(v))
            texts.append(None)
            continue
        if "d" not in v and "kl" not in v:
            raise ValueError(
                f"{name}[{i}] needs a 'kl' or a 'd' (per-text LL differences), got keys {list(v)}"
            )
        factor = float(v.get("factor", 1.0))
        if not (np.isfinite(factor) and factor > 0):
            raise ValueError(f"{name}[{i}]['factor'] must be a positive unit factor, got {factor}")
        if "d" not in v:
            kls.append(float(v["kl"]))
            texts.append(None)
            continue
        d = np.asarray(v["d"], dtype=np.float64)
        if d.ndim != 1 or len(d) < 2 or not np.isfinite(d).all():
            raise ValueError(
                f"{name}[{i}]['d'] must be a finite (N,) vector with N >= 2, got shape {d.shape}"
            )
        kl = float(d.var() / 2 * factor)
        if "kl" in v and not math.isclose(float(v["kl"]), kl, rel_tol=1e-3, abs_tol=1e-12):
            raise ValueError(
                f"{name}[{i}]: 'kl' {float(v['kl']):.6g} != Var(d)/2 * factor {kl:.6g}; "
                "pass matching d and kl"
            )
        kls.append(float(v.get("kl", kl)))
        texts.append((d, factor))
    kl_arr = np.asarray(kls, dtype=np.float64)
    if not np.isfinite(kl_arr).all():
        raise ValueError(f"{name} holds a KL that is NaN or inf")
    return kl_arr, texts


def _two_level_means(kl: np.ndarray, texts: list, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Returns (n_boot,) means over pairs resampled with replacement, each pair's texts resampled anew.

    Each pair with texts gets a pool of n_boot text-resampled KLs; every draw of that pair takes a random
    member of its pool (a fresh text resample, up to the pool's size). Pairs without texts keep their KL.
    """
    n = len(kl)
    pool = np.tile(kl, (n_boot, 1))  # (n_boot, n)
    for j, t in enumerate(texts):
        if t is not None:
            pool[:, j] = resampled_half_var(t[0][None], n_boot, rng)[:, 0] * t[1]
    pick = rng.integers(0, n, size=(n_boot, n))
    member = rng.integers(0, n_boot, size=(n_boot, n))
    return pool[member, pick].mean(axis=1)


def split_masks(n: int, n_small: int, n_perm: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """Returns (masks (m, n) bool, exact): True marks the units put on the small side.

    Every split of n units into n_small and n - n_small (the observed one, first n_small, included) when there
    are at most MAX_EXACT_SPLITS of them, else n_perm uniformly drawn splits.
    """
    total = math.comb(n, n_small)
    masks = np.zeros((total if total <= MAX_EXACT_SPLITS else n_perm, n), dtype=bool)
    if total <= MAX_EXACT_SPLITS:
        flat = itertools.chain.from_iterable(itertools.combinations(range(n), n_small))
        small = np.fromiter(flat, dtype=np.int64, count=total * n_small).reshape(total, n_small)
    else:
        small = rng.permuted(np.tile(np.arange(n), (n_perm, 1)), axis=1)[:, :n_small]
    np.put_along_axis(masks, small, True, axis=1)
    return masks, total <= MAX_EXACT_SPLITS


def _split_stats(x: np.ndarray, n_s: int, n_perm: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """Returns (stats, exact): mean(large) - mean(small) for every split of x (n_s first), or n_perm drawn."""
    masks, exact = split_masks(len(x), n_s, n_perm, rng)
    s = masks @ x
    return (x.sum() - s) / (len(x) - n_s) - s / n_s, exact


def order_test(
    smaller: Sequence,
    larger: Sequence,
    *,
    n_perm: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
    n_boot: int = 2000,
    alternative: str = "less",
) -> dict:
    """Returns whether mean KL over the `smaller` pairs is below that over the `larger` pairs, pairs of runs
    being the unit.

    Null: every pair's KL comes from one distribution, whichever side it was put on. Test statistic
    diff = mean(larger) - mean(smaller); permutation test over the splits of the pooled pairs into sides of
    the same sizes: all C(n_s + n_l, n_s) splits when that is <= 1e5 (p = #{splits with stat >= observed}
    / #splits, the observed split included; min_p = 1 / #splits), else n_perm drawn splits (p = (1 +
    #{drawn stat >= observed}) / (1 + n_perm); min_p = 1 / (1 + n_perm)). With 3 vs 2 pairs min_p = 0.1,
    with 3 vs 3 0.05: such designs cannot establish an ordering at 0.05, whatever the KLs.

    Interval for diff: two-level percentile bootstrap: pairs resampled with replacement within each side, and
    where a pair carries its per-text differences, texts resampled within each drawn pair (Var/2 * factor).

    Args:
        smaller, larger: one entry per pair of runs: a KL (float), or a record {"kl": float, "d": (N,)
            per-text LL differences l_a - l_b in nats, "factor": unit factor (1, or 1 / (B ln 2) for bits
            per byte)} with kl = Var(d)/2 * factor (ddof 0). "d" and "factor" are optional; "kl" is computed
            from "d" when left out; when given it must match that to 0.1% (catches a handled KL with raw d)
            and is used.
        n_perm: drawn splits when the splits are too many to enumerate; seed: seed of draws and resamples.
        level: interval level; n_boot: bootstrap resamples of the interval.
        alternative: "less" (one-sided: smaller < larger) or "two-sided" (|stat| >= |observed|).

    Returns:
        dict(diff, lo, hi, p_value, min_p, n_units = [n_small, n_large], smaller, larger (the two means),
        holds (diff > 0 and p_value < 0.05), reason (None when it holds, else why not, in words), test
        ("permutation over pairs (exact)" or "(drawn)"), unit = "pairs of runs", alternative, n_splits).
    """
    check_boot(n_boot, level)
    if n_perm < 1:
        raise ValueError(f"n_perm must be >= 1, got {n_perm}")
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {', '.join(ALTERNATIVES)}, got {alternative!r}")
    kl_s, texts_s = _order_side(smaller, "smaller")
    kl_l, texts_l = _order_side(larger, "larger")
    n_s, n_l = len(kl_s), len(kl_l)
    x = np.concatenate([kl_s, kl_l])
    rng = np.random.default_rng(seed)
    obs = float(kl_l.mean() - kl_s.mean())
    stats, exact = _split_stats(x, n_s, n_perm, rng)
    tol = 1e-12 * max(1.0, float(np.abs(x).max()))  # the observed split recomputed must count as >= itself
    if alternative == "two-sided":
        extreme = np.abs(stats) >= abs(obs) - tol
    else:
        extreme = stats >= obs - tol
    n_splits = math.comb(n_s + n_l, n_s)
    if exact:
        p = float(extreme.mean())
        min_p = (2.0 if alternative == "two-sided" and n_s == n_l else 1.0) / n_splits
    else:
        p = float((1 + extreme.sum()) / (1 + n_perm))
        min_p = 1.0 / (1 + n_perm)
    diff_boot = _two_level_means(kl_l, texts_l, n_boot, rng) - _two_level_means(kl_s, texts_s, n_boot, rng)
    lo, hi = np.quantile(diff_boot, [(1 - level) / 2, (1 + level) / 2])
    out = {
        "diff": obs,
        "lo": float(lo),
        "hi": float(hi),
        "p_value": p,
        "min_p": float(min_p),
        "n_units": [n_s, n_l],
        "smaller": float(kl_s.mean()),
        "larger": float(kl_l.mean()),
        "test": f"permutation over pairs ({'exact' if exact else 'drawn'})",
        "unit": "pairs of runs",
        "alternative": alternative,
        "n_splits": n_splits,
    }
    return {**out, **_verdict(out, p, min_p)}


def paired_order_test(
    smaller: Sequence[float],
    larger: Sequence[float],
    *,
    n_perm: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
    n_boot: int = 2000,
) -> dict:
    """Returns whether smaller[i] < larger[i] holds on average when each unit (a run) gives both values.

    Null: within each unit the two values are exchangeable. Statistic: mean(larger - smaller); sign-flip test
    over the units: all 2^n sign patterns when 2^n <= 1e5 (p = #{patterns with stat >= observed} / 2^n,
    min_p = 1 / 2^n), else n_perm drawn patterns ((1 + #) / (1 + n_perm)). Interval: percentile bootstrap of
    the mean difference over units. Returns the keys of order_test (unit "runs (paired)").
    """
    check_boot(n_boot, level)
    a, b = np.asarray(smaller, dtype=np.float64), np.asarray(larger, dtype=np.float64)
    if (
        a.ndim != 1
        or a.shape != b.shape
        or len(a) == 0
        or not (np.isfinite(a).all() and np.isfinite(b).all())
    ):
        raise ValueError(
            f"smaller and larger must be two finite lists of one value per unit, got {a.shape}, {b.shape}"
        )
    d, n = b - a, len(a)
    rng = np.random.default_rng(seed)
    exact = 2**n <= 100_000
    if exact:
        signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)  # (2^n, n) every pattern
    else:
        signs = rng.choice([-1, 1], size=(n_perm, n))
    stats = signs @ d / n
    obs = float(d.mean())
    extreme = stats >= obs - 1e-12 * max(1.0, float(np.abs(d).max()))
    p = float(extreme.mean()) if exact else float((1 + extreme.sum()) / (1 + n_perm))
    min_p = 1.0 / 2**n if exact else 1.0 / (1 + n_perm)
    boot = d[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    out = {
        "diff": obs, "lo": float(lo), "hi": float(hi), "p_value": p, "min_p": float(min_p), "n_units": [n, n],
        "smaller": float(a.mean()), "larger": float(b.mean()),
        "test": f"sign flip within runs ({'exact' if exact else 'drawn'})", "unit": "runs (paired)",
        "alternative": "less", "n_splits": 2**n,
    }  # fmt: skip
    return {**out, **_verdict(out, p, min_p)}


def _verdict(res: dict, p: float, min_p: float, adjusted: str = "") -> dict:
    """Returns {holds, reason} for an ordering result at ALPHA, with p (and min_p) possibly Holm-adjusted."""
    n_s, n_l = res["n_units"]
    if min_p >= ALPHA:
        design = f"smallest reachable {adjusted}p {min_p:.3g} with {n_s} vs {n_l} units"
        reason = f"not testable at this design ({design})"
    elif not res["diff"] > 0:
        reason = f"estimates order the other way (smaller {res['smaller']:.4g} >= larger {res['larger']:.4g})"
    elif p >= ALPHA:
        reason = f"{adjusted}p = {p:.3g} >= {ALPHA}"
    else:
        return {"holds": True, "reason": None}
    return {"holds": False, "reason": reason}


def holm(p_values: Sequence[float]) -> list[float]:
    """Returns Holm step-down adjusted p-values, in the input order: for the k-th smallest of m,
    max over j <= k of (m - j + 1) p_(j), capped at 1 (so they are monotone in p)."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or not (np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()):
        raise ValueError(f"p_values must be a flat list of numbers in [0, 1], got {p_values!r:.80}")
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj
    return out.tolist()


def order_family(smaller: Sequence, larger_by_name: Mapping[str, Sequence], **kw) -> dict[str, dict]:
    """Returns {name: order_test(smaller, larger, **kw)} for a family of comparisons, Holm-corrected.

    The family is e.g. every larger size against the same seed pairs. Each result gains p_holm (Holm over the
    family), family_size and min_p_holm (the smallest adjusted p the design can give: the most significant
    comparison is multiplied by the family size); holds and reason are recomputed with p_holm < 0.05.
    """
    if not isinstance(larger_by_name, Mapping) or len(larger_by_name) == 0:
        raise ValueError("larger_by_name must be a non-empty {name: pair KLs or records} mapping")
    res = {name: order_test(smaller, larger, **kw) for name, larger in larger_by_name.items()}
    p_holm = holm([r["p_value"] for r in res.values()])
    m = len(res)
    floor = m * min(r["min_p"] for r in res.values())
    for r, ph in zip(res.values(), p_holm, strict=True):
        min_ph = min(1.0, max(r["min_p"], floor))
        r.update(p_holm=ph, family_size=m, min_p_holm=min_ph, **_verdict(r, ph, min_ph, "Holm-adjusted "))
    return res
