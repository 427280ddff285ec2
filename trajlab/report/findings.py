"""The verdict table at the top of the page: each finding in words with its unit, n, test, p and verdict.

The analysis reports its findings in summary["findings"] (a list of {"id", "title", "unit", "n", "test",
"p_value", "min_p", "verdict", "holds", "section", "value"}); the page shows them as they are. Summaries
written before that key existed get rows built here from the per-run records (`fallback_findings`), by the
same rules: a test holds at p <= 1 - level, an ordering by its interval.
"""

from __future__ import annotations

import html

from trajlab.report.html import Markup, anchor, fmt, fmt_p, table
from trajlab.report.values import beyond, row_flag, tsne_min_snapshots

HEADER = ["finding", "estimate", "unit", "n", "test", "p", "verdict"]


def _alpha(summary: dict) -> float:
    return 1.0 - float((summary.get("options") or {}).get("level") or 0.95)


def _holds(p, alpha: float, min_p=None) -> bool | None:
    if p is None:
        return None
    if p <= alpha:
        return True
    return None if min_p is not None and min_p > alpha else False


def _spiral_rows(run: str, rec: dict, summary: dict) -> list[dict]:
    rows, alpha = [], _alpha(summary)
    k = len(rec.get("steps") or [])
    for method, m in (rec.get("maps") or {}).items():
        sp = m.get("spiral") or {}
        if method == "tsne" and k < tsne_min_snapshots(summary):
            continue  # not drawn, not tested: too few points for t-SNE
        p, min_p = sp.get("p_value"), sp.get("min_p")
        holds = _holds(p, alpha, min_p)
        name = "t-SNE" if method == "tsne" else method.upper()
        verdict = sp.get("verdict") or (
            f"the {name} map winds more than random walks with the same step sizes"
            if holds
            else f"the {name} map winds no more than random walks with the same step sizes"
        )
        rows.append(
            {
                "id": f"spiral-{method}-{run}",
                "title": f"{run}: spiral on the {name} map",
                "unit": "snapshots",
                "n": k,
                "test": f"|winding| vs {sp.get('n_null')} random walks with the same step sizes",
                "p_value": p,
                "min_p": min_p,
                "verdict": verdict,
                "holds": holds,
                "section": anchor("maps", run),
                "value": f"{fmt(sp.get('winding_turns'))} turns "
                f"(random walks: 95% below {fmt(sp.get('null_q95'))})",
            }
        )
    return rows


def _thread_rows(run: str, rec: dict, summary: dict) -> list[dict]:
    t = (rec.get("layer_threads") or {}).get("test")
    if not t:
        return []
    alpha, p, min_p = _alpha(summary), t.get("p_value"), t.get("min_p")
    holds = _holds(p, alpha, min_p)
    if holds is None and p is not None:
        verdict = f"cannot be shown with this few layers (smallest reachable p {fmt(min_p)})"
    else:
        verdict = t.get("verdict_order") or (
            "adjacent layers are closer than in shuffled layer orders"
            if holds
            else "adjacent layers are no closer than in shuffled layer orders"
        )
    kind = "all" if t.get("exact") else "random"
    rows = [
        {
            "id": f"layer-order-{run}",
            "title": f"{run}: layer order (threads)",
            "unit": "layer orders",
            "n": t.get("n_perms"),
            "test": f"thread score vs {t.get('n_perms')} ({kind}) shuffled layer orders",
            "p_value": p,
            "min_p": min_p,
            "verdict": verdict,
            "holds": holds,
            "section": anchor("layers", run),
            "value": f"thread score {fmt(t.get('thread_score'))} (shuffled: {fmt(t.get('null_mean'))})",
        }
    ]
    if t.get("walk_p_less") is not None:
        wp = t["walk_p_less"]
        walk_holds = _holds(wp, alpha, t.get("walk_min_p"))
        rows.append(
            {
                "id": f"layer-walk-{run}",
                "title": f"{run}: layers beyond a random walk",
                "unit": "layer orders",
                "n": t.get("walk_n_null") or t.get("n_perms"),
                "test": "thread score vs random walks across layers",
                "p_value": wp,
                "min_p": t.get("walk_min_p"),
                "holds": walk_holds,
                "section": anchor("layers", run),
                "verdict": t.get("verdict_walk")
                or (
                    "threads are tighter than a random walk across layers"
                    if walk_holds
                    else "no tighter than a random walk across layers"
                ),
                "value": f"thread score {fmt(t.get('thread_score'))}",
            }
        )
    return rows


def _exponent_row(run: str, rec: dict) -> list[dict]:
    o = rec.get("exponent_order") or {}
    if not o.get("n_starts"):
        return []
    lo, hi = o.get("lo"), o.get("hi")
    if o.get("holds") is not None:  # the analysis' own test decided
        holds = bool(o["holds"])
    else:
        holds = None if lo is None or hi is None else (True if lo > 0 else (False if hi < 0 else None))
    verdict = (
        o.get("verdict")
        or (f"not shown: {o['reason']}" if o.get("reason") and not holds else None)
        or {
            True: "c_LL < c_W: subdiffusive in LL space despite weight drift",
            False: "c_LL > c_W: the reverse of the paper's finding",
            None: "not resolved: the interval of c_W − c_LL contains 0",
        }[holds]
    )
    n_boot = o.get("n_boot")
    return [
        {
            "id": f"exponents-{run}",
            "title": f"{run}: c_LL < c_W (diffusion exponents)",
            "unit": o.get("unit") or "start steps",
            "n": o.get("n_starts"),
            "test": o.get("test")
            or f"{n_boot} bootstrap resamples of start steps" + (" (paired)" if o.get("paired") else ""),
            "p_value": o.get("p_value"),
            "min_p": o.get("min_p") or (1.0 / n_boot if n_boot else None),
            "verdict": verdict,
            "holds": holds,
            "section": anchor("exponents", run),
            "value": f"c_LL {fmt(o.get('small'))}, c_W {fmt(o.get('large'))}; "
            f"c_W − c_LL {fmt(o.get('diff'))} [{fmt(lo)}, {fmt(hi)}]",
        }
    ]


def _parent_row(run: str, rec: dict, summary: dict) -> list[dict]:
    tp = rec.get("kl_to_parent") or {}
    kl = tp.get("kl") or []
    if not kl:
        return []
    units = summary.get("units", "")
    flag = beyond(kl[-1], summary, rec)
    return [
        {
            "id": f"parent-{run}",
            "title": f"{run}: distance from its parent {tp.get('parent')}@{tp.get('step')}",
            "unit": "snapshots",
            "n": len(kl),
            "test": "Var/2 estimate (no test)",
            "p_value": None,
            "min_p": None,
            "holds": None,
            "section": anchor("kl", run),
            "beyond_checked_range": flag,
            "verdict": f"moved {fmt(kl[-1])} {units} from its parent by the last snapshot",
            "value": f"{fmt(kl[-1])} {units} (first snapshot {fmt(kl[0])})",
        }
    ]


def _finetune_row(summary: dict) -> list[dict]:
    ft = summary.get("finetune_vs_base") or {}
    o = ft.get("order_runs") or ft.get("order")  # runs as units when the analysis tested them
    if not o:
        return []
    p = o.get("p_value")
    holds = bool(o["holds"]) if o.get("holds") is not None else _holds(p, _alpha(summary))
    n_boot = o.get("n_boot")
    n = " vs ".join(map(str, o["n_units"])) if o.get("n_units") else (ft.get("pairs") or {}).get("n")
    return [
        {
            "id": "finetune-vs-random",
            "title": "fine-tunes are closer to their base than random pairs",
            "unit": o.get("unit") or "texts (runs fixed)",
            "n": n,
            "test": o.get("test") or f"{n_boot} paired text bootstrap resamples",
            "p_value": p,
            "min_p": o.get("min_p") or (1.0 / n_boot if n_boot else None),
            "holds": holds,
            "section": anchor("finetune"),
            "verdict": o.get("verdict")
            or (
                "mean KL of fine-tune pairs is below that of random pairs"
                if holds
                else "not shown: fine-tune pairs are not clearly closer than random pairs"
            ),
            "value": f"difference {fmt(o.get('diff'))} [{fmt(o.get('lo'))}, {fmt(o.get('hi'))}]",
        }
    ]


def _ordering_rows(summary: dict) -> list[dict]:
    rows = []
    for i, o in enumerate((summary.get("kl_scale") or {}).get("orderings") or []):
        title = o.get("title") or f"{o.get('smaller', '?')} < {o.get('larger', '?')}"
        p = o.get("p_value")
        rows.append(
            {
                "id": o.get("id") or f"kl-scale-order-{i}",
                "title": f"KL scale: {title}",
                "unit": o.get("unit") or "pairs of runs",
                "n": o.get("n"),
                "test": o.get("test") or "permutation",
                "p_value": p,
                "min_p": o.get("min_p"),
                "holds": o.get("holds", _holds(p, _alpha(summary))),
                "verdict": o.get("verdict") or "",
                "section": anchor("kl-scale"),
                "value": o.get("value") or "",
            }
        )
    return rows


def fallback_findings(summary: dict) -> list[dict]:
    """Rows of the verdict table built from the per-run records of a summary that has no "findings"."""
    rows: list[dict] = []
    for run, rec in (summary.get("runs") or {}).items():
        rows += _spiral_rows(run, rec, summary) + _thread_rows(run, rec, summary)
        rows += _exponent_row(run, rec) + _parent_row(run, rec, summary)
    return rows + _finetune_row(summary) + _ordering_rows(summary)


def findings_of(summary: dict) -> list[dict]:
    """The analysis' findings when it reports them, else the fallback rows."""
    given = summary.get("findings")
    return list(given) if isinstance(given, list) else fallback_findings(summary)


_VERDICT = {True: ("holds", "✓"), False: ("fails", "✗"), None: ("open", "–")}


def verdict_table(findings: list[dict], ids: set[str], limit: float = 1.0) -> Markup:
    """The verdict table; each title links to its section when the page has it (ids: the page's anchors)."""
    rows, keys = [], []
    for f in findings:
        section = f.get("section")
        title = html.escape(str(f.get("title") or f.get("id") or "finding"))
        name = Markup(f'<a href="#{html.escape(section)}">{title}</a>' if section in ids else title)
        value = html.escape(fmt(f.get("value")))
        if row_flag(f, limit):
            value = (
                f'<span class=beyond title="beyond the range where Var/2 was checked against the exact KL">'
                f"{value} ⚠</span>"
            )
        cls, sign = _VERDICT[f.get("holds") if f.get("holds") in (True, False) else None]
        verdict = Markup(
            f'<span class="verdict {cls}">{sign} {html.escape(str(f.get("verdict") or ""))}</span>'
        )
        rows.append(
            [
                name,
                Markup(value),
                f.get("unit"),
                f.get("n"),
                f.get("test"),
                fmt_p(f.get("p_value"), f.get("min_p")),
                verdict,
            ]
        )
        keys.append(str(f.get("id")))
    return table(HEADER, rows, cls="verdicts", row_ids=keys)


def summary_paragraph(
    stores: list[tuple[str, int, int | None]], findings: list[dict], units: list[str], n_flagged: int
) -> Markup:
    """One paragraph: what the page covers and how many findings hold.

    Args:
        stores: (run, snapshots, layers stored or None) per store.
        findings: the verdict table's rows.
        units: KL units of the probe groups.
        n_flagged: KL values on the page beyond the checked range.
    """

    def describe(run: str, k: int, layers: int | None) -> str:
        what = f"{k} snapshot{'s' if k != 1 else ''}"
        return f"{html.escape(run)} ({what}{f', {layers} layers' if layers else ''})"

    parts = [
        f"This page covers {len(stores)} store{'s' if len(stores) != 1 else ''}: "
        + ", ".join(describe(*s) for s in stores)
        + f"; KL in {html.escape(' and '.join(sorted(set(units))))} "
        "(Var/2 estimator)."
    ]
    count = {v: sum(1 for f in findings if f.get("holds") is v) for v in (True, False)}
    if findings:
        parts.append(
            f"Of {len(findings)} findings, {count[True]} hold, {count[False]} do not, and "
            f"{len(findings) - count[True] - count[False]} are open or descriptive."
        )
        held = [html.escape(str(f.get("title"))) for f in findings if f.get("holds") is True]
        if held:
            parts.append("Holding: " + "; ".join(held) + ".")
    if n_flagged:
        parts.append(
            f"{n_flagged} KL value{'s' if n_flagged != 1 else ''} lie beyond the range where Var/2 was "
            "checked against the exact KL (marked ⚠): read them as large, not as exact."
        )
    return Markup("<p class=lede>" + " ".join(parts) + "</p>")
