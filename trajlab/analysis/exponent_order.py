"""Is one median diffusion exponent below another? Blocks of start points, or runs, as the unit.

Local exponents c(t0) from neighbouring start points share most of their fit window, so they are correlated
(lag-1 ~0.5 in the toy): 43 start points hold only ~5 independent windows. Treating the starts as independent
(an i.i.d. bootstrap over them) rejects 11-13% at nominal 5% on two walks of one process, and a moving-block
bootstrap p still 9-12% (few blocks: its spread is that of ~5 values, read as if it were a normal one). So the
p-value comes from a randomisation over whole blocks of `block` consecutive starts (non-overlapping, the
window's length) or over runs, exact when the arrangements can be enumerated; the interval from a moving-block
bootstrap (runs first when several runs are given).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trajlab.analysis.order import ALPHA, MAX_EXACT_SPLITS, split_masks
from trajlab.analysis.resample import check_boot, moving_block_indices

_CHUNK_ELEMENTS = 1 << 21  # arrangements x values per block of the randomisation


def _exponents(fits: np.ndarray | None, name: str) -> dict[int, float]:
    """Returns {t0: c} of the finite exponents of one run's fits, in t0 order."""
    if fits is None:
        raise ValueError(f"{name} is None; pass diffusion_exponents output (or give runs_* for that side)")
    return {int(t): float(c) for t, c in sorted(zip(fits["t0"], fits["c"], strict=True)) if np.isfinite(c)}


def _signflip(a: np.ndarray, b: np.ndarray, block: int, n_perm: int, rng: np.random.Generator) -> tuple:
    """Returns (stats, exact): median(b) - median(a) after swapping a and b within each flipped block.

    All 2^k flip patterns of the k blocks (identity included) when 2^k <= MAX_EXACT_SPLITS, else n_perm drawn.
    """
    blk = np.arange(len(a)) // block  # non-overlapping blocks of consecutive starts
    k = int(blk[-1]) + 1
    exact = 2**k <= MAX_EXACT_SPLITS
    if exact:
        flips = ((np.arange(2**k)[:, None] >> np.arange(k)) & 1).astype(bool)
    else:
        flips = rng.random((n_perm, k)) < 0.5
    out = np.empty(len(flips))
    step = max(1, _CHUNK_ELEMENTS // len(a))
    for lo in range(0, len(flips), step):
        sw = flips[lo : lo + step][:, blk]  # (m, n)
        out[lo : lo + step] = np.median(np.where(sw, a, b), axis=1) - np.median(np.where(sw, b, a), axis=1)
    return out, exact


def _unit_permutation(units_small: list, units_large: list, n_perm: int, rng: np.random.Generator) -> tuple:
    """Returns (stats, exact): median(pooled large) - median(pooled small) over reassigned whole units."""
    units = units_small + units_large
    values = np.concatenate(units)
    unit_of = np.repeat(np.arange(len(units)), [len(u) for u in units])
    small, exact = split_masks(len(units), len(units_small), n_perm, rng)  # (m, units) True: small side
    out = np.empty(len(small))
    step = max(1, _CHUNK_ELEMENTS // len(values))
    for lo in range(0, len(small), step):
        sm = small[lo : lo + step][:, unit_of]  # (m, n)
        out[lo : lo + step] = np.nanmedian(np.where(sm, np.nan, values), axis=1) - np.nanmedian(
            np.where(sm, values, np.nan), axis=1
        )
    return out, exact


def _pooled_block_medians(
    runs: list[np.ndarray], block: int, n_boot: int, rng: np.random.Generator, resample_runs: bool
) -> np.ndarray:
    """Returns (n_boot,) medians of pooled c: runs drawn with replacement if resample_runs, blocks within."""
    pools = [c[moving_block_indices(len(c), block, n_boot, rng)] for c in runs]  # (n_boot, n_r) each
    n_r = len(runs)
    if resample_runs:  # each drawn run takes a random member of its pool: a fresh block resample
        pick = rng.integers(0, n_r, size=(n_boot, n_r))
        member = rng.integers(0, n_boot, size=(n_boot, n_r))
    else:
        pick = np.tile(np.arange(n_r), (n_boot, 1))
        member = np.tile(np.arange(n_boot)[:, None], (1, n_r))
    out = np.empty(n_boot)
    for b in range(n_boot):
        out[b] = np.median(np.concatenate([pools[r][m] for r, m in zip(pick[b], member[b], strict=True)]))
    return out


def bootstrap_exponent_order(
    fits_small: np.ndarray | None,
    fits_large: np.ndarray | None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    *,
    block: int | None = None,
    runs_small: Sequence[np.ndarray] | None = None,
    runs_large: Sequence[np.ndarray] | None = None,
    n_perm: int = 10_000,
) -> dict:
    """Returns how surely the median exponent of the small side is below that of the large (e.g. c_LL < c_W).

    One run per side ("moving blocks"): when the fits share >= 3 start steps, only those are used (paired);
    the test swaps the two sides within whole blocks of `block` consecutive starts (all 2^k patterns of the
    k blocks: exact; min_p = 2^-k); unpaired, whole blocks are permuted between the sides. Several runs
    ("runs": runs_small / runs_large): whole runs are permuted between the sides (runs are the unit; 1 vs 1
    runs cannot test anything). Null: the two sides' exponents come from one process. The statistic is the
    median over the pooled c of the large side minus that of the small side. p = #{arrangements with stat >=
    observed} / #arrangements (exact, observed included) or (1 + #{drawn ...}) / (1 + n_perm).
    Interval: percentile moving-block bootstrap (blocks of `block` starts; paired starts jointly), runs drawn
    with replacement first when runs are given.

    Args:
        fits_small, fits_large: diffusion_exponents outputs (fields t0, c, n_lags) of one run each; ignored
            for a side whose runs_* is given (put that run among the runs).
        n_boot, seed, level: bootstrap resamples, seed of resamples and drawn arrangements, interval level.
        block: start points per block; None: the fit window (the largest n_lags of the fits).
        runs_small, runs_large: optional lists of fits, one per run of that side.
        n_perm: drawn arrangements when there are more than 1e5.

    Returns:
        dict(diff = median c(large) - median c(small), lo, hi, p_value, min_p, holds (diff > 0 and p < 0.05),
        reason (None when it holds), small, large (medians), n_starts (start points of the smaller side),
        n_effective (non-overlapping windows: ceil(starts / block) summed over a side's runs, the smaller
        side), n_units ([small, large] units permuted: blocks or runs), unit, test, block, method ("moving
        blocks" or "runs"), paired, n_boot). NaN statistics with n_starts 0 when a side has no fits.
    """
    check_boot(n_boot, level)
    if n_perm < 1:
        raise ValueError(f"n_perm must be >= 1, got {n_perm}")
    by_runs = runs_small is not None or runs_large is not None
    sides, names = [], []
    for runs, fits, side in ((runs_small, fits_small, "small"), (runs_large, fits_large, "large")):
        if runs is not None and len(runs) == 0:
            raise ValueError(f"runs_{side} must hold at least one run's fits, got an empty list")
        sides.append(list(runs) if runs is not None else [fits])
        names.append(f"runs_{side}" if runs is not None else f"fits_{side}")
    maps = [[_exponents(f, names[k]) for f in side] for k, side in enumerate(sides)]
    if block is None:
        block = max([1, *(int(np.max(f["n_lags"])) for side in sides for f in side if len(f))])
    if int(block) < 1:
        raise ValueError(f"block must be >= 1 start points, got {block}")
    block = int(block)
    common = [] if by_runs else sorted(set(maps[0][0]) & set(maps[1][0]))
    paired = len(common) >= 3
    if paired:
        cs = [[np.array([m[0][t] for t in common])] for m in maps]
    else:
        cs = [[np.array(list(m.values())) for m in side if m] for side in maps]
    base = {
        "block": block,
        "method": "runs" if by_runs else "moving blocks",
        "paired": paired,
        "n_boot": n_boot,
    }
    nan = float("nan")
    if not cs[0] or not cs[1]:
        empty = {"holds": False, "reason": "no fits on one side", "n_starts": 0, "n_effective": 0}
        empty.update(n_units=[0, 0], unit=None, test=None, **base)
        return {**dict.fromkeys(("diff", "lo", "hi", "p_value", "min_p", "small", "large"), nan), **empty}
    small, large = (float(np.median(np.concatenate(side))) for side in cs)
    obs = large - small
    rng = np.random.default_rng(seed)
    if paired:
        stats, exact = _signflip(cs[0][0], cs[1][0], block, n_perm, rng)
        n_units = [-(-len(common) // block)] * 2
        unit, test = "blocks of start points", "block sign-flip"
    elif by_runs:
        stats, exact = _unit_permutation(cs[0], cs[1], n_perm, rng)
        n_units, unit, test = [len(cs[0]), len(cs[1])], "runs", "run permutation"
    else:
        blocks = [[c[k : k + block] for k in range(0, len(c), block)] for c in (cs[0][0], cs[1][0])]
        stats, exact = _unit_permutation(blocks[0], blocks[1], n_perm, rng)
        n_units, unit, test = [len(blocks[0]), len(blocks[1])], "blocks of start points", "block permutation"
    extreme = int(np.sum(stats >= obs - 1e-12 * max(1.0, abs(obs))))
    if exact:
        p, min_p = extreme / len(stats), 1.0 / len(stats)
    else:
        p, min_p = (1 + extreme) / (1 + n_perm), 1.0 / (1 + n_perm)
    if paired:
        idx = moving_block_indices(len(common), block, n_boot, rng)
        diff_boot = np.median(cs[1][0][idx], axis=1) - np.median(cs[0][0][idx], axis=1)
    else:
        diff_boot = _pooled_block_medians(cs[1], block, n_boot, rng, by_runs) - _pooled_block_medians(
            cs[0], block, n_boot, rng, by_runs
        )
    lo, hi = np.quantile(diff_boot, [(1 - level) / 2, (1 + level) / 2])
    if min_p >= ALPHA:
        design = f"{n_units[0]} vs {n_units[1]} units"
        reason = f"not testable at this design (smallest reachable p {min_p:.3g} with {design})"
    elif not obs > 0:
        reason = f"estimates order the other way (small {small:.4g} >= large {large:.4g})"
    elif p >= ALPHA:
        reason = f"p = {p:.3g} >= {ALPHA}"
    else:
        reason = None
    return {
        "diff": obs,
        "lo": float(lo),
        "hi": float(hi),
        "p_value": float(p),
        "min_p": float(min_p),
        "holds": reason is None,
        "reason": reason,
        "small": small,
        "large": large,
        "n_starts": int(min(sum(len(c) for c in side) for side in cs)),
        "n_effective": int(min(sum(-(-len(c) // block) for c in side) for side in cs)),
        "n_units": n_units,
        "unit": unit,
        "test": f"{test} ({'exact' if exact else 'drawn'})",
        **base,
    }
