"""The verdict table at the top of the page: each finding in words with its unit, n, test, p and verdict.

The analysis reports its findings in summary["findings"] (a list of {"id", "title", "unit", "n", "test",
"p_value", "min_p", "verdict", "holds", "section", "value"}); the page shows them as they are. Summaries
written before that key existed get the same rows from trajlab.analysis.findings.
"""

from __future__ import annotations

import html

from trajlab.analysis.findings import findings
from trajlab.report.html import Markup, fmt, fmt_p, table
from trajlab.report.values import row_flag

HEADER = ["finding", "estimate", "unit", "n", "test", "p", "verdict"]


def findings_of(summary: dict) -> list[dict]:
    """The analysis' findings (summary["findings"]), or for a summary written before that key existed, the
    same rows computed now by trajlab.analysis.findings from its per-run records."""
    given = summary.get("findings")
    return list(given) if isinstance(given, list) else findings(summary)


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
