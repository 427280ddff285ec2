"""analyze(): every number for a set of stores, written as summary.json, CSV tables and PNG figures."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from synthetic_stores import N_BYTES, N, Probe, ballistic_weights, brownian_ll, direct_kl, write_store

from trajlab import analysis as ta
from trajlab.store import TrajectoryStore, open_stores


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    steps = np.arange(1, 21) * 1000
    base_ll = brownian_ll(20, 1)
    layers = np.stack(
        [base_ll - 3 * (3 - la) * np.random.default_rng(la).normal(size=N) for la in range(4)], axis=1
    )
    meta = {"preset": "tiny", "seed": 1}
    paths = [
        write_store(root, "base", steps, layers, meta, ballistic_weights(20, 2)),
        write_store(
            root,
            "seed2",
            steps,
            brownian_ll(20, 3)[:, None],
            {**meta, "seed": 2},
            ballistic_weights(20, 4),
            exact=False,
        ),
        write_store(
            root, "ft", [0, 50, 100], brownian_ll(3, 5)[:, None], {"parent": {"run": "base", "step": 6000}}
        ),
    ]
    return open_stores(paths)


@pytest.fixture(scope="module")
def result(stores, tmp_path_factory):
    out = tmp_path_factory.mktemp("analysis") / "out"
    return ta.analyze(stores, out, tsne=False, clip_quantile=None, jump_drop=None), out  # raw: direct numbers


def test_files_written(result):
    summary, out = result
    names = {
        "summary.json",
        "snapshots.csv",
        "exponents.csv",
        "exponent_summary.csv",
        "spiral.csv",
        "layer_threads.csv",
        "thread_test.csv",
        "comparison.csv",
        "finetune_vs_base.csv",
        "finetune_order.csv",
        "kl_matrix_base.csv",
        "kl_matrix_seed2.csv",
        "kl_matrix_ft.csv",
        "map_base.png",
        "threads_base.png",
        "diffusion_base.png",
        "map_seed2.png",
        "diffusion_seed2.png",
        "map_ft.png",
        "map_all.png",
        "kl_scale.png",  # seeds, fine-tune, layers, ...: >= 2 settings of the KL scale
        "kl_scale.csv",
        "kl_scale_summary.csv",
    }
    assert {p.name for p in out.iterdir()} == names
    assert {r["setting"] for r in summary["kl_scale"]["summary"]} >= {"seeds", "fine-tune", "layers"}
    assert set(summary["figures"]) | set(summary["tables"]) | {"summary.json"} == names
    assert all((out / f).read_bytes()[:4] == b"\x89PNG" for f in summary["figures"])
    strict = json.loads(
        (out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}")
    )
    assert strict == summary


def test_per_store_numbers(result, stores):
    summary, _ = result
    base = summary["runs"]["base"]
    ll = stores[0].loglik()
    direct = np.array([[direct_kl(a, b) for b in ll] for a in ll])
    np.testing.assert_allclose(base["kl_matrix"], direct, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(base["consecutive_kl"], np.diagonal(direct, 1), rtol=1e-9)
    np.testing.assert_allclose(base["kl_to_first"], direct[0], rtol=1e-9, atol=1e-15)
    assert summary["units"] == "bits/byte" and summary["mean_bytes"] == pytest.approx(N_BYTES.mean())
    xy = np.array(base["maps"]["pca"]["coords"])
    np.testing.assert_allclose(xy, ta.embed(ll, "pca", 2, N_BYTES), rtol=1e-6, atol=1e-9 * np.abs(xy).max())
    test = ta.spiral_test(ll, "pca", 200, 0, N_BYTES)
    spiral = base["maps"]["pca"]["spiral"]
    assert spiral["winding_turns"] == pytest.approx(test["winding_turns"]) and spiral["winding_turns"] >= 0
    assert spiral["p_value"] == test["p_value"] and spiral["null_q95"] == pytest.approx(test["null_q95"])
    # Brownian LL path: c ~ 1; ballistic weights: c ~ 2 (exact distances here, the sketch for seed2); no
    # warm-up recorded: 1% of the last step (200) is assumed; starts with a full window of 10 lags: 1000..10000
    assert base["warmup_steps"] == 200 and not base["warmup_recorded"] and base["max_steps"] == 20000
    assert base["diffusion"]["ll"]["fits_used"] == {
        "window": 10,
        "min_t0": 200,
        "full_windows": True,
        "n": 10,
        "t0_first": 1000,
        "t0_last": 10000,
    }
    assert abs(base["diffusion"]["ll"]["summary"]["median"] - 1) < 0.2
    assert base["diffusion"]["weight"]["source"] == "exact"
    assert abs(base["diffusion"]["weight"]["summary"]["median"] - 2) < 0.05
    seed2 = summary["runs"]["seed2"]
    assert seed2["diffusion"]["weight"]["source"] == "sketch"
    assert abs(seed2["diffusion"]["weight"]["summary"]["median"] - 2) < 0.05
    assert any("sketch" in n for n in seed2["notes"]) and any("layer threads" in n for n in seed2["notes"])
    ft = summary["runs"]["ft"]
    assert ft["diffusion"]["ll"]["summary"]["n"] == 0 and "weight" not in ft["diffusion"]


def test_layer_threads_numbers(result, stores):
    lt = result[0]["runs"]["base"]["layer_threads"]
    layers = np.stack([stores[0].loglik(layer=la) for la in range(4)], axis=1)  # (K, 4, N)
    adjacent = [[direct_kl(s[la], s[la + 1]) for la in range(3)] for s in layers]
    np.testing.assert_allclose(lt["adjacent_kl"], adjacent, rtol=1e-9)
    assert np.array(lt["coords"]).shape == (20, 4, 2)
    test = ta.thread_test(layers, 500, 0, N_BYTES)
    assert {k: v for k, v in lt["test"].items() if k != "note"} == pytest.approx(
        {k: v for k, v in test.items() if k != "note"}
    )
    assert lt["test"]["note"] == test["note"]
    assert lt["test"]["exact"] and lt["test"]["n_perms"] == 24  # 4 layer states: all orders enumerated


def test_cross_store_tables(result, stores):
    summary, out = result
    rows = {(r["kind"], r["a"], r["b"]): r for r in summary["comparison"]}
    base, seed2, ft = (s.loglik() for s in stores)
    assert rows[("seed", "base", "seed2")]["kl_bits_per_byte"] == pytest.approx(
        direct_kl(base[-1], seed2[-1])
    )
    assert rows[("finetune", "ft", "base")]["kl_bits_per_byte"] == pytest.approx(direct_kl(ft[-1], base[5]))
    fvb = summary["finetune_vs_base"]
    assert fvb["pair_labels"] == [["ft@100", "base@6000"]]
    # roots: base and ft (its parent's root) vs seed2; the parent snapshot base@6000 is never a random pair
    assert fvb["models"] == ["base@20000", "seed2@20000", "ft@100", "base@6000"]
    roots = [
        s.meta.get("lineage", {}).get("root") or s.meta.get("id") or n
        for s, n in zip(stores, ("base", "seed2", "ft"), strict=True)
    ]
    assert fvb["roots"] == [
        roots[0],
        roots[1],
        roots[0],
        None,
    ]  # ft names its base by the older meta "parent"
    assert sorted(map(tuple, fvb["random_pairs"])) == [(0, 1), (1, 2)]
    assert fvb["order"]["smaller"] == pytest.approx(direct_kl(ft[-1], base[5]))
    assert fvb["pairs"]["median"] == pytest.approx(direct_kl(ft[-1], base[5]))
    with open(out / "snapshots.csv") as f:
        snaps = list(csv.DictReader(f))
    assert len(snaps) == 43
    first = [r for r in snaps if r["run"] == "seed2"][4]
    assert float(first["kl_to_first (bits/byte)"]) == pytest.approx(direct_kl(seed2[4], seed2[0]))


def test_cleaning_options_and_nats(stores, tmp_path):
    summary = ta.analyze(
        stores[:2],
        tmp_path / "o",
        n_bytes_units=False,
        drop_jump_fraction=0.05,
        clip_quantile=0.02,
        tsne=False,
    )
    (a, b), nb, kept = ta.prepare(
        [s.loglik() for s in stores[:2]], N_BYTES, clip_quantile=0.02, drop_jump_fraction=0.05
    )
    assert summary["n_texts_kept"] == kept.sum() == N - 20 and summary["units"] == "nats/text"
    assert summary["mean_bytes"] == pytest.approx(nb.mean())
    assert summary["runs"]["seed2"]["kl_matrix"][0][7] == pytest.approx(np.var(b[0] - b[7]) / 2)


def test_tsne_map(stores, tmp_path):
    summary = ta.analyze([stores[0], stores[2]], tmp_path / "t", tsne=True, spiral_n_null_tsne=3)
    xy = np.array(summary["runs"]["base"]["maps"]["tsne"]["coords"])
    assert xy.shape == (20, 2)
    assert summary["runs"]["base"]["maps"]["tsne"]["spiral"]["perplexity"] == pytest.approx(19 / 3)
    assert "tsne" not in summary["runs"]["ft"]["maps"]  # 3 snapshots: no t-SNE map, said once
    assert any("t-SNE map not drawn" in n for n in summary["runs"]["ft"]["notes"])


def test_bad_inputs_write_nothing(stores, tmp_path):
    out = tmp_path / "never"
    path = write_store(tmp_path, "other", [0, 1, 2], brownian_ll(3, 7)[:, None], probe=Probe("probe-B"))
    other = TrajectoryStore.open(path)
    with pytest.raises(ValueError, match="different probe sets"):
        ta.analyze([stores[0], other], out)
    with pytest.raises(ValueError, match="distinct run names"):
        ta.analyze([stores[2], stores[2]], out)
    with pytest.raises(ValueError, match="at least one"):
        ta.analyze([], out)
    empty = TrajectoryStore.open(write_store(tmp_path, "empty", [], np.zeros((0, 1, N))))
    with pytest.raises(ValueError, match="hold no snapshots"):
        ta.analyze([empty], out)
    assert not out.exists()
    (tmp_path / "file").write_text("keep me")
    with pytest.raises(ValueError, match="not a folder"):
        ta.analyze(stores[2:], tmp_path / "file")
    assert (tmp_path / "file").read_text() == "keep me"


class LayersEvery:
    """A store whose lens layers were scored at every other snapshot only (the store's full_layer_steps API)."""

    def __init__(self, store):
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    def full_layer_steps(self) -> np.ndarray:
        return self._store.steps[::2]

    def loglik_all(self, steps=None) -> np.ndarray:
        rows = np.searchsorted(self._store.steps, steps)
        return self._store.loglik_all()[rows]


def test_threads_use_the_snapshots_holding_every_layer(stores, tmp_path):
    summary = ta.analyze(
        [LayersEvery(stores[0])],
        tmp_path / "le",
        tsne=False,
        spiral_n_null=20,
        clip_quantile=None,
        jump_drop=None,
    )
    lt = summary["runs"]["base"]["layer_threads"]
    assert lt["steps"] == stores[0].steps[::2].tolist()
    layers = stores[0].loglik_all()[::2]
    adjacent = [[direct_kl(s[la], s[la + 1]) for la in range(3)] for s in layers]
    np.testing.assert_allclose(lt["adjacent_kl"], adjacent, rtol=1e-9)
    assert any("10 of 20 snapshots" in n for n in summary["runs"]["base"]["notes"])


def test_too_short_runs_say_why_they_have_no_exponent(result):
    notes = result[0]["runs"]["ft"]["notes"]  # 3 snapshots: no start has a full window of 10
    assert any("diffusion: no start at or after step 1 has a full window of 10" in n for n in notes)
    assert result[0]["runs"]["ft"]["figures"] == ["map_ft.png"]  # no diffusion figure of empty axes
    assert "diffusion_base.png" in result[0]["runs"]["base"]["figures"]


def test_finetune_order_csv_names_its_units(result):
    summary, out = result
    with open(out / "finetune_order.csv") as f:
        rows = {r["unit"]: r for r in csv.DictReader(f)}
    assert set(rows) <= {"pairs of runs", "texts (runs fixed)"} and "texts (runs fixed)" in rows
    o = summary["finetune_vs_base"]["order"]
    assert float(rows["texts (runs fixed)"]["p_value"]) == pytest.approx(o["p_value"])
    assert float(rows["texts (runs fixed)"]["min_p"]) == pytest.approx(1 / (1 + o["n_boot"]))
