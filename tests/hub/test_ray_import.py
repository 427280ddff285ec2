"""`trajlab import --executor ray` on a real local Ray cluster (2 CPUs): two shards with a duplicate across
their boundary equal the serial import bitwise; a worker killed mid-task is retried and the store is
complete."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
import torch
from test_importers import PROBE, REPO, hub_cache, revision_model

from trajlab import import_checkpoints
from trajlab.store import TrajectoryStore

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

# step8 has step4's weights: the duplicate sits right across the boundary of 2 shards (step0-4 | step8-64)
REVISIONS = {
    "step0": 0,
    "step1": 0,
    "step2": 2,
    "step4": 4,
    "step8": 4,
    "step16": 16,
    "step32": 32,
    "step64": 64,
}
STEPS = [0, 1, 2, 4, 8, 16, 32, 64]
LATER = {"step128": 128, "step256": 128}
ALL = ",".join(REVISIONS)
FAST = dict(sketch_k=64, window=3, progress=False)


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from tiny_models import make_tokenizer

    root, tok = tmp_path_factory.mktemp("saved"), make_tokenizer()
    out = {}
    for seed in sorted({*REVISIONS.values(), *LATER.values()}):
        out[seed] = root / f"seed{seed}"
        revision_model(seed).save_pretrained(out[seed])
        tok.save_pretrained(out[seed])
    return out


@pytest.fixture
def hub(tmp_path, folders, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the serial import's count; every Ray task sets the driver's
    hub_cache(tmp_path / "hub", folders, REVISIONS)
    yield tmp_path / "hub"
    torch.set_num_threads(threads)  # later tests run with the process's own count


def _notes(store: TrajectoryStore, kind: str) -> list[dict]:
    return [n["payload"] for n in store.notes(kind)]


def assert_same_store(a: TrajectoryStore, b: TrajectoryStore) -> None:
    """Same steps, LL rows bitwise, sketches, exact distances (NaN where both lack one), duplicate notes."""
    assert a.steps.tolist() == b.steps.tolist()
    assert np.array_equal(a.loglik_all(), b.loglik_all())
    np.testing.assert_array_equal(a.weight_sketch(), b.weight_sketch())
    np.testing.assert_array_equal(a.weight_sq_dist_matrix(), b.weight_sq_dist_matrix())
    assert _notes(a, "duplicate") == _notes(b, "duplicate")
    for s in map(int, a.steps):
        assert a.snapshot_info(s)["info"].get("duplicate_of") == b.snapshot_info(s)["info"].get(
            "duplicate_of"
        )


def test_two_ray_workers_equal_the_serial_import(tmp_path, hub, folders, cluster):
    with pytest.warns(UserWarning, match="duplicate"):
        serial = import_checkpoints(REPO, ALL, tmp_path / "serial", PROBE, cache_dir=hub, **FAST)
    result = import_checkpoints(
        REPO, ALL, tmp_path / "ray", PROBE, cache_dir=hub, executor="ray", workers=2, **FAST
    )
    assert serial.imported == result.imported == STEPS
    assert serial.duplicates == result.duplicates == {1: 0, 8: 4} and not result.failed
    ref, got = TrajectoryStore.open(tmp_path / "serial"), TrajectoryStore.open(tmp_path / "ray")
    assert_same_store(got, ref)
    # the boundary step has its distances to the previous shard's last 3 revisions (NaN in a plain --shard)
    assert not np.isnan(got.weight_sq_dist_matrix()[4, 1:4]).any()
    assert got.meta["merged_from"] and "shard" not in got.meta
    assert not (tmp_path / "ray.shards").exists()
    # a rerun finds everything stored and starts no task
    again = import_checkpoints(REPO, ALL, tmp_path / "ray", cache_dir=hub, executor="ray", workers=2, **FAST)
    assert again.skipped == STEPS and not again.imported
    # more revisions later: one shard each, after the stored ones (shard 0 preloads from the store itself),
    # merged into the store; step256 duplicates step128 of the other shard
    hub_cache(hub, folders, LATER)
    grown = import_checkpoints(
        REPO, f"{ALL},{','.join(LATER)}", tmp_path / "ray", cache_dir=hub, executor="ray", workers=2, **FAST
    )
    assert grown.skipped == STEPS and grown.imported == [128, 256] and grown.duplicates == {256: 128}
    with pytest.warns(UserWarning, match="duplicate"):
        import_checkpoints(REPO, f"{ALL},{','.join(LATER)}", tmp_path / "serial", cache_dir=hub, **FAST)
    assert_same_store(TrajectoryStore.open(tmp_path / "ray"), TrajectoryStore.open(tmp_path / "serial"))


def test_a_killed_worker_is_retried_and_the_store_is_complete(tmp_path, hub, cluster, monkeypatch):
    hold = tmp_path / "hold"
    hold.touch()
    monkeypatch.setenv("TRAJLAB_RAY_HOLD", str(hold))  # tasks wait after each revision while it exists
    out, box = tmp_path / "store", []
    worker = threading.Thread(
        target=lambda: box.append(
            import_checkpoints(
                REPO, ALL, out, PROBE, cache_dir=hub, executor="ray", workers=2, max_retries=2, **FAST
            )
        )
    )
    worker.start()
    shard, pid_file = tmp_path / "store.shards" / "1", tmp_path / "store.shards" / "1.pid"
    deadline = time.monotonic() + 180
    while True:  # shard 1 holds after its first own revision: 3 preloaded + step8
        assert worker.is_alive() and time.monotonic() < deadline, "shard 1 never reached its first revision"
        try:
            with TrajectoryStore.open(shard) as s:
                if len(s) >= 4:
                    break
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.05)
    killed = int(pid_file.read_text())
    os.kill(killed, signal.SIGKILL)
    hold.unlink()
    worker.join(timeout=300)
    assert not worker.is_alive() and box, "the Ray import did not finish"
    result = box[0]
    assert result.imported == STEPS and result.duplicates == {1: 0, 8: 4} and not result.failed
    store = TrajectoryStore.open(out)
    assert store.steps.tolist() == STEPS  # every step once (a store refuses a repeated step)
    assert len(_notes(store, "duplicate")) == 2
    with pytest.warns(UserWarning, match="duplicate"):
        import_checkpoints(REPO, ALL, tmp_path / "serial", PROBE, cache_dir=hub, **FAST)
    assert_same_store(store, TrajectoryStore.open(tmp_path / "serial"))
