"""scripts/reproduce_toy.py --quick end to end: results.json's structure, and every ordering's two means equal to a
KL computed here, directly from the stores, over the pairs the ordering names."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


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
def test_results_have_the_issues_keys(quick):
    out, res = quick
    for key in ("orderings", "table", "spiral_test", "thread_test", "hyperparameters", "wall_s"):
        assert key in res, key
    names = [o["name"] for o in res["orderings"]]
    assert "between seeds < between sizes" in names and "fine-tuned vs base < random pairs" in names
    assert "c_LL < c_W (diffusion exponents)" in names
    for o in res["orderings"]:
        assert {"name", "holds", "p_value"} <= set(o) and 0 <= o["p_value"] <= 1
        assert o["holds"] == bool(o["diff"] > 0 and o["p_value"] < 0.05)
    for m in ("pca", "tsne"):
        assert {"winding_turns", "null_mean", "null_q95", "p_value"} <= set(res["spiral_test"][m])
    assert {"thread_score", "null_mean", "p_value"} <= set(res["thread_test"])
    hp = res["hyperparameters"]
    assert hp["quick"] and hp["seeds"] == [0, 1, 2] and len(hp["sizes"]) >= 2
    assert max(res["longest_probe_tokens"].values()) <= hp["seq_len"]  # every probe text fits the context
    assert Path(res["report"]).exists()


@pytest.mark.slow
def test_each_ordering_equals_a_direct_recomputation(quick):
    from trajlab.store import TrajectoryStore

    out, res = quick

    def row(label: str) -> np.ndarray:
        name, _, step = label.partition("@")
        store = TrajectoryStore.open(out / name / "trajectory")
        lls, steps = store.loglik(), store.steps
        return lls[-1] if not step else lls[int(np.flatnonzero(steps == int(step))[0])]

    n_bytes = TrajectoryStore.open(out / "A-tiny-s0" / "trajectory").n_bytes
    checked = 0
    for o in res["orderings"]:
        if "smaller_pairs" not in o:
            continue
        for side, pairs in (("smaller", o["smaller_pairs"]), ("larger", o["larger_pairs"])):
            direct = np.mean([kl_bits_per_byte(row(a), row(b), n_bytes) for a, b in pairs])
            assert o[side] == pytest.approx(direct, rel=1e-9), (o["name"], side)
        checked += 1
    assert checked >= 3
    # The table's pairs too: each KL equals the direct one.
    for group in res["table"]:
        for p in group["pairs"]:
            assert p["kl"] == pytest.approx(kl_bits_per_byte(row(p["a"]), row(p["b"]), n_bytes), rel=1e-9)


@pytest.mark.slow
def test_the_doc_states_the_results_numbers(quick, tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    from reproduce_toy_findings import write_doc

    _, res = quick
    doc = write_doc(res, tmp_path / "docs" / "reproduction.md").read_text()
    assert f"Wall time: {res['wall_s']:.0f} s" in doc and res["command"] in doc
    for group in res["table"]:
        assert f"| {group['quantity']} | {group['mean']:.4g} | {group['median']:.4g} |" in doc
    for o in res["orderings"]:
        verdict = "holds" if o["holds"] else "does not hold"
        line = next(ln for ln in doc.splitlines() if ln.startswith(f"- **{verdict}**: {o['name']}: "))
        assert f"[{o['lo']:.3g}, {o['hi']:.3g}]" in line
        assert ("p < " in line) if o["p_value"] == 0 else (f"p = {o['p_value']:.3g}" in line)
    images = [ln.split("(")[1].rstrip(")") for ln in doc.splitlines() if ln.startswith("![")]
    assert "reproduction/map_A-tiny-s0.png" in images
    assert all((tmp_path / "docs" / im).read_bytes()[:4] == b"\x89PNG" for im in images)
