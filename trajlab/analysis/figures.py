"""Figures of the analysis summary, drawn with matplotlib's object API on the Agg canvas (no pyplot, so the
caller's matplotlib backend is left alone)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from trajlab._io import write_atomic

CMAP = "viridis"


def _figure(n_panels: int, width: float = 5.0, height: float = 4.2) -> tuple[Figure, list]:
    fig = Figure(figsize=(width * n_panels, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    return fig, list(axes)


def save_figure(fig: Figure, path: Path) -> None:
    """Writes fig as PNG to path atomically (temporary file in the same folder, then rename)."""
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def map_figure(
    maps: dict[str, np.ndarray],
    steps: np.ndarray,
    consecutive_kl: np.ndarray,
    title: str,
    spirals: dict[str, dict] | None = None,
) -> Figure:
    """Returns one panel per map: points coloured by step, segments with width proportional to consecutive KL.

    Args:
        maps: method name -> (K, 2) coordinates.
        steps: (K,) training steps.
        consecutive_kl: (K-1,) KL between consecutive snapshots.
        title: figure title.
        spirals: optional method name -> spiral_test numbers, shown in the panel title.
    """
    fig, axes = _figure(len(maps))
    norm = Normalize(steps.min(), steps.max())
    top = consecutive_kl.max() if len(consecutive_kl) and consecutive_kl.max() > 0 else 1.0
    for ax, (name, xy) in zip(axes, maps.items(), strict=True):
        segments = np.stack([xy[:-1], xy[1:]], axis=1)  # (K-1, 2 ends, 2)
        ax.add_collection(
            LineCollection(segments, linewidths=0.5 + 4.5 * consecutive_kl / top, colors="0.55")
        )
        points = ax.scatter(xy[:, 0], xy[:, 1], c=steps, cmap=CMAP, norm=norm, s=14, zorder=3)
        ax.annotate("start", xy[0], fontsize=8)
        sp = (spirals or {}).get(name)
        label = name if name != "tsne" or sp is None else f"t-SNE, perplexity {sp['perplexity']:.3g}"
        if sp is not None:
            label += (
                f"\n|winding| {sp['winding_turns']:.2f} turns; {sp.get('null') or 'null'} walks: "
                f"q05-q95 {sp.get('null_q05') or float('nan'):.2f}-{sp['null_q95']:.2f}; "
                f"{sp.get('verdict') or ''}"
            )
        ax.set_title(label, fontsize=9)
        ax.set_aspect("equal", adjustable="datalim")
        ax.autoscale_view()
    fig.colorbar(points, ax=axes, label="step")
    fig.suptitle(f"{title} (line width: consecutive KL)")
    return fig


def threads_figure(
    coords: np.ndarray, steps: np.ndarray, per_layer: np.ndarray, units: str, title: str
) -> Figure:
    """Returns the layer-thread figure: each snapshot's layer path on the joint map; adjacent KL per layer.

    Args:
        coords: (K, L+1, 2) joint map coordinates of every (snapshot, layer).
        steps: (K,) training steps, for colour.
        per_layer: (L,) adjacent-layer KL averaged over snapshots.
        units: KL unit label.
        title: figure title.
    """
    fig, (ax_map, ax_kl) = _figure(2)
    norm = Normalize(steps.min(), steps.max())
    points = ax_map.scatter(coords[:, -1, 0], coords[:, -1, 1], c=steps, cmap=CMAP, norm=norm, s=16, zorder=3)
    if len(steps) > 1:  # one snapshot: no colour scale to read
        fig.colorbar(points, ax=ax_map, label="step (dots: final layer, crosses: embeddings)")
    colors = colormaps[CMAP](norm(steps))  # (K, 4)
    for path, color in zip(coords, colors, strict=True):
        ax_map.plot(path[:, 0], path[:, 1], color=color, lw=0.8, alpha=0.8)
        ax_map.plot(*path[0], marker="x", color=color, ms=4)
    ax_map.set_title("layers of each snapshot, joint PCA")
    ax_kl.bar(np.arange(len(per_layer)), per_layer, color="0.4")
    if (per_layer > 0).all():  # the embedding row's jump would flatten every other layer on a linear axis
        ax_kl.set_yscale("log")
    ax_kl.set_xticks(np.arange(len(per_layer)))
    ax_kl.set_xlabel("layer transition l -> l+1")
    ax_kl.set_ylabel(f"mean adjacent-layer KL ({units})")
    fig.suptitle(title)
    return fig


def diffusion_figure(panels: list[dict], title: str) -> Figure:
    """Returns log-log displacement vs lag, one panel per space, with the local fits coloured by start step.

    Args:
        panels: dicts with label, sq_dist (K, K), steps (K,), fits (diffusion_exponents output), summary
            (summarize_exponents output), window.
        title: figure title.
    """
    fig, axes = _figure(len(panels))
    for ax, p in zip(axes, panels, strict=True):
        sq, st, fits = p["sq_dist"], p["steps"], p["fits"]
        sq = np.where(np.isnan(sq), sq.T, sq)
        for i in range(len(st) - 1):
            j = np.arange(i + 1, min(i + 1 + p["window"], len(st)))
            ok = np.isfinite(sq[i, j]) & (sq[i, j] > 0)
            ax.plot(st[j][ok] - st[i], sq[i, j][ok], color="0.75", lw=0.6, marker=".", ms=2)
        if len(fits):
            norm = Normalize(fits["t0"].min(), fits["t0"].max())
            row_of = {int(s): i for i, s in enumerate(st)}
            for f in fits:
                i = row_of[int(f["t0"])]
                dt = st[i + 1 : i + 1 + p["window"]] - st[i]
                ax.plot(dt, np.exp(f["b"]) * dt ** f["c"], color=colormaps[CMAP](norm(f["t0"])), lw=0.8)
        s = p["summary"]
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("lag (steps)")
        ax.set_ylabel(p["ylabel"])
        ax.set_title(
            f"{p['label']}: median c = {s['median']:.2f} [{s['ci_low']:.2f}, {s['ci_high']:.2f}], n={s['n']}",
            fontsize=9,
        )
    fig.suptitle(title)
    return fig


def joint_map_figure(joint: dict, title: str) -> Figure:
    """Returns the joint PCA map of several runs' trajectories next to their joint t-SNE map.

    Args:
        joint: {"pca": {run: (K_i, 2)}, "tsne": {run: (K_i, 2)} or None, "tsne_perplexity": float or None}.
        title: figure title.
    """
    panels = [("joint PCA", joint["pca"])]
    if joint.get("tsne") is not None:
        panels.append((f"joint t-SNE, perplexity {joint['tsne_perplexity']:.3g}", joint["tsne"]))
    fig, axes = _figure(len(panels), width=6.0, height=5.0)
    for ax, (label, coords) in zip(axes, panels, strict=True):
        for name, xy in coords.items():
            xy = np.asarray(xy)
            (line,) = ax.plot(xy[:, 0], xy[:, 1], marker=".", ms=4, lw=0.8, label=name)
            ax.plot(*xy[0], marker="o", color=line.get_color(), ms=6)
        ax.set_aspect("equal", adjustable="datalim")
        ax.legend(fontsize=7)
        ax.set_title(label)
    fig.suptitle(title)
    return fig
