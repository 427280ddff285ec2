"""The report page: stores in, one self-contained HTML page and its summary.json out.

`write_report` accepts run folders (a training run with ``trajectory/`` and ``metrics.csv``), store folders,
or any folder holding several of them (``runs/demo``); it analyses each group of stores sharing a probe set,
plots the training curves, and writes ``report.html`` and ``summary.json`` with every number the page shows.

The page reads top down: a paragraph and the verdict table (findings.py), then one section per store
(run_section.py) and per probe group (group_section.py). Interactive figures are plotly (plots.py) with
plotly.js inlined once, so the page opens offline; PNGs without an interactive twin are embedded as data URIs,
the others lie beside the page for papers. docs/report.md describes the page, its section ids and size budget.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from trajlab._io import write_atomic
from trajlab.report.context import PageContext
from trajlab.report.csv_log import read_csv_log
from trajlab.report.findings import findings_of, summary_paragraph, verdict_table
from trajlab.report.group_section import group_sections
from trajlab.report.html import img, table
from trajlab.report.plots import plotly_js
from trajlab.report.values import max_nats_per_token, tsne_min_snapshots
from trajlab.store import TrajectoryStore, is_store


def find_stores(paths: list[str | Path]) -> list[Path]:
    """Store folders named by ``paths``: stores themselves, or found up to three levels below a folder."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(
                f"{p} does not exist: pass a run folder, a store folder or a folder of runs"
            )
        if is_store(p):
            found.append(p)
            continue
        below = {m.parent for pat in ("*/", "*/*/", "*/*/*/") for m in p.glob(pat + "manifest.jsonl")}
        # creation order (pretraining before fine-tuning before imports), then name
        found += sorted(
            (s for s in below if is_store(s)), key=lambda s: ((s / "meta.json").stat().st_mtime, s)
        )
    if not found:
        raise ValueError(
            f"no trajectory store under {', '.join(map(str, paths))}: train with the "
            "TrajectoryCallback or run `trajlab import` first"
        )
    return list(dict.fromkeys(found))


def training_curves(run_dir: Path) -> dict | None:
    """{"train_loss": [(step, loss), ...], "val_loss": [...]} from a run's CSV log, or None."""
    if not (run_dir / "metrics.csv").exists():
        return None
    return read_csv_log(run_dir / "metrics.csv", {"train_loss": "train/loss", "val_loss": "val/loss"})


def _curves_figure(curves: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    # One colour per run (train loss: line; val loss: dots), the legend beside the axes for many runs.
    fig = Figure(figsize=(8.0, max(3.6, 0.22 * len(curves) + 1.0)), layout="constrained")
    ax = fig.add_subplot()
    colours = matplotlib.colormaps["tab20"].colors
    for i, (run, c) in enumerate(curves.items()):
        colour = colours[i % len(colours)]
        if c["train_loss"]:
            ax.plot(*zip(*c["train_loss"], strict=True), "-", color=colour, lw=1, label=run)
        if c["val_loss"]:
            ax.plot(
                *zip(*c["val_loss"], strict=True),
                "o",
                color=colour,
                ms=4,
                label=None if c["train_loss"] else run,
            )
    ax.set(
        xlabel="optimizer step",
        ylabel="loss (nats/token)",
        title="training curves (lines: train loss, dots: validation loss)",
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------- the page

PAGE_BUDGET_BYTES = 6_000_000
"""The demo's page stays below this (docs/report.md): plotly.js is 4.8 MB of it, the rest data and PNGs."""

_CSS = """body{font:14px/1.45 system-ui,sans-serif;max-width:1200px;margin:1.5em auto;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}figure{margin:1em 0}img{max-width:100%}figcaption{color:#666;font-size:12px}
.notes{color:#885}.lede{font-size:15px;max-width:70em}.static{font-size:12px;color:#666}
table.verdicts td,table.verdicts th{text-align:left;vertical-align:top}
table.verdicts td:nth-child(4){text-align:right}
table.orders td{text-align:left}body{color:#222}
.verdict.holds{color:#1a7f37}.verdict.fails{color:#6b4e16}.verdict.open{color:#666}
.beyond{background:#fff3cd;color:#8a5300;padding:0 2px}nav{font-size:13px;color:#555}
section{margin-top:.5em}h4{margin-bottom:.3em}"""
# Marks the page once loaded (read by automated checks): images and broken ones, plots drawn and expected.
_LOAD_CHECK = (
    "<script>addEventListener('load',()=>{const i=[...document.images],b=document.body.dataset;"
    "b.images=i.length;b.broken=i.filter(x=>!x.complete||x.naturalWidth===0).length;"
    "b.plots=[...document.querySelectorAll('.js-plotly-plot')].filter(d=>d.querySelector('svg.main-svg'))"
    ".length;});</script>"
)
_TSNE_WHY = (
    "t-SNE maps and their spiral tests are drawn only for trajectories of at least {least} snapshots (after "
    "warm-up); here not for {which}. Why: t-SNE's perplexity must be below the number of points, and on a "
    "handful of points every point is every other's neighbour, so the layout (and a winding measured on it) "
    "says nothing that the PCA map does not."
)


def _resolved(findings: list[dict], aliases: dict[str, str], group: int) -> list[dict]:
    """The findings with each section id mapped to the id it got on the page (ids repeat across groups)."""
    return [
        {**f, "group": group, "section": aliases.get(f.get("section"), f.get("section"))} for f in findings
    ]


def _training_section(training: dict, out: Path, ctx: PageContext) -> str:
    final = [
        [
            run,
            c["train_loss"][-1][1] if c["train_loss"] else None,
            c["val_loss"][0][1] if c["val_loss"] else None,
            c["val_loss"][-1][1] if c["val_loss"] else None,
        ]
        for run, c in training.items()
    ]
    body = table(["run", "final train loss", "first val loss", "last val loss"], final)
    if (out / "training_curves.png").exists():
        body += img(out / "training_curves.png", "training_curves.png")
    return ctx.section("training", "Training", body, level=2)


def render_page(report: dict, out: Path, store_paths: list[str]) -> tuple[str, list[dict], int]:
    """Returns (the page's HTML, the verdict table's findings, the number of interactive plots).

    Args:
        report: {"groups": [{"probe_fingerprint", "folder", "summary"}], "training": {run: curves}}.
        out: the page's folder (analysis folders and training_curves.png lie in it).
        store_paths: the stores' paths, for the header.
    """
    ctx = PageContext(curves=report.get("training") or {})
    ctx.ids.update({"summary", "tsne-note"})
    sections, findings, stores, units, groups = [], [], [], [], report.get("groups") or []
    for i, g in enumerate(groups):
        summary = g["summary"]
        ctx.start_group(out / g["folder"])
        runs = ", ".join(summary.get("runs") or {})
        body = group_sections(summary, ctx)
        head = f"Probe set {g['probe_fingerprint'][:12]}… ({runs})" if len(groups) > 1 else f"Stores ({runs})"
        sections.append(ctx.section(f"group-{i}", head, body, level=2))
        findings += _resolved(findings_of(summary), ctx.aliases[-1], i)
        units.append(summary.get("units", ""))
        for run, rec in (summary.get("runs") or {}).items():
            lt = rec.get("layer_threads")
            stores.append(
                (run, len(rec.get("steps") or []), (rec.get("meta") or {}).get("n_layers") if lt else None)
            )
    if report.get("training"):
        sections.append(_training_section(report["training"], out, ctx))
    limit = max(max_nats_per_token(g["summary"]) for g in groups) if groups else 1.0
    top = [
        summary_paragraph(stores, findings, units, ctx.n_flagged),
        f'<section id="summary"><h2>Findings</h2>{verdict_table(findings, ctx.ids, limit)}</section>',
    ]
    if ctx.tsne_skipped:
        least = min(tsne_min_snapshots(g["summary"]) for g in groups)
        which = ", ".join(f"{html.escape(r)} ({k} snapshots)" for r, k in ctx.tsne_skipped)
        top.append(f'<p class=notes id="tsne-note">{_TSNE_WHY.format(least=least, which=which)}</p>')
    nav = " · ".join(
        f'<a href="#{html.escape(s)}">{html.escape(t)}</a>'
        for s, t in [
            (f"group-{i}", f"stores {i + 1}" if len(groups) > 1 else "stores") for i in range(len(groups))
        ]
        + ([("training", "training")] if report.get("training") else [])
    )
    page = (
        f"<!doctype html><html><head><meta charset=utf-8><title>trajlab report</title><style>{_CSS}</style>"
        f"{plotly_js()}{_LOAD_CHECK}</head><body data-plots-expected={ctx.plots.count}>"
        f"<h1>trajlab report</h1>{''.join(top)}<nav>Sections: {nav}. Stores: "
        f"{html.escape(', '.join(store_paths))}</nav>\n" + "\n".join(sections) + "</body></html>"
    )
    return page, findings, ctx.plots.count


def write_report(paths: list[str | Path], out: str | Path, **analysis_kwargs) -> Path:
    """Analyse the stores under ``paths``, write ``out/report.html`` + ``out/summary.json``; returns the page.

    summary.json holds every analysis summary (``groups``), the training curves, the static figures, the
    verdict table's ``findings`` and ``page`` ({"bytes", "plots"}: the page's size and its interactive plots).
    """
    from trajlab import analysis as ta
    from trajlab.analysis.outputs import json_safe

    out = Path(out)
    stores = [TrajectoryStore.open(p) for p in find_stores(paths)]
    groups: dict[str, list] = {}
    for s in stores:
        groups.setdefault(s.probe_fingerprint, []).append(s)
    out.mkdir(parents=True, exist_ok=True)
    report = {"groups": [], "training": {}, "figures": []}
    for i, (fp, members) in enumerate(groups.items()):
        folder = out / ("analysis" if len(groups) == 1 else f"analysis_{i}")
        summary = ta.analyze(members, folder, **analysis_kwargs)
        report["groups"].append({"probe_fingerprint": fp, "folder": folder.name, "summary": summary})
        report["figures"] += [f"{folder.name}/{f}" for f in summary["figures"]]
    for s in stores:
        curves = training_curves(s.path.parent)
        if curves and (curves["train_loss"] or curves["val_loss"]):
            report["training"][s.meta.get("run", s.path.parent.name)] = curves
    if report["training"]:
        _curves_figure(report["training"], out / "training_curves.png")
        report["figures"].append("training_curves.png")
    report = json_safe(report)
    page, findings, n_plots = render_page(report, out, [str(s.path) for s in stores])
    report["findings"] = json_safe(findings)
    report["page"] = {"bytes": len(page.encode()), "plots": n_plots}
    write_atomic(out / "summary.json", json.dumps(report, indent=1))
    write_atomic(out / "report.html", page)
    return out / "report.html"
