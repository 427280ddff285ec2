"""The paper's outlier handling over the pretraining runs of an analysis, and the raw KL kept beside it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trajlab.analysis.config import AnalysisConfig
from trajlab.analysis.kl import kl_paired, prepare
from trajlab.analysis.pairs import has_parent, resolve_schedule


def warmup_of(store, cfg: AnalysisConfig) -> dict:
    sched = resolve_schedule(store.meta, np.asarray(store.steps), cfg.assumed_warmup_fraction)
    if cfg.warmup_step is not None:
        sched["warmup_steps"] = int(cfg.warmup_step)
    return sched


def is_pretraining(meta: dict) -> bool:
    """True for a pretraining run: no lineage parent and not a quantized copy (the paper clips only those)."""
    return not has_parent(meta) and not meta.get("quantization")


def handle_outliers(stores: list, lls: list[np.ndarray], n_bytes: np.ndarray, cfg: AnalysisConfig, notes: list[str]):
    """Returns (lls, kept n_bytes, kept mask, record) after the paper's outlier handling.

    As the authors' code: the pretraining runs' LL are clipped from below at the clip_quantile of all their
    values; each text is scored by its largest |delta l| over all post-warm-up consecutive snapshots of those
    runs (after clipping), and the top jump_drop of texts are dropped from every store; B is recomputed on the
    rest. Fine-tunes and quantized copies are not clipped (their texts are dropped alike).
    """
    pre = [i for i, s in enumerate(stores) if is_pretraining(s.meta)]
    rows = [np.asarray(s.steps) >= warmup_of(s, cfg)["warmup_steps"] for s in stores]
    if not cfg.jumps_after_warmup:
        rows = [np.ones(len(r), dtype=bool) for r in rows]
    drop = cfg.jump_drop
    if drop is not None and not any(rows[i].sum() >= 2 for i in pre):
        if drop > 0 and any(len(s.steps) > 1 for s in stores):
            notes.append("outliers: no pretraining run has 2 snapshots after warm-up; no texts dropped")
        drop = None
    kept = np.ones(len(n_bytes), dtype=bool)
    if pre:
        cleaned, _, kept = prepare(
            [lls[i] for i in pre],
            n_bytes,
            clip_quantile=cfg.clip_quantile,
            drop_jump_fraction=drop,
            jump_rows=[rows[i] for i in pre],
        )
        by_index = dict(zip(pre, cleaned, strict=True))
        lls = [by_index[i] if i in by_index else ll[:, kept] for i, ll in enumerate(lls)]
    record = {
        "clip_quantile": cfg.clip_quantile,
        "jump_drop": drop,
        "clipped_runs": [str(stores[i].meta.get("run") or Path(stores[i].path).stem) for i in pre],
        "n_dropped": int((~kept).sum()),
        "dropped": np.flatnonzero(~kept).tolist(),
        "dropped_domains": None,
        "rule": "clip at the pooled quantile of the pretraining runs, then drop the texts with the largest "
        "post-warm-up consecutive jump; B recomputed on the kept texts (the authors' code)",
    }
    return lls, np.asarray(n_bytes)[kept], kept, record


def add_raw(rows: list[dict], stores: list, names: list[str], raw: list[np.ndarray], n_bytes, cfg) -> None:
    """Adds kl_raw_bits_per_byte / kl_raw_nats: each comparison pair on all texts, unclipped (side by side)."""
    index = {
        n: (np.asarray(s.steps, dtype=np.int64), ll) for s, n, ll in zip(stores, names, raw, strict=True)
    }
    for r in rows:
        (sa, la), (sb, lb) = index[r["a"]], index[r["b"]]
        a, b = la[np.flatnonzero(sa == r["step_a"])[0]], lb[np.flatnonzero(sb == r["step_b"])[0]]
        r["kl_raw_nats"] = float(kl_paired(a, b)[0])
        r["kl_raw_bits_per_byte"] = float(kl_paired(a, b, n_bytes)[0]) if cfg.n_bytes_units else None
