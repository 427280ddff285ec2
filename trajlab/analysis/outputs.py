"""Writing an analysis summary: strict JSON, CSV tables and PNG figures, each file atomically."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import numpy as np

from trajlab._io import write_atomic
from trajlab.analysis.figures import (
    diffusion_figure,
    joint_map_figure,
    map_figure,
    save_figure,
    threads_figure,
)

SPIRAL_KEYS = (
    "winding_turns",
    "null",
    "null_mean",
    "null_q05",
    "null_q95",
    "p_more",
    "p_less",
    "min_p",
    "n_null",
    "n_left_out",
    "perplexity",
    "verdict",
)
THREAD_KEYS = (
    "thread_score",
    "null_mean",
    "order_p",
    "n_perms",
    "exact",
    "min_p",
    "verdict_order",
    "walk_null_mean",
    "walk_p_less",
    "walk_p_more",
    "walk_min_p",
    "verdict_walk",
)


def json_safe(x):
    """Returns x with numpy types converted to Python ones and NaN/inf to None (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, np.ndarray) and x.dtype.names:
        return [json_safe(dict(zip(x.dtype.names, r.tolist(), strict=True))) for r in x]
    if isinstance(x, np.ndarray | list | tuple):
        return [json_safe(v) for v in (x.tolist() if isinstance(x, np.ndarray) else x)]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x if x is None or isinstance(x, str | int | float | bool) else str(x)


def _csv_text(header: list[str], rows: list) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows([["" if v is None else v for v in json_safe(list(r))] for r in rows])
    return buf.getvalue()


def _file_stems(names: list[str]) -> list[str]:
    stems = []
    for name in names:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "run"
        stems.append(stem if stem not in stems else f"{stem}-{len(stems)}")
    return stems


def _write_figures(out: Path, summary: dict, arrays: dict, names: list[str], window: int) -> list[str]:
    files = []
    for name, stem in zip(names, _file_stems(names), strict=True):
        rec, units = summary["runs"][name], summary["units"]
        figs = []
        if rec["maps"]:
            maps = {m: v["coords"] for m, v in rec["maps"].items()}
            spirals = {m: v["spiral"] for m, v in rec["maps"].items()}
            figs.append(
                (f"map_{stem}.png", map_figure(maps, rec["steps"], rec["consecutive_kl"], name, spirals))
            )
        if rec["layer_threads"] is not None:
            lt = rec["layer_threads"]
            figs.append(
                (
                    f"threads_{stem}.png",
                    threads_figure(lt["coords"], lt["steps"], lt["per_layer"], units, name),
                )
            )
        panels = [
            {
                "label": "LL space",
                "ylabel": f"KL ({units})",
                "sq_dist": arrays[name]["kl"],
                "steps": rec["steps"],
                "window": window,
                **rec["diffusion"]["ll"],
            }
        ]
        weight = arrays[name]["weight"]
        if weight is not None:
            panels.append(
                {
                    "label": f"weight space ({weight['source']})",
                    "ylabel": "squared weight distance",
                    "sq_dist": weight["sq_dist"],
                    "steps": weight["steps"],
                    "window": window,
                    **rec["diffusion"]["weight"],
                }
            )
        if any(p["fits_used"]["n"] for p in panels):  # no figure of empty axes (too few snapshots to fit)
            figs.append((f"diffusion_{stem}.png", diffusion_figure(panels, name)))
        rec["figures"] = [f for f, _ in figs]
        for fname, fig in figs:
            save_figure(fig, out / fname)
            files.append(fname)
    if summary["joint_map"] is not None:
        save_figure(
            joint_map_figure(summary["joint_map"], f"all runs, joint maps ({summary['units']})"),
            out / "map_all.png",
        )
        files.append("map_all.png")
    return files


def _write_tables(out: Path, summary: dict, names: list[str]) -> list[str]:
    tables: dict[str, tuple[list[str], list]] = {}
    snap_rows, exp_rows, exp_sum_rows, spiral_rows, layer_rows, thread_rows = [], [], [], [], [], []
    for name, stem in zip(names, _file_stems(names), strict=True):
        rec = summary["runs"][name]
        steps, k = rec["steps"], len(rec["steps"])
        prev = np.concatenate([[np.nan], rec["consecutive_kl"]])
        prev_se = np.concatenate([[np.nan], rec["consecutive_se"]])
        coords = {
            m: rec["maps"][m]["coords"] if m in rec["maps"] else np.full((k, 2), np.nan)
            for m in ("pca", "tsne")
        }
        snap_rows += [
            [
                name,
                steps[i],
                rec["kl_to_first"][i],
                prev[i],
                prev_se[i],
                *coords["pca"][i],
                *coords["tsne"][i],
            ]
            for i in range(k)
        ]
        for space, d in rec["diffusion"].items():
            exp_rows += [[name, space, *f] for f in d["fits"].tolist()]
            used = d["fits_used"]
            exp_sum_rows.append(
                [
                    name,
                    space,
                    d["source"],
                    *d["summary"].values(),
                    used["window"],
                    used["min_t0"],
                    used["full_windows"],
                    used["t0_first"],
                    used["t0_last"],
                ]
            )
        spiral_rows += [
            [name, m, *(v["spiral"].get(key) for key in SPIRAL_KEYS)]
            for m, v in rec["maps"].items()
            if v["spiral"]
        ]
        if rec["layer_threads"] is not None:
            adj, layer_steps = rec["layer_threads"]["adjacent_kl"], rec["layer_threads"]["steps"]
            layer_rows += [
                [name, layer_steps[i], la, adj[i, la]]
                for i in range(adj.shape[0])
                for la in range(adj.shape[1])
            ]
        if rec["layer_threads"] is not None:
            t = rec["layer_threads"]["test"]
            thread_rows.append([name, *(t.get(key) for key in THREAD_KEYS)])
        tables[f"kl_matrix_{stem}.csv"] = (
            ["step", *map(str, steps)],
            [[s, *row] for s, row in zip(steps, rec["kl_matrix"], strict=True)],
        )
    units = summary["units"]
    tables["snapshots.csv"] = (
        [
            "run",
            "step",
            f"kl_to_first ({units})",
            f"kl_to_previous ({units})",
            "se_to_previous",
            "pca_x",
            "pca_y",
            "tsne_x",
            "tsne_y",
        ],
        snap_rows,
    )
    tables["exponents.csv"] = (["run", "space", "t0", "c", "b", "r2", "n_lags"], exp_rows)
    tables["exponent_summary.csv"] = (
        [
            "run",
            "space",
            "source",
            "median",
            "ci_low",
            "ci_high",
            "n",
            "window",
            "min_t0",
            "full_windows",
            "t0_first",
            "t0_last",
        ],
        exp_sum_rows,
    )
    tables["spiral.csv"] = (["run", "map", *SPIRAL_KEYS], spiral_rows)
    if layer_rows:
        tables["layer_threads.csv"] = (["run", "step", "layer", f"adjacent_kl ({units})"], layer_rows)
        tables["thread_test.csv"] = (
            ["run", *THREAD_KEYS],
            thread_rows,
        )
    comp = summary["comparison"]
    if comp:
        tables["comparison.csv"] = (list(comp[0]), [list(r.values()) for r in comp])
    fvb = summary["finetune_vs_base"]
    if fvb is not None:
        tables["finetune_vs_base.csv"] = (
            ["group", "median", "mean", "sd", "n"],
            [[g, *fvb[g].values()] for g in ("pairs", "random")],
        )
        orders = [(fvb.get("order_runs"), "pairs of runs"), (fvb.get("order"), "texts (runs fixed)")]
        rows = [
            [unit, o.get("test"), o.get("smaller"), o.get("larger"), o.get("diff"), o.get("lo"), o.get("hi"),
             o.get("p_value"), o.get("min_p"), o.get("holds"), o.get("reason")]
            for o, unit in orders if o is not None
        ]  # fmt: skip
        if rows:
            tables["finetune_order.csv"] = (
                ["unit", "test", "mean_pairs", "mean_random", "diff", "ci_lo", "ci_hi", "p_value", "min_p", "holds",
                 "reason"],
                rows,
            )  # fmt: skip
    for fname, (header, rows) in tables.items():
        write_atomic(out / fname, _csv_text(header, rows))
    return list(tables)


def write_summary(out: Path, summary: dict, arrays: dict, names: list[str], window: int) -> dict:
    """Writes the figures, CSV tables and summary.json into out; returns the JSON-safe summary.

    Args:
        out: existing output folder.
        summary: the summary dict of analyze() (numpy arrays allowed); gets "figures" and "tables" added.
        arrays: run name -> {"kl": (K, K) matrix, "weight": weight-space dict or None}, for diffusion plots.
        names: run names, in store order.
        window: snapshots per diffusion fit.
    """
    summary["figures"] = _write_figures(out, summary, arrays, names, window)
    summary["tables"] = _write_tables(out, summary, names)
    scale_files = list(((summary.get("kl_scale") or {}).get("files") or {}).values())  # written by analyze
    summary["figures"] += [f for f in scale_files if f.endswith(".png")]
    summary["tables"] += [f for f in scale_files if f.endswith(".csv")]
    safe = json_safe(summary)
    write_atomic(out / "summary.json", json.dumps(safe, indent=1))
    return safe
