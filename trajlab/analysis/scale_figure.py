"""The KL scale drawn as the paper draws it, and written with its table: kl_scale.png, kl_scale.csv.

One row per setting in the paper's order (top to bottom), every pair a jittered point on a symlog axis (linear
below 0.1, display clipped at 50 with clipped points marked), each setting's median marked, and the paper's
published values as red diamonds. Settings the stores lack but the paper reports get a row of their own
("paper only"), so a user's pairs are read against the whole published scale.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from trajlab._io import write_atomic
from trajlab.analysis.figures import save_figure
from trajlab.analysis.outputs import json_safe
from trajlab.analysis.scale import PAPER, label, setting_order

LINTHRESH = 0.1  # bits/byte: linear below, logarithmic above (the paper's axis)
CLIP = 50.0  # values above are drawn at CLIP
WIDTH, ROW_HEIGHT, BASE_HEIGHT = 8.0, 0.5, 2.2  # inches
DPI = 110  # trajlab.analysis.figures.save_figure
PAIR_COLUMNS = (
    "setting",
    "store_a",
    "step_a",
    "store_b",
    "step_b",
    "layer",
    "kl",
    "lo",
    "hi",
    "kl_raw",
    "nats_per_token",
    "flagged",
    "n_texts",
)
SUMMARY_COLUMNS = (
    "setting",
    "label",
    "n_pairs",
    "n_runs",
    "median",
    "mean",
    "sd",
    "min",
    "max",
    "n_flagged",
    "paper",
    "paper_note",
)


def figure_rows(scale, paper_rows: bool = True) -> list[str]:
    """Returns the settings drawn, top to bottom: those with pairs, and (paper_rows, bits/byte) the paper's."""
    rows = set(scale.settings)
    if paper_rows and scale.units == "bits/byte":
        rows |= set(PAPER)
    return setting_order(rows)


def figure_size_px(n_rows: int) -> tuple[int, int]:
    """Returns (width, height) in pixels of the scale figure with n_rows rows."""
    return round(WIDTH * DPI), round((BASE_HEIGHT + ROW_HEIGHT * n_rows) * DPI)


def scale_figure(scale, paper_rows: bool = True) -> Figure:
    """Returns the KL scale figure (module docstring) of a KLScale."""
    rows = figure_rows(scale, paper_rows)
    fig = Figure(figsize=(WIDTH, BASE_HEIGHT + ROW_HEIGHT * len(rows)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    rng = np.random.default_rng(0)  # jitter only
    flagged_any = clipped_any = False
    labels = []
    for i, s in enumerate(rows):
        y = len(rows) - 1 - i
        pts = [p for p in scale.pairs if p["setting"] == s]
        kl = np.array([p["kl"] for p in pts], dtype=np.float64)
        flag = np.array([bool(p["flagged"]) for p in pts], dtype=bool)
        yj = y + rng.uniform(-0.22, 0.22, size=len(kl))
        inside = kl <= CLIP
        ax.scatter(kl[inside & ~flag], yj[inside & ~flag], s=14, color="C0", alpha=0.6, lw=0, zorder=2)
        ax.scatter(kl[inside & flag], yj[inside & flag], s=16, facecolors="none", edgecolors="0.25", zorder=2)
        ax.scatter(np.full((~inside).sum(), CLIP), yj[~inside], s=30, marker=">", color="C1", zorder=3)
        flagged_any |= bool(flag.any())
        clipped_any |= bool((~inside).any())
        if len(kl):
            ax.plot([min(np.median(kl), CLIP)], [y], marker="|", ms=24, mew=2.5, color="k", zorder=4)
        summary = scale.summary.get(s)
        paper = summary["paper_values"] if summary else (PAPER[s][0] if scale.units == "bits/byte" else [])
        if paper:
            if len(paper) > 1:
                ax.plot([min(paper), max(paper)], [y + 0.32] * 2, color="C3", lw=0.8, zorder=4)
            ax.plot(paper, [y + 0.32] * len(paper), ls="none", marker="D", ms=6, color="C3", zorder=5)
        labels.append(f"{label(s)} (n={len(kl)})" if len(kl) else f"{label(s)} (paper only)")
    ax.set_xscale("symlog", linthresh=LINTHRESH, linscale=1.0)
    ax.set_xlim(0, CLIP * 1.4)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.axvline(CLIP, color="0.6", ls=":", lw=0.8)
    ticks = [0, 0.05, 0.1, 0.3, 1, 3, 10, CLIP]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_yticks(np.arange(len(rows))[::-1], labels)
    ax.grid(axis="x", color="0.9", lw=0.6)
    ax.set_xlabel(f"KL ({scale.units}); symlog axis, linear below {LINTHRESH:g}")
    handles = [
        Line2D([], [], ls="none", marker="o", color="C0", alpha=0.6, label="pair (these stores)"),
        Line2D([], [], ls="none", marker="|", ms=12, mew=2.5, color="k", label="median (these stores)"),
        Line2D([], [], ls="none", marker="D", color="C3", label="the paper's published value (bits/byte)"),
    ]
    if flagged_any:
        handles.append(
            Line2D(
                [],
                [],
                ls="none",
                marker="o",
                mfc="none",
                mec="0.25",
                label=f"flagged: > {scale.options['max_nats_per_token']:g} nat/token",
            )
        )
    if clipped_any:
        handles.append(
            Line2D([], [], ls="none", marker=">", color="C1", label=f"above {CLIP:g}, drawn at {CLIP:g}")
        )
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    fig.suptitle("KL scale: one row per setting", fontsize=11)
    return fig


def _csv(header, rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows([["" if v is None else v for v in json_safe(list(r))] for r in rows])
    return buf.getvalue()


def write_scale(out_dir, scale, paper_rows: bool = True) -> dict[str, str]:
    """Writes kl_scale.csv (one row per pair), kl_scale_summary.csv (one per setting) and kl_scale.png into
    out_dir (created if missing), each file atomically, after all of them are computed.

    Returns:
        {"table": "kl_scale.csv", "summary_table": "kl_scale_summary.csv", "figure": "kl_scale.png"}.
    """
    out = Path(out_dir)
    u = scale.units
    header = [c if c not in ("kl", "lo", "hi", "kl_raw") else f"{c} ({u})" for c in PAIR_COLUMNS]
    table = _csv(header, [[p[c] for c in PAIR_COLUMNS] for p in scale.pairs])
    summary = _csv(
        [c if c not in ("median", "mean", "sd", "min", "max") else f"{c} ({u})" for c in SUMMARY_COLUMNS],
        [[s, *(scale.summary[s][c] for c in SUMMARY_COLUMNS[1:])] for s in scale.settings],
    )
    fig = scale_figure(scale, paper_rows)
    out.mkdir(parents=True, exist_ok=True)
    files = {"table": "kl_scale.csv", "summary_table": "kl_scale_summary.csv", "figure": "kl_scale.png"}
    write_atomic(out / files["table"], table)
    write_atomic(out / files["summary_table"], summary)
    save_figure(fig, out / files["figure"])
    return files
