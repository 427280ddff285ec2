"""kl_scale: the paper's settings found from store meta alone, KL per pair, the figure, the orderings."""

from __future__ import annotations

import json
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from trajlab.analysis.config import AnalysisConfig
from trajlab.analysis.scale import bits_setting, kl_scale
from trajlab.analysis.scale_figure import figure_rows, figure_size_px, write_scale
from trajlab.analysis.scale_order import scale_orderings
from trajlab.data.probe import ProbeSet
from trajlab.store import TrajectoryStore

N = 200
RNG = np.random.default_rng(0)
N_BYTES = RNG.integers(300, 1000, size=N)
TOKENS = (N_BYTES // 4).tolist()
D = -1500 + 40 * RNG.normal(size=N)  # per-text difficulty shared by every model
DENSE = list(range(0, 41, 2))  # warm-up 2: post-warm-up intervals 2->4 ... 38->40 at lag 2
RAW = AnalysisConfig().replace(clip_quantile=None, drop_jump_fraction=None, n_boot=200)
NEOX, GPT2 = "GPTNeoXForCausalLM", "GPT2LMHeadModel"


def probe() -> ProbeSet:
    return ProbeSet([(f"text {i} " + "x" * 1024)[:b] for i, b in enumerate(N_BYTES)], name="synthetic")


def noise(seed: int, sd: float) -> np.ndarray:
    return sd * np.random.default_rng(seed).normal(size=N)


def layers(final: np.ndarray, seed: int) -> np.ndarray:
    """(3, N): layers 0, 1, 2 (2 = the model's output), each lens row further from the output."""
    return np.stack([final + noise(seed + 100, 6.0), final + noise(seed + 200, 3.0), final])


def trajectory(seed: int, steps: list[int], offset: np.ndarray) -> np.ndarray:
    """(K, N) final-layer LL: steps shrinking over training (Early intervals move more than Later ones)."""
    rng = np.random.default_rng(seed)
    rows, cur = [], D + offset - 300
    for i, _ in enumerate(steps):
        cur = cur + (300 if i == 1 else 0) + rng.normal(size=N) * (2.0 / (1 + i))
        rows.append(cur.copy())
    return np.stack(rows)


def write(root: Path, run: str, steps, ll, cls=NEOX, tok="tokA", **meta) -> Path:
    full = {
        "run": run,
        "id": f"id-{run}",
        "model": {"name": run, "class": cls, "config": {}},
        "tokenizer": {"fingerprint": tok},
        "config": {},
        "warmup_steps": 2,
        "max_steps": 40,
        "scoring": {"n_tokens": TOKENS},
        **meta,
    }
    with TrajectoryStore.create(root / run, probe=probe(), meta=full, n_layers=2) as store:
        for i, step in enumerate(steps):
            store.append(int(step), layers(ll[i], i + 7 * len(run)), layers=[0, 1, 2])
    return root / run


def child(parent: str, step: int) -> dict:
    return {"lineage": {"root": f"id-{parent}", "parent": {"id": f"id-{parent}", "step": step}}}


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    a0 = trajectory(1, DENSE, noise(10, 1.0))
    paths = [
        write(root, "A-tiny-s0", DENSE, a0, preset="tiny", seed=0),
        write(root, "A-tiny-s1", DENSE, trajectory(2, DENSE, noise(11, 1.0)), preset="tiny", seed=1),
        write(root, "A-tiny-s2", [0, 40], trajectory(3, [0, 40], noise(12, 1.0)), preset="tiny", seed=2),
        write(root, "A-small-s0", [0, 40], trajectory(4, [0, 40], noise(13, 2.0)), preset="small", seed=0),
        write(root, "A-micro-s0", [0, 40], trajectory(5, [0, 40], noise(14, 2.0)), preset="micro", seed=0),
        write(root, "C-micro", [40], [D + noise(15, 4.0)], tok="tokC", preset="micro", seed=0),
        write(root, "B-gpt2", [40], [D + noise(16, 6.0)], cls=GPT2, tok="tokB", preset="gpt2-tiny", seed=0),
        write(root, "X-import", [0], [D + noise(17, 250.0)], cls="LlamaForCausalLM", tok="tokX"),
        write(root, "A-tiny-s0-ft", [40, 42], [a0[-1], a0[-1] + noise(18, 0.7)], **child("A-tiny-s0", 40)),
        write(
            root,
            "A-tiny-s0-q8",
            [40],
            [a0[-1] + noise(19, 0.1)],
            **child("A-tiny-s0", 40),
            quantization={"format": "q8_0", "source": "A-tiny-s0/hf", "parent": "A-tiny-s0@40"},
        ),
        write(
            root,
            "A-tiny-s0-q4",
            [40],
            [a0[-1] + noise(20, 0.4)],
            quantization={"format": "q4_1", "parent": {"store": str(root / "A-tiny-s0"), "step": 40}},
        ),
    ]
    return [TrajectoryStore.open(p) for p in paths]


@pytest.fixture(scope="module")
def raw(stores):
    return kl_scale(stores, config=RAW)


def key(p: dict) -> frozenset:
    la = p["layer"]
    return frozenset(
        {(p["store_a"], p["step_a"], la), (p["store_b"], p["step_b"], None if la is None else la + 1)}
    )


def test_each_setting_found_with_its_pairs(raw):
    counts = Counter(p["setting"] for p in raw.pairs)
    # 9 models (quantized copies left out of layers and of model pairs), 2 adjacent-layer pairs each;
    # dense runs s0, s1: 19 intervals at lag 2 -> first and last 9 each.
    assert counts == {
        "layers": 18,
        "early": 18,
        "later": 18,
        "seeds": 3,
        "sizes": 3,
        "8-bit": 1,
        "4-bit": 1,
        "fine-tune": 1,
        "intra-type": 6,
        "random": 15,
    }
    assert raw.n_settings == 10
    by = {(p["setting"], frozenset({p["store_a"], p["store_b"]})) for p in raw.pairs if p["layer"] is None}
    assert ("seeds", frozenset({"A-tiny-s0", "A-tiny-s1"})) in by
    assert ("sizes", frozenset({"A-small-s0", "A-micro-s0"})) in by
    assert ("intra-type", frozenset({"C-micro", "A-tiny-s0-ft"})) in by  # GPT-NeoX, unrelated data
    assert ("random", frozenset({"B-gpt2", "C-micro"})) in by
    assert ("fine-tune", frozenset({"A-tiny-s0-ft", "A-tiny-s0"})) in by
    # fine-tunes of related runs and same-data runs of another seed and size are in no setting
    assert not any({"A-tiny-s1", "A-small-s0"} == set(k) for _, k in by)
    assert not any({"A-tiny-s1", "A-tiny-s0-ft"} == set(k) for _, k in by)
    early = [p for p in raw.pairs if p["setting"] == "early" and p["store_a"] == "A-tiny-s0"]
    later = [p for p in raw.pairs if p["setting"] == "later" and p["store_a"] == "A-tiny-s0"]
    assert [p["step_a"] for p in early] == list(range(2, 20, 2))
    assert [p["step_a"] for p in later] == list(range(22, 40, 2))
    assert all(p["step_b"] - p["step_a"] == 2 for p in early + later)
    assert raw.options["lag"] == 2


def test_no_pair_in_two_settings(raw):
    keys = [key(p) for p in raw.pairs]
    assert len(keys) == len(set(keys))


def test_quantized_store_gets_its_bits_and_parent(raw):
    q = {p["setting"]: p for p in raw.pairs if p["setting"].endswith("-bit")}
    assert (q["8-bit"]["store_a"], q["8-bit"]["store_b"], q["8-bit"]["step_b"]) == (
        "A-tiny-s0-q8",
        "A-tiny-s0",
        40,
    )
    assert q["4-bit"]["store_b"] == "A-tiny-s0"  # named by meta["quantization"]["parent"]["store"] only
    a = Fake("a", [10, 20], [D, D + noise(1, 1.0)], preset="tiny", seed=0)
    q5 = Fake("a-q5", [0], [D + noise(2, 0.1)], quantization={"format": "q5_0", "parent": "a@10"})
    (p,) = kl_scale([a, q5], config=RAW).pairs
    assert (p["setting"], p["store_a"], p["store_b"], p["step_b"]) == ("5-bit", "a-q5", "a", 10)
    assert [bits_setting(f) for f in ("q8_0", "q4_0", "q4_1", "q5_1", "nf4")] == [
        "8-bit",
        "4-bit",
        "4-bit",
        "5-bit",
        "4-bit",
    ]
    with pytest.raises(ValueError, match="bits"):
        bits_setting("fp")


def test_kl_equals_direct_numpy_without_outlier_handling(raw, stores):
    by = {s.meta["run"]: s for s in stores}
    to_bits = 1 / (N_BYTES.mean() * np.log(2))
    for p in raw.pairs:
        a, b = by[p["store_a"]], by[p["store_b"]]
        if p["layer"] is not None:
            rows = a.loglik_all(steps=[p["step_a"]])[0]
            la, lb = rows[p["layer"]], rows[p["layer"] + 1]
        else:
            la = a.loglik()[list(a.steps).index(p["step_a"])]
            lb = b.loglik()[list(b.steps).index(p["step_b"])]
        expected = np.var(la - lb) / 2 * to_bits
        assert p["kl"] == pytest.approx(expected, rel=1e-10)
        assert p["kl_raw"] == pytest.approx(expected, rel=1e-10)
        assert p["lo"] <= p["kl"] <= p["hi"]
        per_token = np.var(la - lb) / 2 / np.mean(TOKENS)
        assert p["nats_per_token"] == pytest.approx(per_token, rel=1e-10)
        assert p["flagged"] == (per_token > 1.0)


def test_pretraining_settings_clipped_and_jump_dropped_as_the_paper(stores):
    scale = kl_scale(
        stores, config=AnalysisConfig().replace(clip_quantile=0.02, drop_jump_fraction=0.03, n_boot=50)
    )
    by = {s.meta["run"]: s for s in stores}
    seeds = [p for p in scale.pairs if p["setting"] == "seeds"]
    runs = sorted({n for p in seeds for n in (p["store_a"], p["store_b"])})
    # independent: clip at the 2% quantile of every vector of the comparison's runs, then drop the 3% of texts
    # with the largest post-warm-up jump, B recomputed on the rest
    floor = np.quantile(np.concatenate([by[r].loglik().ravel() for r in runs]), 0.02)
    jump = np.zeros(N)
    for r in runs:
        post = np.maximum(by[r].loglik(), floor)[by[r].steps >= 2]
        if len(post) > 1:
            jump = np.maximum(jump, np.abs(np.diff(post, axis=0)).max(axis=0))
    kept = np.ones(N, bool)
    kept[np.argsort(jump, kind="stable")[N - round(0.03 * N) :]] = False
    to_bits = 1 / (N_BYTES[kept].mean() * np.log(2))
    for p in seeds:
        la = np.maximum(by[p["store_a"]].loglik()[-1], floor)[kept]
        lb = np.maximum(by[p["store_b"]].loglik()[-1], floor)[kept]
        assert p["kl"] == pytest.approx(np.var(la - lb) / 2 * to_bits, rel=1e-10)
        assert p["n_texts"] == kept.sum() == N - 6
    assert scale.handling["seeds"]["dropped"] == np.flatnonzero(~kept).tolist()
    untouched = [p for p in scale.pairs if p["setting"] in ("fine-tune", "random", "layers", "8-bit")]
    assert all(p["kl"] == p["kl_raw"] and p["n_texts"] == N for p in untouched)


def test_figure_and_table_written(raw, tmp_path):
    files = write_scale(tmp_path / "out", raw)
    png = (tmp_path / "out" / files["figure"]).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    assert struct.unpack(">II", png[16:24]) == figure_size_px(len(figure_rows(raw)))
    assert len(figure_rows(raw)) == 10  # every setting has pairs here: no paper-only rows
    table = (tmp_path / "out" / files["table"]).read_text().splitlines()
    assert table[0].startswith("setting,store_a,step_a,store_b,step_b,layer,kl (bits/byte)")
    assert len(table) == 1 + len(raw.pairs)
    summary = (tmp_path / "out" / files["summary_table"]).read_text().splitlines()
    assert [r.split(",")[0] for r in summary[1:]] == raw.settings
    assert not list((tmp_path / "out").glob(".*tmp"))


def test_summary_and_paper_values(raw):
    s = raw.summary
    assert raw.settings == [
        "early",
        "later",
        "seeds",
        "sizes",
        "8-bit",
        "4-bit",
        "fine-tune",
        "intra-type",
        "random",
        "layers",
    ]
    kl = [p["kl"] for p in raw.pairs if p["setting"] == "seeds"]
    assert s["seeds"]["median"] == pytest.approx(np.median(kl))
    assert s["seeds"]["sd"] == pytest.approx(np.std(kl, ddof=1))
    assert (s["seeds"]["n_pairs"], s["seeds"]["n_runs"]) == (3, 3)
    assert (s["seeds"]["paper"], s["random"]["paper"], s["fine-tune"]["paper"]) == (0.11, 2.1, 0.40)
    assert s["sizes"]["paper"] == pytest.approx(0.76)  # median of 0.28, 0.52, 1.0, 1.7
    assert s["8-bit"]["paper"] is None and s["intra-type"]["paper"] is None
    assert s["random"]["n_flagged"] == 8  # X-import against every other model


def test_orderings_leave_out_flagged_pairs(raw):
    res = {o["name"]: o for o in scale_orderings(raw, n_boot=200)}
    ft = res["fine-tune < random"]
    assert ft["n_left_out"] == 8 and ft["n_units"] == [1, 7]
    early = res["Later < Early"]
    assert early["n_units"] == [2, 2] and early["unit"].startswith("runs")
    assert early["min_p"] == pytest.approx(1 / 4) and early["holds"] is False  # paired: 2^2 sign patterns
    assert "not testable" in early["verdict"]
    sizes = [o for name, o in res.items() if name.startswith("seeds < sizes")]
    assert len(sizes) == 3 and all("p_holm" in o and o["n_units"] == [3, 1] for o in sizes)
    assert res["8-bit < 4-bit"]["n_units"] == [1, 1]
    assert all(isinstance(o["verdict"], str) and o["verdict"] for o in res.values())
    safe = raw.to_json(orderings=list(res.values()))
    rows = json.loads(json.dumps(safe))["summary"]
    assert [r["setting"] for r in rows] == raw.settings and rows[2]["n_pairs"] == 3


class Fake:
    """A duck-typed store (the read API kl_scale uses), final layer only."""

    def __init__(self, run, steps, ll, **meta):
        self.path, self.steps, self._ll, self.n_layers = Path(run), np.asarray(steps), np.asarray(ll), 0
        self.n_bytes, self.probe_fingerprint = N_BYTES, "fp"
        self.meta = {"run": run, "model": {"class": NEOX}, "tokenizer": {"fingerprint": "tok"}, **meta}

    def loglik(self, layer=-1):
        return self._ll


def test_runs_without_seed_go_by_root_never_to_seeds():
    a = Fake("a", [10], [D + noise(1, 1.0)], preset="tiny")
    b = Fake("b", [10], [D + noise(2, 1.0)], preset="tiny")
    assert [p["setting"] for p in kl_scale([a, b], config=RAW).pairs] == ["intra-type"]
    a.meta["seed"], b.meta["seed"] = 0, 1
    assert [p["setting"] for p in kl_scale([a, b], config=RAW).pairs] == ["seeds"]
    b.meta["model"] = {"class": GPT2}
    b.meta["tokenizer"] = {"fingerprint": "other"}
    assert [p["setting"] for p in kl_scale([a, b], config=RAW).pairs] == ["random"]


def test_bad_input_is_one_line():
    a = Fake("a", [10], [D])
    with pytest.raises(ValueError, match="distinct run names"):
        kl_scale([a, Fake("a", [10], [D])])
    other = Fake("b", [10], [D])
    other.n_bytes = N_BYTES + 1
    with pytest.raises(ValueError, match="byte counts"):
        kl_scale([a, other])
    with pytest.raises(ValueError, match="at least one"):
        kl_scale([])


def test_paper_only_rows_and_nats_units(tmp_path):
    a = Fake("a", [10], [D + noise(1, 1.0)], preset="tiny", seed=0)
    b = Fake("b", [10], [D + noise(2, 1.0)], preset="tiny", seed=1)
    scale = kl_scale([a, b], config=RAW)
    assert scale.settings == ["seeds"] and scale.n_settings == 1
    rows = figure_rows(scale)
    assert rows == ["early", "later", "seeds", "sizes", "fine-tune", "random", "layers"]
    files = write_scale(tmp_path, scale)
    png = (tmp_path / files["figure"]).read_bytes()
    assert struct.unpack(">II", png[16:24]) == figure_size_px(len(rows))
    nats = kl_scale([a, b], config=RAW.replace(n_bytes_units=False))
    assert nats.units == "nats/text" and figure_rows(nats) == ["seeds"]
    assert nats.summary["seeds"]["paper"] is None
    assert nats.pairs[0]["kl"] == pytest.approx(np.var(a.loglik()[0] - b.loglik()[0]) / 2, rel=1e-10)
    assert scale_orderings(nats) == []  # one setting: nothing to order


def test_exclude_runs_and_snapshots(stores):
    cfg = RAW.replace(exclude=("X-import", "A-tiny-s1@40"))
    scale = kl_scale(stores, config=cfg)
    assert not any("X-import" in (p["store_a"], p["store_b"]) for p in scale.pairs)
    assert scale.summary["random"]["n_pairs"] == 7 and scale.summary["random"]["n_flagged"] == 0
    s01 = [
        p
        for p in scale.pairs
        if p["setting"] == "seeds" and {p["store_a"], p["store_b"]} == {"A-tiny-s0", "A-tiny-s1"}
    ]
    assert [(p["step_a"], p["step_b"]) for p in s01] == [(38, 38)]  # their last common step without 40
    assert any("A-tiny-s1" in n and "40" in n for n in scale.notes)
