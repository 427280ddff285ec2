"""The section of one store: what it holds decides what is shown.

One snapshot: its layers and its place on the KL scale. Two or more: KL along the trajectory. Three or more:
the PCA map and its spiral test; t-SNE from `tsne_min_snapshots` on. Diffusion exponents where a fit exists.
Notes of the analysis about parts that cannot apply to a one-snapshot store (maps, diffusion, weight
snapshots, warm-up) are left out.
"""

from __future__ import annotations

import html
import statistics

from trajlab.report.context import PageContext
from trajlab.report.html import Markup, anchor, flagged, fmt, fmt_p, img, interval, notes, png_links, table
from trajlab.report.plots import kl_along_figure, layers_figure, map_figure, point_texts
from trajlab.report.values import beyond, max_nats_per_token, mean_tokens, row_flag, tsne_min_snapshots

# Notes that only concern trajectories (prefixes of the analysis' note texts).
_TRAJECTORY_NOTES = (
    "maps:",
    "diffusion:",
    "weight space:",
    "warmup_steps not recorded",
    "layer threads: the ",
)
_SAID_ONCE = ("t-SNE map not drawn",)  # the page says which maps and why once, under the verdict table


def _kl_cell(value, summary: dict, rec: dict, ctx: PageContext) -> Markup:
    return flagged(fmt(value), ctx.flag(beyond(value, summary, rec)), max_nats_per_token(summary))


def _recorded(value, recorded) -> str:
    return fmt(value) if recorded in (True, None) else f"{fmt(value)} (assumed)"


def _overview(run: str, rec: dict, summary: dict, ctx: PageContext) -> str:
    steps, units = rec.get("steps") or [], summary.get("units", "")
    meta = rec.get("meta") or {}
    if len(steps) == 1:
        return table(
            ["snapshot step", "layers (transformer blocks)", "tokens per text (mean)"],
            [[steps[0], meta.get("n_layers"), mean_tokens(rec) or "not recorded"]],
        )
    ck, first = rec.get("consecutive_kl") or [], rec.get("kl_to_first") or []
    return table(
        [
            "snapshots",
            "first step",
            "last step",
            "warm-up steps",
            "max steps",
            f"consecutive KL first ({units})",
            f"consecutive KL last ({units})",
            f"KL first→last ({units})",
        ],
        [
            [
                len(steps),
                steps[0],
                steps[-1],
                _recorded(rec.get("warmup_steps"), rec.get("warmup_recorded")),
                _recorded(rec.get("max_steps"), rec.get("max_steps_recorded")),
                _kl_cell(ck[0] if ck else None, summary, rec, ctx),
                _kl_cell(ck[-1] if ck else None, summary, rec, ctx),
                _kl_cell(first[-1] if first else None, summary, rec, ctx),
            ]
        ],
    )


def _kl_section(run: str, rec: dict, summary: dict, texts: list[str], ctx: PageContext) -> str:
    units = summary.get("units", "")
    body = ctx.plots.div(kl_along_figure(run, rec["steps"], rec, texts, units), height=380)
    tp = rec.get("kl_to_parent") or {}
    if tp.get("kl"):
        kl = tp["kl"]
        body += (
            f"<p>KL to the parent snapshot {html.escape(str(tp.get('parent')))}@{tp.get('step')}: first "
            f"snapshot {_kl_cell(kl[0], summary, rec, ctx)}, last {_kl_cell(kl[-1], summary, rec, ctx)} "
            f"{html.escape(units)}.</p>"
        )
    return ctx.section(anchor("kl", run), "KL along the trajectory (log axes)", body, level=4)


def _maps_section(run: str, rec: dict, summary: dict, texts: list[str], ctx: PageContext) -> str:
    k, least = len(rec["steps"]), tsne_min_snapshots(summary)
    maps = {m: v for m, v in rec["maps"].items() if m != "tsne" or k >= least}
    if not maps:
        return ""
    titles = {
        m: "PCA" if m != "tsne" else f"t-SNE, perplexity {fmt(v['spiral'].get('perplexity'))}"
        for m, v in maps.items()
    }
    rows = []
    for m, v in maps.items():
        s = v.get("spiral") or {}
        rows.append(
            [
                titles[m],
                s.get("winding_turns"),
                s.get("null_mean"),
                s.get("null_q95"),
                fmt_p(s.get("p_value"), s.get("min_p")),
                s.get("n_null"),
            ]
        )
    nulls = sorted({str(v["spiral"].get("null")) for v in maps.values() if v.get("spiral", {}).get("null")})
    null = f" ({html.escape(', '.join(nulls))} null)" if nulls else ""
    body = (
        "<p>Spiral test: |winding| of the map about its centroid against walks with the observed step sizes"
        f"{null}, embedded the same way (a random walk already winds about half a turn on PCA).</p>"
        + table(["map", "|winding| (turns)", "null mean", "null 95% quantile", "p", "null walks"], rows)
    )
    if (summary.get("options") or {}).get("tsne", True) and "tsne" not in maps:
        # below the minimum here, or after warm-up (the analysis counts those and leaves the map out)
        ctx.tsne_skipped.append((run, k))
        body += (
            f"<p class=notes>t-SNE map and test not drawn: fewer than {least} snapshots "
            f'(<a href="#{anchor("tsne-note")}">why</a>).</p>'
        )
    coords = {m: v["coords"] for m, v in maps.items()}
    # a map may leave out the snapshots before warm-up (spiral "n_left_out"): its rows are the last ones
    n = min(len(c) for c in coords.values())
    coords = {m: c[len(c) - n :] for m, c in coords.items()}
    body += ctx.plots.div(map_figure(run, coords, rec["steps"][k - n :], texts[k - n :], titles), height=460)
    body += png_links([ctx.rel(f) for f in rec.get("figures") or [] if f.startswith("map_")])
    return ctx.section(anchor("maps", run), "Maps and spiral test", body, level=4)


def _layers_section(run: str, rec: dict, summary: dict, ctx: PageContext) -> str:
    lt, units = rec["layer_threads"], summary.get("units", "")
    t, thirds = lt.get("test") or {}, lt.get("thirds") or {}
    kind = "all" if t.get("exact") else "random"
    body = table(
        [
            "early",
            "middle",
            "last",
            f"non-adjacent pairs ({units})",
            "thread score (adjacent / non-adjacent)",
            "null mean (shuffled layers)",
            "p",
            "layer orders",
        ],
        [
            [
                thirds.get("early"),
                thirds.get("middle"),
                thirds.get("last"),
                lt.get("nonadjacent_kl"),
                t.get("thread_score"),
                t.get("null_mean"),
                fmt_p(t.get("p_value"), t.get("min_p")),
                f"{t.get('n_perms')} ({kind})",
            ]
        ],
    )
    if t.get("note"):
        body += f"<p class=notes>{html.escape(t['note'])}</p>"
    body += (
        "<p>Adjacent-layer KL (cf. the paper's Table 3) on a log axis: the embedding transition is often "
        "orders of magnitude above the others, which a linear axis would flatten to zero.</p>"
    )
    body += ctx.plots.div(layers_figure(run, lt, units), height=440)
    body += png_links([ctx.rel(f) for f in rec.get("figures") or [] if f.startswith("threads_")])
    return ctx.section(anchor("layers", run), "Layers: threads of adjacent layers", body, level=4)


def _exponent_verdict(o: dict) -> str:
    """The analysis' verdict on c_LL < c_W when it gives one (its test's "holds"), else the interval's."""
    if o.get("holds") is not None:
        return "yes" if o["holds"] else f"not shown{': ' + o['reason'] if o.get('reason') else ''}"
    lo, hi = o.get("lo"), o.get("hi")
    if lo is None or hi is None:
        return "–"
    return "yes" if lo > 0 else ("no (reversed)" if hi < 0 else "not resolved")


def _exponents_section(run: str, rec: dict, summary: dict, ctx: PageContext) -> str:
    pct = f"{float((summary.get('options') or {}).get('level') or 0.95):.0%}"
    rows = []
    for space, d in (rec.get("diffusion") or {}).items():
        s, used = d.get("summary") or {}, d.get("fits_used") or {}
        rows.append(
            [
                space,
                d.get("source"),
                interval(s.get("median"), s.get("ci_low"), s.get("ci_high")),
                used.get("n"),
                f"{used.get('t0_first')}–{used.get('t0_last')}",
                used.get("window"),
                used.get("min_t0"),
                used.get("full_windows"),
            ]
        )
    body = table(
        [
            "space",
            "from",
            f"median c [{pct}]",
            "fits",
            "start steps",
            "window",
            "starts from step",
            "full windows only",
        ],
        rows,
    )
    o = rec.get("exponent_order") or {}
    if o.get("n_starts"):
        body += table(
            [
                "c_LL < c_W",
                "median c_LL",
                "median c_W",
                f"c_W − c_LL [{pct}]",
                "p",
                "test",
                "starts",
            ],
            [
                [
                    _exponent_verdict(o),
                    o.get("small"),
                    o.get("large"),
                    interval(o.get("diff"), o.get("lo"), o.get("hi")),
                    fmt_p(o.get("p_value"), o.get("min_p") or (1 / o["n_boot"] if o.get("n_boot") else None)),
                    o.get("test") or f"share of {o.get('n_boot')} bootstrap resamples with c_W ≤ c_LL",
                    o.get("n_starts"),
                ]
            ],
        )
    for f in rec.get("figures") or []:
        if f.startswith("diffusion_") and (ctx.folder / f).exists():
            body += img(ctx.folder / f, ctx.rel(f))
    return ctx.section(anchor("exponents", run), "Diffusion exponents (ln y = c ln Δt + b)", body, level=4)


def _scale_place(run: str, k: int, summary: dict, ctx: PageContext) -> str:
    """The store's pairs on the KL scale: each pair for one snapshot, per setting for a trajectory."""
    scale = summary.get("kl_scale") or {}
    pairs = [p for p in scale.get("pairs") or [] if run in (p.get("store_a"), p.get("store_b"))]
    if not pairs:
        return ""
    units, limit = scale.get("units") or summary.get("units", ""), max_nats_per_token(summary)
    label = {r.get("setting"): r.get("label") or r.get("setting") for r in scale.get("summary") or []}
    if k == 1:
        rows = [
            [
                label.get(p.get("setting"), p.get("setting")),
                p.get("layer"),
                f"{p.get('store_a')}@{p.get('step_a')}",
                f"{p.get('store_b')}@{p.get('step_b')}",
                flagged(interval(p.get("kl"), p.get("lo"), p.get("hi")), ctx.flag(row_flag(p, limit)), limit),
                p.get("nats_per_token"),
            ]
            for p in pairs
        ]
        body = table(["setting", "layer", "a", "b", f"KL ({units}) [interval]", "nats/token"], rows)
    else:
        by: dict[str, list[dict]] = {}
        for p in pairs:
            by.setdefault(label.get(p.get("setting"), p.get("setting")), []).append(p)
        rows = []
        for name, ps in by.items():
            kls = sorted(p["kl"] for p in ps if isinstance(p.get("kl"), int | float))
            n_flag = sum(bool(row_flag(p, limit)) for p in ps)
            median = statistics.median(kls) if kls else None
            rows.append(
                [
                    name,
                    len(ps),
                    median,
                    min(kls, default=None),
                    max(kls, default=None),
                    flagged(str(n_flag), ctx.flag(n_flag > 0), limit) if n_flag else "0",
                ]
            )
        body = table(
            ["setting", "pairs", f"median ({units})", "min", "max", "beyond the checked range"], rows
        )
    link = f'<p>See the whole <a href="#{anchor("kl-scale")}">KL scale</a>.</p>'
    return ctx.section(anchor("scale-place", run), "Its place on the KL scale", body + link, level=4)


def _has_fits(rec: dict) -> bool:
    return any((d.get("fits_used") or {}).get("n") for d in (rec.get("diffusion") or {}).values())


def run_section(run: str, rec: dict, summary: dict, ctx: PageContext) -> Markup:
    """Returns the section of one store."""
    steps = rec.get("steps") or []
    k = len(steps)
    kl_prev = rec.get("consecutive_kl")
    kl_parent = (rec.get("kl_to_parent") or {}).get("kl")
    texts = point_texts(run, steps, ctx.curves.get(run), kl_prev, kl_parent, summary.get("units", ""))
    parts = [_overview(run, rec, summary, ctx)]
    if k == 1:
        parts.append(
            "<p>One snapshot: its layers and its place on the KL scale (maps, exponents and consecutive "
            "pairs need a trajectory).</p>"
        )
    if k >= 2:
        parts.append(_kl_section(run, rec, summary, texts, ctx))
    if k >= 3 and rec.get("maps"):
        parts.append(_maps_section(run, rec, summary, texts, ctx))
    if rec.get("layer_threads"):
        parts.append(_layers_section(run, rec, summary, ctx))
    if _has_fits(rec):
        parts.append(_exponents_section(run, rec, summary, ctx))
    parts.append(_scale_place(run, k, summary, ctx))
    shown = [
        n
        for n in rec.get("notes") or []
        if (k > 1 or not n.startswith(_TRAJECTORY_NOTES)) and not n.startswith(_SAID_ONCE)
    ]
    parts.append(notes(shown))
    return ctx.section(anchor("run", run), run, "".join(parts))
