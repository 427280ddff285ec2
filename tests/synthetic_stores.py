"""Real trajectory stores written from synthetic LL vectors in milliseconds: the analysis tests' inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trajlab.data.probe import ProbeSet
from trajlab.store import TrajectoryStore

N = 400
RNG = np.random.default_rng(0)
DIFFICULTY = -500 + 40 * RNG.normal(size=N)
N_BYTES = RNG.integers(300, 1024, size=N)
TO_BITS = 1 / (N_BYTES.mean() * np.log(2))


def Probe(tag: str = "probe-A", domains=None) -> ProbeSet:
    """N synthetic texts of exactly N_BYTES bytes each (the store recomputes byte counts from the texts)."""
    texts = [(f"{tag} text {i} " + "x" * 1024)[:b] for i, b in enumerate(N_BYTES)]
    return ProbeSet(texts, name="synthetic", domains=domains)


def write_store(path: Path, run: str, steps, ll_layers, meta=None, weights=None, exact=True, probe=None):
    """Writes a real store: ll_layers (K, 4, N) holds layers 0..3, or (K, 1, N) the last layer only."""
    store = TrajectoryStore.create(
        path / run,
        probe=probe or Probe(),
        meta={"run": run, "model": {}, "tokenizer": {"fingerprint": "tok"}, "config": {}, **(meta or {})},
        n_layers=3,
    )
    for i, step in enumerate(steps):
        kw = {}
        if weights is not None:
            kw["weight_sketch"] = (
                weights[i] @ np.random.default_rng(9).normal(size=(weights.shape[1], 64)) / 8
            )
            if exact:
                kw["sq_dists"] = {
                    int(steps[j]): float(((weights[i] - weights[j]) ** 2).sum()) for j in range(i)
                }
        layers = list(range(4)) if ll_layers.shape[1] == 4 else [3]
        store.append(int(step), ll_layers[i], layers=layers, **kw)
    store.close()
    return path / run


def brownian_ll(k: int, seed: int) -> np.ndarray:
    return DIFFICULTY + np.cumsum(np.random.default_rng(seed).normal(size=(k, N)) * 0.3, axis=0)


def ballistic_weights(k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 5 + np.arange(1, k + 1)[:, None] * rng.normal(size=300) + 1e-3 * rng.normal(size=(k, 300))


def direct_kl(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.var(a - b) / 2 * TO_BITS)
