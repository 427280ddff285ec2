"""The files of a TrajectoryStore: crash-safe writes, the manifest reader, and appending snapshots.

`SnapshotWriter` is the writing half of `trajlab.store.TrajectoryStore` (which inherits it): everything an
append checks before any file is written, then the files (temp file, fsync, rename) and the one manifest line.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from itertools import pairwise
from pathlib import Path

import numpy as np

from trajlab import _io


def json_bytes(obj, what: str) -> bytes:
    try:
        return json.dumps(obj, sort_keys=True, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} must be JSON-serialisable with finite numbers: {e}") from None


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is missing or corrupted ({e}); the store cannot be opened") from None


def write_recorded(path: Path, data: bytes | Callable[[str], None]) -> dict:
    """Write a store file crash-safely (trajlab._io.write_atomic, durable); returns its manifest record
    {"name", "sha256", "size"}."""
    sha = _io.write_atomic(path, data, durable=True, sha256=True)
    return {
        "name": path.relative_to(path.parent.parent).as_posix(),
        "sha256": sha,
        "size": path.stat().st_size,
    }


def npy_writer(arr: np.ndarray) -> Callable[[str], None]:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)

    return write


def read_manifest(path: Path) -> tuple[list[dict], int]:
    """Complete records and the byte length they span; a torn or garbled last line is left out."""
    data = path.read_bytes()
    lines = data.split(b"\n")  # lines[-1] is the unterminated tail (b"" after a final newline)
    records, end = [], 0
    for i, line in enumerate(lines[:-1]):
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict) or rec.get("type") not in ("snapshot", "note"):
                raise ValueError("not a manifest record")
        except ValueError:
            if i == len(lines) - 2 and not lines[-1]:
                break  # the last line is garbled: a write the crash cut short
            raise ValueError(f"{path} line {i + 1} is corrupted; the store cannot be read past it") from None
        records.append(rec)
        end += len(line) + 1
    return records, end


# Files a store folder may hold before meta.json exists (an interrupted create), so create may reuse it.
_CREATE_LEFTOVERS = {"probe.json", "manifest.jsonl", "snapshots", "writer.lock"}


def check_creatable(root: Path) -> None:
    """Refuse, before anything is written, unless the nearest existing folder of `root` is writable and `root`
    is no store and holds nothing but an interrupted create's files."""
    existing = root
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(
            f"cannot create a trajectory store at {root}: {existing} is not a writable directory"
        )
    if (root / "meta.json").exists():
        raise FileExistsError(f"{root} is already a trajectory store; use TrajectoryStore.open_or_create")
    if root.exists() and (
        extra := sorted(
            p.name for p in root.iterdir() if p.name not in _CREATE_LEFTOVERS and not p.name.endswith(".tmp")
        )
    ):
        raise FileExistsError(f"cannot create a store in {root}: the folder holds other files {extra[:3]}")


def lock_writer(root: Path) -> int:
    """The flock on <root>/writer.lock (one writer at a time), as an open file descriptor."""
    fd = os.open(root / "writer.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RuntimeError(
            f"{root} is already open for writing (by another process or store object)"
        ) from None
    return fd


def drop_uncommitted(root: Path, records: list[dict], end: int) -> None:
    """Cut a torn manifest tail and delete snapshot files no manifest line lists (a crash's leftovers)."""
    manifest = root / "manifest.jsonl"
    if manifest.stat().st_size > end:
        os.truncate(manifest, end)
    listed = {f["name"] for r in records if r["type"] == "snapshot" for f in r["files"].values()}
    for p in (root / "snapshots").iterdir():
        if f"snapshots/{p.name}" not in listed:
            p.unlink()
    for p in root.glob(".*.tmp"):
        p.unlink()


def verified_file(root: Path, f: dict, verified: set[str]) -> Path:
    """Path of a snapshot file `f` (its manifest record), checked once against its size and sha256."""
    path = root / f["name"]
    if f["name"] not in verified:
        if not path.is_file():
            raise FileNotFoundError(f"{path} is listed in the manifest but missing; the store is damaged")
        with open(path, "rb") as fh:
            sha = hashlib.file_digest(fh, "sha256").hexdigest()
        if sha != f["sha256"] or path.stat().st_size != f["size"]:
            raise ValueError(f"{path} is truncated or corrupted: its sha256 does not match the manifest")
        verified.add(f["name"])
    return path


class SnapshotWriter:
    """Appending to a store; mixed into TrajectoryStore, whose state (path, _snaps, _notes, locks) it uses."""

    def append(
        self,
        step: int,
        loglik: np.ndarray,
        *,
        layers: Sequence[int] | None = None,
        probe_fingerprint: str | None = None,
        source: str | None = None,
        weight_sketch: np.ndarray | None = None,
        sq_dists: Mapping[int, float] | None = None,
        full_weights: Mapping[str, np.ndarray] | None = None,
        info: Mapping | None = None,
    ) -> dict:
        """Write one snapshot; everything is checked before any file is written. Returns its manifest record.

        Args:
            step: optimizer step, larger than every step already stored.
            loglik: (N,) last-layer LL, or (R, N) rows for `layers` (default: all n_layers + 1 layers).
            layers: layer of each row (0..n_layers, negative OK), increasing.
            probe_fingerprint: the probe the LL was scored on; refused if it is not the store's.
            source: where the snapshot came from (checkpoint path, revision, "callback", ...).
            weight_sketch: (k,) WeightSketch of the weights (same k as earlier snapshots).
            sq_dists: exact squared weight distances {earlier stored step: value}.
            full_weights: name -> numpy array, saved as safetensors.
            info: JSON-serialisable extras (timings, weight sha256, ...).
        """
        self._check_writable()
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"step must be a non-negative int, got {step!r}")
        step = int(step)
        if probe_fingerprint is not None and probe_fingerprint != self.probe_fingerprint:
            raise ValueError(
                f"step {step}: probe fingerprint {probe_fingerprint} differs from the store's "
                f"{self.probe_fingerprint}; score with the store's probe"
            )
        if self._snaps and step <= (last := self._snaps[-1]["step"]):
            why = (
                "is already in"
                if any(r["step"] == step for r in self._snaps)
                else f"is below the last step {last} of"
            )
            raise ValueError(f"step {step} {why} {self.path}; steps must increase")
        rows, layers = self._checked_loglik(step, loglik, layers)
        rec = {
            "type": "snapshot",
            "step": step,
            "layers": layers,
            "source": source,
            "info": dict(info or {}),
            "probe_fingerprint": self.probe_fingerprint,
            "time": time.time(),
        }
        if sq_dists is not None:
            rec["sq_dists"] = self._checked_sq_dists(step, sq_dists)
        sketch = None if weight_sketch is None else self._checked_sketch(step, weight_sketch)
        weights = None if full_weights is None else checked_weights(step, full_weights)
        json_bytes(rec, f"step {step}: source/info")
        stem = self.path / "snapshots" / f"step_{step:08d}"
        rec["files"] = {"ll": write_recorded(stem.with_name(stem.name + ".ll.npy"), npy_writer(rows))}
        if sketch is not None:
            rec["files"]["sketch"] = write_recorded(
                stem.with_name(stem.name + ".sketch.npy"), npy_writer(sketch)
            )
        if weights is not None:
            from safetensors.numpy import save_file

            rec["files"]["weights"] = write_recorded(
                stem.with_name(stem.name + ".weights.safetensors"), lambda tmp: save_file(weights, tmp)
            )
        self._append_line(rec)
        self._snaps.append(rec)
        self._verified.update(f["name"] for f in rec["files"].values())
        self._cache.clear()
        return copy.deepcopy(rec)

    def add_note(self, kind: str, payload) -> None:
        """Append a note (e.g. kind="duplicate", payload={"step": 1, "same_as": 0}) to the manifest."""
        self._check_writable()
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"note kind must be a non-empty string, got {kind!r}")
        rec = {"type": "note", "kind": kind, "payload": payload, "time": time.time()}
        self._append_line(rec)
        self._notes.append(json.loads(json_bytes(rec, "note")))

    def _check_writable(self) -> None:
        if self._lock_fd is None:
            raise PermissionError(
                f"{self.path} is read-only or closed; use open_or_create or open(writable=True)"
            )

    def _append_line(self, rec: dict) -> None:
        line = json_bytes(rec, "manifest record") + b"\n"
        size = os.fstat(self._manifest_fd).st_size
        try:
            if os.write(self._manifest_fd, line) != len(line):
                raise OSError(f"short write to {self.path}/manifest.jsonl (disk full?)")
            os.fsync(self._manifest_fd)
        except BaseException:
            os.ftruncate(self._manifest_fd, size)  # never leave a torn line behind a live writer
            raise

    def _checked_loglik(self, step: int, loglik, layers) -> tuple[np.ndarray, list[int]]:
        arr = np.asarray(loglik, dtype=np.float64)
        if layers is None:
            layers = [self.n_layers] if arr.ndim == 1 else list(range(self.n_layers + 1))
        layers = [self._layer(int(la)) for la in layers]
        if any(b <= a for a, b in pairwise(layers)):
            raise ValueError(f"step {step}: layers {layers} must be distinct and increasing")
        if self.n_layers not in layers:  # every snapshot holds the model's output: loglik(-1) reads all steps
            raise ValueError(f"step {step}: layers {layers} lack the model's output (layer {self.n_layers})")
        arr = arr.reshape(1, -1) if arr.ndim == 1 else arr
        if arr.shape != (len(layers), self.n_texts):
            raise ValueError(
                f"step {step}: loglik has shape {np.shape(loglik)}, expected ({len(layers)}, "
                f"{self.n_texts}) for layers {layers} (or ({self.n_texts},) for the last layer)"
            )
        bad = np.argwhere(~np.isfinite(arr))
        if len(bad):
            r, i = bad[0]
            raise ValueError(
                f"step {step}: loglik is not finite ({arr[r, i]}) at text {i}, layer {layers[r]}"
            )
        return arr, layers

    def _checked_sketch(self, step: int, sketch) -> np.ndarray:
        arr = np.asarray(sketch, dtype=np.float64)
        earlier = next((r for r in reversed(self._snaps) if "sketch" in r["files"]), None)
        k = None if earlier is None else np.load(self._file(earlier, "sketch"), mmap_mode="r").shape[0]
        if arr.ndim != 1 or (k is not None and arr.shape[0] != k) or not np.isfinite(arr).all():
            raise ValueError(
                f"step {step}: weight_sketch must be a finite 1-D array"
                + (f" of length {k} like earlier snapshots" if k else "")
                + f", got shape {arr.shape}"
            )
        return arr

    def _checked_sq_dists(self, step: int, sq_dists: Mapping) -> dict[str, float]:
        known = {r["step"] for r in self._snaps}
        out = {}
        for a, d in sq_dists.items():
            if int(a) not in known:
                raise ValueError(f"step {step}: sq_dists refers to step {a}, which is not in the store")
            if not np.isfinite(d) or d < 0:
                raise ValueError(f"step {step}: sq_dists[{a}] = {d} must be finite and >= 0")
            out[str(int(a))] = float(d)
        return out


def checked_weights(step: int, weights: Mapping) -> dict[str, np.ndarray]:
    bad = [name for name, a in weights.items() if not isinstance(name, str) or not isinstance(a, np.ndarray)]
    if bad or not weights:
        raise ValueError(
            f"step {step}: full_weights must map parameter names to numpy arrays "
            f"(t.detach().float().cpu().numpy()); bad entries: {bad[:3]}"
        )
    return {name: np.ascontiguousarray(a) for name, a in weights.items()}


def probe_record(probe) -> dict:
    """probe.json of a new store from a `ProbeSet` (or anything with ``.texts``, made into one): the fingerprint
    and byte counts are recomputed from the texts, never taken on trust.

    Raises:
        ValueError: no texts, a non-str text, bad domains, or a given fingerprint that is not its texts'.
    """
    from trajlab.data.probe import ProbeSet

    given = getattr(probe, "fingerprint", None)
    if not isinstance(probe, ProbeSet):
        texts = getattr(probe, "texts", None)
        if texts is None or isinstance(texts, str):
            raise ValueError(f"probe must be a trajlab ProbeSet (texts, name, domains), got {type(probe).__name__}")
        probe = ProbeSet(texts, name=str(getattr(probe, "name", "probe")), domains=getattr(probe, "domains", None))
    if given not in (None, probe.fingerprint):
        raise ValueError(f"probe fingerprint {str(given)[:12]} is not its texts' ({probe.fingerprint[:12]}): "
                         "build the probe with trajlab.ProbeSet")
    return probe.to_dict() | {"n_bytes": [int(b) for b in probe.n_bytes]}
