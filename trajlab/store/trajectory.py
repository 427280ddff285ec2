"""TrajectoryStore: one trajectory on disk (LL vectors, weight sketches, exact weight distances).

Append-only and crash-safe. Each snapshot is written as immutable files (temp file in the same folder, flush,
fsync, rename), and only then listed by one line appended to ``manifest.jsonl`` (one write, then fsync). A
reader trusts only newline-terminated manifest lines, so after a crash (kill -9 at any moment) the store holds
a complete prefix of its snapshots; files not in the manifest are ignored and removed by the next writer.

Layout (readable with numpy and the standard library alone)::

    <store>/meta.json       {"format": "trajlab-store", "format_version": 2, "id", "lineage": {"root",
                             "parent"}, "n_layers": L, "n_texts": N, "probe_fingerprint", "trajlab_version",
                             "run", "model", "tokenizer": {"fingerprint", ...}, "config": {...},
                             "warmup_steps", "max_steps", "scoring": {"long_texts", "stride", "window",
                             "n_tokens", "lens_dtype"}, optional "seed", "preset", "parent", ...}
                            every key with its type: trajlab.store.meta.META_SCHEMA (version 1, read-only:
                            no id, lineage, warmup_steps, max_steps, scoring; read with the defaults there)
    <store>/probe.json      ProbeSet.to_dict() + "name", "fingerprint", "texts": [N str], "n_bytes": [N int],
                            optional "domains": [N str]
    <store>/manifest.jsonl  one JSON object per line, in step order:
        {"type": "snapshot", "step", "layers": [layer of each LL row: all L + 1, or some, e.g. [L]],
         "files": {"ll": {"name", "sha256", "size"}, optional "sketch" and "weights" alike}, optional
         "sq_dists": {"<earlier step>": float}, "source", "info": {...}, "probe_fingerprint", "time"}
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
import os
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from pathlib import Path

import numpy as np

from trajlab.data.probe import ProbeSet
from trajlab.store.files import (
    SnapshotWriter,
    check_creatable,
    drop_uncommitted,
    json_bytes,
    lock_writer,
    probe_record,
    read_json,
    read_manifest,
    verified_file,
    write_recorded,
)
from trajlab.store.meta import (
    FORMAT,
    FORMAT_VERSION,
    META_SCHEMA,
    SCORING_SCHEMA,
    check_comparable,
    child_lineage,
    new_meta,
    read_meta,
    settings_mismatch,
)


class MissingEntryError(KeyError):
    """A step, distance or weight file that the store does not hold (a KeyError with a readable message)."""

    def __str__(self) -> str:
        return str(self.args[0])


class TrajectoryStore(SnapshotWriter):
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
        if not is_store(root):
            raise ValueError(
                f"{root} is not a trajectory store (no meta.json); make one with TrajectoryStore.create"
            )
        try:
            raw = (root / "meta.json").read_bytes()
        except OSError as e:
            raise ValueError(f"{root}/meta.json cannot be read ({e}); the store cannot be opened") from None
        meta = read_meta(raw, root)
        if writable and meta["format_version"] != FORMAT_VERSION:
            raise ValueError(
                f"{root} is a format-{meta['format_version']} store (written before trajlab recorded how "
                "rows were scored); it opens read-only: write new snapshots to a new store"
            )
        probe = read_json(root / "probe.json")
        lock_fd = lock_writer(root) if writable else None
        try:
            records, end = read_manifest(root / "manifest.jsonl")
            if writable:
                drop_uncommitted(root, records, end)
            return cls(root, meta, probe, records, lock_fd)
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise

    @classmethod
    def create(cls, path: str | os.PathLike, *, probe, meta: Mapping, n_layers: int) -> TrajectoryStore:
        """Create a new, empty, writable store for `probe` (a ProbeSet) and a model with `n_layers` layers."""
        root = Path(path)
        check_creatable(root)
        probe_rec = probe_record(probe)
        full_meta = new_meta(meta, len(probe_rec["texts"]), probe_rec["fingerprint"], n_layers)
        probe_bytes, meta_bytes = json_bytes(probe_rec, "probe"), json_bytes(full_meta, "meta")
        (root / "snapshots").mkdir(parents=True, exist_ok=True)
        lock_fd = lock_writer(root)
        try:
            write_recorded(root / "probe.json", probe_bytes)
            write_recorded(root / "manifest.jsonl", b"")
            # meta.json last: its presence marks a complete store
            write_recorded(root / "meta.json", meta_bytes)
            return cls(root, full_meta, probe_rec, [], lock_fd)
        except BaseException:
            os.close(lock_fd)
            raise

    @classmethod
    def open_or_create(
        cls, path: str | os.PathLike, *, probe, meta: Mapping, n_layers: int
    ) -> TrajectoryStore:
        """Reopen a store to append (resume) or create it; existing files are never rewritten.

        A reopened store must match the probe, n_layers, tokenizer and (when `meta` has one) the scoring
        block; the stored meta is kept (the given id, lineage, warm-up and max steps are not written).
        """
        root = Path(path)
        if not (root / "meta.json").is_file():
            return cls.create(root, probe=probe, meta=meta, n_layers=n_layers)
        store = cls.open(root, writable=True)
        problem = store.mismatch(
            probe.fingerprint, n_layers, (meta.get("tokenizer") or {}).get("fingerprint"), meta.get("scoring")
        )
        if problem:
            store.close()
            raise ValueError(f"cannot resume {root}: {problem}; write to a new store path instead")
        return store

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

    def probe(self) -> ProbeSet:
        """The probe as a `ProbeSet` (texts, name, domains), its fingerprint recomputed and checked."""
        try:
            probe = ProbeSet.from_dict(self._probe)
        except ValueError as e:
            raise ValueError(f"{self.path}/probe.json: {e}; the store is corrupted") from None
        if probe.fingerprint != self.probe_fingerprint:
            raise ValueError(f"{self.path}/probe.json holds other texts than meta.json's probe fingerprint; "
                             "the store is corrupted")
        return probe

    def mismatch(self, probe_fingerprint=None, n_layers=None, tokenizer=None, scoring=None) -> str | None:
        """Why snapshots with these settings (None: not checked) cannot be appended here, or None."""
        return settings_mismatch(self._meta, probe_fingerprint, n_layers, tokenizer, scoring)

    def lineage_of_child(self, step: int | None = None) -> dict:
        """meta["lineage"] for a store continuing from this one's snapshot `step` (default: the last)."""
        return child_lineage(self._meta, self.steps, step)

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
        return verified_file(self.path, rec["files"][kind], self._verified)

    def snapshot_array(self, step: int, kind: str = "ll") -> np.ndarray:
        """One snapshot file as stored, checked against the manifest: "ll" (R, N) rows in the order of
        ``snapshot_info(step)["layers"]``, or "sketch" (k,)."""
        rec = self._snapshot(step)
        if kind not in ("ll", "sketch") or kind not in rec["files"]:
            raise MissingEntryError(
                f"step {step} of {self.path} holds no {kind!r} file (it has {sorted(rec['files'])})"
            )
        return np.load(self._file(rec, kind), allow_pickle=False)

    # ---- log-likelihoods ----

    def full_layer_steps(self) -> np.ndarray:
        """(K_f,) int64 steps whose snapshot holds every layer 0..n_layers: all steps, unless the writer
        scored some at the last layer only (``TrajectoryCallback(layers_every=k)``, ``layers="last"``)."""
        every = set(range(self.n_layers + 1))
        return np.array([r["step"] for r in self._snaps if every <= set(r["layers"])], dtype=np.int64)

    def loglik(self, layer: int = -1, steps: Sequence[int] | None = None) -> np.ndarray:
        """(K, N) float64 summed log-likelihoods (nats) at `layer` (0..n_layers, negative OK) of every step,
        or (len(steps), N) of the given `steps`, in step order. Every snapshot holds the last layer; a lens
        layer that some snapshots lack raises, naming them: pass ``steps=store.full_layer_steps()``."""
        if steps is not None:
            return self._ll_rows([self._layer(layer)], self._records(steps))[:, 0]
        key = ("ll", self._layer(layer))
        if key not in self._cache:
            self._cache[key] = self._ll_rows([key[1]], self._snaps)[:, 0]
        return self._cache[key].copy()

    def loglik_all(self, steps: Sequence[int] | None = None) -> np.ndarray:
        """(K, n_layers + 1, N) float64 log-likelihoods of every layer (for layer threads) of every step, or
        of the given `steps`; ``loglik_all(store.full_layer_steps())`` reads exactly the snapshots holding
        them."""
        layers = list(range(self.n_layers + 1))
        return self._ll_rows(layers, self._snaps if steps is None else self._records(steps))

    def _records(self, steps: Sequence[int]) -> list[dict]:
        """Manifest records of `steps` (strictly increasing, all stored)."""
        steps = [int(s) for s in np.asarray(steps).reshape(-1)]
        if any(b <= a for a, b in pairwise(steps)):
            raise ValueError(f"steps must be strictly increasing, got {steps[:5]}...")
        return [self._snapshot(s) for s in steps]

    def _ll_rows(self, layers: list[int], recs: list[dict]) -> np.ndarray:
        missing = [r["step"] for r in recs if not set(layers) <= set(r["layers"])]
        if missing:
            held = len(self.full_layer_steps())
            raise ValueError(
                f"layer(s) {layers if len(layers) < 4 else 'all'} not stored for steps {missing[:5]} of "
                f"{self.path} ({len(missing)} of {len(recs)}); {held} steps hold every layer: read those "
                "with steps=store.full_layer_steps(); loglik(-1) serves every step"
            )
        out = np.empty((len(recs), len(layers), self.n_texts))  # (K, R, N)
        for i, r in enumerate(recs):
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


def _has_weights(rec: dict) -> bool:
    return "sq_dists" in rec or "sketch" in rec["files"] or "weights" in rec["files"]


def is_store(path: str | os.PathLike) -> bool:
    """Whether `path` holds a trajectory store (its meta.json is written last at create, so it marks one)."""
    return (Path(path) / "meta.json").is_file()


def open_stores(paths: Iterable[str | os.PathLike]) -> list[TrajectoryStore]:
    """Open stores read-only; refuses when their probe fingerprints differ (KL needs the same texts) or
    when `check_comparable` refuses their scorings (and warns where it warns)."""
    stores = [TrajectoryStore.open(p) for p in paths]
    for s in stores[1:]:
        if s.probe_fingerprint != stores[0].probe_fingerprint:
            raise ValueError(
                f"probe fingerprints differ: {stores[0].path} has {stores[0].probe_fingerprint}, "
                f"{s.path} has {s.probe_fingerprint}; score both on the same probe set"
            )
    check_comparable(stores)
    return stores


__all__ = ["FORMAT", "FORMAT_VERSION", "META_SCHEMA", "SCORING_SCHEMA", "MissingEntryError",
           "TrajectoryStore", "check_comparable", "is_store", "open_stores"]  # fmt: skip
