"""scripts/reproduce_toy.py --quick end to end: every setting of the KL scale is found, every ordering carries its
unit, n, test, p, smallest reachable p and verdict, and the numbers equal ones computed here from the stores."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"early", "later", "seeds", "sizes", "8-bit", "4-bit", "fine-tune", "intra-type", "random", "layers"}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(ROOT / "scripts" / "reproduce_toy.py"), "--quick", "--out", str(out)],
                   check=True, env=env, cwd=ROOT)
    return out, json.loads((out / "results.json").read_text())


def kl_bits_per_byte(a: np.ndarray, b: np.ndarray, n_bytes: np.ndarray) -> float:
    """Var[l_a - l_b] / 2 (population variance) in bits per byte, written out."""
    d = a - b
    return float(((d - d.mean()) ** 2).mean() / 2 / (n_bytes.mean() * math.log(2)))


@pytest.mark.slow
def test_every_setting_and_ordering_is_reported(quick):
    _, res = quick
    summary = {r["setting"]: r for r in res["kl_scale"]["summary"]}
    assert SETTINGS <= set(summary)
    hp = res["hyperparameters"]
    assert hp["quick"] and len(hp["seeds"]) >= 3 and len(hp["sizes"]) >= 3
    assert summary["seeds"]["n_pairs"] == len(hp["sizes"]) * math.comb(len(hp["seeds"]), 2)
    assert summary["sizes"]["n_pairs"] == len(hp["seeds"]) * math.comb(len(hp["sizes"]), 2)
    n = sorted(res["parameters"][f"A-{p}-s0"] for p in hp["sizes"])
    assert all(b >= 2 * a for a, b in itertools.pairwise(n))  # neighbouring sizes >= 2x apart
    names = [o["name"] for o in res["orderings"]]
    for name in ("Later < Early", "8-bit < 4-bit", "fine-tune < random", "intra-type < random", "c_LL < c_W"):
        assert name in names, names
    assert sum(n.startswith("seeds < sizes (") for n in names) == math.comb(len(hp["sizes"]), 2)
    for o in res["orderings"]:
        assert {"unit", "n", "n_units", "test", "p_value", "min_p", "verdict", "holds"} <= set(o), o["name"]
        p, min_p = o.get("p_holm", o["p_value"]), o.get("min_p_holm", o["min_p"])
        assert 0 < min_p <= p <= 1 and o["n"] == sum(o["n_units"])
        assert o["holds"] == bool(o["diff"] > 0 and p < 0.05 and min_p < 0.05)
        assert o["verdict"].startswith(o["name"])
    assert {r["id"] for r in res["findings"]} >= {f"spiral-pca-A-tiny-s{s}" for s in hp["seeds"]}
    assert max(res["longest_probe_tokens"].values()) <= hp["seq_len"]  # every probe text fits the context


@pytest.mark.slow
def test_scale_pairs_and_ordering_means_equal_a_direct_recomputation(quick):
    from trajlab.store import TrajectoryStore

    out, res = quick
    stores = {}

    def row(name: str, step: int, layer=None) -> np.ndarray:
        s = stores.setdefault(name, TrajectoryStore.open(out / name / "trajectory"))
        if layer is not None:
            return s.loglik_all(steps=[step])[0][layer]
        return s.loglik()[int(np.flatnonzero(s.steps == step)[0])]

    n_bytes = TrajectoryStore.open(out / "A-tiny-s0" / "trajectory").n_bytes
    kl = {}
    for p in res["kl_scale"]["pairs"]:
        la = row(p["store_a"], p["step_a"], p["layer"])
        lb = row(p["store_b"], p["step_b"], None if p["layer"] is None else p["layer"] + 1)
        direct = kl_bits_per_byte(la, lb, n_bytes)
        # pretraining comparisons are clipped and drop jumpy texts; kl_raw keeps every text unclipped
        assert p["kl_raw"] == pytest.approx(direct, rel=1e-9), p
        if p["setting"] not in ("early", "later", "seeds", "sizes"):
            assert p["kl"] == pytest.approx(direct, rel=1e-9), p
        if not (p["flagged"] and res["kl_scale"]["options"]["exclude_flagged"]):
            kl.setdefault(p["setting"], []).append(p["kl"])
    by_name = {o["name"]: o for o in res["orderings"]}
    for small, large in (("8-bit", "4-bit"), ("fine-tune", "random"), ("intra-type", "random")):
        o = by_name[f"{small} < {large}"]
        assert o["smaller"] == pytest.approx(np.mean(kl[small]), rel=1e-9)
        assert o["larger"] == pytest.approx(np.mean(kl[large]), rel=1e-9)
        assert o["n_units"] == [len(kl[small]), len(kl[large])]
    for o in (o for o in res["orderings"] if o["name"].startswith("seeds < sizes (")):
        assert o["smaller"] == pytest.approx(np.mean(kl["seeds"]), rel=1e-9)
        assert o["n_units"] == [len(kl["seeds"]), len(res["hyperparameters"]["seeds"])]


@pytest.mark.slow
def test_the_doc_states_the_results_numbers(quick, tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    from reproduce_toy_findings import write_doc

    _, res = quick
    doc = write_doc(res, tmp_path / "docs" / "reproduction.md").read_text()
    assert f"Wall time: {res['wall_s']:.0f} s" in doc and res["command"] in doc and res["machine"] in doc
    for r in res["kl_scale"]["summary"]:
        assert f"| {r['label']} | {r['n_pairs']} | {r['n_runs']} | {r['median']:.4g} |" in doc
    for o in res["orderings"]:
        assert f"- {o['verdict']}" in doc
        assert f"| {o['name']} | {o['unit']} |" in doc
    assert "texts only, runs fixed" in doc
    assert (tmp_path / "docs" / "reproduction" / "kl_scale.png").read_bytes()[:4] == b"\x89PNG"
