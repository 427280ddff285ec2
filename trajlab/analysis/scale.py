"""The KL scale of the final paper: one KL distribution per setting, for any set of stores on one probe.

    scale = ta.kl_scale(stores)            # settings found from meta and lineage (scale_pairs.py)
    scale.pairs, scale.summary             # one row per pair; per setting n, median, mean, sd, paper value
    scale_orderings(scale)                 # Later < Early, seeds < sizes, ... with runs as units
    write_scale(out_dir, scale)            # kl_scale.csv, kl_scale_summary.csv, kl_scale.png

Outlier handling (the authors' code, kl-scale/): only the pretraining comparisons (Early and Later together,
seeds, sizes) are clipped at config.clip_quantile over all vectors of their runs and lose config.jump_drop of
the texts with the largest post-warm-up jumps (trajlab.analysis.kl.prepare), B recomputed on the kept texts;
quantization, fine-tune, intra-type, random and layer KLs use every text, unclipped. Each row keeps kl_raw
(every text, unclipped) beside the handled kl.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from trajlab.analysis.bootstrap import kl_intervals
from trajlab.analysis.config import AnalysisConfig
from trajlab.analysis.exclude import apply_exclusions
from trajlab.analysis.kl import kl_paired, kl_unit_factor, prepare
from trajlab.analysis.scale_pairs import (
    PRIORITY,
    assign,
    bits_setting,
    consecutive_pairs,
    layer_pairs,
    load_runs,
    model_pairs,
    option,
)

__all__ = ["PAPER", "PRIORITY", "KLScale", "bits_setting", "kl_scale", "label", "setting_order"]

HANDLED = {"early": "consecutive", "later": "consecutive", "seeds": "seeds", "sizes": "sizes"}
LABELS = {
    "early": "consecutive, Early",
    "later": "consecutive, Later",
    "seeds": "seeds",
    "sizes": "sizes",
    "fine-tune": "fine-tune",
    "intra-type": "intra-type random",
    "random": "random",
    "layers": "adjacent layers",
}
# Published values in bits/byte (../shared/REFERENCE.md: the v1 tables; the final version's own medians are
# not given there): setting -> (values, note). The summary's "paper" is the one value or their median.
PAPER = {
    "early": ([0.069], "Pythia-410M 10k->11k (v1: one interval at 7% of training, not the Early setting)"),
    "later": ([0.023], "Pythia-410M 100k->101k (v1: one interval at 70% of training; 50k->51k: 0.053)"),
    "seeds": ([0.11], "Pythia-410M between seeds, mean (v1)"),
    "sizes": ([0.28, 0.52, 1.0, 1.7], "410M vs 1B, 1.4B, 2.8B, 6.9B (v1); paper: their median"),
    "fine-tune": ([0.40], "median of 66 Hugging Face fine-tune pairs (v1; mean 1.5, SD 3.6)"),
    "random": ([2.1], "median of random pairs with different bases (v1; mean 5.0, SD 9.5)"),
    "layers": (
        [0.61, 1.6, 1.3],
        "Llama-2-7b early / middle / last adjacent layers (v1); paper: their median",
    ),
}


def setting_order(settings) -> list[str]:
    """Returns settings in the paper's order: early, later, seeds, sizes, N-bit (N falling), fine-tune, ..."""
    bits = sorted((s for s in settings if s.endswith("-bit")), key=lambda s: -int(s.split("-")[0]))
    fixed = ["early", "later", "seeds", "sizes", *bits, "fine-tune", "intra-type", "random", "layers"]
    return [s for s in fixed if s in settings]


def label(setting: str) -> str:
    """Returns a setting's name as the figure and the report print it."""
    return LABELS.get(setting, f"{setting} quantization" if setting.endswith("-bit") else setting)


def _size_group(meta_a: dict, meta_b: dict) -> str:
    """The pair of model sizes a size pair compares, e.g. "nano vs tiny" (names sorted): the unit of an ordering
    of seeds against one size pair, replicated over data orders."""
    return " vs ".join(sorted(str(m.get("size") or m.get("preset")) for m in (meta_a, meta_b)))


@dataclass
class KLScale:
    """The KL scale of a set of stores (kl_scale's Returns)."""

    pairs: list[dict]
    summary: dict[str, dict]
    units: str
    handling: dict[str, dict]
    options: dict
    notes: list[str]
    diffs: list[np.ndarray] = field(default_factory=list, repr=False)  # per pair: (N_kept,) l_a - l_b, nats
    factors: list[float] = field(default_factory=list, repr=False)  # per pair: nats/text -> units

    @property
    def settings(self) -> list[str]:
        return setting_order({p["setting"] for p in self.pairs})

    @property
    def n_settings(self) -> int:
        return len(self.settings)

    def units_of(self, setting: str, *, exclude_flagged: bool = True) -> tuple[list[dict], int]:
        """Returns (an order_test record {"kl", "d", "factor", "unit", "pair"} per pair of the setting, the
        number of flagged pairs left out)."""
        out, left = [], 0
        for p, d, f in zip(self.pairs, self.diffs, self.factors, strict=True):
            if p["setting"] != setting:
                continue
            if exclude_flagged and p["flagged"]:
                left += 1
                continue
            out.append({"kl": p["kl"], "d": d, "factor": f, "unit": p["unit"], "pair": p})
        return out, left

    def to_json(self, orderings: list[dict] | None = None, **order_kw) -> dict:
        """Returns the JSON-safe scale for summary.json: units, settings, summary (a list of rows in the
        paper's order, each {"setting", **self.summary[setting]}), pairs, orderings (computed with
        scale_orderings(self, **order_kw) when not given), handling, options, notes."""
        from trajlab.analysis.outputs import json_safe
        from trajlab.analysis.scale_order import scale_orderings

        if orderings is None:
            orderings = scale_orderings(self, **order_kw)
        return json_safe(
            {
                "units": self.units,
                "settings": self.settings,
                "summary": [{"setting": s, **self.summary[s]} for s in self.settings],
                "pairs": self.pairs,
                "orderings": orderings,
                "handling": self.handling,
                "options": self.options,
                "notes": self.notes,
            }
        )


def _handled(cands: list, runs: dict, n_bytes: np.ndarray, cfg, notes: list[str]) -> dict:
    """Returns {comparison: {"ll": {run: (K, N_kept)}, "kept": (N,) mask, "clip", "jump"}} per pretraining
    comparison (Early and Later together, seeds, sizes), each cleaned on its own runs."""
    clip = option(cfg, ("clip_quantile",), 0.02) or None
    jump = option(cfg, ("jump_drop", "drop_jump_fraction"), 0.03) or None
    after = option(cfg, ("jumps_after_warmup",), True)
    out = {}
    for group in dict.fromkeys(HANDLED.values()):
        names = list(dict.fromkeys(n for c in cands if HANDLED.get(c[0]) == group for n in (c[1], c[3])))
        if not names:
            continue
        masks = [
            runs[n].steps >= runs[n].warmup if after else np.ones(len(runs[n].steps), bool) for n in names
        ]
        use_jump = jump if any(m.sum() >= 2 for m in masks) else None
        if jump and use_jump is None:
            notes.append(f"{group}: no run has 2 snapshots after warm-up to rank jumps; clipped only")
        cleaned, _, kept = prepare(
            [runs[n].ll for n in names],
            n_bytes,
            clip_quantile=clip,
            drop_jump_fraction=use_jump,
            jump_rows=masks,
        )
        out[group] = {
            "ll": dict(zip(names, cleaned, strict=True)),
            "kept": kept,
            "clip": clip,
            "jump": use_jump,
        }
    return out


def kl_scale(stores, *, config: AnalysisConfig | None = None, lag: int | None = None) -> KLScale:
    """Returns the KL of every pair of the paper's settings found in the stores (trajlab.analysis.scale_pairs),
    with text-bootstrap intervals, per-token flags and a per-setting summary.

    Args:
        stores: TrajectoryStore-like objects (steps, loglik, loglik_all, full_layer_steps, n_layers, n_bytes,
            meta, path) over one probe set, distinct meta["run"].
        config: AnalysisConfig (n_bytes_units, clip_quantile, jump_drop, jumps_after_warmup, warmup_step,
            scale_intervals, exclude, max_nats_per_token, exclude_flagged, n_boot, level, seed).
        lag: the consecutive-pair lag in steps; None: the most common post-warm-up spacing.

    Returns:
        KLScale with pairs (one dict each: setting, store_a, step_a, store_b, step_b, layer (l of l -> l+1 for
        layer pairs, else None), kl, lo, hi (BCa text bootstrap at config.level: texts only, runs fixed;
        bootstrap_kl's interval, one set of resamples shared by the pairs of a comparison), kl_raw,
        nats_per_token (None when neither store records meta scoring n_tokens), flagged
        (nats_per_token > config.max_nats_per_token, None when unknown), n_texts, unit (the run, or "a|b",
        the pair stands for)), summary (setting -> label, n_pairs, n_runs, median, mean, sd (ddof 1), min,
        max, n_flagged, paper, paper_values, paper_note), units, handling (per comparison: clip_quantile,
        jump_drop, n_texts_kept, dropped text indices, runs), options, notes.

    Raises:
        ValueError: no stores, repeated run names, or stores of different probe sets.
    """
    cfg = config or AnalysisConfig()
    notes: list[str] = []
    stores = list(stores)
    if option(cfg, ("exclude",), ()):
        stores = apply_exclusions(stores, cfg, notes)  # a no-op on stores analyze has already filtered
    runs, n_bytes = load_runs(stores, cfg, notes)
    consecutive, lag = consecutive_pairs(runs, cfg, lag, notes)
    layer_cands, layer_rows = layer_pairs(runs, notes)
    cands = assign(layer_cands + consecutive + model_pairs(runs, notes))
    handled = _handled(cands, runs, n_bytes, cfg, notes)
    bits = cfg.n_bytes_units
    every = np.ones(len(n_bytes), dtype=bool)
    pairs, diffs, groups = [], [], {}
    for setting, a, sa, b, sb, layer, unit in cands:
        ra, rb = runs[a], runs[b]
        group = HANDLED.get(setting) if layer is None else None  # pairs sharing their texts and B
        if layer is not None:
            la, lb = layer_rows[a][layer], layer_rows[a][layer + 1]
        elif group is not None:
            ia, ib = np.flatnonzero(ra.steps == sa)[0], np.flatnonzero(rb.steps == sb)[0]
            la, lb = handled[group]["ll"][a][ia], handled[group]["ll"][b][ib]
        else:
            la, lb = ra.row(sa), rb.row(sb)
        kept = every if group is None else handled[group]["kept"]
        raw = None
        if group is not None:
            raw = float(kl_paired(ra.row(sa), rb.row(sb), n_bytes if bits else None)[0])
        d = la - lb
        tokens = [t[kept].mean() for t in {r.name: r.tokens for r in (ra, rb)}.values() if t is not None]
        per_token = float(d.var() / 2 / np.mean(tokens)) if tokens else None
        groups.setdefault(group, []).append(len(pairs))
        pairs.append({
            "setting": setting, "store_a": a, "step_a": sa, "store_b": b, "step_b": sb, "layer": layer,
            "kl": None, "lo": None, "hi": None, "kl_raw": raw, "nats_per_token": per_token,
            "flagged": None if per_token is None else bool(per_token > cfg.max_nats_per_token),
            "n_texts": int(kept.sum()), "unit": unit, "group": _size_group(ra.meta, rb.meta) if setting == "sizes"
            else None,
        })  # fmt: skip
        diffs.append(d)
    factors = [1.0] * len(pairs)
    for group, idx in groups.items():  # one text bootstrap per group: its pairs share the resamples
        kept = every if group is None else handled[group]["kept"]
        factor = kl_unit_factor(n_bytes[kept] if bits else None, int(kept.sum()))
        d = np.stack([diffs[i] for i in idx])  # (P, N_kept)
        est = kl_intervals(d, factor, cfg.n_boot, np.random.default_rng(cfg.seed), cfg.level)  # (P, 3)
        for i, (kl, lo, hi) in zip(idx, est.tolist(), strict=True):
            p = pairs[i]
            p["kl"], p["lo"], p["hi"] = kl, lo, hi
            p["kl_raw"] = kl if p["kl_raw"] is None else p["kl_raw"]
            factors[i] = factor
    handling = {
        g: {"clip_quantile": h["clip"], "jump_drop": h["jump"], "n_texts_kept": int(h["kept"].sum()),
            "dropped": np.flatnonzero(~h["kept"]).tolist(), "runs": list(h["ll"])}
        for g, h in handled.items()
    }  # fmt: skip
    options = {
        "lag": lag,
        "scale_intervals": option(cfg, ("scale_intervals",), None),
        "max_nats_per_token": cfg.max_nats_per_token,
        "exclude_flagged": option(cfg, ("exclude_flagged",), True),
        "n_boot": cfg.n_boot,
        "level": cfg.level,
        "seed": cfg.seed,
    }
    units = "bits/byte" if bits else "nats/text"
    return KLScale(pairs, _summary(pairs, units), units, handling, options, notes, diffs, factors)


def _summary(pairs: list[dict], units: str) -> dict[str, dict]:
    out = {}
    for s in setting_order({p["setting"] for p in pairs}):
        rows = [p for p in pairs if p["setting"] == s]
        kl = np.array([p["kl"] for p in rows])
        values, note = PAPER.get(s, ([], "no published value in the reference"))
        if units != "bits/byte":
            values, note = [], "published values are in bits/byte; this scale is in nats/text"
        out[s] = {
            "label": label(s),
            "n_pairs": len(rows),
            "n_runs": len({n for p in rows for n in (p["store_a"], p["store_b"])}),
            "median": float(np.median(kl)),
            "mean": float(kl.mean()),
            "sd": float(kl.std(ddof=1)) if len(kl) > 1 else None,
            "min": float(kl.min()),
            "max": float(kl.max()),
            "n_flagged": sum(bool(p["flagged"]) for p in rows),
            "paper": float(np.median(values)) if values else None,
            "paper_values": list(values),
            "paper_note": note,
        }
    return out
