"""The page built from hand-made summaries (no analysis run): verdict table, what is shown for which store,
beyond-range flags, log axes, hover texts, the KL scale, and that the page is one offline file."""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from report_summaries import expected_plots, make_report, make_summary

from trajlab.analysis.findings import findings as findings_from_records
from trajlab.report.page import render_page
from trajlab.report.plots import kl_scale_figure, layers_figure, point_texts

# Page budget beyond plotly.js for these three small stores (docs/report.md states the demo's budget).
SMALL_PAGE_EXTRA = 300_000


class _Page(HTMLParser):
    """Collects ids, links, verdict rows (data-finding -> cell texts) and plot divs of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids, self.links, self.rows, self.plot_divs = set(), [], {}, 0
        self._row, self._cell = None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and (a.get("href") or "").startswith("#"):
            self.links.append(a["href"][1:])
        if tag == "div" and "plotly-graph-div" in (a.get("class") or ""):
            self.plot_divs += 1
        if tag == "tr" and "data-finding" in a:
            self._row = a["data-finding"]
            self.rows[self._row] = []
        if tag == "td" and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.rows[self._row].append("".join(self._cell).strip())
            self._cell = None
        if tag == "tr":
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def render(tmp_path: Path, **kw) -> tuple[str, list[dict], int, _Page]:
    page, findings, n_plots = render_page(make_report(**kw), tmp_path, ["/stores"])
    parsed = _Page()
    parsed.feed(page)
    return page, findings, n_plots, parsed


def test_verdict_table_holds_every_finding_with_a_working_link(tmp_path):
    summary = make_summary()
    page, findings, _, parsed = render(tmp_path)
    assert [f["id"] for f in findings] == [f["id"] for f in summary["findings"]] == list(parsed.rows)
    for f in summary["findings"]:
        cells = parsed.rows[f["id"]]
        assert cells[0] == f["title"] and cells[2] == f["unit"] and str(f["n"]) == cells[3]
        assert (
            cells[5].startswith(f"{f['p_value']:.4g}") and f"smallest reachable {f['min_p']:.2g}" in cells[5]
        )
        assert f["verdict"] in cells[6] and cells[6].startswith("✓" if f["holds"] else "✗")
    assert all(target in parsed.ids for target in parsed.links), set(parsed.links) - parsed.ids
    for sid in ("kl-scale", "run-pre", "run-one", "finetune"):  # the analysis' section ids exist on the page
        assert f'href="#{sid}"' in page and sid in parsed.ids
    assert "⚠" in parsed.rows["finetune-vs-random"][1]  # a flagged finding keeps its flag


def test_rows_are_built_from_the_records_of_an_older_summary(tmp_path):
    """A summary without "findings" gets the rows trajlab.analysis.findings computes from its records."""
    rows = {f["id"]: f for f in findings_from_records(make_summary(findings=False))}
    assert {"spiral-pca-pre", "spiral-tsne-pre", "spiral-pca-ft", "layer-order-one", "parent-ft"} <= set(rows)
    assert rows["spiral-pca-pre"]["holds"] is False and rows["spiral-tsne-pre"]["holds"] is True  # 0.3, 0.02
    assert rows["layer-order-one"]["holds"] is True and rows["layer-order-one"]["n"] == 500
    assert rows["parent-ft"]["value"].startswith("0.07 bits/byte")
    _, findings, _, parsed = render(tmp_path, findings=False)
    assert list(parsed.rows) == [f["id"] for f in findings] == list(rows)
    assert all(target in parsed.ids for target in parsed.links)


def test_each_store_gets_only_the_sections_that_apply(tmp_path):
    page, _, n_plots, parsed = render(tmp_path)
    assert n_plots == expected_plots(make_summary()) == parsed.plot_divs == 8
    assert f"data-plots-expected={n_plots}" in page
    assert {
        "kl-pre",
        "maps-pre",
        "layers-pre",
        "exponents-pre",
        "kl-ft",
        "maps-ft",
        "layers-one",
    } <= parsed.ids
    assert not {"kl-one", "maps-one", "exponents-one", "exponents-ft"} & parsed.ids
    one = page[page.index('id="run-one"') : page.index('id="joint-map"')]
    assert "maps: need" not in one and "weight space" not in one and "layer threads: all layers stored" in one
    # group notes: a one-snapshot store's warm-up and max_steps warnings are left out, others stay
    assert "one: warmup_steps" not in page and "one: max_steps" not in page
    assert "pre: a group note that applies" in page
    assert page.count("t-SNE maps and their spiral tests are drawn only") == 1 and "ft (7 snapshots)" in page
    assert "t-SNE, perplexity 3.67" in page and "t-SNE, perplexity 2" not in page


def test_kl_beyond_the_checked_range_is_flagged_where_it_appears(tmp_path):
    page, _, _, _ = render(tmp_path)
    # KL first->last 20 bits/byte at 500 bytes and 125 tokens per text: 20 * 500 ln 2 / 125 = 55 nats/token
    assert 20 * 500 * math.log(2) / 125 > 1 > 0.05 * 500 * math.log(2) / 125
    overview = page[page.index('id="run-pre"') : page.index('id="kl-pre"')]
    assert re.search(r"<span class=beyond[^>]*>20 ⚠</span>", overview)
    assert re.search(r"<td>0.05</td>", overview)  # the first consecutive KL, 0.14 nats/token: no flag
    assert re.search(
        r"<span class=beyond[^>]*>3 \[2.5, 3.5\] ⚠</span>", page
    )  # the comparison row's own flag
    assert re.search(r"<span class=beyond[^>]*>900 \[800, 1000\] ⚠</span>", page)  # its place on the KL scale
    body = page[page.index("</table></section>") :]  # after the verdict table
    n = int(re.search(r"(\d+) KL values lie beyond the range", page).group(1))
    assert n == body.count("<span class=beyond") == 5  # pre: 20 and 0.55; comparison; 900; ft: 1.8


def test_layer_kl_on_a_log_axis_and_a_colour_bar_only_for_several_snapshots():
    summary = make_summary()
    pre, one = summary["runs"]["pre"]["layer_threads"], summary["runs"]["one"]["layer_threads"]
    fig_pre, fig_one = layers_figure("pre", pre, "bits/byte"), layers_figure("one", one, "bits/byte")
    assert fig_pre.layout.yaxis2.type == "log" and fig_one.layout.yaxis2.type == "log"
    shown = [
        t.marker.showscale for t in fig_pre.data if t.marker is not None and t.marker.showscale is not None
    ]
    assert shown == [True]
    assert not any(t.marker is not None and t.marker.showscale for t in fig_one.data)
    kl_lines = [t for t in fig_one.data if t.xaxis == "x2"]
    assert list(kl_lines[0].y) == pytest.approx(one["adjacent_kl"][0])  # 900 and 0.01..0.05 on one axis


def test_hover_shows_run_step_losses_and_kl_to_previous_and_parent():
    summary, report = make_summary(), make_report()
    pre = summary["runs"]["pre"]
    texts = point_texts(
        "pre", pre["steps"], report["training"]["pre"], pre["consecutive_kl"], None, "bits/byte"
    )
    # step 50: train loss logged at 50 (5 - 0.5), val loss last logged at 40 (5.1 - 0.4), KL to step 40 = 0.25
    assert texts[5] == (
        "<b>pre</b> step 50<br>train loss 4.5 nats/token<br>val loss 4.7 nats/token (logged at "
        "step 40)<br>KL to previous 0.25 bits/byte"
    )
    ft = summary["runs"]["ft"]
    t_ft = point_texts(
        "ft",
        ft["steps"],
        report["training"]["ft"],
        ft["consecutive_kl"],
        ft["kl_to_parent"]["kl"],
        "bits/byte",
    )
    assert t_ft[0].endswith("KL to previous –<br>KL to parent 0.01 bits/byte")
    assert "KL to parent 0.07 bits/byte" in t_ft[6]


def test_kl_scale_clips_at_a_floor_and_marks_flags_and_medians():
    scale = make_summary()["kl_scale"]
    fig, floor = kl_scale_figure(scale["summary"], scale["pairs"], "bits/byte")
    assert floor == 0.01  # the decade below the smallest positive KL, 0.02
    traces = {t.name: t for t in fig.data}
    assert list(traces["at or below the floor"].x) == [0.01]  # the KL of 0 (identical snapshots)
    assert list(traces["beyond the checked range"].x) == [900.0]
    assert sorted(traces["pairs"].x) == [0.02, 0.03, 0.05]
    assert list(traces["median"].x) == [0.03, 0.05] and fig.layout.xaxis.type == "log"


def test_the_page_is_one_offline_file_within_its_budget(tmp_path):
    from plotly.offline import get_plotlyjs

    page, _, _, _ = render(tmp_path)
    js = get_plotlyjs()
    assert page.count(js) == 1  # plotly.js inline, once
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=[\"']?(https?:)?//", page)  # no CDN, no fetch
    assert len(page.encode()) - len(js.encode()) < SMALL_PAGE_EXTRA
