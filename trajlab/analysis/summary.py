"""Every analysis number for a set of trajectory stores, written as summary.json, CSV tables and PNG figures.

Stores are duck-typed (trajlab.store.TrajectoryStore's read API), so this module needs no import from the
store and stays numpy-only. `trajlab analyze STORE... --out DIR` calls analyze().
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trajlab.analysis.diffusion import diffusion_exponents, pairwise_sq_dist, summarize_exponents
from trajlab.analysis.kl import kl_matrix, prepare
from trajlab.analysis.maps import classical_mds, embed
from trajlab.analysis.outputs import write_summary
from trajlab.analysis.spiral import spiral_stats
from trajlab.analysis.tables import Trajectory, comparison_table, finetune_vs_base
from trajlab.analysis.threads import layer_map, layer_threads


def _run_names(stores: list) -> list[str]:
    names = [str(s.meta.get("run") or Path(s.path).stem) for s in stores]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"stores must have distinct run names, these repeat: {dupes}")
    return names


def _loaded(stores: list) -> tuple[list[np.ndarray], np.ndarray]:
    """Returns each store's final-layer (K_i, N) LL and the shared (N,) byte counts, checked."""
    if not stores:
        raise ValueError("analyze needs at least one trajectory store")
    prints = {s.probe_fingerprint for s in stores}
    if len(prints) > 1:
        raise ValueError(
            f"stores were scored on different probe sets (fingerprints {sorted(prints)}); "
            "analyze stores of one probe set together"
        )
    n_bytes = np.asarray(stores[0].n_bytes)
    if any(not np.array_equal(np.asarray(s.n_bytes), n_bytes) for s in stores):
        raise ValueError("stores disagree on the per-text byte counts despite one probe fingerprint")
    if empty := [str(s.path) for s in stores if len(s.steps) == 0]:
        raise ValueError(f"stores {empty} hold no snapshots yet; analyze stores with at least one")
    lls = [np.asarray(s.loglik(), dtype=np.float64) for s in stores]
    for s, ll in zip(stores, lls, strict=True):
        if ll.ndim != 2 or ll.shape != (len(s.steps), len(n_bytes)):
            raise ValueError(
                f"store {s.path}: loglik() has shape {ll.shape}, expected ({len(s.steps)}, {len(n_bytes)})"
            )
    return lls, n_bytes


def _weight_space(store, window: int, notes: list[str]) -> dict | None:
    """Returns squared weight distances and their fits, exact where recorded, else from the sketch."""
    w_steps = np.asarray(store.weight_steps, dtype=np.int64)
    if len(w_steps) < 2:
        notes.append("weight space: fewer than 2 weight snapshots recorded")
        return None
    sq, source = np.asarray(store.weight_sq_dist_matrix(), dtype=np.float64), "exact"
    fits = diffusion_exponents(sq, w_steps, window)
    if len(fits) == 0:
        sq, source = pairwise_sq_dist(store.weight_sketch()), "sketch"
        fits = diffusion_exponents(sq, w_steps, window)
        notes.append(
            "weight space: too few exact squared distances recorded for a fit (3 lags per start); "
            "exponents use the random-projection weight sketch, whose squared distances estimate the "
            "exact ones up to scale (c is scale-free) with projection noise"
        )
    return {"source": source, "steps": w_steps, "sq_dist": sq, "fits": fits}


def _layer_ll(store, kept: np.ndarray, notes: list[str]) -> np.ndarray | None:
    """Returns (K, L+1, N_kept) LL of every layer, or None (with a note) when not all layers are stored."""
    if store.n_layers < 2:
        notes.append(f"layer threads: need n_layers >= 2, store has {store.n_layers}")
        return None
    try:
        layers = [
            np.asarray(store.loglik(layer=la), dtype=np.float64)[:, kept] for la in range(store.n_layers + 1)
        ]
    except (KeyError, ValueError, IndexError) as e:
        notes.append(f"layer threads: not all layers stored ({e})")
        return None
    return np.stack(layers, axis=1)


def _store_summary(
    store,
    name: str,
    ll: np.ndarray,
    n_bytes: np.ndarray | None,
    kept: np.ndarray,
    *,
    window: int,
    tsne: bool,
    n_boot: int,
    seed: int,
) -> tuple[dict, dict]:
    """Returns (JSON record, arrays kept for figures) of one store."""
    steps = np.asarray(store.steps, dtype=np.int64)
    notes: list[str] = []
    kl, se = kl_matrix(ll, n_bytes, return_se=True)
    rec = {
        "run": name,
        "path": str(store.path),
        "meta": store.meta,
        "steps": steps,
        "kl_matrix": kl,
        "kl_se": se,
        "consecutive_kl": np.diagonal(kl, 1),
        "consecutive_se": np.diagonal(se, 1),
        "kl_to_first": kl[0],
        "maps": {},
        "layer_threads": None,
        "diffusion": {},
        "notes": notes,
    }
    if len(steps) >= 3:
        maps = {"pca": classical_mds(kl, 2)}  # = PCA of Q in KL units (maps.py), from the KL matrix at hand
        if tsne:
            maps["tsne"] = embed(ll, "tsne", 2, n_bytes)
        rec["maps"] = {m: {"coords": xy, "spiral": spiral_stats(xy)} for m, xy in maps.items()}
    else:
        notes.append(f"maps: need at least 3 snapshots, store has {len(steps)}")
    layers = _layer_ll(store, kept, notes)
    if layers is not None:
        rec["layer_threads"] = {**layer_threads(layers, n_bytes), "coords": layer_map(layers, 2, n_bytes)}
    ll_fits = diffusion_exponents(kl, steps, window)
    rec["diffusion"]["ll"] = {
        "source": "kl_matrix",
        "fits": ll_fits,
        "summary": summarize_exponents(ll_fits, n_boot, seed),
    }
    weight = _weight_space(store, window, notes)
    if weight is not None:
        rec["diffusion"]["weight"] = {
            "source": weight["source"],
            "steps": weight["steps"],
            "fits": weight["fits"],
            "summary": summarize_exponents(weight["fits"], n_boot, seed),
        }
    return rec, {"kl": kl, "weight": weight}


def _finetune_summary(
    trajs: list[Trajectory], n_bytes: np.ndarray | None, seed: int, notes: list[str]
) -> dict | None:
    """Returns fine-tuned-vs-base statistics over all runs' final snapshots plus the parents' snapshots."""
    rows, labels, pairs = [], [], []

    def index_of(t: Trajectory, step: int) -> int:
        label = f"{t.name}@{step}"
        if label not in labels:
            labels.append(label)
            rows.append(t.row(step))
        return labels.index(label)

    by_name = {t.name: t for t in trajs}
    for t in trajs:
        index_of(t, int(t.steps[-1]))
    for t in trajs:
        parent = t.meta.get("parent")
        if not parent:
            continue
        base = by_name.get(parent.get("run"))
        if base is None or parent.get("step") not in base.steps:
            notes.append(
                f"fine-tuned vs base: parent {parent} of {t.name!r} is not among the analysed stores"
            )
            continue
        pairs.append((index_of(t, int(t.steps[-1])), index_of(base, int(parent["step"]))))
    if not pairs:
        return None
    if len(rows) < 3:
        notes.append("fine-tuned vs base: need at least 3 distinct snapshots for random pairs")
        return None
    out = finetune_vs_base(np.stack(rows), pairs, n_bytes, seed=seed)
    return {**out, "models": labels, "pair_labels": [(labels[a], labels[b]) for a, b in pairs]}


def analyze(
    stores,
    out_dir,
    *,
    n_bytes_units: bool = True,
    clip_quantile: float | None = None,
    drop_jump_fraction: float | None = None,
    window: int = 10,
    at_steps=None,
    tsne: bool = True,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict:
    """Computes every analysis number for the stores and writes summary.json, CSV tables and PNG figures.

    Per store: KL matrix with standard errors, consecutive KL, KL to the first snapshot, PCA and t-SNE maps
    with spiral statistics, layer threads (if all of n_layers >= 2 layers are stored), and diffusion exponents
    in LL space and in weight space (exact squared distances where recorded, else the sketch, with a note).
    Across stores: the comparison table and fine-tuned vs base (meta "parent"), plus a joint PCA map.
    Everything is computed before anything is written, and each file is written atomically.

    Args:
        stores: TrajectoryStore-like objects over one probe set (one fingerprint), distinct meta["run"].
        out_dir: output folder, created if missing.
        n_bytes_units: KL in bits per byte (True) or nats per text (False). The comparison table has both.
        clip_quantile, drop_jump_fraction: the papers' cleaning (see prepare); applied to all stores jointly,
            so every number uses one set of texts and one mean byte count.
        window: snapshots per diffusion fit.
        at_steps: steps of the consecutive-KL rows of the comparison table (default: 10/50/90% of each run).
        tsne: also compute t-SNE maps (slowest part: ~1 s per store of up to a few hundred snapshots).
        n_boot, seed: bootstrap of the median exponent; seed also draws the random pairs.

    Returns:
        The summary dict as written to summary.json (JSON-safe, NaN as None), with "figures" and "tables"
        (file names in out_dir).
    """
    stores = list(stores)
    lls, all_bytes = _loaded(stores)
    names = _run_names(stores)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {out} exists and is not a folder; pass a folder path")
    lls, kept_bytes, kept = prepare(
        lls, all_bytes, clip_quantile=clip_quantile, drop_jump_fraction=drop_jump_fraction
    )
    nb = kept_bytes if n_bytes_units else None
    units = "bits/byte" if n_bytes_units else "nats/text"
    runs, arrays = {}, {}
    for store, name, ll in zip(stores, names, lls, strict=True):
        runs[name], arrays[name] = _store_summary(
            store, name, ll, nb, kept, window=window, tsne=tsne, n_boot=n_boot, seed=seed
        )
    trajs = [
        Trajectory(n, np.asarray(s.steps, dtype=np.int64), ll, dict(s.meta))
        for s, n, ll in zip(stores, names, lls, strict=True)
    ]
    notes: list[str] = []
    summary = {
        "units": units,
        "n_texts": int(len(kept)),
        "n_texts_kept": int(kept.sum()),
        "mean_bytes": float(kept_bytes.mean()),
        "options": {
            "clip_quantile": clip_quantile,
            "drop_jump_fraction": drop_jump_fraction,
            "window": window,
            "n_boot": n_boot,
            "seed": seed,
        },
        "runs": runs,
        "comparison": comparison_table(trajs, kept_bytes, at_steps=at_steps),
        "finetune_vs_base": _finetune_summary(trajs, nb, seed, notes),
        "joint_map": None,
        "notes": notes,
    }
    if len(stores) > 1 and sum(len(ll) for ll in lls) >= 3:
        xy = embed(np.concatenate(lls), "pca", 2, nb)
        bounds = np.cumsum([0] + [len(ll) for ll in lls])
        summary["joint_map"] = {n: xy[a:b] for n, a, b in zip(names, bounds[:-1], bounds[1:], strict=True)}
    out.mkdir(parents=True, exist_ok=True)
    return write_summary(out, summary, arrays, names, window)
