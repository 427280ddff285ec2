"""The sections of one probe group beyond its stores: KL table, fine-tuned vs base, KL scale, joint maps."""

from __future__ import annotations

import html

from trajlab.report.context import PageContext
from trajlab.report.html import Markup, anchor, flagged, fmt, fmt_p, interval, notes, png_links, table
from trajlab.report.plots import joint_map_figure, kl_scale_figure, point_texts
from trajlab.report.run_section import run_section
from trajlab.report.values import max_nats_per_token, row_flag, tsne_min_snapshots


def _comparison(summary: dict, ctx: PageContext) -> str:
    rows, bits = summary.get("comparison") or [], summary.get("units") == "bits/byte"
    limit = max_nats_per_token(summary)
    o = summary.get("options") or {}
    level = f"{float(o.get('level') or 0.95):.0%}"
    unit, key = ("bits/byte", "bits_per_byte") if bits else ("nats/text", "nats")
    domains = bool(rows) and f"within_{key}" in rows[0]
    header = [
        "kind",
        "a",
        "step a",
        "b",
        "step b",
        "lag",
        f"KL ({unit}) [{level} text bootstrap]",
        "KL (nats/token)",
    ] + ([f"within domains ({unit})", f"between domains ({unit})"] if domains else [])
    body = []
    for r in rows:
        kl = interval(r.get(f"kl_{key}"), r.get(f"ci_lo_{key}"), r.get(f"ci_hi_{key}"))
        row = [
            r.get("kind"),
            r.get("a"),
            r.get("step_a"),
            r.get("b"),
            r.get("step_b"),
            r.get("lag"),
            flagged(kl, ctx.flag(row_flag(r, limit)), limit),
            r.get("kl_nats_per_token"),
        ]
        body.append(row + ([r.get(f"within_{key}"), r.get(f"between_{key}")] if domains else []))
    if o.get("at_steps") is None and o.get("target_fractions"):
        consecutive = (
            f"a lag of the smallest recorded spacing ≥ {o.get('lag_fraction', 0):.3%} of max_steps, at "
            "the first snapshot at or after "
            + ", ".join(f"{f:.1%}" for f in o["target_fractions"])
            + " of max_steps, after warm-up"
        )
    else:
        consecutive = (
            "the given steps " + ", ".join(map(str, o.get("at_steps") or [])) + " and the next snapshot"
        )
    text = (
        f"<p>Consecutive pairs: {html.escape(consecutive)}. KL per token uses the stores' recorded token "
        f"counts; pairs above {fmt(limit)} nat/token (marked ⚠) are beyond the range where Var/2 was checked "
        "against the exact KL.</p>"
    )
    return ctx.section(anchor("comparison"), "KL table (cf. the paper's Table 1)", text + table(header, body))


def _finetune(summary: dict, ctx: PageContext) -> str:
    ft = summary.get("finetune_vs_base") or {}
    units, limit = summary.get("units", ""), max_nats_per_token(summary)
    body = table(
        ["", "median", "mean", "SD", "n"],
        [
            [
                k,
                (ft.get(k) or {}).get("median"),
                (ft.get(k) or {}).get("mean"),
                (ft.get(k) or {}).get("sd"),
                (ft.get(k) or {}).get("n"),
            ]
            for k in ("pairs", "random")
        ],
    )
    orders = [(name, ft[key]) for key, name in (("order_runs", "runs"), ("order", "texts")) if ft.get(key)]
    if orders:
        body += "<h4>Mean KL of fine-tune pairs < random pairs</h4>" + ordering_table(orders, summary)
    labels, kls = ft.get("pair_labels") or [], ft.get("pair_kl") or []
    flags = ft.get("beyond_checked_range") or [None] * len(kls)
    if labels and len(labels) == len(kls):
        body += table(
            ["fine-tuned", "base", f"KL ({units})"],
            [
                [a, b, flagged(fmt(v), ctx.flag(f), limit)]
                for (a, b), v, f in zip(labels, kls, flags, strict=False)
            ],
        )
    return ctx.section(
        anchor("finetune"),
        "Fine-tuned vs base (cf. the paper's Table 2); random pairs: different lineage roots",
        body,
    )


def _verdict(o: dict, alpha: float) -> str:
    holds = o.get("holds")
    if holds is None and isinstance(o.get("p_value"), int | float):
        holds = o["p_value"] <= alpha
    if holds:
        return "✓ holds" + (" for these runs (texts resampled)" if "text" in str(o.get("unit")) else "")
    return "✗ not shown" + (f": {o['reason']}" if o.get("reason") else "")


def ordering_table(orders: list[tuple[str, dict]], summary: dict) -> Markup:
    """One row per ordering test (a < b): its unit, n, test, difference with interval, p and verdict."""
    o_ = summary.get("options") or {}
    level = float(o_.get("level") or 0.95)
    rows = []
    for name, o in orders:
        n = " vs ".join(map(str, o["n_units"])) if o.get("n_units") else o.get("n")
        min_p = o.get("min_p") or (1 / o["n_boot"] if o.get("n_boot") else None)
        test = o.get("test") or (f"{o['n_boot']} bootstrap resamples" if o.get("n_boot") else "–")
        rows.append(
            [
                name,
                o.get("unit"),
                n,
                test,
                interval(o.get("diff"), o.get("lo"), o.get("hi")),
                fmt_p(o.get("p_value"), min_p),
                _verdict(o, 1 - level),
            ]
        )
    return table(
        ["ordering", "unit", "n", "test", f"difference [{level:.0%}]", "p", "verdict"], rows, cls="orders"
    )


def _kl_scale(summary: dict, ctx: PageContext) -> str:
    scale = summary.get("kl_scale") or {}
    rows, pairs = scale.get("summary") or [], scale.get("pairs") or []
    units, limit = scale.get("units") or summary.get("units", ""), max_nats_per_token(summary)
    flags = {
        r.get("setting"): sum(bool(row_flag(p, limit)) for p in pairs if p.get("setting") == r.get("setting"))
        for r in rows
    }
    body = table(
        [
            "setting",
            "pairs",
            "runs",
            f"median ({units})",
            "mean",
            "SD",
            "beyond the checked range",
            "paper's median",
        ],
        [
            [
                r.get("label") or r.get("setting"),
                r.get("n_pairs"),
                r.get("n_runs"),
                r.get("median"),
                r.get("mean"),
                r.get("sd"),
                r.get("n_flagged", flags.get(r.get("setting"))),
                r.get("paper"),
            ]
            for r in rows
        ],
    )
    notes_paper = [
        f"{r.get('label') or r.get('setting')}: {r['paper_note']}" for r in rows if r.get("paper_note")
    ]
    body += notes(["Paper's medians: " + "; ".join(notes_paper)] if notes_paper else [])
    if pairs:
        fig, floor = kl_scale_figure(rows, pairs, units)
        body += (
            "<p>Every pair on one log axis (plotly has no symlog axis: the paper's scale is linear below "
            f"0.1; here values at or below {floor:.0e} {html.escape(units)} are drawn at that floor, open "
            "triangles). Red crosses: beyond the checked range.</p>"
            + ctx.plots.div(fig, height=max(320, 70 * len({p.get("setting") for p in pairs}) + 120))
        )
    orderings = [o for o in scale.get("orderings") or [] if isinstance(o, dict)]
    if orderings:
        named = [(str(o.get("title") or o.get("name") or "?"), o) for o in orderings]
        body += "<h4>Orderings</h4>" + ordering_table(named, summary)
    pngs = [f for f in summary.get("figures") or [] if f.startswith("kl_scale")]
    body += png_links(
        [ctx.rel(f) for f in pngs] or [ctx.rel(f) for f in scale.get("files") or [] if f.endswith(".png")]
    )
    body += notes(_applicable(scale.get("notes") or [], summary))
    return ctx.section(anchor("kl-scale"), "KL scale", body)


def _joint_map(summary: dict, ctx: PageContext) -> str:
    joint = summary.get("joint_map") or {}
    runs = summary.get("runs") or {}
    units = summary.get("units", "")
    hover = {}
    for run, rec in runs.items():
        hover[run] = point_texts(
            run,
            rec.get("steps") or [],
            ctx.curves.get(run),
            rec.get("consecutive_kl"),
            (rec.get("kl_to_parent") or {}).get("kl"),
            units,
        )
    panels = [("pca", "joint PCA")]
    n, least = joint.get("n_points") or 0, tsne_min_snapshots(summary)
    text = ""
    if joint.get("tsne") and n >= least:
        panels.append(("tsne", f"joint t-SNE, perplexity {fmt(joint.get('tsne_perplexity'))} for {n} points"))
        text = (
            f"<p>t-SNE perplexity = min(30, (K − 1) / 3) = {fmt(joint.get('tsne_perplexity'))} for K = {n}; "
            "t-SNE keeps neighbourhoods, not distances: compare runs on the PCA panel.</p>"
        )
    body = text + ctx.plots.div(joint_map_figure(joint, hover, panels), height=500)
    body += png_links([ctx.rel(f) for f in summary.get("figures") or [] if f.startswith("map_all")])
    return ctx.section(
        anchor("joint-map"), "All runs on joint maps (click a legend entry to hide a run)", body
    )


_SNAPSHOT_NOTE_WORDS = ("warmup", "warm-up", "max_steps", "consecutive pairs")


def _applicable(items: list, summary: dict) -> list[str]:
    """Group notes without the trajectory warnings about one-snapshot stores (warm-up, max_steps, pairs)."""
    single = [r for r, rec in (summary.get("runs") or {}).items() if len(rec.get("steps") or []) == 1]
    return [
        str(n)
        for n in items
        if not any(
            str(n).startswith(f"{r}: ") and any(w in str(n) for w in _SNAPSHOT_NOTE_WORDS) for r in single
        )
    ]


def group_sections(summary: dict, ctx: PageContext) -> Markup:
    """Returns the stores' sections and the group's own sections, in reading order."""
    units = summary.get("units", "")
    texts = (
        f"<p>{summary.get('n_texts_kept')} of {summary.get('n_texts')} probe texts, mean "
        f"{fmt(summary.get('mean_bytes'))} bytes; KL in {html.escape(units)} (Var/2 estimator).</p>"
    )
    parts = [texts]
    parts += [run_section(run, rec, summary, ctx) for run, rec in (summary.get("runs") or {}).items()]
    if (summary.get("joint_map") or {}).get("pca"):
        parts.append(_joint_map(summary, ctx))
    if summary.get("comparison"):
        parts.append(_comparison(summary, ctx))
    if summary.get("finetune_vs_base"):
        parts.append(_finetune(summary, ctx))
    if summary.get("kl_scale"):
        parts.append(_kl_scale(summary, ctx))
    rest = [f for f in summary.get("figures") or [] if f not in ctx.placed]
    parts.append(png_links([ctx.rel(f) for f in rest]))
    parts.append(notes(_applicable(summary.get("notes") or [], summary)))
    return Markup("\n".join(parts))
