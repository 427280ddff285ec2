"""The paper's outlier handling in analyze() and the kishino2025 preset, against a direct numpy computation.

The authors' code: clip the pretraining runs' LL at the 2% quantile of all their values, score each text by its
largest |delta l| over all post-warm-up consecutive snapshots of those runs (after clipping), drop the top 3%
of texts jointly, recompute B. Fine-tune KLs use unclipped values. kishino2025 takes warm-up as step 2000 and
leaves out the runs and snapshots the paper excludes.
"""

from __future__ import annotations

import numpy as np
import pytest
from synthetic_stores import N_BYTES, N, Probe, write_store

from trajlab import analysis as ta
from trajlab.store import open_stores

STEPS = np.arange(0, 7) * 1000


def _walk(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ll = -400 + 30 * np.random.default_rng(0).normal(size=N) + np.cumsum(rng.normal(size=(7, N)), axis=0)
    ll[:, :6] -= 200  # a few very unlikely texts: the 2% clip floors them
    return ll


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("preset")
    a, b = _walk(1), _walk(2)
    a[2:, 20:30] += 40  # a jump of texts 20-29 from step 1000 to 2000: warm-up for the preset, not for the meta
    b[4:, 100:105] -= 20  # a jump of texts 100-104 from step 3000 to 4000: after any warm-up
    meta = {"preset": "p", "warmup_steps": 500, "max_steps": 6000}
    ft_ll = a[-1] + np.random.default_rng(5).normal(size=(2, N))
    ft_meta = {"parent": {"run": "pythia-160m", "step": 6000}}
    paths = [
        write_store(root, "pythia-160m", STEPS, a[:, None], {**meta, "seed": 1}, probe=Probe()),
        write_store(root, "pythia-160m-seed2", STEPS, b[:, None], {**meta, "seed": 2}, probe=Probe()),
        write_store(root, "pythia-410m-seed3", STEPS, _walk(3)[:, None], {**meta, "seed": 3}, probe=Probe()),
        write_store(root, "ft", [100, 200], ft_ll[:, None], ft_meta, probe=Probe()),
    ]
    return open_stores(paths), (a, b, ft_ll)


def direct(a: np.ndarray, b: np.ndarray, warmup: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (kept mask, clipped a, clipped b): the procedure of the authors' code, written out."""
    floor = np.quantile(np.concatenate([a.ravel(), b.ravel()]), 0.02)
    ca, cb = np.maximum(a, floor), np.maximum(b, floor)
    rows = STEPS >= warmup
    jump = np.maximum(np.abs(np.diff(ca[rows], axis=0)).max(0), np.abs(np.diff(cb[rows], axis=0)).max(0))
    n_drop = round(0.03 * N)
    kept = np.ones(N, dtype=bool)
    kept[np.argsort(jump, kind="stable")[N - n_drop :]] = False
    return kept, ca, cb


def bits(x: np.ndarray, y: np.ndarray, kept: np.ndarray) -> float:
    return float(np.var(x[kept] - y[kept]) / 2 / (N_BYTES[kept].mean() * np.log(2)))


def test_preset_matches_direct_computation(stores, tmp_path):
    st, (a, b, ft_ll) = stores
    cfg = ta.AnalysisConfig.preset("kishino2025", tsne=False, spiral_n_null=10, n_boot=50, thread_n_null=10)
    summary = ta.analyze(st, tmp_path / "k", config=cfg)
    kept, ca, cb = direct(a, b, 2000)
    assert summary["outliers"]["dropped"] == np.flatnonzero(~kept).tolist()
    assert set(range(100, 105)) <= set(summary["outliers"]["dropped"])  # the post-warm-up jump is dropped
    assert not set(range(20, 30)) & set(summary["outliers"]["dropped"])  # jumps before step 2000 stay
    assert summary["mean_bytes"] == pytest.approx(N_BYTES[kept].mean())
    seed = [r for r in summary["comparison"] if r["kind"] == "seed"]
    assert [(r["a"], r["b"]) for r in seed] == [("pythia-160m", "pythia-160m-seed2")]  # seed3 excluded
    assert seed[0]["kl_bits_per_byte"] == pytest.approx(bits(ca[-1], cb[-1], kept), rel=1e-9)
    assert seed[0]["kl_raw_bits_per_byte"] == pytest.approx(
        float(np.var(a[-1] - b[-1]) / 2 / (N_BYTES.mean() * np.log(2))), rel=1e-9
    )
    assert any("excluded run pythia-410m-seed3" in n for n in summary["notes"])
    assert "pythia-410m-seed3" not in summary["runs"]
    to_parent = summary["runs"]["ft"]["kl_to_parent"]["kl"]  # unclipped values on the kept texts
    np.testing.assert_allclose(to_parent, [bits(r, a[-1], kept) for r in ft_ll], rtol=1e-9)
    assert summary["options"]["preset_name"] == "kishino2025"
    assert summary["runs"]["pythia-160m"]["diffusion"]["ll"]["fits_used"]["min_t0"] == 1000


def test_default_warmup_is_each_runs_own(stores, tmp_path):
    st, (a, b, _) = stores
    summary = ta.analyze(st[:2], tmp_path / "d", tsne=False, spiral_n_null=10, n_boot=50, thread_n_null=10)
    kept, _, _ = direct(a, b, 500)  # the meta's warm-up: the jumps at 1000-2000 count and are dropped
    assert summary["outliers"]["dropped"] == np.flatnonzero(~kept).tolist()
    assert set(range(20, 30)) <= set(summary["outliers"]["dropped"])


def test_exclude_snapshot_and_bad_preset(stores, tmp_path):
    st, _ = stores
    summary = ta.analyze(
        st[:1], tmp_path / "e", tsne=False, spiral_n_null=10, n_boot=50, exclude=["pythia-160m@3000"],
        jump_drop=None, clip_quantile=None,
    )
    assert 3000 not in summary["runs"]["pythia-160m"]["steps"]
    assert any("excluded snapshot(s) [3000] of pythia-160m" in n for n in summary["notes"])
    with pytest.raises(ValueError, match="unknown analysis preset 'kishino'; known: \\['kishino2025'\\]"):
        ta.AnalysisConfig.preset("kishino")
    with pytest.raises(ValueError, match="jump_drop must be in"):
        ta.AnalysisConfig(jump_drop=1.5)


def test_cli_preset_sets_defaults_other_flags_change_them(stores, tmp_path):
    from trajlab.cli import main

    st, _ = stores
    paths = [str(s.path) for s in st[:3]]
    args = ["analyze", *paths, "--preset", "kishino2025", "--tsne", "false", "--spiral_n_null", "10", "--n_boot", "50"]
    assert main([*args, "--out", str(tmp_path / "c"), "--warmup_step", "3000"]) == 0
    import json

    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["options"]["preset_name"] == "kishino2025" and summary["options"]["warmup_step"] == 3000
    assert summary["options"]["exclude"] == ["pythia-1b@116000", "pythia-410m-seed3", "pythia-410m-seed4"]
    assert "pythia-410m-seed3" not in summary["runs"]
    assert main([*args[:-6], "--out", str(tmp_path / "x"), "--preset", "nope"]) == 2
    assert not (tmp_path / "x").exists()
