"""Report-page fixtures: three real stores written in milliseconds from synthetic LL vectors, and their page.

- ``pretrain``: 24 snapshots, every layer (3 blocks), exact weight distances, a CSV log; its first snapshot is
  far from the rest (a KL beyond the checked range, as a random initialisation gives).
- ``finetune``: 7 snapshots continuing from pretrain's last one (a lineage child): too few for t-SNE.
- ``imported``: one snapshot of a 6-block model whose embedding layer is far from the others; its own root.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from trajlab.data.probe import ProbeSet
from trajlab.store import TrajectoryStore

N = 120
RNG = np.random.default_rng(3)
N_BYTES = RNG.integers(300, 900, size=N)
N_TOKENS = [int(b) // 4 for b in N_BYTES]
DIFFICULTY = -2.0 * N_BYTES + 30 * RNG.normal(size=N)
FAST = {"spiral_n_null": 40, "spiral_n_null_tsne": 3, "thread_n_null": 60, "n_boot": 60, "n_random": 40}


def probe() -> ProbeSet:
    texts = [(f"text {i} " + "y" * 1024)[:b] for i, b in enumerate(N_BYTES)]
    return ProbeSet(texts, name="synthetic-report")


def _meta(run: str, **extra) -> dict:
    scoring = {
        "long_texts": "rolling",
        "stride": None,
        "window": None,
        "n_tokens": N_TOKENS,
        "lens_dtype": None,
    }
    return {
        "run": run,
        "model": {},
        "tokenizer": {"fingerprint": "tok"},
        "config": {},
        "scoring": scoring,
        **extra,
    }


def _write(path: Path, meta: dict, n_layers: int, steps, rows, weights=None) -> TrajectoryStore:
    store = TrajectoryStore.create(path, probe=probe(), meta=meta, n_layers=n_layers)
    for i, step in enumerate(steps):
        kw = {}
        if weights is not None:
            kw["weight_sketch"] = weights[i, :32]
            kw["sq_dists"] = {int(steps[j]): float(((weights[i] - weights[j]) ** 2).sum()) for j in range(i)}
        store.append(int(step), rows[i], layers=list(range(n_layers + 1)), **kw)
    return store


def _layers(final: np.ndarray, n_layers: int, seed: int, embedding_gap: float) -> np.ndarray:
    """(L+1, N) rows: the last is `final`; earlier layers drift away, the embedding row far away."""
    rng = np.random.default_rng(seed)
    rows = [final]
    for _ in range(n_layers - 1):
        rows.append(rows[-1] + 2.0 * rng.normal(size=N))
    rows.append(rows[-1] + embedding_gap * rng.normal(size=N))
    return np.stack(rows[::-1])


def _metrics(run_dir: Path, steps, losses) -> None:
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "train/loss", "val/loss"])
        for s, loss in zip(steps, losses, strict=True):
            w.writerow([s, f"{loss:.4f}", f"{loss + 0.1:.4f}" if s % 40 == 0 else ""])


def build_stores(root: Path) -> dict[str, Path]:
    """Writes the three stores under root (run folders pretrain/ and finetune/, and imported/)."""
    rng = np.random.default_rng(7)
    steps = np.arange(24) * 10
    walk = np.cumsum(rng.normal(size=(24, N)) * np.linspace(3, 1, 24)[:, None], axis=0)
    walk[0] -= 40 * rng.normal(size=N)  # the initialisation is far from everything after it
    finals = DIFFICULTY + walk
    weights = np.cumsum(rng.normal(size=(24, 64)), axis=0)
    pre = _write(
        root / "pretrain" / "trajectory",
        _meta("pretrain", warmup_steps=20, max_steps=230),
        3,
        steps,
        [_layers(f, 3, 10 + i, 15.0) for i, f in enumerate(finals)],
        weights,
    )
    _metrics(root / "pretrain", steps, np.linspace(5, 2, 24))
    lineage = {"root": pre.meta["lineage"]["root"], "parent": {"id": pre.meta["id"], "step": int(steps[-1])}}
    ft_steps = np.arange(7) * 2
    ft_final = finals[-1] + np.cumsum(rng.normal(size=(7, N)), axis=0)
    ft = _write(
        root / "finetune" / "trajectory",
        _meta("finetune", lineage=lineage, warmup_steps=0, max_steps=12),
        3,
        ft_steps,
        [_layers(f, 3, 50 + i, 15.0) for i, f in enumerate(ft_final)],
    )
    _metrics(root / "finetune", ft_steps, np.linspace(2.2, 1.9, 7))
    imp = _write(
        root / "imported" / "store",
        _meta("imported"),
        6,
        [0],
        [_layers(DIFFICULTY + 5 * rng.normal(size=N), 6, 99, 60.0)],
    )
    for s in (pre, ft, imp):
        s.close()
    return {"pretrain": pre.path, "finetune": ft.path, "imported": imp.path}


@pytest.fixture(scope="session")
def report_dir(tmp_path_factory) -> Path:
    """A written report of the three stores (report.html, summary.json, analysis/)."""
    from trajlab.report import write_report

    root = tmp_path_factory.mktemp("report_stores")
    build_stores(root)
    write_report([root], root / "report", tsne=False, **FAST)
    return root / "report"
