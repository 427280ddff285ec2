"""Interactive figures of the page, drawn with plotly (hover, zoom, legend toggles), embedded without a CDN.

plotly.js is written into the page once (`plotly_js`); each figure is a div plus a `Plotly.newPlot` call
(`Plots.div`). Every point of a trajectory carries its hover text: run, step, the logged train and validation
loss at or before that step, KL to the previous snapshot and to the parent snapshot. Axes that span decades
(KL between snapshots, between layers, the KL scale) are logarithmic.
"""

from __future__ import annotations

import html
import math

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.colors import qualitative, sample_colorscale
from plotly.subplots import make_subplots

from trajlab.report.values import loss_at

COLORSCALE = "Viridis"
RUN_COLOURS = qualitative.Plotly
_CONFIG = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "png", "scale": 2}}


def plotly_js() -> str:
    """Returns the one inline <script> with plotly.js (offline: the page never fetches it)."""
    from plotly.offline import get_plotlyjs

    return f'<script type="text/javascript">{get_plotlyjs()}</script>'


class Plots:
    """Numbers the figures of one page (stable div ids) and counts them for the page's self-check."""

    def __init__(self) -> None:
        self.count = 0

    def div(self, fig: go.Figure, height: int = 420) -> str:
        self.count += 1
        fig.update_layout(height=height, margin={"l": 60, "r": 20, "t": 50, "b": 50}, template="plotly_white")
        return pio.to_html(
            fig, include_plotlyjs=False, full_html=False, div_id=f"plot-{self.count}", config=_CONFIG
        )


def _num(x) -> float | None:
    return float(x) if isinstance(x, int | float) and math.isfinite(x) else None


def point_texts(run: str, steps, curves: dict | None, kl_prev, kl_parent, units: str) -> list[str]:
    """Hover text per snapshot: run, step, losses logged at or before it, KL to previous and to the parent."""
    curves = curves or {}
    out = []
    for i, step in enumerate(steps):
        lines = [f"<b>{html.escape(run)}</b> step {int(step)}"]
        for key, label in (("train_loss", "train loss"), ("val_loss", "val loss")):
            at = loss_at(curves.get(key) or [], int(step))
            if at is not None:
                where = "" if at[0] == int(step) else f" (logged at step {at[0]})"
                lines.append(f"{label} {at[1]:.4g} nats/token{where}")
        prev = _num(kl_prev[i - 1]) if i > 0 and kl_prev is not None and i - 1 < len(kl_prev) else None
        lines.append(f"KL to previous {prev:.4g} {units}" if prev is not None else "KL to previous –")
        if kl_parent is not None and i < len(kl_parent) and _num(kl_parent[i]) is not None:
            lines.append(f"KL to parent {kl_parent[i]:.4g} {units}")
        out.append("<br>".join(lines))
    return out


def _colour_axis(steps, title: str = "step") -> dict:
    # a colour bar only says something when there is more than one snapshot
    lo, hi = (float(min(steps)), float(max(steps))) if len(steps) else (0.0, 1.0)
    return {
        "colorscale": COLORSCALE,
        "cmin": lo,
        "cmax": hi,
        "showscale": len(steps) > 1,
        "colorbar": {"title": {"text": title}},
    }


def map_figure(run: str, maps: dict[str, list], steps, texts: list[str], titles: dict[str, str]) -> go.Figure:
    """One panel per map (PCA, t-SNE): the path through the snapshots, points coloured by step."""
    names = list(maps)
    fig = make_subplots(1, len(names), subplot_titles=[titles[m] for m in names], horizontal_spacing=0.08)
    for j, m in enumerate(names, start=1):
        xy = np.asarray(maps[m], dtype=float)
        fig.add_trace(
            go.Scatter(
                x=xy[:, 0],
                y=xy[:, 1],
                mode="lines",
                line={"color": "#bbb", "width": 1},
                hoverinfo="skip",
                showlegend=False,
            ),
            1,
            j,
        )
        fig.add_trace(
            go.Scatter(
                x=xy[:, 0],
                y=xy[:, 1],
                mode="markers+text",
                text=["start"] + [""] * (len(xy) - 1),
                textposition="top center",
                hovertext=texts,
                hovertemplate="%{hovertext}<extra></extra>",
                marker={"color": list(map(float, steps)), "coloraxis": "coloraxis", "size": 7},
                name=run,
                showlegend=False,
            ),
            1,
            j,
        )
        fig.update_yaxes(scaleanchor=f"x{'' if j == 1 else j}", row=1, col=j)
    fig.update_layout(coloraxis=_colour_axis(steps), title={"text": f"{run}: maps (squared distance = KL)"})
    return fig


def joint_map_figure(joint: dict, hover: dict[str, list[str]], panels: list[tuple[str, str]]) -> go.Figure:
    """The runs of one probe set on shared maps, one colour per run (a legend click hides it everywhere)."""
    fig = make_subplots(1, len(panels), subplot_titles=[t for _, t in panels], horizontal_spacing=0.08)
    for j, (key, _) in enumerate(panels, start=1):
        for r, (run, xy) in enumerate(joint[key].items()):
            xy = np.asarray(xy, dtype=float)
            colour = RUN_COLOURS[r % len(RUN_COLOURS)]
            fig.add_trace(
                go.Scatter(
                    x=xy[:, 0],
                    y=xy[:, 1],
                    mode="lines+markers",
                    name=run,
                    legendgroup=run,
                    showlegend=j == 1,
                    line={"color": colour, "width": 1},
                    marker={"size": [10] + [5] * (len(xy) - 1), "color": colour},
                    hovertext=(hover.get(run) or [])[len(hover.get(run) or []) - len(xy) :],
                    hovertemplate="%{hovertext}<extra></extra>",
                ),
                1,
                j,
            )
        fig.update_yaxes(scaleanchor=f"x{'' if j == 1 else j}", row=1, col=j)
    fig.update_layout(title={"text": "all runs on joint maps (large dot: first snapshot)"})
    return fig


def _positive(values) -> list[float | None]:
    # a log axis cannot show 0 (identical snapshots) or a missing value: leave a gap
    return [v if v is not None and v > 0 else None for v in map(_num, values)]


def kl_along_figure(run: str, steps, rec: dict, texts: list[str], units: str) -> go.Figure:
    """KL to the previous snapshot and KL to the first (and to the parent) against step, log y."""
    fig = make_subplots(
        1, 2, subplot_titles=["KL to the previous snapshot", "KL to the first snapshot / parent"]
    )
    steps = list(map(int, steps))
    fig.add_trace(
        go.Scatter(
            x=steps[1:],
            y=_positive(rec.get("consecutive_kl") or []),
            mode="lines+markers",
            name="to previous",
            hovertext=texts[1:],
            hovertemplate="%{hovertext}<extra></extra>",
        ),
        1,
        1,
    )
    fig.add_trace(
        go.Scatter(
            x=steps[1:],
            y=_positive((rec.get("kl_to_first") or [])[1:]),
            mode="lines+markers",
            name="to first",
            hovertext=texts[1:],
            hovertemplate="%{hovertext}<br>KL to first %{y:.4g}<extra></extra>",
        ),
        1,
        2,
    )
    parent = rec.get("kl_to_parent") or {}
    if parent.get("kl"):
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=_positive(parent["kl"]),
                mode="lines+markers",
                name=f"to parent {parent.get('parent')}@{parent.get('step')}",
                hovertext=texts,
                hovertemplate="%{hovertext}<extra></extra>",
            ),
            1,
            2,
        )
    fig.update_yaxes(type="log", title_text=f"KL ({units}, log)")
    fig.update_xaxes(title_text="step")
    fig.update_layout(title={"text": f"{run}: KL along the trajectory"})
    return fig


def layers_figure(run: str, lt: dict, units: str) -> go.Figure:
    """Each snapshot's layer path on the joint PCA map, and adjacent-layer KL per transition on a log axis."""
    steps = [int(s) for s in lt.get("steps") or []]
    coords = np.asarray(lt.get("coords") or [], dtype=float)  # (K, L+1, 2)
    adjacent = np.asarray(lt.get("adjacent_kl") or [], dtype=float)  # (K, L)
    fig = make_subplots(
        1,
        2,
        subplot_titles=["layer paths, joint PCA (x: embeddings, o: output)", "adjacent-layer KL (log axis)"],
    )
    lo, hi = (min(steps), max(steps)) if steps else (0, 1)
    colours = sample_colorscale(COLORSCALE, [(s - lo) / (hi - lo) if hi > lo else 0.0 for s in steps])
    for k, step in enumerate(steps):
        if coords.ndim == 3 and k < len(coords):
            path = coords[k]
            n = len(path)
            fig.add_trace(
                go.Scatter(
                    x=path[:, 0],
                    y=path[:, 1],
                    mode="lines+markers",
                    line={"color": colours[k], "width": 1},
                    marker={
                        "symbol": ["x"] + ["circle-open"] * (n - 2) + ["circle"],
                        "color": colours[k],
                        "size": 6,
                    },
                    hovertext=[f"<b>{html.escape(run)}</b> step {step}<br>layer {la}" for la in range(n)],
                    hovertemplate="%{hovertext}<extra></extra>",
                    showlegend=False,
                ),
                1,
                1,
            )
        if adjacent.ndim == 2 and k < len(adjacent):
            fig.add_trace(
                go.Scatter(
                    x=list(range(adjacent.shape[1])),
                    y=_positive(adjacent[k]),
                    mode="lines",
                    line={"color": colours[k], "width": 1},
                    showlegend=False,
                    hovertext=[f"step {step}, layer {la} → {la + 1}" for la in range(adjacent.shape[1])],
                    hovertemplate="%{hovertext}: %{y:.4g}<extra></extra>",
                ),
                1,
                2,
            )
    per_layer = lt.get("per_layer") or []
    if len(per_layer) and len(steps) > 1:
        fig.add_trace(
            go.Scatter(
                x=list(range(len(per_layer))),
                y=_positive(per_layer),
                mode="lines+markers",
                name="mean over snapshots",
                line={"color": "black", "width": 2},
                hovertemplate="mean, layer %{x} → next: %{y:.4g}<extra></extra>",
            ),
            1,
            2,
        )
    if len(steps) > 1:  # an invisible trace carries the step colour bar
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                showlegend=False,
                hoverinfo="skip",
                marker={**_colour_axis(steps), "color": [lo]},
            ),
            1,
            1,
        )
    fig.update_yaxes(scaleanchor="x", row=1, col=1)
    fig.update_yaxes(type="log", title_text=f"KL ({units}, log)", row=1, col=2)
    fig.update_xaxes(
        title_text="layer transition l → l+1", dtick=1 if adjacent.shape[-1] <= 12 else None, row=1, col=2
    )
    fig.update_layout(title={"text": f"{run}: layers"}, legend={"x": 1.0, "y": 1.0, "xanchor": "right"})
    return fig


def scale_floor(values: list[float | None]) -> float:
    """The lowest value drawn on the KL scale's log axis: the decade at or below the smallest positive KL."""
    pos = [v for v in values if v is not None and v > 0]
    return 10.0 ** math.floor(math.log10(min(pos))) if pos else 1e-6


def kl_scale_figure(summary_rows: list[dict], pairs: list[dict], units: str) -> tuple[go.Figure, float]:
    """Every pair of every setting on one log KL axis (settings as rows, seeded jitter), medians marked.

    plotly has no symlog axis (the paper's scale is linear below 0.1): a log axis with values clipped at a
    floor instead; a KL at or below the floor (identical snapshots give 0) is drawn at the floor, open.
    Returns (figure, floor).
    """
    settings = list(
        dict.fromkeys([r.get("setting") for r in summary_rows] + [p.get("setting") for p in pairs])
    )
    row_of = {s: i for i, s in enumerate(settings)}
    label = {r.get("setting"): r.get("label") or r.get("setting") for r in summary_rows}
    floor = scale_floor([_num(p.get("kl")) for p in pairs])
    jitter = np.random.default_rng(0).uniform(-0.25, 0.25, size=len(pairs))
    groups: dict[str, dict[str, list]] = {}
    for p, dy in zip(pairs, jitter, strict=True):
        kl = _num(p.get("kl"))
        flag = bool(
            p.get("flagged") or p.get("beyond_checked_range") or (_num(p.get("nats_per_token")) or 0) > 1
        )
        key = (
            "beyond the checked range"
            if flag
            else ("at or below the floor" if kl is None or kl <= floor else "pairs")
        )
        g = groups.setdefault(key, {"x": [], "y": [], "text": []})
        g["x"].append(max(kl, floor) if kl is not None else floor)
        g["y"].append(row_of[p.get("setting")] + dy)
        g["text"].append(
            f"<b>{html.escape(str(label.get(p.get('setting'), p.get('setting'))))}</b>"
            + (f", layer {p['layer']} → {p['layer'] + 1}" if isinstance(p.get("layer"), int) else "")
            + f"<br>{html.escape(str(p.get('store_a')))}@"
            f"{p.get('step_a')} vs {html.escape(str(p.get('store_b')))}@{p.get('step_b')}<br>KL {_fmt(kl)} "
            f"[{_fmt(p.get('lo'))}, {_fmt(p.get('hi'))}] {units}<br>"
            f"{_fmt(p.get('nats_per_token'))} nats/token" + ("<br>⚠ beyond the checked range" if flag else "")
        )
    style = {
        "pairs": {"symbol": "circle", "color": "#4c78a8"},
        "at or below the floor": {"symbol": "triangle-left-open", "color": "#777"},
        "beyond the checked range": {"symbol": "x", "color": "#c0392b"},
    }
    fig = go.Figure()
    for key, g in groups.items():
        fig.add_trace(
            go.Scatter(
                x=g["x"],
                y=g["y"],
                mode="markers",
                name=key,
                hovertext=g["text"],
                hovertemplate="%{hovertext}<extra></extra>",
                marker={**style[key], "size": 7, "opacity": 0.8},
            )
        )
    med = [
        (max(_num(r.get("median")), floor), row_of[r.get("setting")], r)
        for r in summary_rows
        if _num(r.get("median")) is not None
    ]
    if med:
        fig.add_trace(
            go.Scatter(
                x=[m[0] for m in med],
                y=[m[1] for m in med],
                mode="markers",
                name="median",
                marker={"symbol": "line-ns-open", "size": 22, "line": {"width": 3}, "color": "black"},
                hovertext=[
                    f"median {_fmt(r.get('median'))} {units} (n = {r.get('n_pairs')})" for *_, r in med
                ],
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
    paper = [(_num(r.get("paper")), row_of[r.get("setting")]) for r in summary_rows if _num(r.get("paper"))]
    if paper:
        fig.add_trace(
            go.Scatter(
                x=[max(x, floor) for x, _ in paper],
                y=[y for _, y in paper],
                mode="markers",
                name="paper's median",
                marker={"symbol": "diamond-open", "size": 11, "color": "#e67e22"},
                hovertemplate="paper %{x:.4g}<extra></extra>",
            )
        )
    fig.update_xaxes(
        type="log", title_text=f"KL ({units}, log axis; values ≤ {floor:.0e} drawn at {floor:.0e})"
    )
    fig.update_yaxes(
        tickvals=list(range(len(settings))),
        ticktext=[str(label.get(s, s)) for s in settings],
        autorange="reversed",
    )
    fig.update_layout(title={"text": "KL scale: every pair of every setting"})
    return fig, floor


def _fmt(x) -> str:
    v = _num(x)
    return "–" if v is None else f"{v:.4g}"
