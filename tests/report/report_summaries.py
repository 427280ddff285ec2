"""Hand-made analysis summaries (the JSON shape analyze() writes) with known numbers, for page tests that need
no analysis run: a 12-snapshot pretraining run, a 7-snapshot fine-tune of it, a one-snapshot 6-layer import.
"""

from __future__ import annotations

import copy

import numpy as np

MEAN_BYTES = 500.0
TOKENS = [125] * 100  # 125 tokens per text: 1 bit/byte = 500 ln 2 / 125 = 2.77 nats/token
STEPS = list(range(0, 120, 10))
FT_STEPS = list(range(0, 14, 2))


def _coords(k: int, seed: int) -> list[list[float]]:
    return np.cumsum(np.random.default_rng(seed).normal(size=(k, 2)), axis=0).round(4).tolist()


def _spiral(p: float, n_null: int, perplexity=None) -> dict:
    return {
        "winding_turns": 0.61,
        "null_mean": 0.5,
        "null_q95": 0.9,
        "p_value": p,
        "n_null": n_null,
        "min_p": 1 / (1 + n_null),
        "perplexity": perplexity,
    }


def _layers(steps: list[int], n_layers: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    adjacent = rng.uniform(0.01, 0.05, size=(len(steps), n_layers))
    adjacent[:, 0] = 900.0  # the embedding transition: four decades above the rest
    return {
        "steps": steps,
        "adjacent_kl": adjacent.tolist(),
        "per_layer": adjacent.mean(axis=0).tolist(),
        "thirds": {"early": 300.0, "middle": 0.03, "last": 0.02},
        "nonadjacent_kl": 400.0,
        "thread_score": 0.4,
        "coords": rng.normal(size=(len(steps), n_layers + 1, 2)).round(4).tolist(),
        "test": {
            "thread_score": 0.4,
            "null_mean": 0.7,
            "p_value": 0.004,
            "n_perms": 500,
            "exact": False,
            "min_p": 1 / 501,
            "note": None,
        },
    }


def _run(name: str, steps: list[int], seed: int, n_layers: int) -> dict:
    k = len(steps)
    consecutive = [0.05 * (i + 1) for i in range(k - 1)]
    return {
        "run": name,
        "path": f"/stores/{name}",
        "steps": steps,
        "warmup_steps": 0,
        "warmup_recorded": True,
        "max_steps": steps[-1],
        "max_steps_recorded": True,
        "consecutive_kl": consecutive,
        "kl_to_first": [0.0] + [0.3 * (i + 1) for i in range(k - 1)],
        "kl_to_parent": None,
        "meta": {"n_layers": n_layers, "scoring": {"n_tokens": TOKENS}},
        "maps": {},
        "layer_threads": None,
        "diffusion": {},
        "exponent_order": None,
        "notes": [],
        "figures": [],
    }


def make_summary(findings: bool = True, kl_scale: bool = True) -> dict:
    """A summary of three runs; ``pre``'s KL first→last (20 bits/byte) lies beyond the checked range."""
    pre = _run("pre", STEPS, 1, 3)
    pre["kl_to_first"][-1] = 20.0
    pre["maps"] = {
        "pca": {"coords": _coords(12, 1), "spiral": _spiral(0.3, 200)},
        "tsne": {"coords": _coords(12, 2), "spiral": _spiral(0.02, 40, 3.67)},
    }
    pre["layer_threads"] = _layers([0, 40, 80, 110], 3, 1)
    pre["diffusion"] = {
        "ll": {
            "source": "kl_matrix",
            "fits_used": {
                "n": 2,
                "t0_first": 0,
                "t0_last": 10,
                "window": 10,
                "min_t0": 0,
                "full_windows": True,
            },
            "summary": {"median": 0.4, "ci_low": 0.3, "ci_high": 0.5, "n": 2},
        }
    }
    pre["exponent_order"] = {
        "diff": 0.5,
        "lo": 0.2,
        "hi": 0.8,
        "p_value": 0.0,
        "small": 0.4,
        "large": 0.9,
        "n_starts": 2,
        "paired": True,
        "n_boot": 1000,
    }
    ft = _run("ft", FT_STEPS, 2, 3)
    ft["maps"] = {
        "pca": {"coords": _coords(7, 3), "spiral": _spiral(0.6, 200)},
        "tsne": {"coords": _coords(7, 4), "spiral": _spiral(0.5, 40, 2.0)},
    }
    ft["kl_to_parent"] = {"parent": "pre", "step": 110, "kl": [0.01 * (i + 1) for i in range(7)]}
    one = _run("one", [0], 3, 6)
    one["layer_threads"] = _layers([0], 6, 3)
    one["notes"] = [
        "maps: need at least 3 snapshots, store has 1",
        "weight space: fewer than 2 weight snapshots",
        "layer threads: all layers stored",
    ]
    runs = {"pre": pre, "ft": ft, "one": one}
    summary = {
        "units": "bits/byte",
        "n_texts": 100,
        "n_texts_kept": 100,
        "mean_bytes": MEAN_BYTES,
        "options": {
            "level": 0.95,
            "max_nats_per_token": 1.0,
            "at_steps": None,
            "lag_fraction": 0.007,
            "target_fractions": [0.07, 0.35, 0.7],
        },
        "runs": runs,
        "comparison": [
            {
                "kind": "consecutive",
                "a": "pre",
                "step_a": 10,
                "b": "pre",
                "step_b": 20,
                "lag": 10,
                "kl_bits_per_byte": 0.1,
                "ci_lo_bits_per_byte": 0.08,
                "ci_hi_bits_per_byte": 0.12,
                "kl_nats_per_token": 0.28,
                "beyond_checked_range": False,
            },
            {
                "kind": "finetune",
                "a": "ft",
                "step_a": 12,
                "b": "pre",
                "step_b": 110,
                "lag": None,
                "kl_bits_per_byte": 3.0,
                "ci_lo_bits_per_byte": 2.5,
                "ci_hi_bits_per_byte": 3.5,
                "kl_nats_per_token": 8.3,
                "beyond_checked_range": True,
            },
        ],
        "finetune_vs_base": {
            "pairs": {"median": 0.07, "mean": 0.07, "sd": 0.0, "n": 1},
            "random": {"median": 2.0, "mean": 2.1, "sd": 0.3, "n": 2},
            "order": {"diff": 2.0, "lo": 1.5, "hi": 2.5, "p_value": 0.0, "n_boot": 1000},
            "pair_labels": [["ft@12", "pre@110"]],
            "pair_kl": [0.07],
            "beyond_checked_range": [False],
        },
        "joint_map": {
            "pca": {r: _coords(len(runs[r]["steps"]), 10 + i) for i, r in enumerate(runs)},
            "tsne": {r: _coords(len(runs[r]["steps"]), 20 + i) for i, r in enumerate(runs)},
            "tsne_perplexity": 6.0,
            "n_points": 20,
        },
        "notes": [
            "one: warmup_steps not recorded; 0 assumed",
            "one: max_steps unknown: step 0 stands in",
            "pre: a group note that applies",
        ],
        "figures": [],
    }
    if kl_scale:
        summary["kl_scale"] = {
            "summary": [
                {
                    "setting": "adjacent layers",
                    "n_pairs": 3,
                    "n_runs": 1,
                    "median": 0.03,
                    "mean": 300.0,
                    "sd": 500.0,
                    "paper": 1.3,
                },
                {
                    "setting": "consecutive, Early",
                    "n_pairs": 2,
                    "n_runs": 1,
                    "median": 0.05,
                    "mean": 0.05,
                    "sd": 0.01,
                    "paper": 0.069,
                },
            ],
            "pairs": [
                {
                    "setting": "adjacent layers",
                    "store_a": "one",
                    "step_a": 0,
                    "store_b": "one",
                    "step_b": 0,
                    "kl": 900.0,
                    "lo": 800.0,
                    "hi": 1000.0,
                    "nats_per_token": 2500.0,
                    "flagged": True,
                },
                {
                    "setting": "adjacent layers",
                    "store_a": "one",
                    "step_a": 0,
                    "store_b": "one",
                    "step_b": 0,
                    "kl": 0.03,
                    "lo": 0.02,
                    "hi": 0.04,
                    "nats_per_token": 0.08,
                    "flagged": False,
                },
                {
                    "setting": "adjacent layers",
                    "store_a": "one",
                    "step_a": 0,
                    "store_b": "one",
                    "step_b": 0,
                    "kl": 0.02,
                    "lo": 0.01,
                    "hi": 0.03,
                    "nats_per_token": 0.05,
                    "flagged": False,
                },
                {
                    "setting": "consecutive, Early",
                    "store_a": "pre",
                    "step_a": 10,
                    "store_b": "pre",
                    "step_b": 20,
                    "kl": 0.05,
                    "lo": 0.04,
                    "hi": 0.06,
                    "nats_per_token": 0.14,
                    "flagged": False,
                },
                {
                    "setting": "consecutive, Early",
                    "store_a": "pre",
                    "step_a": 0,
                    "store_b": "pre",
                    "step_b": 10,
                    "kl": 0.0,
                    "lo": 0.0,
                    "hi": 0.0,
                    "nats_per_token": 0.0,
                    "flagged": False,
                },
            ],
            "orderings": [
                {
                    "name": "early < layers",
                    "p_value": 0.05,
                    "min_p": 0.05,
                    "holds": False,
                    "unit": "pairs of runs",
                }
            ],
        }
    if findings:
        summary["findings"] = [
            {
                "id": "scale-early<layers",
                "title": "KL scale: early < layers",
                "unit": "pairs of runs",
                "n": "2 vs 3",
                "test": "permutation over pairs",
                "p_value": 0.05,
                "min_p": 0.05,
                "verdict": "not shown: p = 0.05 (smallest reachable 0.05)",
                "holds": False,
                "section": "kl-scale",
                "value": "0.05 < 0.03?",
            },
            {
                "id": "spiral-pca-pre",
                "title": "pre: does the PCA map spiral?",
                "unit": "snapshots of one run (12)",
                "n": 200,
                "test": "|winding| against 200 walks",
                "p_value": 0.3,
                "min_p": 1 / 201,
                "verdict": "not distinguishable",
                "holds": False,
                "section": "run-pre",
                "value": "0.61 turns",
            },
            {
                "id": "layer-order-one",
                "title": "one: does layer order matter?",
                "unit": "layer orders",
                "n": 500,
                "test": "thread score against shuffled layer orders",
                "p_value": 0.004,
                "min_p": 1 / 501,
                "verdict": "layer order matters",
                "holds": True,
                "section": "run-one",
                "value": "score 0.4",
            },
            {
                "id": "finetune-vs-random",
                "title": "fine-tuned vs base < random pairs",
                "unit": "pairs of runs",
                "n": "1 vs 2",
                "test": "permutation over pairs",
                "p_value": 0.33,
                "min_p": 0.33,
                "verdict": "not shown",
                "holds": False,
                "section": "finetune",
                "value": "difference 2.0",
                "beyond_checked_range": True,
            },
        ]
    return copy.deepcopy(summary)


def make_report(**kw) -> dict:
    """The report dict render_page reads: one probe group and the training curves of ``pre`` and ``ft``."""
    return {
        "groups": [{"probe_fingerprint": "f" * 64, "folder": "analysis", "summary": make_summary(**kw)}],
        "training": {
            "pre": {
                "train_loss": [[s, 5.0 - s / 100] for s in range(0, 120, 5)],
                "val_loss": [[s, 5.1 - s / 100] for s in range(0, 120, 40)],
            },
            "ft": {"train_loss": [[s, 1.5] for s in FT_STEPS], "val_loss": []},
        },
        "figures": [],
    }


def expected_plots(summary: dict) -> int:
    """Interactive plots a page should draw for a summary: per run KL along it (>= 2 snapshots), the map (>= 3
    snapshots and maps computed), the layers (when stored); the joint map; the KL scale (when present)."""
    n = 0
    for rec in summary["runs"].values():
        k = len(rec["steps"])
        n += (k >= 2) + (k >= 3 and bool(rec["maps"])) + (rec["layer_threads"] is not None)
    return (
        n
        + bool((summary.get("joint_map") or {}).get("pca"))
        + bool((summary.get("kl_scale") or {}).get("pairs"))
    )
