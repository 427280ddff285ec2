"""analyze() with store meta v2 keys: warm-up, max_steps, lineage ids, scoring n_tokens and probe domains."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic_stores import N_BYTES, N, Probe, brownian_ll, write_store

from trajlab import analysis as ta
from trajlab.store import open_stores

DOMAINS = ["code"] * 150 + ["prose"] * (N - 150)


def DomainProbe():
    return Probe(domains=DOMAINS)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    root = tmp_path_factory.mktemp("v2")
    steps = np.arange(1, 21) * 1000
    pre_ll = brownian_ll(20, 31)
    pre_ll[:4, :12] += 40 * np.random.default_rng(0).normal(size=(4, 12))  # warm-up jumps of texts 0-11
    pre_ll[10:, 300:305] -= 25  # a post-warm-up jump of texts 300-304
    scoring = {
        "long_texts": "rolling",
        "stride": None,
        "window": None,
        "n_tokens": [30] * N,
        "lens_dtype": None,
    }
    pre = {
        "id": "P",
        "lineage": {"root": "P", "parent": None},
        "warmup_steps": 5000,
        "max_steps": 20000,
        "scoring": scoring,
    }
    ft = {
        "id": "F",
        "lineage": {"root": "P", "parent": {"id": "P", "step": 6000}},
        "warmup_steps": 0,
        "max_steps": 300,
    }
    other = {"id": "O", "lineage": {"root": "O", "parent": None}}
    ft_ll = pre_ll[5] + np.cumsum(np.random.default_rng(2).normal(size=(3, N)) * 0.2, axis=0)
    paths = [
        write_store(root, "pre", steps, pre_ll[:, None], pre, probe=DomainProbe()),
        write_store(root, "ft", [100, 200, 300], ft_ll[:, None], ft, probe=DomainProbe()),
        write_store(root, "other", [0, 1, 2], brownian_ll(3, 40)[:, None] + 2, other, probe=DomainProbe()),
    ]
    stores = open_stores(paths)
    summary = ta.analyze(
        stores,
        tmp_path_factory.mktemp("out") / "a",
        drop_jump_fraction=0.03,
        clip_quantile=None,  # the clip would floor the planted jump of texts 300-304; tested in test_outliers
        n_boot=300,
        spiral_n_null_tsne=5,
    )
    return summary, stores


def test_jump_drop_uses_post_warmup_snapshots(result):
    summary, stores = result
    kept = kept_texts(stores)
    assert summary["n_texts_kept"] == kept.sum() == N - 12
    assert not kept[300:305].any() and kept[:12].all()  # warm-up jumps stay, post-warm-up jumps go


def test_fixed_lag_rows_after_warmup(result):
    summary, _ = result
    rows = [r for r in summary["comparison"] if r["kind"] == "consecutive" and r["a"] == "pre"]
    # lag: smallest spacing >= round(20000 * 1000/143000) = 140 -> 1000; targets 1399 (< warm-up 5000), 6993,
    # 13986 -> 5000, 7000, 14000
    assert [(r["step_a"], r["step_b"], r["lag"]) for r in rows] == [
        (5000, 6000, 1000),
        (7000, 8000, 1000),
        (14000, 15000, 1000),
    ]
    for r in rows:
        assert r["ci_lo_bits_per_byte"] < r["kl_bits_per_byte"] < r["ci_hi_bits_per_byte"]
        assert r["within_bits_per_byte"] + r["between_bits_per_byte"] == pytest.approx(r["kl_bits_per_byte"])
        assert (
            r["kl_nats_per_token"] == pytest.approx(r["kl_nats"] / 30) and r["beyond_checked_range"] is False
        )
    fits = summary["runs"]["pre"]["diffusion"]["ll"]
    assert fits["fits_used"] | {"n": None} == {
        "window": 10,
        "min_t0": 5000,
        "full_windows": True,
        "n": None,
        "t0_first": 5000,
        "t0_last": 10000,
    }
    assert summary["options"]["lag_fraction"] == pytest.approx(1000 / 143000)
    assert summary["domains"] == ["code", "prose"]


def kept_texts(stores) -> np.ndarray:
    """The jump drop over the pretraining runs (pre, other; not the fine-tune): the 3% of texts with the largest
    post-warm-up jumps."""
    pre, _, other = stores
    jump_rows = [pre.steps >= 5000, other.steps >= 0]
    return ta.prepare(
        [pre.loglik(), other.loglik()], N_BYTES, drop_jump_fraction=0.03, jump_rows=jump_rows
    )[2]


def test_lineage_pairs(result):
    summary, stores = result
    kept = kept_texts(stores)
    pre, ft, other = (s.loglik()[:, kept] for s in stores)
    to_bits = 1 / (N_BYTES[kept].mean() * np.log(2))
    finetune = [r for r in summary["comparison"] if r["kind"] == "finetune"]
    assert [(r["a"], r["step_a"], r["b"], r["step_b"]) for r in finetune] == [("ft", 300, "pre", 6000)]
    assert finetune[0]["kl_nats_per_token"] == pytest.approx(finetune[0]["kl_nats"] / 30)  # pre's n_tokens
    to_parent = summary["runs"]["ft"]["kl_to_parent"]
    assert to_parent["parent"] == "pre" and to_parent["step"] == 6000
    np.testing.assert_allclose(to_parent["kl"], [np.var(r - pre[5]) / 2 * to_bits for r in ft], rtol=1e-9)
    fvb = summary["finetune_vs_base"]
    assert fvb["roots"] == ["P", "P", "O", None] and fvb["pair_labels"] == [["ft@300", "pre@6000"]]
    assert sorted(map(tuple, fvb["random_pairs"])) == [(0, 2), (1, 2)]
    assert fvb["beyond_checked_range"] == [False]
    assert summary["runs"]["pre"]["maps"]["pca"]["spiral"]["n_null"] == 200
    assert set(summary["joint_map"]) >= {"pca", "tsne", "tsne_perplexity"}
    assert summary["joint_map"]["tsne_perplexity"] == pytest.approx(min(30, (26 - 1) / 3))
    assert fvb["random"]["mean"] == pytest.approx(
        (np.var(pre[-1] - other[-1]) + np.var(ft[-1] - other[-1])) / 4 * to_bits
    )
