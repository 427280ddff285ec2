"""thread_test's two nulls: "layer order matters" (shuffled layers) and "beyond a random walk across layers".

Brute force: every score is recomputed from per-snapshot KL matrices written with np.var, over all layer
orders (itertools.permutations) or all sign patterns (itertools.product). Calibration (40 seeded replicates
each, 3 snapshots, 8 layer states, 256 texts): the walk test calls at most 10% of random-walk layer stacks
more thread-like at the 5% level, finds >= 80% of layers on a line, and never calls i.i.d. layers more
thread-like; the order test passes every random walk (a residual stream has an order by construction).
"""

from __future__ import annotations

from itertools import permutations, product

import numpy as np
import pytest

from trajlab import analysis as ta
from trajlab.analysis import simulate_walks as sw

SNAPSHOTS, LAYERS, N, REPS = 3, 8, 256, 40


def kl_direct(rows: np.ndarray) -> np.ndarray:
    """(M, M) KL = Var(l_i - l_j) / 2 in nats per text, from every pair's difference."""
    return np.var(rows[:, None, :] - rows[None, :, :], axis=2) / 2


def score(kls: np.ndarray, order: tuple[int, ...]) -> float:
    """Thread score of the layer order: mean adjacent KL / mean non-adjacent KL, pooled over snapshots."""
    k = kls[:, list(order)][:, :, list(order)]
    m = k.shape[1]
    adj = np.mean([k[:, i, i + 1] for i in range(m - 1)])
    non = np.mean([k[:, i, j] for i in range(m) for j in range(i + 2, m)])
    return float(adj / non)


def signed_layers(ll: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """Each snapshot's layer path rebuilt from its double-centred increments times the signs."""
    out = []
    for rows in ll:
        q = rows - rows.mean(axis=1, keepdims=True)
        q -= q.mean(axis=0)
        inc = np.diff(q, axis=0) * signs[:, None]
        out.append(np.vstack([np.zeros(rows.shape[1]), np.cumsum(inc, axis=0)]))
    return np.stack(out)


def walk_brute_force(ll: np.ndarray) -> tuple[float, float]:
    """(share of sign patterns scoring <= observed, share >=) over all 2^(L-1) patterns with s_0 = +1."""
    m = ll.shape[1]
    ident = tuple(range(m))
    obs = score(np.stack([kl_direct(s) for s in ll]), ident)
    null = np.array(
        [
            score(np.stack([kl_direct(s) for s in signed_layers(ll, np.array((1.0, *rest)))]), ident)
            for rest in product((1.0, -1.0), repeat=m - 2)
        ]
    )
    return float(np.mean(null <= obs * (1 + 1e-9))), float(np.mean(null >= obs * (1 - 1e-9)))


def cases(m: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [
        sw.random_walk_layers(rng, SNAPSHOTS, m, 64),
        sw.line_layers(rng, SNAPSHOTS, m, 64),
        sw.iid_layers(rng, SNAPSHOTS, m, 64),
    ]


@pytest.mark.parametrize("m", [4, 6, 7])
def test_order_test_is_exact_over_all_layer_orders(m):
    for ll in cases(m):
        out = ta.thread_test(ll, n_null=10)  # n_null does not matter: (L+1)! <= 10^4 is always enumerated
        kls = np.stack([kl_direct(s) for s in ll])
        obs = score(kls, tuple(range(m)))
        brute = np.array([score(kls, p) for p in permutations(range(m))])
        assert out["exact"] and out["n_perms"] == len(brute)
        assert out["p_value"] == out["order_p"] == pytest.approx(np.mean(brute <= obs * (1 + 1e-9)))
        assert out["min_p"] == pytest.approx(2 / len(brute))
        assert out["thread_score"] == pytest.approx(obs, rel=1e-9)
        assert out["verdict_order"] == (
            "layer order matters" if out["p_value"] < 0.05 else "layer order not shown to matter"
        )


def test_order_test_draws_when_orders_are_too_many():
    ll = sw.line_layers(np.random.default_rng(0), SNAPSHOTS, 8, 64)  # 8! = 40320 orders
    out = ta.thread_test(ll, n_null=500, seed=0)
    assert not out["exact"] and out["n_perms"] == 2000  # at least 2000 drawn
    assert out["p_value"] == pytest.approx(1 / 2001) and out["min_p"] == pytest.approx(1 / 2001)
    assert ta.thread_test(ll, n_null=3000, seed=0)["n_perms"] == 3000
    assert ta.thread_test(ll, n_null=500, seed=0) == out


@pytest.mark.parametrize("m", [5, 7])
def test_walk_test_is_exact_over_all_sign_patterns(m):
    for ll in cases(m):
        out = ta.thread_test(ll)
        less, more = walk_brute_force(ll)
        assert out["walk_exact"] and out["walk_n"] == 2 ** (m - 2)
        assert out["walk_p_less"] == pytest.approx(less) and out["walk_p_more"] == pytest.approx(more)
        assert out["walk_min_p"] == pytest.approx(1 / 2 ** (m - 2))


def test_walk_test_draws_when_sign_patterns_are_too_many():
    ll = sw.random_walk_layers(np.random.default_rng(1), 2, 16, 64)  # 2^14 patterns > 10^4
    out = ta.thread_test(ll, n_null=300, seed=2, n_walk=200)
    assert not out["walk_exact"] and out["walk_n"] == 200 and out["walk_min_p"] == pytest.approx(1 / 201)
    # the drawn null, recomputed directly from the same generator stream
    rng = np.random.default_rng(2)
    rng.random((2000, 16))  # the drawn layer orders come first
    signs = rng.choice((-1.0, 1.0), size=(200, 15))
    ident = tuple(range(16))
    obs = score(np.stack([kl_direct(s) for s in ll]), ident)
    null = np.array([score(np.stack([kl_direct(s) for s in signed_layers(ll, sg)]), ident) for sg in signs])
    assert out["walk_p_less"] == pytest.approx((1 + np.count_nonzero(null <= obs * (1 + 1e-9))) / 201)
    assert out["walk_p_more"] == pytest.approx((1 + np.count_nonzero(null >= obs * (1 - 1e-9))) / 201)
    assert out["walk_null_mean"] == pytest.approx(null.mean())


def test_few_layers_say_which_test_cannot_reach_five_percent():
    out = ta.thread_test(sw.line_layers(np.random.default_rng(0), SNAPSHOTS, 5, 64))
    assert out["walk_min_p"] == pytest.approx(1 / 8) and out["min_p"] == pytest.approx(2 / 120)
    assert "with 4 layer transitions the smallest reachable p is 0.12" in out["note"]
    assert out["verdict_walk"] == "not distinguishable from a random walk across layers"


def run(make, reps: int = REPS) -> list[dict]:
    return [
        ta.thread_test(make(np.random.default_rng(3000 + i), SNAPSHOTS, LAYERS, N), seed=i)
        for i in range(reps)
    ]


def share(results: list[dict], key: str, value: str) -> float:
    return float(np.mean([r[key] == value for r in results]))


MORE = "more thread-like than a random walk across layers"


def test_random_walk_layers_pass_the_order_test_but_not_the_walk_test():
    results = run(sw.random_walk_layers)
    assert share(results, "verdict_order", "layer order matters") == 1.0
    assert share(results, "verdict_walk", MORE) <= 0.10


def test_layers_on_a_line_are_more_thread_like_than_a_random_walk():
    results = run(sw.line_layers)
    assert share(results, "verdict_walk", MORE) >= 0.8
    assert all(r["thread_score"] < r["walk_null_q05"] for r in results if r["verdict_walk"] == MORE)


def test_iid_layers_are_never_called_thread_like():
    results = run(sw.iid_layers)
    assert share(results, "verdict_walk", MORE) == 0.0
    assert share(results, "verdict_walk", "less thread-like than a random walk across layers") >= 0.8
    assert share(results, "verdict_order", "layer order matters") <= 0.10
