"""Comparison table (Table-1 style) and fine-tuned vs base (Table-2 style)."""

from __future__ import annotations

import numpy as np
import pytest

from trajlab import analysis as ta

N = 300
RNG = np.random.default_rng(0)
DIFFICULTY = -400 + 30 * RNG.normal(size=N)
N_BYTES = RNG.integers(300, 1000, size=N)


def walk(k: int, seed: int) -> np.ndarray:
    return DIFFICULTY + np.cumsum(np.random.default_rng(seed).normal(size=(k, N)), axis=0)


def kl(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.var(a - b) / 2)


@pytest.fixture(scope="module")
def trajectories():
    return [
        ta.Trajectory("small-s1", np.arange(6) * 1000, walk(6, 1), {"size": "small", "seed": 1}),
        ("small-s2", np.arange(6) * 1000, walk(6, 2), {"preset": "small", "seed": 2}),
        ta.Trajectory("big-s1", np.arange(4) * 1000, walk(4, 3), {"size": "big", "seed": 1}),
        ta.Trajectory(
            "ft",
            np.array([0, 10, 20]),
            walk(3, 4),
            {"size": "small", "seed": 1, "parent": {"run": "small-s1", "step": 3000}},
        ),
        ta.Trajectory("orphan", np.array([0, 10]), walk(2, 5), {"parent": {"run": "gone", "step": 0}}),
    ]


def test_comparison_rows_and_values(trajectories):
    rows = ta.comparison_table(trajectories, N_BYTES, at_steps=[1000, 5000])
    got = {(r["kind"], r["a"], r["step_a"], r["b"], r["step_b"]): r for r in rows}
    ll = {
        t[0] if isinstance(t, tuple) else t.name: (t[2] if isinstance(t, tuple) else t.ll)
        for t in trajectories
    }
    expected = {
        ("consecutive", "small-s1", 1000, "small-s1", 2000): kl(ll["small-s1"][1], ll["small-s1"][2]),
        ("consecutive", "small-s2", 1000, "small-s2", 2000): kl(ll["small-s2"][1], ll["small-s2"][2]),
        ("consecutive", "big-s1", 1000, "big-s1", 2000): kl(ll["big-s1"][1], ll["big-s1"][2]),
        ("seed", "small-s1", 5000, "small-s2", 5000): kl(ll["small-s1"][5], ll["small-s2"][5]),
        ("size", "small-s1", 3000, "big-s1", 3000): kl(ll["small-s1"][3], ll["big-s1"][3]),
        ("finetune", "ft", 20, "small-s1", 3000): kl(ll["ft"][2], ll["small-s1"][3]),
    }
    assert set(got) == set(expected)  # 5000 is the last step: no consecutive row; no orphan row
    to_bits = 1 / (N_BYTES.mean() * np.log(2))
    for key, value in expected.items():
        assert got[key]["kl_nats"] == pytest.approx(value, rel=1e-9)
        assert got[key]["kl_bits_per_byte"] == pytest.approx(value * to_bits, rel=1e-9)
        assert 0 < got[key]["se_nats"] < value


def test_default_consecutive_pairs_are_fixed_lag_after_warmup(trajectories):
    # no warmup_steps / max_steps in meta: the last step stands in for max_steps, nothing counts as warm-up;
    # lag = 1000 (>= 0.7% of 5000), targets round(5000 * 10/143, 50/143, 100/143) = 350, 1748, 3497
    notes: list[str] = []
    rows = ta.comparison_table(trajectories[:1], notes=notes)
    assert [(r["step_a"], r["step_b"], r["lag"]) for r in rows] == [
        (1000, 2000, 1000),
        (2000, 3000, 1000),
        (4000, 5000, 1000),
    ]
    assert rows[0]["kl_bits_per_byte"] is None and rows[0]["ci_lo_bits_per_byte"] is None
    assert any("max_steps unknown" in n for n in notes) and any("warmup_steps unknown" in n for n in notes)


def test_comparison_bad_input(trajectories):
    with pytest.raises(ValueError, match="unique"):
        ta.comparison_table([trajectories[0], trajectories[0]])
    with pytest.raises(ValueError, match="strictly increasing"):
        ta.comparison_table([("x", np.array([0, 0]), walk(2, 0), {})])
    with pytest.raises(ValueError, match="same N texts"):
        ta.comparison_table([trajectories[0], ("y", np.arange(2), walk(2, 0)[:, :10], {})])


def test_finetune_vs_base_all_random_pairs():
    ll = np.stack([walk(1, s)[0] for s in range(6)])
    out = ta.finetune_vs_base(ll, [(0, 1), (3, 2)], N_BYTES, n_random=1000)
    to_bits = 1 / (N_BYTES.mean() * np.log(2))
    pair = np.array([kl(ll[0], ll[1]), kl(ll[3], ll[2])]) * to_bits
    rand = np.array(
        [kl(ll[i], ll[j]) for i in range(6) for j in range(i + 1, 6) if (i, j) not in {(0, 1), (2, 3)}]
    )
    rand *= to_bits
    np.testing.assert_allclose(out["pair_kl"], pair, rtol=1e-9)
    assert out["pairs"] == pytest.approx(
        {"median": np.median(pair), "mean": pair.mean(), "sd": pair.std(ddof=1), "n": 2}
    )
    assert out["random"] == pytest.approx(
        {"median": np.median(rand), "mean": rand.mean(), "sd": rand.std(ddof=1), "n": 13}
    )
    assert out["median_ratio"] == pytest.approx(np.median(pair) / np.median(rand))


def test_finetune_vs_base_samples_distinct_unlisted_pairs():
    ll = np.stack([walk(1, s)[0] for s in range(10)])
    out = ta.finetune_vs_base(ll, [(1, 0), (4, 7)], n_random=20, seed=1)
    pairs = out["random_pairs"]
    assert pairs.shape == (20, 2) and (pairs[:, 0] < pairs[:, 1]).all()
    assert len({tuple(p) for p in pairs.tolist()}) == 20 and not {(0, 1), (4, 7)} & {
        tuple(p) for p in pairs.tolist()
    }
    rand = np.array([kl(ll[i], ll[j]) for i, j in pairs])
    assert out["random"]["mean"] == pytest.approx(rand.mean()) and out["random"]["n"] == 20


def test_finetune_vs_base_bad_input():
    ll = np.stack([walk(1, s)[0] for s in range(3)])
    with pytest.raises(ValueError, match="at least one"):
        ta.finetune_vs_base(ll, [])
    with pytest.raises(ValueError, match="row indices"):
        ta.finetune_vs_base(ll, [(0, 5)])
    with pytest.raises(ValueError, match="no random pairs"):
        ta.finetune_vs_base(ll[:2], [(0, 1)])


# --- the paper's comparisons: fixed-lag pairs, warm-up, lineage, domains, intervals

PYTHIA_STEPS = np.array([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, *range(1000, 143001, 1000)])


def test_fixed_lag_pairs_on_the_pythia_schedule():
    from trajlab.analysis.config import PAPER_LAG_FRACTION, PAPER_TARGET_FRACTIONS

    out = ta.fixed_lag_pairs(PYTHIA_STEPS, 143000, 1430, PAPER_LAG_FRACTION, PAPER_TARGET_FRACTIONS)
    assert out["lag"] == 1000 and out["notes"] == []
    assert out["pairs"] == [(10000, 10000, 11000), (50000, 50000, 51000), (100000, 100000, 101000)]


def test_fixed_lag_pairs_on_an_uneven_schedule():
    steps = np.array([0, 5, 10, 20, 40, 60, 65, 70, 100, 130, 135, 160, 200])
    out = ta.fixed_lag_pairs(steps, 200, 30, 0.025, (0.02, 0.5, 0.7))  # lag >= 5; targets 4, 100, 140
    assert out["lag"] == 5
    # 4: the first post-warm-up snapshot with a partner 5 later is 60 (40 has none); 100: 130; 140: none
    assert out["pairs"] == [(4, 60, 65), (100, 130, 135)]
    assert len(out["notes"]) == 1 and "step 140" in out["notes"][0]
    no_warmup = ta.fixed_lag_pairs(steps, 200, 0, 0.025, (0.02, 0.5, 0.7))
    assert no_warmup["pairs"][0] == (4, 5, 10)  # warm-up snapshots are used only when warm-up is 0
    wide = ta.fixed_lag_pairs(steps, 200, 30, 0.14, (0.5,))  # spacing >= 28: 30 (100 -> 130, 130 -> 160)
    assert wide["lag"] == 30 and wide["pairs"] == [(100, 100, 130)]
    assert ta.fixed_lag_pairs(steps, 200, 150, 0.9, (0.5,))["lag"] is None


def test_comparison_table_uses_store_meta_for_lag_and_warmup():
    steps = np.array([0, 10, 20, 30, 40, 50, 60, 70, 75, 80, 90, 100])
    ll = walk(len(steps), 11)
    t = ta.Trajectory("run", steps, ll, {"warmup_steps": 35, "max_steps": 100})
    cfg = ta.AnalysisConfig(lag_fraction=0.05, target_fractions=(0.1, 0.7), n_boot=300, seed=5)
    rows = ta.comparison_table([t], N_BYTES, config=cfg)
    # lag = smallest spacing >= 5 after warm-up: 5 (70 -> 75); target 10 -> 70 (40..65 have no partner)
    assert [(r["step_a"], r["step_b"]) for r in rows] == [(70, 75)]
    r = rows[0]
    lo, hi = ta.bootstrap_kl(ll[7], ll[8], None, 300, 5, 0.95)[1:]
    assert (r["ci_lo_nats"], r["ci_hi_nats"]) == (lo, hi) and lo < r["kl_nats"] < hi
    to_bits = 1 / (N_BYTES.mean() * np.log(2))
    assert r["ci_hi_bits_per_byte"] == pytest.approx(hi * to_bits)
    assert r["kl_nats_per_token"] is None and r["beyond_checked_range"] is None


def test_lineage_pairs_and_random_pairs_with_different_roots():
    n_tok = np.full(N, 20)
    scoring = {"scoring": {"n_tokens": n_tok.tolist()}}
    base = ta.Trajectory(
        "base", np.arange(5) * 10, walk(5, 21), {"id": "A", "lineage": {"root": "A", "parent": None}}
    )
    ft = ta.Trajectory(
        "ft",
        np.array([0, 5]),
        walk(2, 22),
        {"id": "F", "lineage": {"root": "A", "parent": {"id": "A", "step": 30}}, **scoring},
    )
    other = ta.Trajectory(
        "other",
        np.arange(3),
        walk(3, 23) + 30 * np.random.default_rng(0).normal(size=N),
        {"id": "B", "lineage": {"root": "B", "parent": None}, **scoring},
    )
    rows = [r for r in ta.comparison_table([base, ft, other], at_steps=[]) if r["kind"] == "finetune"]
    assert [(r["a"], r["step_a"], r["b"], r["step_b"]) for r in rows] == [("ft", 5, "base", 30)]
    assert rows[0]["kl_nats"] == pytest.approx(kl(ft.ll[1], base.ll[3]))
    assert rows[0]["kl_nats_per_token"] == pytest.approx(rows[0]["kl_nats"] / 20)
    assert rows[0]["beyond_checked_range"] == (rows[0]["kl_nats"] / 20 > 1)
    # Table 2: finals of base (root A), ft (root A), other (root B) and the parent snapshot base@30 (no root)
    ll = np.stack([base.ll[-1], ft.ll[-1], other.ll[-1], base.ll[3]])
    out = ta.finetune_vs_base(ll, [(1, 3)], roots=["A", "A", "B", None], n_boot=200)
    assert sorted(map(tuple, out["random_pairs"].tolist())) == [(0, 2), (1, 2)]
    assert out["random"]["mean"] == pytest.approx((kl(ll[0], ll[2]) + kl(ll[1], ll[2])) / 2)
    order = out["order"]
    assert order["smaller"] == pytest.approx(kl(ll[1], ll[3])) and order["larger"] == pytest.approx(
        out["random"]["mean"]
    )
    assert order["p_value"] < 0.05 and order["lo"] > 0


def test_domain_split_is_the_law_of_total_variance():
    rng = np.random.default_rng(5)
    domains = np.array(["code"] * 100 + ["prose"] * 150 + ["bible"] * (N - 250))
    shift = np.select([domains == "code", domains == "prose"], [3.0, -1.0], 0.5)
    a = walk(1, 30)[0]
    b = a + shift + rng.normal(size=N) * np.where(domains == "code", 2.0, 0.5)
    out = ta.domain_split(a, b, domains)
    assert out["within"] + out["between"] == pytest.approx(out["total"], rel=1e-12)
    assert out["total"] == pytest.approx(kl(a, b), rel=1e-12)
    d = a - b
    groups = [d[domains == g] for g in ("code", "prose", "bible")]
    within = sum(len(x) * x.var() for x in groups) / N / 2
    between = sum(len(x) * (x.mean() - d.mean()) ** 2 for x in groups) / N / 2
    assert (out["within"], out["between"]) == pytest.approx((within, between), rel=1e-12)
    bits = ta.domain_split(a, b, domains, N_BYTES)
    assert bits["between"] == pytest.approx(between / (N_BYTES.mean() * np.log(2)), rel=1e-12)
    rows = ta.comparison_table(
        [("r", np.array([0, 1]), np.stack([a, b]), {})], N_BYTES, at_steps=[0], domains=domains
    )
    assert rows[0]["within_nats"] == pytest.approx(within) and rows[0]["between_nats"] == pytest.approx(
        between
    )
    with pytest.raises(ValueError, match="one domain per text"):
        ta.domain_split(a, b, domains[:10])


def test_roots_follow_analysed_parents():
    from trajlab.analysis.pairs import root_of

    metas = {
        "base": {"id": "A", "lineage": {"root": "A", "parent": None}},
        # a v1 fine-tune read through meta v2 defaults: lineage names itself, the old "parent" names the base
        "ft": {
            "id": "v1-f",
            "lineage": {"root": "v1-f", "parent": None},
            "parent": {"run": "base", "step": 3},
        },
        "ft2": {"id": "G", "lineage": {"root": "A", "parent": {"id": "F", "step": 1}}},  # parent not analysed
        "solo": {},
    }
    assert [root_of(n, metas) for n in metas] == ["A", "A", "A", "solo"]


def test_schedule_stand_ins_when_meta_lacks_them():
    from trajlab.analysis.pairs import resolve_schedule

    steps = np.array([0, 1, 2, 3, 6, 13, 26, 51, *range(100, 601, 100)])  # the toy's pythia:0.1 schedule
    assert resolve_schedule({"warmup_steps": 60, "max_steps": 600}, steps, 0.01)["notes"] == []
    sched = resolve_schedule({}, steps, 0.1)  # 10% of the last step assumed as warm-up
    assert (sched["max_steps"], sched["warmup_steps"], len(sched["notes"])) == (600, 60, 2)
    # after a 60-step warm-up the neighbouring spacings are 100: lag 100 (>= 4), pairs at 42, 210, 420 of 600
    out = ta.fixed_lag_pairs(steps, 600, 60, 1000 / 143000, (10 / 143, 50 / 143, 100 / 143))
    assert out["lag"] == 100 and [p[1:] for p in out["pairs"]] == [(100, 200), (300, 400), (500, 600)]
