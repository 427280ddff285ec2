"""The online import path for real: a small HF-hub-compatible HTTP server on 127.0.0.1 serves tiny
GPT-NeoX revisions, and `trajlab import` runs in a subprocess with HF_ENDPOINT pointing at it
(HF_HUB_OFFLINE=0, a fresh HF_HOME). Checked against an offline import of the same revisions; faults: a
connection dropped mid-file, a blob whose bytes do not match its sha256, a revision that 404s, the server
going away mid-run; Ray workers downloading into caches of their own. The stand-in also serves other repos
(`Hub.add_repo`: PolyPythia- and OLMo-named ones, with branch lists and model cards: tests/hub/)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
from test_importers import PROBE, REPO, hub_cache, revision_model

from trajlab import import_checkpoints
from trajlab.store import TrajectoryStore

pytestmark = pytest.mark.slow

REVISIONS = {"step0": 0, "step1": 0, "step2": 2, "step4": 4}
STEPS = [0, 1, 2, 4]
FLAGS = ["--window", "3", "--sketch-k", "64", "--no-progress"]


def assert_same_store(a: TrajectoryStore, b: TrajectoryStore) -> None:
    """test_ray_import's store comparison, imported when used: that module skips without Ray, and the stand-in
    hub (used by tests/hub/ too) must not."""
    from test_ray_import import assert_same_store as same

    same(a, b)


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Hub(ThreadingHTTPServer):
    """The hub endpoints huggingface_hub calls: revision info, tree listing, file resolve (HEAD, ranged GET).

    Weight files are served as LFS files (ETag / X-Linked-Etag = their sha256), others by git blob id, as the
    hub does. Faults: `drop_once` (file names whose first full GET stops halfway), `corrupt` ((commit, file):
    other bytes than the announced sha256), `die_after` (stop serving after that many weight files).
    """

    daemon_threads = True

    def __init__(self, folders: dict, revisions: dict, repo: str = REPO):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.repo, self.repos = repo, {}
        self.refs, self.files, self.branches = self.add_repo(repo, folders, revisions)
        self.drop_once: set[str] = set()
        self.corrupt: set[tuple[str, str]] = set()
        self.die_at: str | None = None
        self.dead, self.log = False, []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def add_repo(self, repo: str, folders: dict, revisions: dict, card: str | None = None) -> tuple:
        """Serve another repo: `revisions` {branch: folders key}; `card` its README.md (every revision).
        Returns its (refs, files, branches): {name or commit: commit}, {commit: {file: bytes}}, [branch]."""
        refs, files = {}, {}
        for rev, seed in revisions.items():
            commit = hashlib.sha1(f"{repo}@{rev}".encode()).hexdigest()
            refs[rev] = refs[commit] = commit
            files[commit] = {f.name: f.read_bytes() for f in sorted(Path(folders[seed]).iterdir())}
            if card is not None:
                files[commit]["README.md"] = card.encode()
        self.repos[repo] = (refs, files, list(revisions))
        return self.repos[repo]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.dead = True
        threading.Thread(target=lambda: (self.shutdown(), self.server_close()), daemon=True).start()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Hub

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _reply(self, status: int, data: bytes, headers: dict, body: bool) -> None:
        self.send_response(status)
        for k, v in {"Content-Length": str(len(data)), **headers}.items():
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _not_found(self, code: str) -> None:
        self._reply(404, json.dumps({"error": code}).encode(), {"X-Error-Code": code}, True)

    def _serve(self, body: bool) -> None:
        hub = self.server
        if hub.dead:  # gone: drop every connection, even kept-alive ones
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        parts = unquote(urlsplit(self.path).path).strip("/").split("/")
        hub.log.append((self.command, "/".join(parts), self.headers.get("Range")))
        api = parts[:2] == ["api", "models"]
        repo = "/".join(parts[2:4] if api else parts[:2])
        if repo not in hub.repos:
            return self._not_found("RepoNotFound")
        refs, all_files, branches = hub.repos[repo]
        if api and parts[4:] == ["refs"]:  # list_repo_refs: the branches and their commits
            heads = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": refs[b]} for b in branches]
            data = json.dumps({"branches": heads, "tags": [], "converts": []}).encode()
            return self._reply(200, data, {"Content-Type": "application/json"}, body)
        rev = parts[5] if api else parts[3]
        if rev == hub.die_at:
            hub.stop()
            return self._serve(body)
        commit = refs.get(rev)
        if commit is None:
            return self._not_found("RevisionNotFound")
        files = all_files[commit]
        if api and parts[4] == "revision":
            info = {"id": repo, "sha": commit, "siblings": [{"rfilename": n} for n in files]}
            return self._reply(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body)
        if api and parts[4] == "tree":
            tree = [
                {
                    "type": "file",
                    "path": n,
                    "size": len(d),
                    "oid": git_oid(d),
                    **(
                        {"lfs": {"oid": hashlib.sha256(d).hexdigest(), "size": len(d), "pointerSize": 134}}
                        if n.endswith(".safetensors")
                        else {}
                    ),
                }
                for n, d in files.items()
            ]
            return self._reply(200, json.dumps(tree).encode(), {"Content-Type": "application/json"}, body)
        name = "/".join(parts[4:])
        if parts[2] != "resolve" or name not in files:
            return self._not_found("EntryNotFound")
        data = files[name]
        lfs = name.endswith(".safetensors")
        etag = hashlib.sha256(data).hexdigest() if lfs else git_oid(data)
        headers = {"X-Repo-Commit": commit, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        if lfs:
            headers |= {"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))}
        if (commit, name) in hub.corrupt:
            data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]  # same size, other bytes
        if not body:
            return self._reply(200, b"", {**headers, "Content-Length": str(len(data))}, False)
        start = (
            int(self.headers["Range"].removeprefix("bytes=").split("-")[0]) if "Range" in self.headers else 0
        )
        if start == 0 and name in hub.drop_once:
            hub.drop_once.discard(name)  # announce the whole file, send half, hang up
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        self._reply(206 if start else 200, data[start:], headers, True)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from tiny_models import make_tokenizer

    root, tok = tmp_path_factory.mktemp("saved"), make_tokenizer()
    out = {}
    for seed in sorted(set(REVISIONS.values())):
        out[seed] = root / f"seed{seed}"
        revision_model(seed).save_pretrained(out[seed])
        tok.save_pretrained(out[seed])
    return out


@pytest.fixture
def hub(folders):
    server = Hub(folders, REVISIONS)
    yield server
    if not server.dead:
        server.stop()


def hub_env(hub: Hub, home: Path) -> dict[str, str]:
    """The environment of a subprocess that downloads from `hub` into the HF cache under `home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env |= {
        "HF_ENDPOINT": hub.url,
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(home),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_ETAG_TIMEOUT": "5",
        "HF_HUB_DOWNLOAD_TIMEOUT": "5",
    }
    return env


def trajlab_import(
    hub: Hub, home: Path, revisions: str, out: Path, *flags: str
) -> subprocess.CompletedProcess:
    """`trajlab import` in a subprocess that downloads from `hub` into the HF cache under `home`."""
    env = hub_env(hub, home)
    argv = [
        sys.executable,
        "-m",
        "trajlab.cli",
        "import",
        REPO,
        "--revisions",
        revisions,
        "--out",
        str(out),
        "--probe",
        str(PROBE.save(out.parent / "probe.json")),
        *FLAGS,
        *flags,
    ]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


def offline_store(tmp_path: Path, folders: dict, revisions: dict) -> TrajectoryStore:
    hub_cache(tmp_path / "offline-cache", folders, revisions)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the subprocess imports' count (OMP_NUM_THREADS=1): fp64 sums in the same order
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the duplicate's warning
        import_checkpoints(
            REPO,
            ",".join(revisions),
            tmp_path / "offline",
            PROBE,
            cache_dir=tmp_path / "offline-cache",
            sketch_k=64,
            window=3,
            progress=False,
            offline=True,
        )
    torch.set_num_threads(threads)
    return TrajectoryStore.open(tmp_path / "offline")


def repo_cache(home: Path) -> Path:
    return home / "hub" / f"models--{REPO.replace('/', '--')}"


def test_download_hash_score_and_clean_cache_equal_an_offline_import(tmp_path, hub, folders):
    hub.drop_once.add("model.safetensors")  # the first weight download breaks halfway, once
    home = tmp_path / "hf"
    run = trajlab_import(hub, home, ",".join(REVISIONS), tmp_path / "store", "--clean-cache")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "imported 4 revision(s) (1 duplicate)" in run.stdout
    gets = [p.split("/")[3] for m, p, _ in hub.log if m == "GET" and p.endswith("model.safetensors")]
    # huggingface_hub retried the broken file (from byte 0: it had not yet handed on a 10 MiB chunk); step1
    # shares step0's blob but downloads it again, as --clean-cache deleted it
    assert gets == [hub.refs[r] for r in ("step0", "step0", "step1", "step2", "step4")]
    store = TrajectoryStore.open(tmp_path / "store")
    assert_same_store(store, offline_store(tmp_path, folders, REVISIONS))
    for i, rev in enumerate(REVISIONS):  # the hashes are those of the served bytes
        data = hub.files[hub.refs[rev]]["model.safetensors"]
        files = store.snapshot_info(STEPS[i])["info"]["checkpoint"]["files"]
        assert files == {"model.safetensors": hashlib.sha256(data).hexdigest()}
    snapshots = repo_cache(home) / "snapshots"
    assert not snapshots.exists() or not any(snapshots.iterdir())  # --clean-cache removed every revision
    weights = {hashlib.sha256(f["model.safetensors"]).hexdigest() for f in hub.files.values()}
    assert not weights & {b.name for b in (repo_cache(home) / "blobs").glob("*")}  # no weight blob left


def test_a_corrupt_blob_and_a_missing_revision_fail_and_the_rest_imports(tmp_path, hub, folders):
    hub.corrupt.add((hub.refs["step2"], "model.safetensors"))
    run = trajlab_import(hub, tmp_path / "hf", "step0,step2,step4,step16", tmp_path / "store")
    assert run.returncode == 1, run.stderr[-3000:]
    failed = [line for line in run.stderr.splitlines() if line.startswith("  failed ")]
    assert len(failed) == 2, run.stderr[-3000:]
    assert failed[0].startswith(
        "  failed step2: ValueError: EleutherAI/pythia-fake@step2: model.safetensors is corrupt (sha256 "
    )
    assert failed[1] == (
        f"  failed step16: FileNotFoundError: {REPO} has no revision 'step16' on {hub.url} (HTTP "
        "404): check the name against the model's branches on the hub and drop or correct it in "
        "--revisions"
    )
    store = TrajectoryStore.open(tmp_path / "store")
    assert store.steps.tolist() == [0, 4]
    assert [n["payload"]["revision"] for n in store.notes("import-failed")] == ["step2", "step16"]
    offline = offline_store(tmp_path, folders, {"step0": 0, "step4": 4})
    np.testing.assert_array_equal(store.loglik_all(), offline.loglik_all())


def test_the_server_going_away_mid_run_then_a_rerun_completes(tmp_path, hub, folders):
    hub.die_at = "step4"  # serves step0, step1, step2, then is gone
    home, out = tmp_path / "hf", tmp_path / "store"
    first = trajlab_import(hub, home, ",".join(REVISIONS), out)
    assert first.returncode == 1, first.stderr[-3000:]
    landed = TrajectoryStore.open(out).steps.tolist()
    assert landed == [0, 1, 2], first.stderr[-3000:]
    again = Hub(folders, REVISIONS)  # the hub is back (on another port)
    try:
        second = trajlab_import(again, home, ",".join(REVISIONS), out)
    finally:
        again.stop()
    assert second.returncode == 0, second.stderr[-3000:]
    assert "imported 1 revision(s) (0 duplicate), skipped 3 already stored, failed 0" in second.stdout
    store = TrajectoryStore.open(out)
    assert store.steps.tolist() == STEPS  # every step exactly once
    assert_same_store(store, offline_store(tmp_path, folders, REVISIONS))


def test_ray_workers_download_into_caches_of_their_own_and_clean_them(tmp_path, hub, folders):
    pytest.importorskip("ray")
    home = tmp_path / "hf"
    run = trajlab_import(
        hub,
        home,
        ",".join(REVISIONS),
        tmp_path / "store",
        "--clean-cache",
        "--executor",
        "ray",
        "--workers",
        "2",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "imported 4 revision(s) (1 duplicate)" in run.stdout
    # shard 1 (step2, step4) preloaded step0 and step1 (window 3): equal to the serial offline import
    assert_same_store(TrajectoryStore.open(tmp_path / "store"), offline_store(tmp_path, folders, REVISIONS))
    weights = {hashlib.sha256(f["model.safetensors"]).hexdigest() for f in hub.files.values()}
    left = {p.name for p in (home / "hub").rglob("*") if p.is_file()}
    assert not weights & left and not list((home / "hub").glob("trajlab-task-*"))
