"""HTML pieces of the report page: number formatting, tables, anchors, flags and embedded images.

Every cell goes through `cell` (escaped text) or is built from `Markup` (HTML this module or its callers
made), so a run name or a note can never inject markup.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

from trajlab.analysis.findings import section_id

# Shown next to any KL estimate beyond the range where Var/2 was checked against the exact KL.
FLAG_TITLE = "beyond the checked range: Var/2 was checked against the exact KL only up to {limit} nat/token"


class Markup(str):
    """A string that is already HTML: `cell` passes it through unescaped."""


def fmt(x) -> str:
    """Returns plain text for a number or value: 4 significant digits, "–" for missing or non-finite."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def cell(x) -> str:
    """Returns x as HTML: Markup unchanged, anything else formatted and escaped."""
    return x if isinstance(x, Markup) else html.escape(fmt(x))


def fmt_p(p, min_p=None) -> Markup:
    """Returns a p-value cell: p with the smallest p the design can reach; never "p = 0".

    A bootstrap share of 0 (no resample crossed) is written "< 1/n" through min_p when known.
    """
    if p is None or (isinstance(p, float) and not math.isfinite(p)):
        return Markup("–")
    small = f" <small>(smallest reachable {min_p:.2g})</small>" if isinstance(min_p, int | float) else ""
    if p <= 0:
        bound = f"{min_p:.2g}" if isinstance(min_p, int | float) and min_p > 0 else "the resolution"
        return Markup(f"&lt; {bound}")
    return Markup(f"{p:.4g}{small}")


def interval(x, lo, hi) -> str:
    return f"{fmt(x)} [{fmt(lo)}, {fmt(hi)}]"


def flagged(value: str, flag: bool | None, limit: float = 1.0) -> Markup:
    """Returns a value cell, marked with a warning sign and a tooltip when flag is true."""
    if not flag:
        return Markup(html.escape(value))
    title = html.escape(FLAG_TITLE.format(limit=fmt(limit)))
    return Markup(f'<span class=beyond title="{title}">{html.escape(value)} ⚠</span>')


def table(header: list[str], rows: list[list], cls: str = "", row_ids: list[str] | None = None) -> Markup:
    """Returns a table; header cells are escaped text, row cells go through `cell`."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, r in enumerate(rows):
        attr = f' data-finding="{html.escape(row_ids[i])}"' if row_ids else ""
        body.append(f"<tr{attr}>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>")
    klass = f" class={cls}" if cls else ""
    return Markup(f"<table{klass}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def link(text: str, target: str) -> Markup:
    return Markup(f'<a href="#{html.escape(target)}">{html.escape(text)}</a>')


def img(path: Path, caption: str) -> Markup:
    """Returns a figure with the PNG embedded as a data URI (the page stays one file)."""
    data = base64.b64encode(path.read_bytes()).decode()
    return Markup(
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def png_links(names: list[str]) -> Markup:
    """Returns a line of relative links to static PNGs beside the page (for papers)."""
    if not names:
        return Markup("")
    refs = ", ".join(f'<a href="{html.escape(n)}">{html.escape(Path(n).name)}</a>' for n in names)
    return Markup(f"<p class=static>Static PNG for papers: {refs}</p>")


def notes(items: list[str]) -> Markup:
    if not items:
        return Markup("")
    return Markup("<ul class=notes>" + "".join(f"<li>{html.escape(n)}</li>" for n in items) + "</ul>")


def anchor(kind: str, run: str | None = None) -> str:
    """Returns the id of a page section: ``kind`` (``comparison``) or ``kind-<run slug>`` (``maps-pretrain``).

    Kinds: summary, run, kl, maps, layers, exponents, scale-place (per run); comparison, finetune, kl-scale,
    joint-map, training (per page or probe group). docs/report.md lists them for the analysis' "section" keys.
    """
    return section_id(kind, run)
