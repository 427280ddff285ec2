"""Importers: a fake HF hub cache of tiny GPT-NeoX revisions imported offline and checked against direct
scoring and direct weight distances; resume after kill -9, shards + merge, cache cleaning, every refusal."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from tiny_models import SAMPLE_TEXTS, make_tokenizer, tiny_llama, tiny_neox

from trajlab import import_checkpoints, merge_stores
from trajlab.cli import main as trajlab_main
from trajlab.data.probe import ProbeSet
from trajlab.data.tokenizer import tokenizer_fingerprint
from trajlab.hub.checkpoints import RefusedCheckpointError
from trajlab.hub.importer import import_main
from trajlab.hub.revisions import PYTHIA_REVISIONS, expand_revisions, revision_steps, shard_part
from trajlab.lens import score_model
from trajlab.sketch import WeightSketch
from trajlab.store import TrajectoryStore
from trajlab.store.merge import merge_main

REPO = "EleutherAI/pythia-fake"
# revision -> the seed of its weights; step1 is step0 byte for byte, as in the published Pythia checkpoints
REVISIONS = {"step0": 0, "step1": 0, "step2": 2, "step4": 4, "step8": 8, "step1000": 1000, "main": 143000}
STEPS = [0, 1, 2, 4, 8, 1000, 143000]
ALL = ",".join(REVISIONS)
PROBE = ProbeSet.from_texts(SAMPLE_TEXTS, name="unit")
FAST = dict(sketch_k=64, window=3, progress=False)


def revision_model(seed: int):
    """tiny_neox moved along a fake trajectory: the seed-0 init plus seeded noise growing with the step."""
    model = tiny_neox()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * np.log1p(seed) * torch.randn(p.shape, generator=g))
    return model


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is ~100x faster than two when the shared CPUs are busy (OpenMP spin-waits)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """save_pretrained folders (model + tokenizer) per distinct weight seed, and the in-memory models."""
    root, tok = tmp_path_factory.mktemp("saved"), make_tokenizer()
    models, folders = {}, {}
    for seed in sorted(set(REVISIONS.values())):
        models[seed] = revision_model(seed)
        folders[seed] = root / f"seed{seed}"
        models[seed].save_pretrained(folders[seed])
        tok.save_pretrained(folders[seed])
    return models, folders


def hub_cache(cache: Path, folders: dict, revisions: dict = REVISIONS, repo: str = REPO) -> dict[str, str]:
    """Lay out save_pretrained folders as the HF hub cache does; returns {revision: commit}.

    models--ORG--NAME/refs/<revision> holds a 40-hex commit; snapshots/<commit>/<file> are symlinks into
    blobs/, named by sha256 for weight files (as for LFS files) and by a git-style sha1 otherwise, so
    identical files of different revisions share a blob.
    """
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    commits = {}
    for rev, seed in revisions.items():
        commits[rev] = hashlib.sha1(f"{repo}@{rev}".encode()).hexdigest()
        snap = root / "snapshots" / commits[rev]
        snap.mkdir(parents=True)
        for f in sorted(folders[seed].iterdir()):
            data = f.read_bytes()
            blob = (
                hashlib.sha256(data)
                if f.suffix in (".safetensors", ".bin")
                else hashlib.sha1(b"blob %d\0" % len(data) + data)
            ).hexdigest()
            if not (root / "blobs" / blob).exists():
                (root / "blobs" / blob).write_bytes(data)
            (snap / f.name).symlink_to(f"../../blobs/{blob}")
        (root / "refs" / rev).write_text(commits[rev])
    return commits


def direct_sq_dist(folders: dict, seed_a: int, seed_b: int) -> float:
    a, b = load_file(folders[seed_a] / "model.safetensors"), load_file(folders[seed_b] / "model.safetensors")
    return float(sum(((a[k].astype(np.float64) - b[k].astype(np.float64)) ** 2).sum() for k in a))


def ll_rows(store: TrajectoryStore) -> np.ndarray:
    return store.loglik_all()  # (K, L + 1, N)


@pytest.fixture
def cache(tmp_path, saved):
    path = tmp_path / "hub"
    return path, hub_cache(path, saved[1])


def test_offline_import_matches_direct_scoring_and_weight_distances(tmp_path, saved, cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    models, folders = saved
    hub, commits = cache
    with pytest.warns(UserWarning, match="same weight files as step 0"):
        result = import_checkpoints(REPO, ALL, tmp_path / "store", PROBE, cache_dir=hub, **FAST)
    assert result.imported == STEPS and result.duplicates == {1: 0} and not result.failed
    store = TrajectoryStore.open(tmp_path / "store")
    assert store.steps.tolist() == STEPS and store.n_layers == 2
    tok = make_tokenizer()
    assert store.meta["tokenizer"]["fingerprint"] == tokenizer_fingerprint(tok)
    assert store.meta["weights"] == {"sketch": WeightSketch(k=64).spec, "window": 3}
    rows = ll_rows(store)
    sketch = store.weight_sketch()
    for i, (rev, seed) in enumerate(REVISIONS.items()):
        expected = score_model(models[seed], tok, PROBE, "all", batch_size=8)
        assert np.array_equal(rows[i], expected), rev
        np.testing.assert_array_equal(sketch[i], WeightSketch(k=64).sketch(models[seed]))
        info = store.snapshot_info(STEPS[i])
        assert info["source"] == f"{REPO}@{rev}" and info["info"]["checkpoint"]["commit"] == commits[rev]
        sha = hashlib.sha256((folders[seed] / "model.safetensors").read_bytes()).hexdigest()
        assert info["info"]["checkpoint"]["files"] == {"model.safetensors": sha}
        # the duplicate was not scored: it has no scoring time and points at its original
        assert ("score_s" in info["info"]) == (rev != "step1")
    assert store.snapshot_info(1)["info"]["duplicate_of"] == 0
    assert [n["payload"]["step"] for n in store.notes("duplicate")] == [1]
    seeds = list(REVISIONS.values())
    dist = store.weight_sq_dist_matrix()
    for i in range(len(STEPS)):
        for j in range(i):
            if i - j <= 3:
                assert dist[i, j] == pytest.approx(
                    direct_sq_dist(folders, seeds[i], seeds[j]), rel=1e-10, abs=0
                )
            else:
                assert np.isnan(dist[i, j])
    assert dist[1, 0] == 0.0


def test_resume_skips_stored_steps_and_reloads_the_window(tmp_path, saved, cache):
    hub, commits = cache
    out = tmp_path / "store"
    with pytest.warns(UserWarning, match="duplicate"):
        first = import_checkpoints(REPO, "step0,step1,step2", out, PROBE, cache_dir=hub, **FAST)
    assert first.imported == [0, 1, 2]
    # step0 now points at another commit: the stored snapshot is kept, with a warning
    (hub / "models--EleutherAI--pythia-fake" / "refs" / "step0").write_text(commits["step4"])
    with pytest.warns(UserWarning) as caught:
        second = import_checkpoints(REPO, ALL, out, cache_dir=hub, **FAST)  # probe: the store's
    messages = " | ".join(str(w.message) for w in caught)
    assert "step 0 is in" in messages and "kept the stored one" in messages
    assert "resume: step(s) [0] cannot be reloaded (step 0: its weight files changed" in messages
    assert second.skipped == [0, 1, 2] and second.imported == [4, 8, 1000, 143000] and not second.duplicates
    store = TrajectoryStore.open(out)
    assert store.steps.tolist() == STEPS
    # the window was reloaded from the cache, so the first resumed revision has distances to earlier ones
    assert store.weight_sq_dist(2, 4) == pytest.approx(direct_sq_dist(saved[1], 2, 4), rel=1e-10)
    assert store.weight_sq_dist(1, 4) == pytest.approx(direct_sq_dist(saved[1], 0, 4), rel=1e-10)
    # a revision below the last stored step cannot be inserted: reported, nothing resolved or written
    with pytest.warns(
        UserWarning, match=r"\(step16\) lie below the last step 143000 .* another store and merge"
    ):
        late = import_checkpoints(REPO, "step16", out, cache_dir=hub, **FAST)
    assert (
        late.failed == {"step16": "below the store's last step 143000"}
        and len(TrajectoryStore.open(out)) == 7
    )
    # --probe may name a store whose probe to reuse
    other = import_checkpoints(REPO, "step2", tmp_path / "other", out, cache_dir=hub, **FAST)
    assert other.imported == [2]
    np.testing.assert_array_equal(
        TrajectoryStore.open(tmp_path / "other").loglik_all()[0], store.loglik_all()[2]
    )


def test_shards_merged_equal_an_unsharded_import(tmp_path, cache):
    hub, _ = cache
    with pytest.warns(UserWarning, match="duplicate"):
        whole = import_checkpoints(REPO, ALL, tmp_path / "whole", PROBE, cache_dir=hub, **FAST)
        parts = [
            import_checkpoints(REPO, ALL, tmp_path / f"s{i}", PROBE, shard=f"{i}/2", cache_dir=hub, **FAST)
            for i in range(2)
        ]
    assert [p.imported for p in parts] == [STEPS[:4], STEPS[4:]] and whole.imported == STEPS
    assert merge_main([str(tmp_path / "s1"), str(tmp_path / "s0"), "--out", str(tmp_path / "merged")]) == 0
    merged, ref = TrajectoryStore.open(tmp_path / "merged"), TrajectoryStore.open(tmp_path / "whole")
    assert merged.steps.tolist() == STEPS and "shard" not in merged.meta
    assert np.array_equal(ll_rows(merged), ll_rows(ref))
    np.testing.assert_array_equal(merged.weight_sketch(), ref.weight_sketch())
    dm, dr = merged.weight_sq_dist_matrix(), ref.weight_sq_dist_matrix()
    both = ~np.isnan(dm) & ~np.isnan(dr)
    np.testing.assert_array_equal(dm[both], dr[both])
    assert np.isnan(dm[4, 3]) and not np.isnan(dr[4, 3])  # across the shard boundary: missing
    assert len(merged.notes("duplicate")) == 1
    # a step held twice merges when identical, and is refused when it differs
    merge_stores([tmp_path / "whole", tmp_path / "s0"], tmp_path / "merged2")
    assert TrajectoryStore.open(tmp_path / "merged2").steps.tolist() == STEPS
    with TrajectoryStore.create(tmp_path / "other", probe=PROBE, meta=ref.meta, n_layers=2) as other:
        other.append(0, ll_rows(ref)[0] + 1.0)
    with pytest.raises(ValueError, match=r"step 0 is in .* different contents"):
        merge_stores([tmp_path / "whole", tmp_path / "other"], tmp_path / "merged3")
    assert not (tmp_path / "merged3").exists()
    other_probe = ProbeSet.from_texts(SAMPLE_TEXTS[:3])
    TrajectoryStore.create(
        tmp_path / "p2",
        probe=other_probe,
        meta={k: v for k, v in ref.meta.items() if k != "scoring"}  # its n_tokens are per text of the probe
        | {"probe_fingerprint": other_probe.fingerprint, "n_texts": 3},
        n_layers=2,
    ).close()
    with pytest.raises(ValueError, match="probe fingerprint"):
        merge_stores([tmp_path / "whole", tmp_path / "p2"], tmp_path / "merged4")
    with pytest.raises(FileExistsError):
        merge_stores([tmp_path / "s0"], tmp_path / "merged")


def test_clean_cache_keeps_blobs_other_revisions_use(tmp_path, cache):
    hub, commits = cache
    repo_dir = hub / "models--EleutherAI--pythia-fake"
    with pytest.warns(UserWarning, match="duplicate"):
        import_checkpoints(
            REPO, "step0,step1,step2", tmp_path / "store", PROBE, cache_dir=hub, clean_cache=True, **FAST
        )
    left = {p.name for p in (repo_dir / "snapshots").iterdir()}
    assert left == {commits[r] for r in ("step4", "step8", "step1000", "main")}
    assert not (repo_dir / "refs" / "step0").exists()
    # shared tokenizer blobs survived: the kept revisions still import (distances to deleted ones: NaN)
    with pytest.warns(
        UserWarning, match=r"step\(s\) \[0, 1, 2\] cannot be reloaded \(step 0: no longer in the"
    ):
        result = import_checkpoints(REPO, ALL, tmp_path / "store", cache_dir=hub, **FAST)
    assert result.imported == [4, 8, 1000, 143000] and not result.failed


def test_sharded_revision_sharing_a_shard_is_scored_and_flagged(tmp_path):
    models = [revision_model(2), revision_model(2)]
    models[0].save_pretrained(tmp_path / "a", max_shard_size="40KB")
    index = json.loads((tmp_path / "a" / "model.safetensors.index.json").read_text())["weight_map"]
    last = index["gpt_neox.final_layer_norm.weight"]
    with torch.no_grad():  # revision b differs from a only in the parameters of one shard
        for name, p in models[1].named_parameters():
            if index.get(name) == last:  # (transformers saves lm_head as embed_out)
                p.add_(1.0)
    models[1].save_pretrained(tmp_path / "b", max_shard_size="40KB")
    for folder in ("a", "b"):
        make_tokenizer().save_pretrained(tmp_path / folder)
    hub_cache(tmp_path / "hub", {"a": tmp_path / "a", "b": tmp_path / "b"}, {"step128": "a", "step256": "b"})
    hub = tmp_path / "hub"
    with pytest.warns(UserWarning, match=r"@step256 \(step 256\) shares weight file\(s\) with earlier steps"):
        result = import_checkpoints(REPO, "step128,step256", tmp_path / "store", PROBE, cache_dir=hub, **FAST)
    assert result.imported == [128, 256] and not result.duplicates
    store = TrajectoryStore.open(tmp_path / "store")
    assert len(store.snapshot_info(256)["info"]["checkpoint"]["files"]) == len(set(index.values())) > 1
    shared = store.notes("shared-weight-file")[0]["payload"]["same_as"]
    assert last not in shared and shared == {f: 128 for f in set(index.values()) if f != last}
    for i, model in enumerate(models):
        np.testing.assert_array_equal(store.loglik_all()[i], score_model(model, make_tokenizer(), PROBE))


def test_any_architecture_from_a_local_folder(tmp_path):
    model, tok = tiny_llama(), make_tokenizer()
    model.save_pretrained(tmp_path / "llama")
    tok.save_pretrained(tmp_path / "llama")
    result = import_checkpoints(tmp_path / "llama", "step500", tmp_path / "store", PROBE, "last", **FAST)
    store = TrajectoryStore.open(tmp_path / "store")
    assert result.imported == [500] and store.meta["model"]["name"] == str((tmp_path / "llama").resolve())
    np.testing.assert_array_equal(store.loglik(-1)[0], score_model(model, tok, PROBE, "last")[0])
    assert store.snapshot_info(500)["layers"] == [2]
    single = import_checkpoints(tmp_path / "llama", None, tmp_path / "store2", PROBE, **FAST)
    assert single.imported == [0]  # one revision without a stepN name: step 0


def test_revision_lists_ranges_steps_and_shards():
    assert len(PYTHIA_REVISIONS) == 154 and PYTHIA_REVISIONS[:5] == (
        "step0",
        "step1",
        "step2",
        "step4",
        "step8",
    )
    assert expand_revisions("pythia", pythia=True) == list(PYTHIA_REVISIONS)
    assert expand_revisions("step256-step3000", pythia=True) == [
        "step256",
        "step512",
        "step1000",
        "step2000",
        "step3000",
    ]
    with pytest.raises(ValueError, match=r"unknown Pythia revision 'step3'; nearest valid: step2, step4"):
        expand_revisions("step0,step3", pythia=True)
    with pytest.raises(ValueError, match=r"nearest valid: .*step1000"):
        expand_revisions("stp1000", pythia=True)
    assert revision_steps(["step0", "step512", "step1000", "main"], pythia=True) == [0, 512, 1000, 143000]
    with pytest.raises(ValueError, match="main and step143000 both map to step 143000"):
        revision_steps(["main", "step143000"], pythia=True)
    assert revision_steps(["main"], pythia=False) == [0] and revision_steps(["a", "b"], pythia=False) == [
        0,
        1,
    ]
    with pytest.raises(ValueError, match="mix stepN names with others"):
        revision_steps(["step5", "final"], pythia=False)
    assert expand_revisions("v1,v2", pythia=False) == ["v1", "v2"]
    parts = [shard_part(list(range(154)), i, 4) for i in range(4)]
    assert [len(p) for p in parts] == [39, 39, 38, 38] and [x for p in parts for x in p] == list(range(154))


def test_bad_inputs_are_refused_before_anything_is_written(tmp_path, saved, cache):
    hub, _ = cache
    out = tmp_path / "store"
    with pytest.raises(
        FileNotFoundError,
        match=r"step2000, step3000 of EleutherAI/pythia-fake .* `hf download "
        r"EleutherAI/pythia-fake --revision step2000",
    ):
        import_checkpoints(REPO, "step0,step2000,step3000", out, PROBE, cache_dir=hub, **FAST)
    assert not out.exists()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.md").write_text("not a model")
    with pytest.raises(RefusedCheckpointError, match=r"not a causal LM checkpoint: cannot read config\.json"):
        import_checkpoints(tmp_path / "notes", None, out, PROBE, **FAST)
    from transformers import T5Config

    T5Config().save_pretrained(tmp_path / "t5")
    with pytest.raises(RefusedCheckpointError, match="model_type 't5' has no AutoModelForCausalLM"):
        import_checkpoints(tmp_path / "t5", None, out, PROBE, **FAST)
    with pytest.raises(FileNotFoundError, match="neither an existing path nor a hub repo id"):
        import_checkpoints("no/such/model", None, out, PROBE, **FAST)
    assert not out.exists()
    import_checkpoints(REPO, "step0", out, PROBE, cache_dir=hub, **FAST)
    before = (out / "manifest.jsonl").read_bytes()
    with pytest.raises(ValueError, match=r"probe fingerprint .* differs from the probe of the existing"):
        import_checkpoints(REPO, ALL, out, ProbeSet.from_texts(SAMPLE_TEXTS[:3]), cache_dir=hub, **FAST)
    with pytest.raises(ValueError, match="scored with layers='all'"):
        import_checkpoints(REPO, ALL, out, None, "last", cache_dir=hub, **FAST)
    with pytest.raises(ValueError, match="scored with long_texts='rolling', not 'truncate'; write to a new --out"):
        import_checkpoints(REPO, ALL, out, cache_dir=hub, long_texts="truncate", **FAST)
    assert (out / "manifest.jsonl").read_bytes() == before


def test_corrupt_weight_file_is_reported_and_skipped(tmp_path, saved, cache):
    hub, commits = cache
    weights = hub / "models--EleutherAI--pythia-fake" / "snapshots" / commits["step4"] / "model.safetensors"
    blob = weights.resolve()
    blob.write_bytes(blob.read_bytes()[:-100])  # a truncated download
    with pytest.warns(UserWarning) as caught:
        result = import_checkpoints(REPO, ALL, tmp_path / "store", PROBE, cache_dir=hub, **FAST)
    messages = [str(w.message) for w in caught]
    assert any(
        m.startswith("EleutherAI/pythia-fake@step4 (step 4) was not imported: ValueError")
        and "model.safetensors is corrupt" in m
        for m in messages
    ), messages
    assert list(result.failed) == ["step4"] and result.imported == [0, 1, 2, 8, 1000, 143000]
    store = TrajectoryStore.open(tmp_path / "store")
    assert store.steps.tolist() == [0, 1, 2, 8, 1000, 143000]
    assert store.notes("import-failed")[0]["payload"]["revision"] == "step4"
    np.testing.assert_array_equal(ll_rows(store)[3], score_model(saved[0][8], make_tokenizer(), PROBE))
    # a damaged local folder (no hub sha256 to compare with) fails at load time; nothing is written
    shutil.copytree(saved[1][2], tmp_path / "local")
    (tmp_path / "local" / "model.safetensors").write_bytes(b"\x10\x00" + os.urandom(64))
    with pytest.warns(UserWarning, match="was not imported"):
        code = import_main([str(tmp_path / "local"), "--out", str(tmp_path / "store2"), "--no-progress"])
    assert code == 1 and not (tmp_path / "store2").exists()


def test_pickle_checkpoints_need_allow_pickle_and_load_weights_only(tmp_path, saved, capsys):
    folder = tmp_path / "pickled"
    shutil.copytree(saved[1][2], folder)
    (folder / "model.safetensors").unlink()
    torch.save(saved[0][2].state_dict(), folder / "pytorch_model.bin")
    argv = [str(folder), "--out", str(tmp_path / "store"), "--window", "0", "--no-progress"]
    assert trajlab_main(["import", *argv]) == 2
    assert "--allow-pickle" in capsys.readouterr().err and not (tmp_path / "store").exists()
    probe_file = PROBE.save(tmp_path / "probe.json")
    assert import_main([*argv, "--allow-pickle", "--probe", str(probe_file)]) == 0
    store = TrajectoryStore.open(tmp_path / "store")
    np.testing.assert_array_equal(store.loglik_all()[0], score_model(saved[0][2], make_tokenizer(), PROBE))
    assert store.snapshot_info(0)["info"]["checkpoint"]["format"] == "pickle"

    class Payload:  # what a malicious pickle does: run code while loading
        def __reduce__(self):
            return pathlib.Path.touch, (tmp_path / "pwned",)

    torch.save({**saved[0][2].state_dict(), "x": Payload()}, folder / "pytorch_model.bin")
    with pytest.warns(UserWarning, match="Weights only load failed"):
        evil = import_checkpoints(folder, None, tmp_path / "store3", PROBE, allow_pickle=True, **FAST)
    assert list(evil.failed) == ["main"] and not (tmp_path / "pwned").exists()


def test_pythia_trajectory_dry_run_touches_nothing(tmp_path):
    script = Path(__file__).parents[2] / "scripts" / "pythia_trajectory.py"
    code = textwrap.dedent(f"""
        import runpy, sys
        sys.argv = ["pythia_trajectory.py", "EleutherAI/pythia-410m", "--out", {str(tmp_path / "run")!r},
                    "--shards", "4", "--dry-run"]
        try:
            runpy.run_path({str(script)!r}, run_name="__main__")
        except SystemExit as e:
            assert e.code == 0, e.code
        heavy = sorted(m for m in ("huggingface_hub", "transformers", "torch") if m in sys.modules)
        print("imported:", heavy)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "154 revisions: step0, step1, step2" in text and "imported: []" in text
    n_params = 2 * 50304 * 1024 + 24 * (12 * 1024**2 + 13 * 1024) + 2 * 1024  # pythia-410m
    assert f"{n_params:,} parameters" in text
    assert f"{10 * n_params * 4 / 2**30:.1f} GiB" in text  # the window of exact distances
    for i in range(4):
        assert f"--shard {i}/4 --out {tmp_path / 'run' / 'shards' / str(i)}" in text
    assert text.count("trajlab import EleutherAI/pythia-410m --revisions pythia") == 4
    assert "trajlab merge" in text and "trajlab analyze" in text
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_kill_9_mid_import_then_rerun_completes(tmp_path, cache):
    hub, _ = cache
    out = tmp_path / "store"
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(Path(__file__).parents[1])!r})
        from tiny_models import SAMPLE_TEXTS
        from trajlab import import_checkpoints
        from trajlab.data.probe import ProbeSet
        import_checkpoints({REPO!r}, {ALL!r}, {str(out)!r}, ProbeSet.from_texts(SAMPLE_TEXTS * 40),
                           cache_dir={str(hub)!r}, sketch_k=64, window=3, progress=False)
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.DEVNULL)
    manifest, deadline = out / "manifest.jsonl", time.monotonic() + 120
    kill_after = random.randint(1, len(STEPS) - 2)  # snapshots landed; then kill within the next revision
    while not (manifest.exists() and manifest.read_bytes().count(b'"snapshot"') >= kill_after):
        assert proc.poll() is None and time.monotonic() < deadline, "the import ended before the kill"
        time.sleep(0.005)
    time.sleep(random.uniform(0, 0.05))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    landed = TrajectoryStore.open(out).steps.tolist()
    assert 1 <= len(landed) < len(STEPS), "the kill should land mid-import"
    result = import_checkpoints(REPO, ALL, out, cache_dir=hub, **FAST)
    assert result.skipped == landed and result.skipped + result.imported == STEPS
    store = TrajectoryStore.open(out)
    assert store.steps.tolist() == STEPS
    assert store.snapshot_info(1)["info"]["duplicate_of"] == 0
    assert json.loads((out / "meta.json").read_text())["n_texts"] == len(SAMPLE_TEXTS) * 40
