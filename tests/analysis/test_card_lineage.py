"""A fine-tune imported from the hub whose model card names its base ("hf:REPO") pairs with that base's store."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic_stores import N_BYTES, brownian_ll, write_store

from trajlab import analysis as ta
from trajlab.store import open_stores


def test_card_base_model_finds_the_imported_base(tmp_path):
    base_ll, child_ll = brownian_ll(2, 1), brownian_ll(1, 2)
    base = write_store(
        tmp_path,
        "base",
        [1000, 2000],
        base_ll[:, None],
        {"model": {"name": "org/base", "class": "GPTNeoXForCausalLM", "config": {}}},
    )
    lineage = {"root": "hf:org/base", "parent": {"id": "hf:org/base", "step": 0}}
    child = write_store(tmp_path, "child", [0], child_ll[:, None], {"lineage": lineage})
    stores = open_stores([base, child])
    pairs = ta.lineage_pairs(
        [ta.Trajectory(s.meta["run"], np.asarray(s.steps), s.loglik(), s.meta) for s in stores]
    )
    assert [(c.name, p.name, step) for c, p, step in pairs] == [
        ("child", "base", 2000)
    ]  # the base's last step
    scale = ta.kl_scale(stores)
    ft = [r for r in scale.pairs if r["setting"] == "fine-tune"]
    direct = np.var(child_ll[0] - base_ll[1]) / 2 / (N_BYTES.mean() * np.log(2))
    assert len(ft) == 1 and ft[0]["kl"] == pytest.approx(direct, rel=1e-9)
