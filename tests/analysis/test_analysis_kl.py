"""KL estimator: direct-formula parity, units, standard errors, exactness on enumerable models, cleaning."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest

from trajlab import analysis as ta


def direct_kl(ll: np.ndarray) -> np.ndarray:
    k = len(ll)
    return np.array([[np.var(ll[i] - ll[j]) / 2 for j in range(k)] for i in range(k)])


def direct_se(ll: np.ndarray) -> np.ndarray:
    k, n = ll.shape
    out = np.zeros((k, k))
    for i, j in itertools.product(range(k), repeat=2):
        d = ll[i] - ll[j]
        d = d - d.mean()
        out[i, j] = np.sqrt((np.mean(d**4) - np.mean(d**2) ** 2) / n) / 2
    return out


@pytest.fixture
def ll():
    rng = np.random.default_rng(0)
    # 12 snapshots x 300 texts: per-text difficulty (shared) + a random-walk trajectory, LL ~ -300 nats
    return -300 + 40 * rng.normal(size=300) + np.cumsum(rng.normal(size=(12, 300)), axis=0)


def test_kl_matrix_matches_direct_variance(ll):
    kl = ta.kl_matrix(ll)
    np.testing.assert_allclose(kl, direct_kl(ll), rtol=1e-10, atol=1e-12)
    assert np.all(np.diag(kl) == 0.0) and np.array_equal(kl, kl.T)


def test_kl_matrix_bits_per_byte_uses_mean_bytes(ll):
    n_bytes = np.random.default_rng(1).integers(257, 1025, size=ll.shape[1])
    np.testing.assert_allclose(
        ta.kl_matrix(ll, n_bytes), direct_kl(ll) / (n_bytes.mean() * np.log(2)), rtol=1e-10
    )


def test_kl_matrix_standard_error_matches_delta_method(ll):
    kl, se = ta.kl_matrix(ll, return_se=True)
    np.testing.assert_allclose(se, direct_se(ll), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(kl, direct_kl(ll), rtol=1e-10, atol=1e-12)


def test_kl_matrix_near_identical_rows_are_exact():
    rng = np.random.default_rng(2)
    base = -500 + 50 * rng.normal(size=(2, 400))
    tiny = 1e-7 * rng.normal(size=400)
    ll = np.stack([base[0], base[0], base[0] + tiny, base[1]])  # rows 0 and 1 identical, row 2 almost
    kl, se = ta.kl_matrix(ll, return_se=True)
    assert kl[0, 1] == 0.0 and se[0, 1] == 0.0
    np.testing.assert_allclose(kl[0, 2], np.var(tiny) / 2, rtol=1e-6)
    np.testing.assert_allclose(se, direct_se(ll), rtol=1e-5, atol=1e-30)
    assert (kl >= 0).all()


def test_kl_paired_matches_matrix(ll):
    kl, se = ta.kl_matrix(ll, return_se=True)
    pk, pse = ta.kl_paired(ll[[0, 3, 5]], ll[[1, 7, 11]], return_se=True)
    np.testing.assert_allclose(pk, kl[[0, 3, 5], [1, 7, 11]], rtol=1e-9)
    np.testing.assert_allclose(pse, se[[0, 3, 5], [1, 7, 11]], rtol=1e-7)


def test_double_center_has_zero_row_and_column_means(ll):
    q = ta.double_center(ll)
    np.testing.assert_allclose(q.mean(axis=0), 0, atol=1e-9)
    np.testing.assert_allclose(q.mean(axis=1), 0, atol=1e-9)
    np.testing.assert_allclose(q[2] - q[5], (ll[2] - ll[5]) - np.mean(ll[2] - ll[5]), atol=1e-9)


# --- exactness on enumerable models: vocabulary 4, 5 tokens, first-order autoregressive

V, T = 4, 5
ALL_TEXTS = np.array(list(itertools.product(range(V), repeat=T)))  # (1024, 5)


def markov_model(rng: np.random.Generator, base=None, eps: float = 0.0):
    """Returns (log p(x_1), log p(x_t | x_{t-1})); with base, base logits + eps * Gaussian noise."""
    if base is None:
        start, table = rng.normal(size=V), rng.normal(size=(V, V))
    else:
        start, table = base[0] + eps * rng.normal(size=V), base[1] + eps * rng.normal(size=(V, V))
    return start - np.logaddexp.reduce(start), table - np.logaddexp.reduce(table, axis=1, keepdims=True)


def log_prob(model, texts: np.ndarray) -> np.ndarray:
    return model[0][texts[:, 0]] + model[1][texts[:, :-1], texts[:, 1:]].sum(axis=1)


def exact_half_jeffreys(p, q) -> float:
    lp, lq = log_prob(p, ALL_TEXTS), log_prob(q, ALL_TEXTS)
    return float((np.exp(lp) @ (lp - lq) + np.exp(lq) @ (lq - lp)) / 2)


def sampled_ll(p, q, n: int, seed: int) -> np.ndarray:
    probs = np.exp(log_prob(p, ALL_TEXTS))
    texts = ALL_TEXTS[np.random.default_rng(seed).choice(len(ALL_TEXTS), size=n, p=probs / probs.sum())]
    return np.stack([log_prob(p, texts), log_prob(q, texts)])  # (2, n)


def test_estimator_matches_enumerated_symmetrised_kl_for_nearby_models():
    rng = np.random.default_rng(0)
    p = markov_model(rng)
    q = markov_model(rng, base=p, eps=0.1)
    exact = exact_half_jeffreys(p, q)
    kl, se = ta.kl_matrix(sampled_ll(p, q, 20000, seed=1), return_se=True)
    assert abs(kl[0, 1] / exact - 1) < 0.10
    # the SE is that of the sampling noise: exact population moments of d = l_p - l_q under p, by enumeration
    lp, lq = log_prob(p, ALL_TEXTS), log_prob(q, ALL_TEXTS)
    w, d = np.exp(lp), lp - lq
    d = d - w @ d
    exact_se = np.sqrt((w @ d**4 - (w @ d**2) ** 2) / 20000) / 2
    assert abs(se[0, 1] / exact_se - 1) < 0.2
    assert abs(kl[0, 1] - (w @ d**2) / 2) < 4 * exact_se


def test_estimator_breaks_down_for_far_apart_models():
    rng = np.random.default_rng(0)
    p = markov_model(rng)
    q = markov_model(rng, base=p, eps=3.0)  # J/2 ~ 5 nats per 5-token text
    exact = exact_half_jeffreys(p, q)
    est = ta.kl_matrix(sampled_ll(p, q, 20000, seed=1))[0, 1]
    assert exact > 3 and est / exact > 1.3


# --- cleaning


def test_prepare_drops_largest_jumps_and_clips():
    rng = np.random.default_rng(3)
    ll = -100 + rng.normal(size=(5, 100))
    ll[2:, 7] -= 50  # text 7 jumps between snapshots 1 and 2
    ll[4, 42] += 30  # text 42 jumps at the end
    n_bytes = np.arange(1, 101) * 10
    out, nb, kept = ta.prepare(ll, n_bytes, drop_jump_fraction=0.02)
    assert not kept[7] and not kept[42] and kept.sum() == 98
    np.testing.assert_array_equal(out, ll[:, kept])
    np.testing.assert_array_equal(nb, n_bytes[kept])
    # B is recomputed on the kept texts
    np.testing.assert_allclose(
        ta.kl_matrix(out, nb), direct_kl(ll[:, kept]) / (n_bytes[kept].mean() * np.log(2))
    )
    clipped, _, _ = ta.prepare(ll, clip_quantile=0.02)
    floor = np.quantile(ll, 0.02)
    np.testing.assert_array_equal(clipped, np.maximum(ll, floor))
    assert (clipped == floor).sum() >= 10


def test_prepare_handles_minus_inf():
    ll = np.random.default_rng(5).normal(size=(3, 200))
    ll[1, 3] = -np.inf  # a zero-probability text: an infinite jump, dropped first
    out, _, kept = ta.prepare(ll, drop_jump_fraction=0.005)
    assert np.flatnonzero(~kept).tolist() == [3] and np.isfinite(out).all()
    clipped, _, _ = ta.prepare(ll, clip_quantile=0.02)
    assert clipped[1, 3] == np.quantile(ll, 0.02) > -np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        ta.kl_matrix(ll)


def test_prepare_list_keeps_common_texts():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(3, 50)), rng.normal(size=(4, 50))
    b[1:, 9] += 100
    (a2, b2), _, kept = ta.prepare([a, b], drop_jump_fraction=0.02)
    assert not kept[9] and a2.shape == (3, 49) and b2.shape == (4, 49)
    floor = np.quantile(np.concatenate([a.ravel(), b.ravel()]), 0.1)
    (a3, b3), _, _ = ta.prepare([a, b], clip_quantile=0.1)
    assert a3.min() == floor and b3.min() == floor


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros(5), "2-D"),
        (np.full((2, 3), np.nan), "NaN"),
        (np.array([[0.0, -np.inf], [0.0, 0.0]]), "NaN or inf"),
    ],
)
def test_kl_matrix_rejects_bad_ll(bad, match):
    with pytest.raises(ValueError, match=match):
        ta.kl_matrix(bad)


def test_bad_n_bytes_and_options_are_rejected(ll):
    with pytest.raises(ValueError, match="one entry per text"):
        ta.kl_matrix(ll, np.ones(3))
    with pytest.raises(ValueError, match="positive"):
        ta.kl_matrix(ll, np.zeros(ll.shape[1]))
    with pytest.raises(ValueError, match="clip_quantile"):
        ta.prepare(ll, clip_quantile=1.5)
    with pytest.raises(ValueError, match="drop_jump_fraction"):
        ta.prepare(ll, drop_jump_fraction=-0.1)
    with pytest.raises(ValueError, match="at least 2 snapshots"):
        ta.prepare(ll[:1], drop_jump_fraction=0.03)
    with pytest.raises(ValueError, match="same shape"):
        ta.kl_paired(ll[:2], ll[:3])


def test_import_does_not_load_torch():
    code = "import sys, trajlab.analysis; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_jump_drop_ranks_post_warmup_rows_only():
    rng = np.random.default_rng(7)
    n = 100
    ll = -300 + np.cumsum(0.1 * rng.normal(size=(8, n)), axis=0)
    ll[1, :5] -= 50  # texts 0-4 jump in warm-up (rows 0-2)
    ll[6:, 10:13] += 20  # texts 10-12 jump after warm-up
    post = np.arange(8) >= 3
    _, _, kept = ta.prepare([ll], drop_jump_fraction=0.03, jump_rows=[post])
    assert sorted(np.flatnonzero(~kept)) == [10, 11, 12]
    _, _, kept_all = ta.prepare([ll], drop_jump_fraction=0.03)
    assert set(np.flatnonzero(~kept_all)) <= set(range(5))  # all rows: the warm-up jumps win
    with pytest.raises(ValueError, match="one mask per LL matrix"):
        ta.prepare([ll], drop_jump_fraction=0.03, jump_rows=[post, post])
