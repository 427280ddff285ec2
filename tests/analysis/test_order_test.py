"""order_test / order_family / holm: pairs of runs as the unit, against enumeration and hand computation.

Null of order_test: every pair's KL comes from one distribution, whichever side it sits on.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from trajlab.analysis.order import holm, order_family, order_test


def brute_force_p(small: list[float], large: list[float]) -> float:
    """Share of all splits of the pooled KLs into sides of the same sizes whose diff is >= the observed."""
    x = np.array(small + large)
    obs = np.mean(large) - np.mean(small)
    splits = list(itertools.combinations(range(len(x)), len(small)))
    hits = 0
    for s in splits:
        rest = [i for i in range(len(x)) if i not in s]
        hits += x[rest].mean() - x[list(s)].mean() >= obs - 1e-12
    return hits / len(splits)


@pytest.mark.parametrize(
    ("small", "large"),
    [
        ([0.17, 0.24, 0.20], [0.30, 0.072]),  # the doc's case: one size pair below all seed pairs
        ([0.2, 0.25, 0.22, 0.31], [0.28, 0.5, 0.45, 0.6, 0.26]),
        ([1.0, 1.0, 2.0], [1.0, 2.0, 2.0]),  # ties: the observed split and its equals all count
    ],
)
def test_exact_p_equals_enumeration(small, large):
    out = order_test(small, large, n_boot=200)
    assert out["p_value"] == pytest.approx(brute_force_p(small, large))
    assert out["min_p"] == pytest.approx(1 / math.comb(len(small) + len(large), len(small)))
    assert out["test"] == "permutation over pairs (exact)" and out["unit"] == "pairs of runs"
    assert out["n_units"] == [len(small), len(large)]
    assert out["diff"] == pytest.approx(np.mean(large) - np.mean(small))
    assert out["smaller"] == pytest.approx(np.mean(small)) and out["larger"] == pytest.approx(np.mean(large))


def test_doc_case_is_not_testable():
    out = order_test([0.171, 0.243, 0.2], [0.5, 0.072])  # sizes above seeds on average, one pair below all
    assert out["diff"] > 0 and out["min_p"] == pytest.approx(0.1) and not out["holds"]
    assert out["p_value"] == pytest.approx(brute_force_p([0.171, 0.243, 0.2], [0.5, 0.072]))
    assert out["reason"] == "not testable at this design (smallest reachable p 0.1 with 3 vs 2 units)"


def test_reasons_and_holds():
    clear = order_test([0.1, 0.12, 0.11, 0.13], [0.5, 0.6, 0.55, 0.7])
    assert clear["holds"] and clear["reason"] is None and clear["p_value"] == pytest.approx(1 / 70)
    other = order_test([0.5, 0.6, 0.55, 0.7], [0.1, 0.12, 0.11, 0.13])
    assert not other["holds"] and other["reason"].startswith("estimates order the other way")
    weak = order_test([0.1, 0.3, 0.2, 0.25], [0.15, 0.35, 0.22, 0.3])
    assert weak["diff"] > 0 and not weak["holds"]
    assert weak["reason"] == f"p = {weak['p_value']:.3g} >= 0.05"


def test_drawn_splits_beyond_the_enumeration_limit():
    rng = np.random.default_rng(0)
    small, large = list(rng.normal(1.0, 0.2, 10)), list(rng.normal(1.3, 0.2, 10))  # C(20, 10) = 184756
    out = order_test(small, large, n_perm=4000, n_boot=200, seed=3)
    assert out["test"] == "permutation over pairs (drawn)" and out["min_p"] == pytest.approx(1 / 4001)
    assert out["n_splits"] == math.comb(20, 10)
    hits = round(out["p_value"] * 4001) - 1
    assert out["p_value"] == pytest.approx((1 + hits) / 4001)  # of the (1 + #) / (1 + n) form
    # the drawn p agrees with the exact one computed by the means of all splits (up to draw noise)
    x = np.array(small + large)
    s = np.array([x[list(c)].sum() for c in itertools.combinations(range(20), 10)])
    exact = np.mean((x.sum() - s) / 10 - s / 10 >= out["diff"] - 1e-12)
    assert abs(out["p_value"] - exact) < 4 * np.sqrt(exact * (1 - exact) / 4000) + 1 / 4001


def test_two_sided_counts_both_tails():
    small, large = [0.2, 0.25, 0.22, 0.31], [0.28, 0.5, 0.45, 0.6]
    out = order_test(small, large, alternative="two-sided", n_boot=100)
    x, obs = np.array(small + large), np.mean(large) - np.mean(small)
    st = [np.delete(x, c).mean() - x[list(c)].mean() for c in itertools.combinations(range(8), 4)]
    assert out["p_value"] == pytest.approx(np.mean(np.abs(st) >= abs(obs) - 1e-12))
    assert out["min_p"] == pytest.approx(2 / 70)  # each split's mirror image is as extreme


def test_records_with_texts():
    rng = np.random.default_rng(1)
    d = [rng.normal(0, s, 300) for s in (0.6, 0.65, 0.7, 1.0, 1.1, 1.05)]
    factor = 1 / (900 * np.log(2))
    recs = [{"d": x, "factor": factor} for x in d]
    out = order_test(recs[:3], recs[3:], n_boot=500, seed=2)
    kls = [x.var() / 2 * factor for x in d]
    assert out["diff"] == pytest.approx(np.mean(kls[3:]) - np.mean(kls[:3]))
    assert out["p_value"] == pytest.approx(brute_force_p(kls[:3], kls[3:]))
    # given KLs that match are used; the interval gains the text level: wider than pairs alone
    with_kl = order_test(
        [{**r, "kl": k} for r, k in zip(recs[:3], kls[:3], strict=True)], recs[3:], n_boot=500
    )
    assert with_kl["diff"] == pytest.approx(out["diff"])
    pairs_only = order_test(kls[:3], kls[3:], n_boot=500, seed=2)
    assert out["hi"] - out["lo"] > pairs_only["hi"] - pairs_only["lo"]
    assert out["lo"] < out["diff"] < out["hi"]


def test_interval_of_constant_sides_is_a_point():
    out = order_test([0.2, 0.2, 0.2], [0.5, 0.5], n_boot=300)
    assert out["lo"] == pytest.approx(0.3) and out["hi"] == pytest.approx(0.3)


def test_bad_input():
    with pytest.raises(ValueError, match="smaller must be a non-empty sequence"):
        order_test([], [1.0])
    with pytest.raises(ValueError, match=r"larger\[0\] needs a 'kl' or a 'd'"):
        order_test([1.0], [{"factor": 1.0}])
    with pytest.raises(ValueError, match="pass matching d and kl"):
        order_test([{"d": np.arange(5.0), "kl": 99.0}], [1.0])
    with pytest.raises(ValueError, match="alternative must be one of less, two-sided"):
        order_test([1.0], [2.0], alternative="greater")
    with pytest.raises(ValueError, match="n_perm must be >= 1"):
        order_test([1.0], [2.0], n_perm=0)
    with pytest.raises(ValueError, match="NaN or inf"):
        order_test([float("nan")], [2.0])


def test_holm_against_hand_computation():
    # m = 4; sorted 0.01, 0.03, 0.04, 0.2 -> 4*0.01 = 0.04, 3*0.03 = 0.09, max(0.09, 2*0.04) = 0.09, 0.2
    assert holm([0.04, 0.01, 0.2, 0.03]) == pytest.approx([0.09, 0.04, 0.2, 0.09])
    assert holm([0.5, 0.4]) == pytest.approx([0.8, 0.8])  # 2*0.4 = 0.8; then max(0.8, 0.5)
    assert holm([0.3, 0.6, 0.9]) == pytest.approx([0.9, 1.0, 1.0])  # capped at 1
    assert holm([]) == []
    with pytest.raises(ValueError, match="p_values must be"):
        holm([0.1, 1.5])


def test_order_family_applies_holm():
    seeds = [0.10, 0.12, 0.11, 0.13]
    sizes = {
        "micro": [0.5, 0.6, 0.55, 0.7],  # p = 1/70
        "small": [0.11, 0.6, 0.55, 0.7],  # p = 4/70: the 0.11 may swap with 0.11, 0.12 or 0.13
        "tiny": [0.09, 0.1, 0.14, 0.12],
    }
    fam = order_family(seeds, sizes, n_boot=100)
    raw = {k: order_test(seeds, v, n_boot=100)["p_value"] for k, v in sizes.items()}
    want = dict(zip(raw, holm(list(raw.values())), strict=True))
    for name, r in fam.items():
        assert r["p_holm"] == pytest.approx(want[name]) and r["p_value"] == pytest.approx(raw[name])
        assert r["family_size"] == 3 and r["min_p_holm"] == pytest.approx(3 / 70)
        assert r["holds"] == (r["diff"] > 0 and r["p_holm"] < 0.05)
    assert fam["micro"]["holds"] and fam["micro"]["p_holm"] == pytest.approx(3 / 70)
    assert not fam["tiny"]["holds"]
    # three comparisons of 3 vs 3 pairs: min p 1/20, so the family cannot reach 0.05
    small3 = order_family(seeds[:3], {k: v[:3] for k, v in sizes.items()}, n_boot=100)
    assert all(r["reason"].startswith("not testable") for r in small3.values())
    with pytest.raises(ValueError, match="larger_by_name"):
        order_family(seeds, {})


def test_paired_order_test_is_an_exact_sign_flip_over_runs():
    """Each run gives both values (Early and Later, Q8_0 and Q4_0 of one model): sign flips within runs."""
    import itertools

    from trajlab.analysis.order import paired_order_test

    rng = np.random.default_rng(3)
    small, large = rng.normal(1, 0.2, 6), rng.normal(1.3, 0.2, 6)
    res = paired_order_test(small, large)
    d = large - small
    count = sum(np.dot(s, d) / 6 >= d.mean() - 1e-12 for s in itertools.product([-1, 1], repeat=6))
    assert res["p_value"] == pytest.approx(count / 64) and res["min_p"] == pytest.approx(1 / 64)
    assert res["holds"] == (res["p_value"] < 0.05 and d.mean() > 0)
    assert not paired_order_test(small[:4], large[:4])["holds"]  # 1/16 > 0.05: not testable
    with pytest.raises(ValueError, match="one value per unit"):
        paired_order_test([1.0, 2.0], [1.0])
