"""``trajlab analyze`` and ``trajlab report``: stores in, numbers, figures and one self-contained HTML page out.

``analyze`` is a thin CLI over ``trajlab.analysis.analyze``. ``report`` accepts run folders (a training run with
``trajectory/`` and ``metrics.csv``), store folders, or any folder holding several of them (``runs/demo``); it
analyses each group of stores that share a probe set, plots the training curves, and writes ``report.html`` with
every figure embedded (data URIs) and ``summary.json`` with every number the page shows.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import json
import os
from pathlib import Path

from trajlab.store import TrajectoryStore, open_stores


def _analysis_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--nats", action="store_true", help="KL in nats per text instead of bits per byte")
    ap.add_argument("--clip-quantile", type=float, default=None, help="clip LL from below (paper: 0.02)")
    ap.add_argument("--drop-jump-fraction", type=float, default=None, help="drop jumpy texts (paper: 0.03)")
    ap.add_argument("--window", type=int, default=10, help="snapshots per diffusion fit (paper: 10)")
    ap.add_argument("--no-tsne", action="store_true", help="skip the t-SNE maps")


def _analysis_kwargs(args) -> dict:
    return {
        "n_bytes_units": not args.nats, "clip_quantile": args.clip_quantile,
        "drop_jump_fraction": args.drop_jump_fraction, "window": args.window, "tsne": not args.no_tsne,
    }


def analyze_main(argv: list[str]) -> int:
    from trajlab import analysis as ta

    ap = argparse.ArgumentParser(prog="trajlab analyze", description="summary.json, CSV tables, PNG figures")
    ap.add_argument("stores", nargs="+", help="trajectory store folders sharing one probe set")
    _analysis_args(ap)
    args = ap.parse_args(argv)
    summary = ta.analyze(open_stores(args.stores), args.out, **_analysis_kwargs(args))
    print(f"wrote {Path(args.out) / 'summary.json'} with {len(summary['figures'])} figures, "
          f"{len(summary['tables'])} tables")
    return 0


def _is_store(path: Path) -> bool:
    return (path / "manifest.jsonl").exists() and (path / "meta.json").exists()


def find_stores(paths: list[str | Path]) -> list[Path]:
    """Store folders named by ``paths``: stores themselves, or found up to three levels below a folder."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist: pass a run folder, a store folder or a folder of runs")
        if _is_store(p):
            found.append(p)
            continue
        below = {m.parent for pat in ("*/", "*/*/", "*/*/*/") for m in p.glob(pat + "manifest.jsonl")}
        # creation order (pretraining before fine-tuning before imports), then name
        found += sorted((s for s in below if _is_store(s)), key=lambda s: ((s / "meta.json").stat().st_mtime, s))
    if not found:
        raise ValueError(f"no trajectory store under {', '.join(map(str, paths))}: train with the "
                         "TrajectoryCallback or run `trajlab import` first")
    return list(dict.fromkeys(found))


def training_curves(run_dir: Path) -> dict | None:
    """{"train_loss": [[step, loss], ...], "val_loss": [...]} from a run's CSV log, or None."""
    path = run_dir / "metrics.csv"
    if not path.exists():
        return None
    curves: dict[str, list] = {"train_loss": [], "val_loss": []}
    with open(path) as f:
        for row in csv.DictReader(f):
            for key, col in (("train_loss", "train/loss"), ("val_loss", "val/loss")):
                if row.get(col):
                    curves[key].append([int(row["step"]), float(row[col])])
    return curves


def _curves_figure(curves: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.add_subplot()
    for run, c in curves.items():
        for key, style in (("train_loss", "-"), ("val_loss", "o-")):
            if c[key]:
                steps, losses = zip(*c[key], strict=True)
                ax.plot(steps, losses, style, ms=3, label=f"{run} {key.replace('_', ' ')}")
    ax.set(xlabel="optimizer step", ylabel="loss (nats/token)", title="training curves")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------- HTML


def _fmt(x) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.4g}"
    return html.escape(str(x))


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _run_section(rec: dict, units: str) -> str:
    ck = rec["consecutive_kl"] or []
    parts = [f"<h3>{html.escape(rec['run'])}</h3>",
             _table(["snapshots", "first step", "last step", f"consecutive KL first ({units})",
                     f"consecutive KL last ({units})", f"KL first→last ({units})"],
                    [[len(rec["steps"]), rec["steps"][0], rec["steps"][-1], ck[0] if ck else None,
                      ck[-1] if ck else None, rec["kl_to_first"][-1]]])]
    if rec["maps"]:
        parts.append("<h4>Spiral measure</h4>" + _table(
            ["map", "winding (turns)", "turning (turns)", "mean |curvature|", "radius trend", "straightness"],
            [[m, s["spiral"]["winding_turns"], s["spiral"]["turning_turns"], s["spiral"]["mean_abs_curvature"],
              s["spiral"]["radius_trend"], s["spiral"]["straightness"]] for m, s in rec["maps"].items()]))
    lt = rec.get("layer_threads")
    if lt:
        thirds = lt["thirds"]
        parts.append("<h4>Layer threads (adjacent-layer KL, cf. the paper's Table 3)</h4>" + _table(
            ["early", "middle", "last", f"non-adjacent pairs ({units})", "thread score (adjacent / random)"],
            [[thirds.get("early"), thirds.get("middle"), thirds.get("last"), lt["nonadjacent_kl"],
              lt["thread_score"]]]))
    rows = []
    for space, d in rec["diffusion"].items():
        s = d["summary"]
        rows.append([space, d["source"], s["median"], s["ci_low"], s["ci_high"], s["n"]])
    if rows:
        parts.append("<h4>Diffusion exponents (ln y = c ln Δt + b)</h4>"
                     + _table(["space", "from", "median c", "CI low", "CI high", "fits"], rows))
    if rec["notes"]:
        parts.append("<ul class=notes>" + "".join(f"<li>{html.escape(n)}</li>" for n in rec["notes"]) + "</ul>")
    return "\n".join(parts)


def _group_section(summary: dict, folder: Path) -> str:
    units = summary["units"]
    parts = [f"<p>{summary['n_texts_kept']} of {summary['n_texts']} probe texts, mean {summary['mean_bytes']:.1f} "
             f"bytes; KL in {units} (Var/2 estimator).</p>"]
    parts += [_run_section(rec, units) for rec in summary["runs"].values()]
    if summary["comparison"]:
        parts.append("<h3>KL table (cf. the paper's Table 1)</h3>" + _table(
            ["kind", "a", "step a", "b", "step b", "KL (nats/text)", "KL (bits/byte)"],
            [[r["kind"], r["a"], r["step_a"], r["b"], r["step_b"], r.get("kl_nats"), r.get("kl_bits_per_byte")]
             for r in summary["comparison"]]))
    ft = summary.get("finetune_vs_base")
    if ft:
        parts.append("<h3>Fine-tuned vs base (cf. the paper's Table 2)</h3>" + _table(
            ["", "median", "mean", "SD"],
            [[k, ft[k]["median"], ft[k]["mean"], ft[k]["sd"]] for k in ("pairs", "random")]))
    parts += [_img(folder / f, f) for f in summary["figures"]]
    if summary["notes"]:
        parts.append("<ul class=notes>" + "".join(f"<li>{html.escape(n)}</li>" for n in summary["notes"]) + "</ul>")
    return "\n".join(parts)


_CSS = """body{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}figure{margin:1em 0}img{max-width:100%}figcaption{color:#666;font-size:12px}
.notes{color:#885}"""
# Marks the page once loaded: how many images it has and how many failed (read by automated checks).
_LOAD_CHECK = ("<script>addEventListener('load',()=>{const i=[...document.images];"
               "document.body.dataset.images=i.length;"
               "document.body.dataset.broken=i.filter(x=>!x.complete||x.naturalWidth===0).length;});</script>")


def write_report(paths: list[str | Path], out: str | Path, **analysis_kwargs) -> Path:
    """Analyse the stores under ``paths`` and write ``out/report.html`` + ``out/summary.json``; returns the page."""
    from trajlab import analysis as ta
    from trajlab.analysis.outputs import json_safe

    out = Path(out)
    stores = [TrajectoryStore.open(p) for p in find_stores(paths)]
    groups: dict[str, list] = {}
    for s in stores:
        groups.setdefault(s.probe_fingerprint, []).append(s)
    out.mkdir(parents=True, exist_ok=True)
    report = {"groups": [], "training": {}, "figures": []}
    sections = []
    for i, (fp, members) in enumerate(groups.items()):
        folder = out / ("analysis" if len(groups) == 1 else f"analysis_{i}")
        summary = ta.analyze(members, folder, **analysis_kwargs)
        report["groups"].append({"probe_fingerprint": fp, "folder": folder.name, "summary": summary})
        report["figures"] += [f"{folder.name}/{f}" for f in summary["figures"]]
        runs = ", ".join(summary["runs"])
        sections.append(f"<h2>Probe set {fp[:12]}… ({runs})</h2>\n{_group_section(summary, folder)}")
    for s in stores:
        curves = training_curves(s.path.parent)
        if curves and (curves["train_loss"] or curves["val_loss"]):
            report["training"][s.meta.get("run", s.path.parent.name)] = curves
    if report["training"]:
        _curves_figure(report["training"], out / "training_curves.png")
        report["figures"].append("training_curves.png")
        final = [[run, c["train_loss"][-1][1] if c["train_loss"] else None,
                  c["val_loss"][0][1] if c["val_loss"] else None, c["val_loss"][-1][1] if c["val_loss"] else None]
                 for run, c in report["training"].items()]
        sections.append("<h2>Training</h2>" + _table(["run", "final train loss", "first val loss", "last val loss"],
                                                    final) + _img(out / "training_curves.png", "training curves"))
    page = (f"<!doctype html><html><head><meta charset=utf-8><title>trajlab report</title><style>{_CSS}</style>"
            f"{_LOAD_CHECK}</head><body><h1>trajlab report</h1><p>{len(stores)} trajectory store(s): "
            f"{html.escape(', '.join(str(s.path) for s in stores))}</p>\n" + "\n".join(sections) + "</body></html>")
    _write_atomic(out / "summary.json", json.dumps(json_safe(report), indent=1))
    _write_atomic(out / "report.html", page)
    return out / "report.html"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def report_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="trajlab report", description="one self-contained report.html")
    ap.add_argument("paths", nargs="+", help="run folders, store folders, or a folder of runs (runs/demo)")
    _analysis_args(ap)
    args = ap.parse_args(argv)
    page = write_report(args.paths, args.out, **_analysis_kwargs(args))
    print(f"report: {page.resolve()}")
    return 0
