"""TrajectoryCallback under DDP: two CPU processes (gloo) score disjoint shares of the probe, rank zero writes,
and the gathered LL equals single-process scoring of the same weights.

Run by pytest, this file starts itself as a script (``python tests/test_callback_ddp.py OUT``), so Lightning's
DDP launcher re-executes a plain script rather than pytest.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve()
DATA = {"vocab_size": 512, "seq_len": 64, "batch_size": 4, "n_probe": 15}  # 15 texts: shares of 8 and 7


def ddp_fit(out: str) -> None:
    import lightning as L

    from trajlab.record.callback import TrajectoryCallback
    from trajlab.train.lit import LitLM, LMDataModule

    L.seed_everything(0)
    cb = TrajectoryCallback(
        f"{out}/trajectory", schedule="every:2", weights="full", full_every=1, batch_size=3
    )
    # LMDataModule shards its own batches by rank, so Lightning must not swap in a DistributedSampler.
    trainer = L.Trainer(
        strategy="ddp",
        accelerator="cpu",
        devices=2,
        max_steps=4,
        limit_val_batches=0,
        use_distributed_sampler=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=out,
        callbacks=[cb],
    )
    trainer.fit(LitLM(preset="nano", context_length=64, warmup_steps=2), LMDataModule(**DATA))


def run_two_ranks(tmp_path):
    """This file as a script: a 2-process gloo DDP fit into tmp_path (one thread each, so they don't fight)."""
    env = os.environ | {"PYTHONPATH": str(HERE.parents[1]), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(HERE), str(tmp_path)], check=False, capture_output=True,
                          text=True, timeout=240, env=env)


@pytest.mark.slow
def test_ddp_scores_each_text_once_and_matches_single_process(tmp_path):
    import torch

    from trajlab.lens import score_model
    from trajlab.store import TrajectoryStore
    from trajlab.train.lit import LMDataModule
    from trajlab.train.models import build_model

    run = run_two_ranks(tmp_path)
    assert run.returncode == 0, run.stderr[-4000:]
    store = TrajectoryStore.open(tmp_path / "trajectory")
    assert store.steps.tolist() == [0, 2, 4]
    assert all(store.snapshot_info(s)["info"]["world_size"] == 2 for s in store.steps)
    dm = LMDataModule(**DATA)
    dm.setup()
    assert store.probe().texts == dm.probe_texts
    model = build_model("nano", len(dm.tokenizer), 64)
    stored = store.loglik_all()  # (K, 3, N)
    for k, step in enumerate(store.steps):
        model.load_state_dict(
            {n: torch.from_numpy(w) for n, w in store.full_weights(step).items()}, strict=False
        )
        single, info = score_model(model, dm.tokenizer, dm.probe_texts, "all", return_info=True)  # batches of 8
        np.testing.assert_allclose(stored[k], single, rtol=1e-6, atol=1e-6)
    # the scored tokens per text, gathered from both ranks' shares, are one process's
    assert store.meta["scoring"] == info.scoring()


@pytest.mark.slow
def test_ddp_store_refused_on_rank_zero_stops_every_rank(tmp_path):
    from trajlab.data.probe import ProbeSet
    from trajlab.store import TrajectoryStore

    meta = {"run": "other", "model": {}, "tokenizer": {"fingerprint": "x"}, "config": {}}
    TrajectoryStore.create(
        tmp_path / "trajectory", probe=ProbeSet(["a b", "c d"]), meta=meta, n_layers=2
    ).close()
    run = run_two_ranks(tmp_path)
    assert run.returncode != 0  # and no rank is left waiting: the run ends within the timeout
    assert "probe fingerprint" in run.stderr and "opening the store failed on rank 0" in run.stderr


if __name__ == "__main__":
    ddp_fit(sys.argv[1])
