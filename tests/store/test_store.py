"""TrajectoryStore: round trips, crash safety (torn lines, SIGKILL mid-append), refusals, numpy-only reads."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest

import trajlab
from trajlab.data.probe import ProbeSet
from trajlab.store import (
    META_SCHEMA,
    SCORING_SCHEMA,
    MissingEntryError,
    TrajectoryStore,
    check_comparable,
    open_stores,
)

N, L = 7, 2
META = {"run": "test-run", "model": "tiny", "tokenizer": {"fingerprint": "tok123"}, "config": {"hidden": 8}}


def Probe(texts: list[str] | None = None, name: str = "unit-probe") -> ProbeSet:
    """The store's probe: N short texts (or the given ones)."""
    return ProbeSet(texts or [f"text number {i} é" for i in range(N)], name=name)


def other_probe(tag: str) -> ProbeSet:
    return Probe([f"{tag} text {i}" for i in range(N)], name=tag)


def ll_of(step: int, rows: int = L + 1) -> np.ndarray:
    return np.random.default_rng(step).normal(-50, 10, size=(rows, N))  # (R, N)


def new_store(tmp_path, name="s", **kw) -> TrajectoryStore:
    return TrajectoryStore.create(
        tmp_path / name, probe=kw.pop("probe", Probe()), meta=META, n_layers=L, **kw
    )


def snapshot_files(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "snapshots").iterdir())


def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    sketches = {s: rng.normal(size=16) for s in (0, 5, 9)}
    weights = {"layer.w": rng.normal(size=(4, 3)).astype(np.float32), "b": np.arange(5, dtype=np.float32)}
    with new_store(tmp_path) as st:
        st.append(0, ll_of(0), weight_sketch=sketches[0], sq_dists={}, source="ckpt-0", info={"sec": 1.5})
        st.append(5, ll_of(5), weight_sketch=sketches[5], sq_dists={0: 2.5}, full_weights=weights)
        st.append(7, ll_of(7)[L], layers=[-1])  # last layer only, no weights
        st.append(9, ll_of(9)[[0, 2]], layers=[0, 2], weight_sketch=sketches[9], sq_dists={5: 1.25})
        st.add_note("duplicate", {"step": 9, "same_as": 5})
    st = TrajectoryStore.open(tmp_path / "s")
    assert st.steps.dtype == np.int64 and st.steps.tolist() == [0, 5, 7, 9]
    np.testing.assert_array_equal(st.loglik(-1), np.stack([ll_of(s)[L] for s in (0, 5, 7, 9)]))
    np.testing.assert_array_equal(st.loglik(L), st.loglik())
    with pytest.raises(ValueError, match=r"not stored for steps \[7, 9\]"):
        st.loglik(1)
    with pytest.raises(ValueError, match="not stored"):
        st.loglik_all()
    assert st.weight_steps.tolist() == [0, 5, 9]
    np.testing.assert_array_equal(st.weight_sketch(), np.stack([sketches[s] for s in (0, 5, 9)]))
    assert st.weight_sq_dist(5, 0) == st.weight_sq_dist(0, 5) == 2.5 and st.weight_sq_dist(9, 9) == 0.0
    with pytest.raises(MissingEntryError, match="between steps 0 and 9"):
        st.weight_sq_dist(0, 9)
    np.testing.assert_array_equal(
        st.weight_sq_dist_matrix(), [[0, 2.5, np.nan], [2.5, 0, 1.25], [np.nan, 1.25, 0]]
    )
    got = st.full_weights(5)
    assert got.keys() == weights.keys() and all(np.array_equal(got[k], weights[k]) for k in weights)
    with pytest.raises(MissingEntryError, match="no full weights"):
        st.full_weights(0)
    info = st.snapshot_info(0)
    assert info["source"] == "ckpt-0" and info["info"] == {"sec": 1.5} and info["layers"] == [0, 1, 2]
    ll_file = tmp_path / "s" / info["files"]["ll"]["name"]
    assert info["files"]["ll"]["sha256"] == hashlib.sha256(ll_file.read_bytes()).hexdigest()
    assert st.notes("duplicate")[0]["payload"] == {"step": 9, "same_as": 5}
    assert (
        st.meta["trajlab_version"] == trajlab.__version__ and st.meta["tokenizer"]["fingerprint"] == "tok123"
    )
    assert st.meta["probe_fingerprint"] == st.probe_fingerprint == Probe().fingerprint and st.n_layers == L
    probe = st.probe()
    assert probe.texts == Probe().texts and probe.name == "unit-probe"
    np.testing.assert_array_equal(st.n_bytes, Probe().n_bytes)


def test_all_layers_and_resume(tmp_path):
    with new_store(tmp_path) as st:
        for s in (1, 2):
            st.append(s, ll_of(s))
    with TrajectoryStore.open_or_create(tmp_path / "s", probe=Probe(), meta=META, n_layers=L) as st:
        assert st.steps.tolist() == [1, 2]
        st.append(3, ll_of(3))
    st = TrajectoryStore.open(tmp_path / "s")
    np.testing.assert_array_equal(st.loglik_all(), np.stack([ll_of(s) for s in (1, 2, 3)]))
    np.testing.assert_array_equal(st.loglik(0), st.loglik_all()[:, 0])


def read_with_numpy_alone(root: Path) -> tuple[list[int], np.ndarray]:
    """The layout documented in trajlab/store.py, read without trajlab."""
    meta = json.loads((root / "meta.json").read_text())
    lines = [s for s in (root / "manifest.jsonl").read_text().splitlines(keepends=True) if s.endswith("\n")]
    snaps = [e for e in map(json.loads, lines) if e["type"] == "snapshot"]
    rows = [np.load(root / e["files"]["ll"]["name"])[e["layers"].index(meta["n_layers"])] for e in snaps]
    return [e["step"] for e in snaps], np.stack(rows)


def test_numpy_alone_reader_and_torn_last_line(tmp_path):
    with new_store(tmp_path) as st:
        for s in (10, 20, 30):
            st.append(s, ll_of(s))
    root = tmp_path / "s"
    steps, ll = read_with_numpy_alone(root)
    assert steps == [10, 20, 30]
    np.testing.assert_array_equal(ll, TrajectoryStore.open(root).loglik())
    manifest = root / "manifest.jsonl"
    committed = manifest.read_bytes()
    with open(manifest, "ab") as f:  # a crash cut the next line short
        f.write(b'{"type": "snapshot", "step": 40, "lay')
    assert TrajectoryStore.open(root).steps.tolist() == [10, 20, 30]
    assert read_with_numpy_alone(root)[0] == [10, 20, 30]
    with TrajectoryStore.open(root, writable=True) as st:  # the writer cuts the torn tail before appending
        assert manifest.read_bytes() == committed
        st.append(40, ll_of(40))
    assert TrajectoryStore.open(root).steps.tolist() == [10, 20, 30, 40]
    lines = manifest.read_bytes().split(b"\n")
    manifest.write_bytes(b"\n".join(lines[:1] + [b"#garbage#"] + lines[2:]))
    with pytest.raises(ValueError, match="line 2 is corrupted"):
        TrajectoryStore.open(root)


CHILD = """
import sys, numpy as np
from trajlab.store import TrajectoryStore
sys.path.insert(0, {tests!r})
from test_store import META, Probe, ll_of
st = TrajectoryStore.open_or_create({root!r}, probe=Probe(), meta=META, n_layers=2)
step = int(st.steps[-1]) + 1 if len(st) else 0
while True:
    w = np.random.default_rng(step).normal(size=(128, 128)).astype(np.float32)
    st.append(step, ll_of(step), weight_sketch=w[0], sq_dists={{step - 1: float(step)}} if step else {{}},
              full_weights={{"w": w}})
    step += 1
"""


def test_sigkill_mid_append_leaves_complete_prefix(tmp_path):
    root = tmp_path / "s"
    new_store(tmp_path).close()
    code = CHILD.format(tests=str(Path(__file__).parent), root=str(root))
    rnd = random.Random(0)
    for _ in range(6):
        before = (root / "manifest.jsonl").stat().st_size
        child = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
        while (root / "manifest.jsonl").stat().st_size == before and child.poll() is None:
            time.sleep(0.01)  # until the child appends (its start-up takes long on a busy machine)
        time.sleep(rnd.uniform(0.0, 0.6))  # then a random moment of its appending
        assert child.poll() is None, child.stderr.read().decode()
        os.kill(child.pid, signal.SIGKILL)
        child.communicate()  # reaps the child and closes its pipe
        st = TrajectoryStore.open(root)
        k = len(st)
        assert st.steps.tolist() == list(range(k))
        np.testing.assert_array_equal(
            st.loglik_all(), np.stack([ll_of(s) for s in range(k)]).reshape(k, L + 1, N)
        )
        for s in range(k):
            w = np.random.default_rng(s).normal(size=(128, 128)).astype(np.float32)
            np.testing.assert_array_equal(st.full_weights(s)["w"], w)
            np.testing.assert_array_equal(st.weight_sketch()[s], w[0])
            assert s == 0 or st.weight_sq_dist(s - 1, s) == s
    assert k >= 6  # the children did append between kills


def test_refusals_leave_store_unchanged(tmp_path):
    st = new_store(tmp_path)
    st.append(5, ll_of(5), weight_sketch=np.ones(8))
    root = tmp_path / "s"
    before = ((root / "manifest.jsonl").read_bytes(), snapshot_files(root))
    nan_at_1_4 = ll_of(6)
    nan_at_1_4[1, 4] = np.nan
    bad = {
        "probe fingerprint other differs": dict(step=6, loglik=ll_of(6), probe_fingerprint="other"),
        "step 5 is already in": dict(step=5, loglik=ll_of(5)),
        "step 4 is below the last step 5": dict(step=4, loglik=ll_of(4)),
        r"shape \(3, 8\), expected \(3, 7\)": dict(step=6, loglik=np.zeros((L + 1, N + 1))),
        r"shape \(2, 7\), expected \(3, 7\)": dict(step=6, loglik=np.zeros((2, N))),
        "must be distinct and increasing": dict(step=6, loglik=np.zeros((2, N)), layers=[2, 0]),
        r"layers \[0, 1\] lack the model's output \(layer 2\)": dict(
            step=6, loglik=ll_of(6)[:2], layers=[0, 1]
        ),
        "layer 3 is out of range": dict(step=6, loglik=np.zeros(N), layers=[3]),
        "step 6: loglik is not finite \\(nan\\) at text 4, layer 1": dict(step=6, loglik=nan_at_1_4),
        "step 6: loglik is not finite \\(-inf\\) at text 2, layer 2": dict(
            step=6, loglik=np.where(np.arange(N) == 2, -np.inf, 0.0)
        ),
        "of length 8 like earlier": dict(step=6, loglik=ll_of(6), weight_sketch=np.ones(9)),
        "refers to step 3": dict(step=6, loglik=ll_of(6), sq_dists={3: 1.0}),
        "must be finite and >= 0": dict(step=6, loglik=ll_of(6), sq_dists={5: -1.0}),
        "full_weights must map": dict(step=6, loglik=ll_of(6), full_weights={"w": [1.0, 2.0]}),
        "JSON-serialisable": dict(step=6, loglik=ll_of(6), info={"t": object()}),
        "non-negative int": dict(step=-1, loglik=ll_of(6)),
    }
    for msg, kw in bad.items():
        with pytest.raises(ValueError, match=msg):
            st.append(kw.pop("step"), kw.pop("loglik"), **kw)
    assert ((root / "manifest.jsonl").read_bytes(), snapshot_files(root)) == before
    with pytest.raises(RuntimeError, match="already open for writing"):
        TrajectoryStore.open(root, writable=True)
    st.close()
    with pytest.raises(PermissionError, match="read-only"):
        TrajectoryStore.open(root).append(6, ll_of(6))
    with pytest.raises(ValueError, match=f"probe fingerprint {other_probe('zzz').fingerprint} differs"):
        TrajectoryStore.open_or_create(root, probe=other_probe("zzz"), meta=META, n_layers=L)
    with pytest.raises(ValueError, match="n_layers 3 differs"):
        TrajectoryStore.open_or_create(root, probe=Probe(), meta=META, n_layers=3)
    with pytest.raises(ValueError, match="tokenizer fingerprint other differs from the store's tok123"):
        TrajectoryStore.open_or_create(
            root, probe=Probe(), meta=META | {"tokenizer": {"fingerprint": "other"}}, n_layers=L
        )
    with pytest.raises(FileExistsError, match="already a trajectory store"):
        new_store(tmp_path)
    with pytest.raises(ValueError, match="missing \\['config'\\]"):
        TrajectoryStore.create(
            tmp_path / "t", probe=Probe(), meta={k: META[k] for k in META if k != "config"}, n_layers=L
        )
    assert not (tmp_path / "t").exists()
    with pytest.raises(FileNotFoundError, match="no trajectory store"):
        TrajectoryStore.open(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "x.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a trajectory store"):
        TrajectoryStore.open(tmp_path / "plain")
    with pytest.raises(FileExistsError, match="holds other files"):
        new_store(tmp_path, "plain")


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupted_snapshot_file_named_on_load(tmp_path, damage):
    with new_store(tmp_path) as st:
        st.append(1, ll_of(1))
        st.append(2, ll_of(2))
    path = tmp_path / "s" / TrajectoryStore.open(tmp_path / "s").snapshot_info(2)["files"]["ll"]["name"]
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-3] ^= 0x40
    path.write_bytes(data if damage == "flip" else data[: len(data) // 2])
    st = TrajectoryStore.open(tmp_path / "s")
    with pytest.raises(ValueError, match=f"{path.name} is truncated or corrupted"):
        st.loglik()


def test_orphans_ignored_then_cleaned(tmp_path):
    with new_store(tmp_path) as st:
        st.append(1, ll_of(1))
    snaps = tmp_path / "s" / "snapshots"
    (snaps / "step_00000002.ll.npy").write_bytes(b"half")
    (snaps / ".step_00000002.sketch.npy.tmp").write_bytes(b"half")
    assert TrajectoryStore.open(tmp_path / "s").steps.tolist() == [1]
    with TrajectoryStore.open(tmp_path / "s", writable=True) as st:
        assert snapshot_files(tmp_path / "s") == ["step_00000001.ll.npy"]
        st.append(2, ll_of(2))
    np.testing.assert_array_equal(TrajectoryStore.open(tmp_path / "s").loglik(), [ll_of(1)[L], ll_of(2)[L]])


def create_error_as_unprivileged(target: Path) -> str:
    """Try to create a store at `target`; under root, in a forked child that drops to uid nobody."""

    def attempt() -> str:
        try:
            TrajectoryStore.create(target, probe=Probe(), meta=META, n_layers=L)
            return "created"
        except Exception as e:
            return f"{type(e).__name__}: {e}"

    if os.geteuid() != 0:
        return attempt()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop privileges so file modes apply, report, exit without pytest teardown
        os.close(r)
        os.setgid(65534)
        os.setuid(65534)
        os.write(w, attempt().encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        msg = f.read()
    os.waitpid(pid, 0)
    return msg


def test_unwritable_directory_refused_before_writing():
    base = Path(tempfile.mkdtemp(dir="/tmp"))  # pytest's tmp_path is private to root; nobody must reach this
    try:
        (base / "ro").mkdir()
        for d in (base, base / "ro"):
            d.chmod(0o755)
        (base / "ro").chmod(0o555)
        for target in (base / "ro", base / "ro" / "new" / "store"):
            msg = create_error_as_unprivileged(target)
            assert msg.startswith("PermissionError") and "is not a writable directory" in msg, msg
        assert list((base / "ro").iterdir()) == []
    finally:
        (base / "ro").chmod(0o755)
        for p in sorted(base.rglob("*"), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()
        base.rmdir()


def test_open_stores_requires_same_probe(tmp_path):
    new_store(tmp_path, "a").close()
    new_store(tmp_path, "b").close()
    new_store(tmp_path, "c", probe=other_probe("other-fp")).close()
    assert [s.path.name for s in open_stores([tmp_path / "a", tmp_path / "b"])] == ["a", "b"]
    with pytest.raises(ValueError, match=f"{tmp_path / 'a'} has {Probe().fingerprint}, {tmp_path / 'c'} has {other_probe('other-fp').fingerprint}"):
        open_stores([tmp_path / "a", tmp_path / "c"])


def test_store_works_without_torch(tmp_path):
    code = textwrap.dedent(f"""
        import sys, numpy as np
        sys.modules["torch"] = None  # any torch import now fails
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_store import new_store, ll_of
        from pathlib import Path
        st = new_store(Path({str(tmp_path)!r}))
        st.append(0, ll_of(0), full_weights={{"w": np.ones(3, np.float32)}})
        assert st.full_weights(0)["w"].sum() == 3 and st.loglik().shape == (1, 7)
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


# ---- format 2 meta: schema, version-1 stores, lineage, comparability ----

FIXTURE_V1 = Path(__file__).parent / "fixtures" / "store_v1"
SCORING = {
    "long_texts": "rolling",
    "stride": 64,
    "window": 128,
    "n_tokens": list(range(10, 17)),
    "lens_dtype": "float32",
}


def typed(value, types) -> bool:
    return not isinstance(value, bool) and isinstance(value, types)


def test_meta_has_every_schema_key_with_its_type(tmp_path):
    full = META | {"scoring": SCORING, "warmup_steps": 10, "max_steps": 500}
    with TrajectoryStore.create(tmp_path / "a", probe=Probe(), meta=full, n_layers=L) as a:
        a.append(3, ll_of(3))
    new_store(tmp_path, "b").close()
    a, b = TrajectoryStore.open(tmp_path / "a"), TrajectoryStore.open(tmp_path / "b")
    on_disk = json.loads((tmp_path / "a" / "meta.json").read_text())
    for meta in (a.meta, b.meta, on_disk):
        assert meta["format_version"] == 2
        for key, (types, _) in META_SCHEMA.items():
            assert typed(meta[key], types), (key, meta[key])
        for key, (types, _) in SCORING_SCHEMA.items():
            assert typed(meta["scoring"][key], types), (key, meta["scoring"][key])
    assert uuid.UUID(a.meta["id"]).version == 4 and a.meta["id"] != b.meta["id"]
    assert a.meta["lineage"] == {"root": a.meta["id"], "parent": None}
    assert (a.meta["scoring"], a.meta["warmup_steps"], a.meta["max_steps"]) == (SCORING, 10, 500)
    assert b.meta["scoring"] == dict.fromkeys(SCORING_SCHEMA) and b.meta["warmup_steps"] is None
    assert on_disk == a.meta  # format 2 stores every key on disk: readable without trajlab
    given = TrajectoryStore.create(tmp_path / "c", probe=Probe(), meta=META | {"id": "import-7"}, n_layers=L)
    assert given.meta["id"] == given.meta["lineage"]["root"] == "import-7"


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"scoring": SCORING | {"long_texts": "chop"}}, "long_texts.* must be one of"),
        ({"scoring": SCORING | {"n_tokens": [1, 2]}}, "n_tokens.* must list 7 non-negative ints"),
        ({"scoring": SCORING | {"stride": 0}}, "stride.* must be >= 1"),
        ({"scoring": SCORING | {"colour": 1}}, "extra keys \\['colour'\\]"),
        ({"lineage": {"root": "r", "parent": {"id": "p"}}}, 'lineage.* must be {"root": str'),
        ({"warmup_steps": "100"}, "warmup_steps.* must be int or null"),
        ({"max_steps": -1}, "max_steps.* must be >= 0"),
    ],
)
def test_bad_format_2_meta_refused_in_one_line(tmp_path, extra, message):
    with pytest.raises(ValueError, match=message) as e:
        TrajectoryStore.create(tmp_path / "s", probe=Probe(), meta=META | extra, n_layers=L)
    assert "\n" not in str(e.value) and not (tmp_path / "s" / "meta.json").exists()


def test_version_1_store_reads_with_the_documented_defaults(tmp_path):
    st = TrajectoryStore.open(FIXTURE_V1)
    meta, raw = st.meta, (FIXTURE_V1 / "meta.json").read_bytes()
    assert meta["format_version"] == 1 and json.loads(raw)["format_version"] == 1
    assert meta["id"] == "v1-" + hashlib.sha256(raw).hexdigest()[:32]
    assert meta["lineage"] == {"root": meta["id"], "parent": None}
    assert meta["scoring"] == {
        "long_texts": "truncate",
        "stride": None,
        "window": None,
        "n_tokens": None,
        "lens_dtype": None,
    }
    assert meta["warmup_steps"] is None and meta["max_steps"] is None
    for key, (types, _) in META_SCHEMA.items():
        assert typed(meta[key], types), key
    # The numbers: the LL files read with numpy alone.
    steps, last = read_with_numpy_alone(FIXTURE_V1)
    assert st.steps.tolist() == steps == [0, 2] and st.full_layer_steps().tolist() == [0, 2]
    np.testing.assert_array_equal(st.loglik(-1), last)
    files = [np.load(FIXTURE_V1 / "snapshots" / f"step_{s:08d}.ll.npy") for s in steps]
    np.testing.assert_array_equal(st.loglik_all(), np.stack(files))
    assert st.probe().domains is None and len(st.probe().texts) == st.n_texts == 4
    assert st.weight_sketch().shape == (2, 16)
    # Read-only: appending would put whole-text rows under meta that says "truncate".
    for attempt in (
        lambda: TrajectoryStore.open(FIXTURE_V1, writable=True),
        lambda: TrajectoryStore.open_or_create(FIXTURE_V1, probe=st.probe(), meta=META, n_layers=2),
    ):
        with pytest.raises(ValueError, match="format-1 store .* opens read-only") as e:
            attempt()
        assert "\n" not in str(e.value)
    assert not (FIXTURE_V1 / "writer.lock").exists()


def test_version_1_fine_tune_lineage_from_its_old_parent(tmp_path):
    import shutil

    shutil.copytree(FIXTURE_V1, tmp_path / "base")
    shutil.copytree(FIXTURE_V1, tmp_path / "child")
    old = json.loads((FIXTURE_V1 / "meta.json").read_text())
    parent = {"run": "base", "step": 2, "store": str(tmp_path / "base")}
    (tmp_path / "child" / "meta.json").write_text(json.dumps(old | {"run": "child", "parent": parent}))
    base, child = TrajectoryStore.open(tmp_path / "base"), TrajectoryStore.open(tmp_path / "child")
    assert child.meta["id"] != base.meta["id"]
    assert child.meta["lineage"] == {"root": base.meta["id"], "parent": {"id": base.meta["id"], "step": 2}}
    assert child.meta["parent"] == parent  # the old key stays readable
    shutil.rmtree(tmp_path / "base")  # a parent that is gone: the child is its own root
    orphan = TrajectoryStore.open(tmp_path / "child").meta
    assert orphan["lineage"] == {"root": orphan["id"], "parent": None} and orphan["id"] == child.meta["id"]


def test_lineage_of_a_child_inherits_the_root(tmp_path):
    with new_store(tmp_path, "base") as base:
        base.append(0, ll_of(0))
        base.append(8, ll_of(8))
    base = TrajectoryStore.open(tmp_path / "base")
    lineage = base.lineage_of_child()
    assert lineage == {"root": base.meta["id"], "parent": {"id": base.meta["id"], "step": 8}}
    child = TrajectoryStore.create(
        tmp_path / "child", probe=Probe(), meta=META | {"lineage": lineage}, n_layers=L
    )
    assert child.meta["lineage"]["root"] == base.meta["id"] != child.meta["id"]
    assert base.lineage_of_child(0)["parent"] == {"id": base.meta["id"], "step": 0}
    for bad, message in ((child, "holds no snapshots"), (base, "no snapshot at step 5")):
        with pytest.raises(ValueError, match=message) as e:
            bad.lineage_of_child(None if bad is child else 5)
        assert "\n" not in str(e.value)


def test_domains_kept_in_the_probe(tmp_path):
    from types import SimpleNamespace

    probe = ProbeSet(Probe().texts, domains=["plays"] * 4 + ["bible"] * 3)
    new_store(tmp_path, "d", probe=probe).close()
    assert TrajectoryStore.open(tmp_path / "d").probe().domains == ("plays",) * 4 + ("bible",) * 3
    with pytest.raises(ValueError, match="domains must be 7 non-empty str") as e:
        new_store(tmp_path, "e", probe=SimpleNamespace(texts=Probe().texts, domains=["x"]))
    assert "\n" not in str(e.value)


def test_partial_layer_snapshots_read_by_steps(tmp_path):
    with new_store(tmp_path) as st:
        for s in range(6):  # all layers at steps 0 and 3 (layers_every=3), the last layer elsewhere
            st.append(s, ll_of(s) if s % 3 == 0 else ll_of(s)[L], layers=None if s % 3 == 0 else [-1])
    st = TrajectoryStore.open(tmp_path / "s")
    assert st.full_layer_steps().tolist() == [0, 3]
    np.testing.assert_array_equal(st.loglik_all(st.full_layer_steps()), np.stack([ll_of(0), ll_of(3)]))
    np.testing.assert_array_equal(st.loglik(1, steps=[0, 3]), [ll_of(0)[1], ll_of(3)[1]])
    np.testing.assert_array_equal(st.loglik(-1), [ll_of(s)[L] for s in range(6)])  # every step
    for read in (lambda: st.loglik(1), st.loglik_all):
        with pytest.raises(ValueError, match=r"steps \[1, 2, 4, 5\] .*2 steps hold every layer.*full_layer"):
            read()
    with pytest.raises(MissingEntryError, match="step 7 is not in store"):
        st.loglik_all([0, 7])
    with pytest.raises(ValueError, match="strictly increasing"):
        st.loglik(-1, steps=[3, 0])


def scored_store(tmp_path, name, probe=None, **scoring) -> Path:
    meta = META | {"scoring": SCORING | scoring} | ({"tokenizer": {"fingerprint": name}} if name else {})
    TrajectoryStore.create(tmp_path / name, probe=probe or Probe(), meta=meta, n_layers=L).close()
    return tmp_path / name


def test_check_comparable_refuses_truncated_with_whole_texts(tmp_path):
    rolling, cut = scored_store(tmp_path, "rolling"), scored_store(tmp_path, "cut", long_texts="truncate")
    refuse = scored_store(tmp_path, "refuse", long_texts="error")
    for other in (rolling, refuse):
        match = f"cannot compare {cut} .*truncate.* with {other} .*whole texts"
        with pytest.raises(ValueError, match=match) as e:
            open_stores([cut, other])
        assert "\n" not in str(e.value)
    v1 = TrajectoryStore.open(FIXTURE_V1)  # a (label, meta) pair stands for a store still to be written
    with pytest.raises(ValueError, match=f"cannot compare {FIXTURE_V1} .*truncate.* with this run"):
        check_comparable([v1, ("this run", {"probe_fingerprint": v1.probe_fingerprint, "scoring": SCORING})])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # whole texts either way, other tokenizers: neither refused nor warned
        assert len(open_stores([rolling, refuse])) == 2
        elsewhere = scored_store(tmp_path, "p2", other_probe("p2"), long_texts="truncate")
        check_comparable([TrajectoryStore.open(p) for p in (rolling, elsewhere)])  # different probes
        check_comparable([TrajectoryStore.open(rolling), TrajectoryStore.open(new_store(tmp_path).path)])


@pytest.mark.parametrize(
    "key, value, shown",
    [
        ("stride", 32, "stride 64 .*, 32 "),
        ("window", 256, "window 128 .*, 256 "),
        ("lens_dtype", "bfloat16", "lens_dtype float32 .*, bfloat16 "),
    ],
)
def test_check_comparable_warns_on_other_settings(tmp_path, key, value, shown):
    a, b = scored_store(tmp_path, "a"), scored_store(tmp_path, "b", **{key: value})
    with pytest.warns(UserWarning, match=f"different settings.*{shown}") as rec:
        open_stores([a, b])
    assert len(rec) == 1 and "\n" not in str(rec[0].message)
    # a stride matters only where windows slide: truncated stores with other strides pass silently
    if key == "stride":
        c, d = (scored_store(tmp_path, n, long_texts="truncate", stride=s) for n, s in (("c", 8), ("d", 9)))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            open_stores([c, d])


def test_resume_and_merge_refuse_another_scoring(tmp_path):
    from trajlab.store.merge import merge_stores

    root = scored_store(tmp_path, "s")
    meta = META | {"tokenizer": {"fingerprint": "s"}}
    with pytest.raises(ValueError, match="cannot resume .*: scoring stride 32 differs from the store's 64"):
        TrajectoryStore.open_or_create(
            root, probe=Probe(), meta=meta | {"scoring": SCORING | {"stride": 32}}, n_layers=L
        )
    TrajectoryStore.open_or_create(root, probe=Probe(), meta=meta | {"scoring": SCORING}, n_layers=L).close()
    shards = []
    for i, scoring in enumerate((SCORING, SCORING, SCORING | {"window": 64})):
        lineage = {"root": "R", "parent": {"id": "P", "step": 4}}
        meta = META | {"scoring": scoring, "lineage": lineage, "shard": i}
        with TrajectoryStore.create(tmp_path / f"shard{i}", probe=Probe(), meta=meta, n_layers=L) as st:
            st.append(i, ll_of(i))
        shards.append(tmp_path / f"shard{i}")
    merged = TrajectoryStore.open(merge_stores(shards[:2], tmp_path / "merged"))
    ids = {TrajectoryStore.open(s).meta["id"] for s in shards[:2]}
    assert merged.meta["id"] not in ids and merged.meta["lineage"] == lineage
    assert merged.meta["scoring"] == SCORING and merged.steps.tolist() == [0, 1]
    with (
        pytest.warns(UserWarning, match="window"),
        pytest.raises(
            ValueError, match="cannot merge .*shard2 .*: scoring window 64 differs from the store's 128"
        ) as e,
    ):
        merge_stores([shards[0], shards[2]], tmp_path / "merged2")
    assert "\n" not in str(e.value) and not (tmp_path / "merged2").exists()
    cut = scored_store(tmp_path, "cut", long_texts="truncate")
    with pytest.raises(ValueError, match="cannot compare .*truncate"):
        merge_stores([shards[0], cut], tmp_path / "merged3")


def test_model_block_has_one_shape_whoever_wrote_it(tmp_path):
    """meta["model"] is {"name", "class", "config"} for a new store, a string-writing importer of 0.1 and the v1
    fixture (a callback's {"class", **config})."""
    from trajlab.store.meta import MODEL_KEYS, model_meta

    class Config:
        def to_json_string(self):
            return '{"hidden_size": 8, "model_type": "gpt_neox"}'

    class Net:
        config = Config()

    built = model_meta(Net(), "EleutherAI/pythia-14m")
    assert built == {"name": "EleutherAI/pythia-14m", "class": "Net",
                     "config": {"hidden_size": 8, "model_type": "gpt_neox"}}
    legacy = dict(META, model="org/name", config={"model": {"model_type": "llama"}})
    with TrajectoryStore.create(tmp_path / "s", probe=Probe(), meta=legacy, n_layers=L) as st:
        assert st.meta["model"] == {"name": "org/name", "class": None, "config": {"model_type": "llama"}}
    v1 = TrajectoryStore.open(FIXTURE_V1).meta["model"]
    assert tuple(v1) == MODEL_KEYS and v1["class"] == "TinyNet" and v1["config"] == {}


def test_one_probe_type_verified_both_ways(tmp_path):
    """create recomputes the fingerprint (a wrong one is refused); probe() is a ProbeSet, checked on read."""
    from types import SimpleNamespace

    liar = SimpleNamespace(texts=Probe().texts, name="liar", fingerprint="0" * 64)
    with pytest.raises(ValueError, match="is not its texts'"):
        TrajectoryStore.create(tmp_path / "x", probe=liar, meta=META, n_layers=L)
    assert not (tmp_path / "x" / "meta.json").exists()
    probe = ProbeSet(Probe().texts, name="with-domains", domains=["a"] * 3 + ["b"] * (N - 3))
    with TrajectoryStore.create(tmp_path / "s", probe=probe, meta=META, n_layers=L) as st:
        got = st.probe()
    assert isinstance(got, ProbeSet) and got.fingerprint == probe.fingerprint and got.domains == probe.domains
    assert got.n_bytes.tolist() == [len(t.encode()) for t in probe.texts]
    record = json.loads((tmp_path / "s" / "probe.json").read_text())
    record["texts"][0] += "!"  # corrupt one text
    (tmp_path / "s" / "probe.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="corrupted"):
        TrajectoryStore.open(tmp_path / "s").probe()


def test_snapshot_array_is_the_file_as_stored_and_verified(tmp_path):
    with new_store(tmp_path) as st:
        st.append(3, ll_of(3), weight_sketch=np.arange(4.0))
    st = TrajectoryStore.open(tmp_path / "s")
    np.testing.assert_array_equal(st.snapshot_array(3, "ll"), ll_of(3))
    np.testing.assert_array_equal(st.snapshot_array(3, "sketch"), np.arange(4.0))
    with pytest.raises(MissingEntryError, match="holds no 'weights' file"):
        st.snapshot_array(3, "weights")
    f = tmp_path / "s" / st.snapshot_info(3)["files"]["ll"]["name"]
    f.write_bytes(f.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ValueError, match="sha256|corrupt"):
        TrajectoryStore.open(tmp_path / "s").snapshot_array(3, "ll")
