"""Every analysis number for a set of trajectory stores, written as summary.json, CSV tables and PNG figures.

Stores are duck-typed (trajlab.store.TrajectoryStore's read API: steps, loglik, loglik_all, n_bytes, meta,
probe, weight_*), so this module needs no import from the store and stays numpy-only. Meta keys of format v2
("warmup_steps", "max_steps", "id", "lineage", "scoring") are read with defaults, so v1 stores work too.
`trajlab analyze STORE... --out DIR` calls analyze().
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trajlab.analysis.calibrate import spiral_test, thread_test
from trajlab.analysis.config import AnalysisConfig, tsne_perplexity
from trajlab.analysis.diffusion import diffusion_exponents, pairwise_sq_dist, summarize_exponents
from trajlab.analysis.exclude import apply_exclusions
from trajlab.analysis.exponent_order import bootstrap_exponent_order
from trajlab.analysis.findings import findings
from trajlab.analysis.finetune import finetune_summary, kl_to_parent
from trajlab.analysis.kl import kl_matrix
from trajlab.analysis.maps import embed, joint_maps
from trajlab.analysis.outliers import add_raw, handle_outliers, warmup_of
from trajlab.analysis.outputs import write_summary
from trajlab.analysis.scale import kl_scale
from trajlab.analysis.scale_figure import write_scale
from trajlab.analysis.tables import Trajectory, comparison_table
from trajlab.analysis.threads import layer_map, layer_threads

SPIRAL_KEYS = (
    "winding_turns",
    "null_mean",
    "null_sd",
    "null_q95",
    "p_value",
    "n_null",
    "min_p",
    "perplexity",
    "seed",
    "null",
    "p_more",
    "p_less",
    "null_q05",
    "verdict",
    "n_left_out",
    "warmup_steps",
)


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


def _domains(stores: list, kept: np.ndarray) -> list[str] | None:
    """Returns the probe's per-text domains (kept texts only) from the first store that records them."""
    for s in stores:
        probe = getattr(s, "probe", None)
        probe = probe() if callable(probe) else probe
        d = getattr(probe, "domains", None)
        if d is None and hasattr(probe, "to_dict"):
            d = probe.to_dict().get("domains")
        if d is not None and len(d) == len(kept):
            return [str(x) for x, k in zip(d, kept, strict=True) if k]
    return None


def _weight_space(store, window: int, notes: list[str], fit_kw: dict) -> dict | None:
    """Returns squared weight distances and their fits, exact where recorded, else from the sketch."""
    w_steps = np.asarray(store.weight_steps, dtype=np.int64)
    if len(w_steps) < 2:
        notes.append("weight space: fewer than 2 weight snapshots recorded")
        return None
    sq, source = np.asarray(store.weight_sq_dist_matrix(), dtype=np.float64), "exact"
    fits = diffusion_exponents(sq, w_steps, window, **fit_kw)
    if len(fits) == 0:
        sq, source = pairwise_sq_dist(store.weight_sketch()), "sketch"
        fits = diffusion_exponents(sq, w_steps, window, **fit_kw)
        notes.append(
            "weight space: too few exact squared distances recorded for a fit (3 lags per start); "
            "exponents use the random-projection weight sketch, whose squared distances estimate the "
            "exact ones up to scale (c is scale-free) with projection noise"
        )
    return {"source": source, "steps": w_steps, "sq_dist": sq, "fits": fits}


def _layer_ll(store, kept: np.ndarray, notes: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """Returns (steps (K_f,), (K_f, L+1, N_kept) LL of every layer) of the snapshots holding every layer.

    Stores that score lens layers only every few snapshots (store.full_layer_steps()) give those snapshots;
    None (with a note) when no snapshot holds every layer or the model has fewer than 2 layers.
    """
    if store.n_layers < 2:
        notes.append(f"layer threads: need n_layers >= 2, store has {store.n_layers}")
        return None
    steps = np.asarray(store.steps, dtype=np.int64)
    try:
        if hasattr(store, "full_layer_steps"):
            steps = np.asarray(store.full_layer_steps(), dtype=np.int64)
            if len(steps) == 0:
                notes.append("layer threads: no snapshot holds every layer")
                return None
            layers = np.asarray(store.loglik_all(steps=steps), dtype=np.float64)[:, :, kept]
        else:
            layers = np.stack(
                [
                    np.asarray(store.loglik(layer=la), dtype=np.float64)[:, kept]
                    for la in range(store.n_layers + 1)
                ],
                axis=1,
            )
    except (KeyError, ValueError, IndexError) as e:
        notes.append(f"layer threads: not all layers stored ({e})")
        return None
    if len(steps) < len(store.steps):
        notes.append(f"layer threads: the {len(steps)} of {len(store.steps)} snapshots that hold every layer")
    return steps, layers


def _fits_used(fits: np.ndarray, window: int, fit_kw: dict) -> dict:
    t0 = fits["t0"]
    return {
        "window": window,
        "min_t0": fit_kw["min_t0"],
        "full_windows": fit_kw["full_window"],
        "n": len(t0),
        "t0_first": int(t0[0]) if len(t0) else None,
        "t0_last": int(t0[-1]) if len(t0) else None,
    }


def _spirals(
    ll: np.ndarray,
    n_bytes: np.ndarray | None,
    cfg: AnalysisConfig,
    notes: list[str],
    steps: np.ndarray,
    warmup: int,
) -> dict:
    """Returns {method: {"coords", "spiral"}} for the PCA (and t-SNE) maps, each spiral tested by its null.

    The map shows every snapshot (K >= 3); the spiral test (sign-flip null: random signs on the observed
    increments) uses the snapshots after warm-up and runs only when there are >= 3 of them ("spiral" None
    otherwise). t-SNE is drawn only from cfg.tsne_min_snapshots snapshots on.
    """
    if len(ll) < 3:
        notes.append(f"maps: need at least 3 snapshots, store has {len(ll)}")
        return {}
    after = int(np.count_nonzero(steps >= warmup))
    if after < 3:
        notes.append(f"spiral test: needs 3 snapshots after warm-up (step {warmup}), store has {after}")
    maps = {}
    for method, n_null in (("pca", cfg.spiral_n_null), ("tsne", cfg.spiral_n_null_tsne)):
        if method == "tsne" and not cfg.tsne:
            continue
        if method == "tsne" and min(len(ll), after) < cfg.tsne_min_snapshots:  # the drawn and the tested map
            notes.append(
                f"t-SNE map not drawn: fewer than {cfg.tsne_min_snapshots} snapshots (with few points the perplexity "
                "must be tiny and the map says nothing about neighbourhoods)"
            )
            continue
        perp = tsne_perplexity(len(ll), cfg.tsne_perplexity) if method == "tsne" else None
        coords = embed(ll, method, 2, n_bytes, perplexity=perp)
        spiral = None
        if after >= 3:
            test = spiral_test(
                ll,
                method,
                n_null,
                cfg.seed,
                n_bytes,
                perplexity=cfg.tsne_perplexity,
                steps=steps,
                warmup_steps=warmup,
            )
            spiral = {k: test.get(k) for k in SPIRAL_KEYS}
        maps[method] = {"coords": coords, "spiral": spiral}
    return maps


def _store_summary(
    store,
    name: str,
    ll: np.ndarray,
    n_bytes: np.ndarray | None,
    kept: np.ndarray,
    cfg: AnalysisConfig,
    ll_map: np.ndarray,
) -> tuple[dict, dict]:
    """Returns (JSON record, arrays kept for figures) of one store; ll_map (unclipped) draws the maps."""
    steps = np.asarray(store.steps, dtype=np.int64)
    meta = store.meta
    notes: list[str] = []
    sched = warmup_of(store, cfg)
    warmup = sched["warmup_steps"]
    trajectory = len(steps) > 1  # one-snapshot stores get no trajectory notes (maps, fits, warm-up)
    if (
        trajectory
        and meta.get("warmup_steps") is None
        and cfg.warmup_step is None
        and (cfg.fits_after_warmup or cfg.jumps_after_warmup)
    ):
        notes.append(f"warmup_steps not recorded: the first {warmup} steps are assumed to be warm-up")
    min_t0 = (
        cfg.fits_min_step if cfg.fits_min_step is not None else (warmup if cfg.fits_after_warmup else None)
    )
    fit_kw = {"min_t0": min_t0, "full_window": cfg.full_windows}
    kl, se = kl_matrix(ll, n_bytes, return_se=True)
    rec = {
        "run": name,
        "path": str(store.path),
        "meta": meta,
        "steps": steps,
        "warmup_steps": warmup,
        "warmup_recorded": meta.get("warmup_steps") is not None,
        "max_steps": sched["max_steps"],
        "max_steps_recorded": meta.get("max_steps") is not None,
        "kl_matrix": kl,
        "kl_se": se,
        "consecutive_kl": np.diagonal(kl, 1),
        "consecutive_se": np.diagonal(se, 1),
        "kl_to_first": kl[0],
        "kl_to_parent": None,
        "maps": _spirals(ll_map, n_bytes, cfg, notes, steps, warmup) if trajectory else {},
        "layer_threads": None,
        "diffusion": {},
        "exponent_order": None,
        "notes": notes,
    }
    full = _layer_ll(store, kept, notes)
    if full is not None:
        layer_steps, layers = full
        rec["layer_threads"] = {
            "steps": layer_steps,
            **layer_threads(layers, n_bytes),
            "test": thread_test(layers, cfg.thread_n_null, cfg.seed, n_bytes),
            "coords": layer_map(layers, 2, n_bytes),
        }
    ll_fits = diffusion_exponents(kl, steps, cfg.window, **fit_kw)
    if len(ll_fits) == 0 and trajectory:
        after = int(np.count_nonzero(steps >= (fit_kw["min_t0"] or 0)))
        notes.append(
            f"diffusion: no start at or after step {fit_kw['min_t0']} has "
            f"{'a full window of ' if cfg.full_windows else 'at least 3 of '}{cfg.window} later snapshots "
            f"({after} snapshots after warm-up); record more snapshots or lower the window"
        )
    rec["diffusion"]["ll"] = {
        "source": "kl_matrix",
        "fits": ll_fits,
        "fits_used": _fits_used(ll_fits, cfg.window, fit_kw),
        "summary": summarize_exponents(ll_fits, cfg.n_boot, cfg.seed, cfg.level),
    }
    weight = _weight_space(store, cfg.window, notes, fit_kw) if trajectory else None
    if weight is not None:
        rec["diffusion"]["weight"] = {
            "source": weight["source"],
            "steps": weight["steps"],
            "fits": weight["fits"],
            "fits_used": _fits_used(weight["fits"], cfg.window, fit_kw),
            "summary": summarize_exponents(weight["fits"], cfg.n_boot, cfg.seed, cfg.level),
        }
        rec["exponent_order"] = bootstrap_exponent_order(
            ll_fits, weight["fits"], cfg.n_boot, cfg.seed, cfg.level, block=cfg.window
        )  # c_LL < c_W: diff = median c_W - median c_LL; moving blocks of `window` start points
    return rec, {"kl": kl, "weight": weight}


def _restricted_meta(meta: dict, kept: np.ndarray) -> dict:
    """Store meta with scoring n_tokens restricted to the kept texts (per-token KL of the table)."""
    meta = dict(meta)
    n_tokens = (meta.get("scoring") or {}).get("n_tokens")
    if n_tokens is not None and len(n_tokens) == len(kept):
        meta["scoring"] = {**meta["scoring"], "n_tokens": np.asarray(n_tokens)[kept].tolist()}
    return meta


def analyze(stores, out_dir, config: AnalysisConfig | None = None, **options) -> dict:
    """Computes every analysis number for the stores and writes summary.json, CSV tables and PNG figures.

    Per store: KL matrix with standard errors, consecutive KL, KL to the first snapshot (and to the parent
    snapshot for a fine-tune), PCA and t-SNE maps each with its spiral test (|winding| against the sign-flipped
    increments of the trajectory after warm-up), layer threads with their two tests (layer order; beyond a
    random walk across layers), diffusion exponents in LL and weight space from the fits after warm-up with
    full windows, and c_LL < c_W over blocks of start points. Across stores: the paper's outlier handling
    (clip_quantile, jump_drop over the pretraining runs; raw KL kept beside), the comparison table
    (fixed-lag consecutive pairs, seeds, sizes, fine-tunes) with BCa text-bootstrap intervals and domain
    parts, fine-tuned vs base against random pairs (pairs of models as units), the KL scale (kl_scale) and
    the joint PCA and t-SNE maps; "findings" states each in words. Everything is computed before anything is
    written, each file atomically.

    Args:
        stores: TrajectoryStore-like objects over one probe set (one fingerprint), distinct meta["run"].
        out_dir: output folder, created if missing.
        config: AnalysisConfig (default: its defaults).
        **options: AnalysisConfig fields overriding config (n_bytes_units, clip_quantile, jump_drop, window,
            at_steps, tsne, n_boot, seed, ...).

    Returns:
        The summary dict as written to summary.json (JSON-safe, NaN as None), with "options" (every choice
        used), "figures" and "tables" (file names in out_dir).
    """
    if options.get("at_steps") is not None:
        options["at_steps"] = tuple(int(s) for s in options["at_steps"])
    cfg = (config or AnalysisConfig()).replace(**options)
    notes: list[str] = []
    stores = apply_exclusions(list(stores), cfg, notes)
    lls, all_bytes = _loaded(stores)
    names = _run_names(stores)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {out} exists and is not a folder; pass a folder path")
    metas = [s.meta for s in stores]
    raw_lls = lls
    lls, kept_bytes, kept, outliers = handle_outliers(stores, lls, all_bytes, cfg, notes)
    nb = kept_bytes if cfg.n_bytes_units else None
    units = "bits/byte" if cfg.n_bytes_units else "nats/text"
    runs, arrays = {}, {}
    unclipped = [ll[:, kept] for ll in raw_lls]  # the maps use unclipped values (the authors' code)
    for store, name, ll, ll_map in zip(stores, names, lls, unclipped, strict=True):
        runs[name], arrays[name] = _store_summary(store, name, ll, nb, kept, cfg, ll_map)
    trajs = [
        Trajectory(n, np.asarray(s.steps, dtype=np.int64), ll, _restricted_meta(m, kept))
        for s, n, ll, m in zip(stores, names, lls, metas, strict=True)
    ]
    unclipped_trajs = [  # fine-tune KLs use unclipped values (the authors' code)
        Trajectory(n, np.asarray(s.steps, dtype=np.int64), ll, _restricted_meta(m, kept))
        for s, n, ll, m in zip(stores, names, unclipped, metas, strict=True)
    ]
    kl_to_parent(runs, unclipped_trajs, nb)
    domains = _domains(stores, kept)
    all_domains = _domains(stores, np.ones(len(kept), dtype=bool))
    if all_domains is not None:
        outliers["dropped_domains"] = [all_domains[i] for i in outliers["dropped"]]
    ft = finetune_summary(unclipped_trajs, nb, cfg, notes)
    kw = {"config": cfg, "domains": domains}
    comparison = comparison_table(trajs, kept_bytes, **kw, notes=notes, kinds=("consecutive", "seed", "size"))
    comparison += comparison_table(unclipped_trajs, kept_bytes, **kw, kinds=("finetune",))
    add_raw(comparison, stores, names, raw_lls, all_bytes, cfg)
    scale = kl_scale(stores, config=cfg)  # raw LL: it handles outliers per comparison itself
    summary = {
        "units": units,
        "n_texts": len(kept),
        "n_texts_kept": int(kept.sum()),
        "mean_bytes": float(kept_bytes.mean()),
        "domains": sorted(set(domains)) if domains is not None else None,
        "options": cfg.to_dict(),
        "runs": runs,
        "outliers": outliers,
        "comparison": comparison,
        "finetune_vs_base": ft,
        "joint_map": joint_maps(unclipped, names, nb, cfg.tsne, cfg.tsne_perplexity),
        "kl_scale": scale.to_json() if scale.n_settings >= 2 else None,
        "notes": notes,
    }
    summary["findings"] = findings(summary)
    out.mkdir(parents=True, exist_ok=True)
    if summary["kl_scale"] is not None:
        summary["kl_scale"]["files"] = write_scale(out, scale)
    return write_summary(out, summary, arrays, names, cfg.window)
