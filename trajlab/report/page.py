"""The report page: stores in, one self-contained HTML page and its summary.json out.

`write_report` accepts run folders (a training run with
``trajectory/`` and ``metrics.csv``), store folders, or any folder holding several of them (``runs/demo``); it
analyses each group of stores that share a probe set, plots the training curves, and writes ``report.html`` with
every figure embedded (data URIs) and ``summary.json`` with every number the page shows.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from trajlab._io import read_csv_log, write_atomic
from trajlab.store import TrajectoryStore, is_store, open_stores


def find_stores(paths: list[str | Path]) -> list[Path]:
    """Store folders named by ``paths``: stores themselves, or found up to three levels below a folder."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist: pass a run folder, a store folder or a folder of runs")
        if is_store(p):
            found.append(p)
            continue
        below = {m.parent for pat in ("*/", "*/*/", "*/*/*/") for m in p.glob(pat + "manifest.jsonl")}
        # creation order (pretraining before fine-tuning before imports), then name
        found += sorted((s for s in below if is_store(s)), key=lambda s: ((s / "meta.json").stat().st_mtime, s))
    if not found:
        raise ValueError(f"no trajectory store under {', '.join(map(str, paths))}: train with the "
                         "TrajectoryCallback or run `trajlab import` first")
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

    # One colour per run (train loss: line; val loss: dots), the legend beside the axes so many runs stay legible.
    fig = Figure(figsize=(8.0, max(3.6, 0.22 * len(curves) + 1.0)), layout="constrained")
    ax = fig.add_subplot()
    colours = matplotlib.colormaps["tab20"].colors
    for i, (run, c) in enumerate(curves.items()):
        colour = colours[i % len(colours)]
        if c["train_loss"]:
            ax.plot(*zip(*c["train_loss"], strict=True), "-", color=colour, lw=1, label=run)
        if c["val_loss"]:
            ax.plot(*zip(*c["val_loss"], strict=True), "o", color=colour, ms=4,
                    label=None if c["train_loss"] else run)
    ax.set(xlabel="optimizer step", ylabel="loss (nats/token)",
           title="training curves (lines: train loss, dots: validation loss)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
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


def _interval(x, lo, hi) -> str:
    return f"{_fmt(x)} [{_fmt(lo)}, {_fmt(hi)}]"


def _recorded(value, recorded: bool) -> str:
    return _fmt(value) if recorded else f"{_fmt(value)} (assumed)"


def _notes(notes: list[str]) -> str:
    return "<ul class=notes>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>" if notes else ""


def _run_section(rec: dict, units: str, level: float) -> str:
    ck = rec["consecutive_kl"] or []
    pct = f"{level:.0%}"
    parts = [f"<h3>{html.escape(rec['run'])}</h3>",
             _table(["snapshots", "first step", "last step", "warm-up steps", "max steps",
                     f"consecutive KL first ({units})", f"consecutive KL last ({units})", f"KL first→last ({units})"],
                    [[len(rec["steps"]), rec["steps"][0], rec["steps"][-1],
                      _recorded(rec.get("warmup_steps"), rec.get("warmup_recorded", True)),
                      _recorded(rec.get("max_steps"), rec.get("max_steps_recorded", True)), ck[0] if ck else None, ck[-1] if ck else None, rec["kl_to_first"][-1]]])]
    if rec.get("kl_to_parent"):
        tp = rec["kl_to_parent"]
        parts.append(f"<p>KL to the parent snapshot {html.escape(tp['parent'])}@{tp['step']}: first snapshot "
                     f"{_fmt(tp['kl'][0])}, last {_fmt(tp['kl'][-1])} {units}.</p>")
    if rec["maps"]:
        parts.append(
            "<h4>Spiral test: |winding| about the centroid vs random walks with the same step sizes</h4>"
            + _table(["map", "t-SNE perplexity", "|winding| (turns)", "null mean", "null 95% quantile", "p",
                      "random walks"],
                     [[m, s["spiral"].get("perplexity"), s["spiral"]["winding_turns"], s["spiral"]["null_mean"],
                       s["spiral"]["null_q95"], s["spiral"]["p_value"], s["spiral"]["n_null"]]
                      for m, s in rec["maps"].items()]))
    lt = rec.get("layer_threads")
    if lt:
        t, thirds = lt["test"], lt["thirds"]
        parts.append(
            "<h4>Layer threads (adjacent-layer KL, cf. the paper's Table 3) vs the same layers shuffled</h4>"
            + _table(["early", "middle", "last", f"non-adjacent pairs ({units})",
                      "thread score (adjacent / non-adjacent)", "null mean (shuffled layers)", "p",
                      "permutations", "smallest reachable p"],
                     [[thirds.get("early"), thirds.get("middle"), thirds.get("last"), lt["nonadjacent_kl"],
                       t["thread_score"], t["null_mean"], t["p_value"],
                       f"{t['n_perms']} ({'all' if t['exact'] else 'random'})", t["min_p"]]])
            + (f"<p class=notes>{html.escape(t['note'])}</p>" if t.get("note") else ""))
    rows = []
    for space, d in rec["diffusion"].items():
        s, used = d["summary"], d["fits_used"]
        rows.append([space, d["source"], _interval(s["median"], s["ci_low"], s["ci_high"]), used["n"],
                     f"{used['t0_first']}–{used['t0_last']}" if used["n"] else "–", used["window"],
                     used["min_t0"], "yes" if used["full_windows"] else "no"])
    if rows:
        parts.append(f"<h4>Diffusion exponents (ln y = c ln Δt + b), median with {pct} start-point bootstrap</h4>"
                     + _table(["space", "from", "median c", "fits", "start steps", "window", "starts from step",
                               "full windows only"], rows))
    order = rec.get("exponent_order")
    if order and order.get("n_starts"):
        parts.append(_table(["c_LL < c_W", "median c_LL", "median c_W", f"c_W − c_LL [{pct}]",
                             "share of resamples with c_W ≤ c_LL", "starts", "paired"],
                            [["", order["small"], order["large"], _interval(order["diff"], order["lo"], order["hi"]),
                              order["p_value"], order["n_starts"], order["paired"]]]))
    parts.append(_notes(rec["notes"]))
    return "\n".join(parts)


def _comparison_section(summary: dict) -> str:
    rows, bits = summary["comparison"], summary["units"] == "bits/byte"
    level = f"{summary['options']['level']:.0%}"
    unit = "bits/byte" if bits else "nats/text"
    key = "bits_per_byte" if bits else "nats"
    domains = rows and "within_nats" in rows[0]
    header = ["kind", "a", "step a", "b", "step b", "lag", f"KL ({unit}) [{level} text bootstrap]",
              "KL (nats/token)", "beyond checked range"]
    if domains:
        header += [f"within domains ({unit})", f"between domains ({unit})"]
    body = []
    for r in rows:
        row = [r["kind"], r["a"], r["step_a"], r["b"], r["step_b"], r.get("lag"),
               _interval(r[f"kl_{key}"], r[f"ci_lo_{key}"], r[f"ci_hi_{key}"]), r.get("kl_nats_per_token"),
               {True: "yes", False: "no", None: "–"}[r.get("beyond_checked_range")]]
        if domains:
            row += [r[f"within_{key}"], r[f"between_{key}"]]
        body.append(row)
    o = summary["options"]
    if o["at_steps"] is None:
        consecutive = (f"a lag of the smallest recorded spacing ≥ {o['lag_fraction']:.3%} of max_steps, at the first "
                       "snapshot at or after " + ", ".join(f"{f:.1%}" for f in o["target_fractions"])
                       + " of max_steps, after warm-up")
    else:
        consecutive = "the given steps " + ", ".join(map(str, o["at_steps"])) + " and the next snapshot"
    return ("<h3>KL table (cf. the paper's Table 1)</h3>"
            f"<p>Consecutive pairs: {consecutive}. KL per token uses the stores' recorded token counts; pairs above "
            f"{o['max_nats_per_token']} nat/token are beyond the range where Var/2 was checked against the exact KL."
            "</p>" + _table(header, body))


def _group_section(summary: dict, folder: Path) -> str:
    units = summary["units"]
    level = summary["options"]["level"]
    parts = [(f"<p>{summary['n_texts_kept']} of {summary['n_texts']} probe texts, mean "
              f"{summary['mean_bytes']:.1f} bytes; KL in {units} (Var/2 estimator).</p>")]
    parts += [_run_section(rec, units, level) for rec in summary["runs"].values()]
    if summary["comparison"]:
        parts.append(_comparison_section(summary))
    ft = summary.get("finetune_vs_base")
    if ft:
        parts.append("<h3>Fine-tuned vs base (cf. the paper's Table 2); random pairs: different lineage roots</h3>"
                     + _table(["", "median", "mean", "SD", "n"],
                              [[k, ft[k]["median"], ft[k]["mean"], ft[k]["sd"], ft[k]["n"]] for k in ("pairs", "random")]))
        o = ft.get("order")
        if o:
            parts.append(_table(["mean KL fine-tune pairs < random pairs", f"difference [{level:.0%}]",
                                 "share of resamples where it fails"],
                                [["", _interval(o["diff"], o["lo"], o["hi"]), o["p_value"]]]))
    joint = summary.get("joint_map")
    if joint and joint.get("tsne_perplexity") is not None:
        parts.append(f"<p>Joint maps of all {joint['n_points']} snapshots: t-SNE perplexity = min(30, (K − 1) / 3) = "
                     f"{joint['tsne_perplexity']:.3g} for K = {joint['n_points']}.</p>")
    parts += [_img(folder / f, f) for f in summary["figures"]]
    parts.append(_notes(summary["notes"]))
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
    write_atomic(out / "summary.json", json.dumps(json_safe(report), indent=1))
    write_atomic(out / "report.html", page)
    return out / "report.html"
