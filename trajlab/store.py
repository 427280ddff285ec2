"""TrajectoryStore: one trajectory on disk (LL vectors, weight sketches, exact weight distances).

Append-only and crash-safe. Each snapshot is written as immutable files (temp file in the same folder, flush,
fsync, rename), and only then listed by one line appended to ``manifest.jsonl`` (one write, then fsync). A
reader trusts only newline-terminated manifest lines, so after a crash (kill -9 at any moment) the store holds
a complete prefix of its snapshots; files not in the manifest are ignored and removed by the next writer.

Layout (readable with numpy and the standard library alone)::

    <store>/meta.json       {"format": "trajlab-store", "format_version": 1, "n_layers": L, "n_texts": N,
                             "probe_fingerprint", "trajlab_version", "run", "model", "tokenizer":
                             {"fingerprint", ...}, "config": {...}, optional "seed", "preset", "parent"}
    <store>/probe.json      ProbeSet.to_dict() + "name", "fingerprint", "texts": [N str], "n_bytes": [N int]
    <store>/manifest.jsonl  one JSON object per line, in step order:
        {"type": "snapshot", "step", "layers": [layer of each LL row], "files": {"ll": {"name", "sha256",
         "size"}, optional "sketch" and "weights" alike}, optional "sq_dists": {"<earlier step>": float},
         "source", "info": {...}, "probe_fingerprint", "time"}
        {"type": "note", "kind", "payload", "time"}          (e.g. duplicates found by an importer)
    <store>/snapshots/step_00001000.ll.npy      (R, N) float64 summed log-likelihoods in nats; row r is layer
                                                layers[r] (0 = embeddings, L = the model's own logits)
    <store>/snapshots/step_00001000.sketch.npy  (k,) float64 weight sketch (trajlab.sketch.WeightSketch)
    <store>/snapshots/step_00001000.weights.safetensors   fp32 weights by parameter name, when recorded
    <store>/writer.lock     flock held by the single writer

Reading without trajlab::

    meta = json.load(open(f"{root}/meta.json"))
    lines = [s for s in open(f"{root}/manifest.jsonl") if s.endswith("\\n")]  # a torn last line has no \\n
    snaps = [e for e in map(json.loads, lines) if e["type"] == "snapshot"]
    steps = [e["step"] for e in snaps]
    L = np.stack([np.load(f"{root}/{e['files']['ll']['name']}")[e["layers"].index(meta["n_layers"])]
                  for e in snaps])                                           # (K, N) last-layer LL
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

from trajlab import __version__

FORMAT, FORMAT_VERSION = "trajlab-store", 1
_REQUIRED_META = ("run", "model", "tokenizer", "config")
# Files a store folder may hold before meta.json exists (an interrupted create), so create may reuse it.
_CREATE_LEFTOVERS = {"probe.json", "manifest.jsonl", "snapshots", "writer.lock"}


class MissingEntryError(KeyError):
    """A step, distance or weight file that the store does not hold (a KeyError with a readable message)."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class StoredProbe:
    """The probe texts kept in a store: ProbeSet-like (.texts, .n_bytes, .fingerprint, .name, .to_dict())."""

    name: str
    fingerprint: str
    texts: list[str]
    n_bytes: np.ndarray  # (N,) int64 UTF-8 bytes per text
    record: dict  # probe.json as written (ProbeSet.to_dict() plus the keys above)

    def to_dict(self) -> dict:
        return copy.deepcopy(self.record)


def _json_bytes(obj, what: str) -> bytes:
    try:
        return json.dumps(obj, sort_keys=True, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} must be JSON-serialisable with finite numbers: {e}") from None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is missing or corrupted ({e}); the store cannot be opened") from None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, write: Callable[[str], None]) -> dict:
    """Write a file via `write(temp_path)`, fsync, rename into place; returns its manifest record."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(str(tmp))
    with open(tmp, "rb") as f:
        sha = hashlib.file_digest(f, "sha256").hexdigest()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return {
        "name": path.relative_to(path.parent.parent).as_posix(),
        "sha256": sha,
        "size": path.stat().st_size,
    }


def _npy_writer(arr: np.ndarray) -> Callable[[str], None]:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)

    return write


def _read_manifest(path: Path) -> tuple[list[dict], int]:
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


def _check_creatable(root: Path) -> None:
    """Refuse, before anything is written, unless the nearest existing folder of `root` is writable."""
    existing = root
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(
            f"cannot create a trajectory store at {root}: {existing} is not a writable directory"
        )


class TrajectoryStore:
    """One trajectory on disk. Get one with `open`, `create` or `open_or_create`, never the constructor."""

    def __init__(self, root: Path, meta: dict, probe: dict, records: list[dict], lock_fd: int | None):
        self._lock_fd = self._manifest_fd = None  # set first: __del__ may run if this raises
        self.path = root
        self._meta, self._probe = meta, probe
        self.n_layers: int = meta["n_layers"]
        self.n_texts: int = meta["n_texts"]
        self.probe_fingerprint: str = meta["probe_fingerprint"]
        self._snaps = [r for r in records if r["type"] == "snapshot"]
        self._notes = [r for r in records if r["type"] == "note"]
        steps = [r["step"] for r in self._snaps]
        if any(b <= a for a, b in pairwise(steps)):
            raise ValueError(f"{root}/manifest.jsonl lists steps out of order; the store is corrupted")
        if lock_fd is not None:
            self._lock_fd = lock_fd
            self._manifest_fd = os.open(root / "manifest.jsonl", os.O_WRONLY | os.O_APPEND)
        self._verified: set[str] = set()
        self._cache: dict = {}  # ("ll", layer) -> (K, N); ("sketch",) -> (K_w, k)

    # ---- opening ----

    @classmethod
    def open(cls, path: str | os.PathLike, *, writable: bool = False) -> TrajectoryStore:
        """Open an existing store (read-only unless `writable`; one writer at a time)."""
        root = Path(path)
        if not root.is_dir():
            raise FileNotFoundError(f"no trajectory store at {root}: no such directory")
        if not (root / "meta.json").is_file():
            raise ValueError(
                f"{root} is not a trajectory store (no meta.json); make one with TrajectoryStore.create"
            )
        meta = _read_json(root / "meta.json")
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{root}/meta.json is not a {FORMAT} v{FORMAT_VERSION} store")
        probe = _read_json(root / "probe.json")
        lock_fd = cls._lock(root) if writable else None
        try:
            records, end = _read_manifest(root / "manifest.jsonl")
            if writable:
                cls._drop_uncommitted(root, records, end)
            return cls(root, meta, probe, records, lock_fd)
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise

    @classmethod
    def create(cls, path: str | os.PathLike, *, probe, meta: Mapping, n_layers: int) -> TrajectoryStore:
        """Create a new, empty, writable store for `probe` (a ProbeSet) and a model with `n_layers` layers."""
        root = Path(path)
        _check_creatable(root)
        if (root / "meta.json").exists():
            raise FileExistsError(f"{root} is already a trajectory store; use TrajectoryStore.open_or_create")
        if root.exists() and (
            extra := sorted(
                p.name
                for p in root.iterdir()
                if p.name not in _CREATE_LEFTOVERS and not p.name.endswith(".tmp")
            )
        ):
            raise FileExistsError(
                f"cannot create a store in {root}: the folder holds other files {extra[:3]}"
            )
        probe_rec = _probe_record(probe)
        full_meta = _meta_record(meta, probe_rec, n_layers)
        probe_bytes, meta_bytes = _json_bytes(probe_rec, "probe"), _json_bytes(full_meta, "meta")
        (root / "snapshots").mkdir(parents=True, exist_ok=True)
        lock_fd = cls._lock(root)
        try:
            _write_atomic(root / "probe.json", lambda tmp: Path(tmp).write_bytes(probe_bytes))
            _write_atomic(root / "manifest.jsonl", lambda tmp: Path(tmp).write_bytes(b""))
            # meta.json last: its presence marks a complete store
            _write_atomic(root / "meta.json", lambda tmp: Path(tmp).write_bytes(meta_bytes))
            return cls(root, full_meta, probe_rec, [], lock_fd)
        except BaseException:
            os.close(lock_fd)
            raise

    @classmethod
    def open_or_create(
        cls, path: str | os.PathLike, *, probe, meta: Mapping, n_layers: int
    ) -> TrajectoryStore:
        """Reopen a store to append (resume) or create it; existing files are never rewritten."""
        root = Path(path)
        if not (root / "meta.json").is_file():
            return cls.create(root, probe=probe, meta=meta, n_layers=n_layers)
        store = cls.open(root, writable=True)
        given = {
            "probe fingerprint": probe.fingerprint,
            "n_layers": n_layers,
            "tokenizer fingerprint": (meta.get("tokenizer") or {}).get("fingerprint"),
        }
        stored = {
            "probe fingerprint": store.probe_fingerprint,
            "n_layers": store.n_layers,
            "tokenizer fingerprint": store._meta["tokenizer"].get("fingerprint"),
        }
        if problem := next((k for k in given if given[k] != stored[k]), None):
            store.close()
            raise ValueError(
                f"cannot resume {root}: {problem} {given[problem]} differs from the store's "
                f"{stored[problem]}; write to a new store path instead"
            )
        return store

    @staticmethod
    def _lock(root: Path) -> int:
        fd = os.open(root / "writer.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(
                f"{root} is already open for writing (by another process or store object)"
            ) from None
        return fd

    @staticmethod
    def _drop_uncommitted(root: Path, records: list[dict], end: int) -> None:
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

    def close(self) -> None:
        """Release the writer lock (a no-op for read-only stores)."""
        for fd in (self._manifest_fd, self._lock_fd):
            if fd is not None:
                os.close(fd)
        self._manifest_fd = self._lock_fd = None

    def __del__(self) -> None:
        self.close()

    def __enter__(self) -> TrajectoryStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._snaps)

    def __repr__(self) -> str:
        return (
            f"TrajectoryStore({str(self.path)!r}, K={len(self)}, N={self.n_texts}, n_layers={self.n_layers})"
        )

    # ---- metadata ----

    @property
    def meta(self) -> dict:
        return copy.deepcopy(self._meta)

    @property
    def n_bytes(self) -> np.ndarray:
        return np.asarray(self._probe["n_bytes"], dtype=np.int64)  # (N,)

    def probe(self) -> StoredProbe:
        p = self._probe
        return StoredProbe(p["name"], p["fingerprint"], list(p["texts"]), self.n_bytes, copy.deepcopy(p))

    @property
    def steps(self) -> np.ndarray:
        return np.array([r["step"] for r in self._snaps], dtype=np.int64)  # (K,) increasing

    def snapshot_info(self, step: int) -> dict:
        """The manifest record of `step`: layers, files (sha256, size), sq_dists, source, info, time."""
        return copy.deepcopy(self._snapshot(step))

    def notes(self, kind: str | None = None) -> list[dict]:
        """Notes added with `add_note`, oldest first, as {"kind", "payload", "time"}."""
        return [copy.deepcopy(n) for n in self._notes if kind is None or n["kind"] == kind]

    def _snapshot(self, step: int) -> dict:
        for r in self._snaps:
            if r["step"] == step:
                return r
        raise MissingEntryError(f"step {step} is not in store {self.path} (it holds {len(self)} steps)")

    def _layer(self, layer: int) -> int:
        if not -self.n_layers - 1 <= layer <= self.n_layers:
            raise ValueError(f"layer {layer} is out of range for a store with layers 0..{self.n_layers}")
        return layer % (self.n_layers + 1)

    def _file(self, rec: dict, kind: str) -> Path:
        """Path of a snapshot file, checked once against the manifest's size and sha256."""
        f = rec["files"][kind]
        path = self.path / f["name"]
        if f["name"] not in self._verified:
            if not path.is_file():
                raise FileNotFoundError(f"{path} is listed in the manifest but missing; the store is damaged")
            with open(path, "rb") as fh:
                sha = hashlib.file_digest(fh, "sha256").hexdigest()
            if sha != f["sha256"] or path.stat().st_size != f["size"]:
                raise ValueError(f"{path} is truncated or corrupted: its sha256 does not match the manifest")
            self._verified.add(f["name"])
        return path

    # ---- log-likelihoods ----

    def loglik(self, layer: int = -1) -> np.ndarray:
        """(K, N) float64 summed log-likelihoods (nats) at `layer` (0..n_layers, negative OK), step order."""
        key = ("ll", self._layer(layer))
        if key not in self._cache:
            self._cache[key] = self._ll_rows([key[1]])[:, 0]
        return self._cache[key].copy()

    def loglik_all(self) -> np.ndarray:
        """(K, n_layers + 1, N) float64 log-likelihoods of every layer (for layer threads)."""
        return self._ll_rows(list(range(self.n_layers + 1)))

    def _ll_rows(self, layers: list[int]) -> np.ndarray:
        missing = [r["step"] for r in self._snaps if not set(layers) <= set(r["layers"])]
        if missing:
            raise ValueError(
                f"layer(s) {layers if len(layers) < 4 else 'all'} not stored for steps {missing[:5]} of "
                f"{self.path}; a store written with only the last layer serves loglik(-1) only"
            )
        out = np.empty((len(self._snaps), len(layers), self.n_texts))  # (K, R, N)
        for i, r in enumerate(self._snaps):
            rows = np.load(self._file(r, "ll"), mmap_mode="r")
            out[i] = rows[[r["layers"].index(la) for la in layers]]
        return out

    # ---- weights ----

    @property
    def weight_steps(self) -> np.ndarray:
        """(K_w,) int64 steps that recorded any weight data (sketch, exact distances or full weights)."""
        return np.array([r["step"] for r in self._snaps if _has_weights(r)], dtype=np.int64)

    def weight_sketch(self) -> np.ndarray:
        """(K_w, k) float64 weight sketches in `weight_steps` order."""
        recs = [r for r in self._snaps if _has_weights(r)]
        if missing := [r["step"] for r in recs if "sketch" not in r["files"]]:
            raise ValueError(f"steps {missing[:5]} of {self.path} recorded weights without a sketch")
        if ("sketch",) not in self._cache:
            sketches = [np.load(self._file(r, "sketch")) for r in recs]
            self._cache[("sketch",)] = np.stack(sketches) if sketches else np.empty((0, 0))
        return self._cache[("sketch",)].copy()

    def weight_sq_dist(self, step_a: int, step_b: int) -> float:
        """Exact squared L2 distance between the weights of two steps, where the writer recorded it."""
        a, b = sorted((int(step_a), int(step_b)))
        rec = self._snapshot(b)
        if a == b and _has_weights(rec):
            return 0.0
        value = rec.get("sq_dists", {}).get(str(a))
        if value is None:
            raise MissingEntryError(
                f"no exact weight distance recorded between steps {a} and {b} in {self.path}"
            )
        return float(value)

    def weight_sq_dist_matrix(self) -> np.ndarray:
        """(K_w, K_w) float64 exact squared distances over `weight_steps`; NaN where none was recorded."""
        steps = self.weight_steps
        index = {int(s): i for i, s in enumerate(steps)}
        out = np.full((len(steps), len(steps)), np.nan)
        np.fill_diagonal(out, 0.0)
        for r in self._snaps:
            for a, d in r.get("sq_dists", {}).items():
                if int(a) in index:
                    out[index[int(a)], index[r["step"]]] = out[index[r["step"]], index[int(a)]] = d
        return out

    def full_weights(self, step: int) -> dict[str, np.ndarray]:
        """Parameters of `step` by name, where it was appended with `full_weights`."""
        rec = self._snapshot(step)
        if "weights" not in rec["files"]:
            raise MissingEntryError(
                f"step {step} of {self.path} has no full weights (recorded with weights='full')"
            )
        from safetensors.numpy import load_file

        return load_file(self._file(rec, "weights"))

    # ---- writing ----

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
        weights = None if full_weights is None else _checked_weights(step, full_weights)
        _json_bytes(rec, f"step {step}: source/info")
        stem = self.path / "snapshots" / f"step_{step:08d}"
        rec["files"] = {"ll": _write_atomic(stem.with_name(stem.name + ".ll.npy"), _npy_writer(rows))}
        if sketch is not None:
            rec["files"]["sketch"] = _write_atomic(
                stem.with_name(stem.name + ".sketch.npy"), _npy_writer(sketch)
            )
        if weights is not None:
            from safetensors.numpy import save_file

            rec["files"]["weights"] = _write_atomic(
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
        self._notes.append(json.loads(_json_bytes(rec, "note")))

    def _check_writable(self) -> None:
        if self._lock_fd is None:
            raise PermissionError(
                f"{self.path} is read-only or closed; use open_or_create or open(writable=True)"
            )

    def _append_line(self, rec: dict) -> None:
        line = _json_bytes(rec, "manifest record") + b"\n"
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


def _has_weights(rec: dict) -> bool:
    return "sq_dists" in rec or "sketch" in rec["files"] or "weights" in rec["files"]


def _checked_weights(step: int, weights: Mapping) -> dict[str, np.ndarray]:
    bad = [name for name, a in weights.items() if not isinstance(name, str) or not isinstance(a, np.ndarray)]
    if bad or not weights:
        raise ValueError(
            f"step {step}: full_weights must map parameter names to numpy arrays "
            f"(t.detach().float().cpu().numpy()); bad entries: {bad[:3]}"
        )
    return {name: np.ascontiguousarray(a) for name, a in weights.items()}


def _probe_record(probe) -> dict:
    texts, n_bytes = list(probe.texts), [int(b) for b in np.asarray(probe.n_bytes).reshape(-1)]
    if not texts or len(texts) != len(n_bytes) or not all(isinstance(t, str) for t in texts):
        raise ValueError(
            f"probe must have N > 0 texts (str) and N byte counts; got {len(texts)} and {len(n_bytes)}"
        )
    if not isinstance(probe.fingerprint, str) or not probe.fingerprint:
        raise ValueError("probe.fingerprint must be a non-empty string")
    record = {**probe.to_dict(), "name": str(probe.name), "fingerprint": probe.fingerprint}
    return record | {"texts": texts, "n_bytes": n_bytes}


def _meta_record(meta: Mapping, probe_rec: dict, n_layers: int) -> dict:
    if not isinstance(meta, Mapping) or (missing := [k for k in _REQUIRED_META if k not in meta]):
        raise ValueError(f"meta must be a dict with keys {list(_REQUIRED_META)}; missing {missing}")
    if not isinstance(meta["tokenizer"], Mapping) or "fingerprint" not in meta["tokenizer"]:
        raise ValueError('meta["tokenizer"] must be a dict with a "fingerprint"')
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 0:
        raise ValueError(f"n_layers must be a non-negative int (transformer blocks), got {n_layers!r}")
    fixed = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "n_layers": n_layers,
        "n_texts": len(probe_rec["texts"]),
        "probe_fingerprint": probe_rec["fingerprint"],
    }
    if clash := [
        k for k in ("n_layers", "n_texts", "probe_fingerprint") if k in meta and meta[k] != fixed[k]
    ]:
        raise ValueError(f"meta{clash} disagrees with the probe / n_layers given")
    return {**meta, **fixed, "trajlab_version": __version__}


def open_stores(paths: Iterable[str | os.PathLike]) -> list[TrajectoryStore]:
    """Open stores read-only; refuses when their probe fingerprints differ (KL needs the same texts)."""
    stores = [TrajectoryStore.open(p) for p in paths]
    for s in stores[1:]:
        if s.probe_fingerprint != stores[0].probe_fingerprint:
            raise ValueError(
                f"probe fingerprints differ: {stores[0].path} has {stores[0].probe_fingerprint}, "
                f"{s.path} has {s.probe_fingerprint}; score both on the same probe set"
            )
    return stores
