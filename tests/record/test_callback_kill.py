"""Crash safety of a recorded run: kill -9 the trajlab CLI at random moments after it starts writing snapshots,
check the store after each kill, resume from the last Lightning checkpoint, and end with exactly the store an
uninterrupted run writes (CPU fp32: LL rows bitwise equal, every step once, no gap)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from trajlab.cli import main
from trajlab.record.schedule import snapshot_steps
from trajlab.store import TrajectoryStore

ROOT = Path(__file__).resolve().parents[2]
MAX_STEPS, N_KILLS = 48, 5
SCHEDULE = snapshot_steps("every:2", MAX_STEPS)


def write_config(path: Path) -> Path:
    """configs/debug.yaml with 48 steps, a checkpoint every 4 steps, a snapshot every 2 (exact weight distances to
    the previous 2), an 8-text probe."""
    cfg = yaml.safe_load((ROOT / "configs" / "debug.yaml").read_text())
    cfg["trainer"] |= {"max_steps": MAX_STEPS, "enable_progress_bar": False, "enable_model_summary": False}
    cfg["data"]["n_probe"] = 8
    cfg["trainer"]["callbacks"] = [
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"save_last": True, "save_top_k": -1, "every_n_train_steps": 4},
        },
        {
            "class_path": "trajlab.record.callback.TrajectoryCallback",
            "init_args": {"record": {"schedule": "every:2", "layers": "all", "weights": "sketch", "window": 2}},
        },
    ]
    path.write_text(yaml.safe_dump(cfg))
    return path


def fit_command(config: Path, run_dir: Path) -> list[str]:
    cmd = [sys.executable, "-m", "trajlab.cli", "fit", "--config", str(config), "--run_dir", str(run_dir)]
    last = run_dir / "checkpoints" / "last.ckpt"
    return cmd + ["--ckpt_path", str(last)] if last.exists() else cmd


def n_snapshot_lines(run_dir: Path) -> int:
    path = run_dir / "trajectory" / "manifest.jsonl"
    return path.read_bytes().count(b'"type":"snapshot"') if path.exists() else 0


def leftovers(store: Path) -> int:
    """Files a killed writer left behind: temp files and snapshot files no manifest line lists."""
    lines = [ln for ln in (store / "manifest.jsonl").read_text().split("\n")[:-1]]
    listed = sum(ln.count('"name":"snapshots/') for ln in lines)
    return len(list(store.glob(".*.tmp"))) + len(list((store / "snapshots").iterdir())) - listed


@pytest.fixture
def one_thread():
    """Every run of the test on one torch thread (in-process and subprocesses alike, so results can be equal
    bitwise), which also keeps a shared 2-core machine responsive."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_kill_and_resume_gives_the_uninterrupted_store(tmp_path, one_thread):
    config = write_config(tmp_path / "kill.yaml")
    assert main(["fit", "--config", str(config), "--run_dir", str(tmp_path / "ref")]) == 0
    ref = TrajectoryStore.open(tmp_path / "ref" / "trajectory")
    assert ref.steps.tolist() == SCHEDULE
    ref_ll = ref.loglik_all()  # (K, L+1, N)

    run_dir, rng, kills = tmp_path / "crash", random.Random(0), []
    env = os.environ | {"PYTHONPATH": str(ROOT)} | one_thread
    while len(kills) < N_KILLS:
        start = n_snapshot_lines(run_dir)
        proc = subprocess.Popen(
            fit_command(config, run_dir), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        # Kill at a random moment (within 50 ms) after this process has added 1 or 2 new snapshots; every other
        # kill aims at the writer itself: right when a temp file of the next snapshot appears (within 3 s).
        new, delay = rng.randint(1, 2), rng.uniform(0.0, 0.05)
        while n_snapshot_lines(run_dir) < start + new and proc.poll() is None:
            time.sleep(0.01)
        assert proc.poll() is None, (
            f"the run ended before kill {len(kills) + 1}: {proc.stderr.read()[-2000:]}"
        )
        if len(kills) % 2:
            delay, deadline = "mid-write", time.monotonic() + 3
            while time.monotonic() < deadline and not any(
                p.startswith(".") for p in os.listdir(run_dir / "trajectory" / "snapshots")
            ):
                time.sleep(0.0002)  # a snapshot's files exist for a few milliseconds before its manifest line
        else:
            time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        store = run_dir / "trajectory"
        kills.append(
            (
                new,
                delay if isinstance(delay, str) else round(delay, 2),
                len(TrajectoryStore.open(store)),
                leftovers(store),
            )
        )
        # After each kill: a complete prefix of the schedule, every listed file intact (sha256 checked on read).
        crashed = TrajectoryStore.open(store)
        k = len(crashed)
        assert crashed.steps.tolist() == SCHEDULE[:k]
        np.testing.assert_array_equal(crashed.loglik_all(), ref_ll[:k])

    assert main(fit_command(config, run_dir)[3:]) == 0  # the last resume, to the end, in this process
    done = TrajectoryStore.open(run_dir / "trajectory")
    assert done.steps.tolist() == SCHEDULE  # strictly increasing, no gap, no duplicate
    np.testing.assert_array_equal(done.loglik_all(), ref_ll)  # bitwise: exact equality asserted
    np.testing.assert_array_equal(done.weight_sketch(), ref.weight_sketch())
    replays = [n["payload"] for n in done.notes("replay")]
    assert all(r["max_abs_diff"] == 0.0 for r in replays)
    print(
        f"kills (after new snapshots, delay s, snapshots stored, files left uncommitted): {kills}; "
        f"replayed steps verified: {[r['step'] for r in replays]}"
    )
