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


def test_default_consecutive_steps_and_nats_only(trajectories):
    rows = ta.comparison_table(trajectories[:1])
    assert [(r["step_a"], r["step_b"]) for r in rows] == [(0, 1000), (2000, 3000), (4000, 5000)]  # 10/50/90%
    assert rows[0]["kl_bits_per_byte"] is None


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
