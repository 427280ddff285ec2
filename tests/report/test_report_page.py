"""write_report on three real stores (conftest.py): the page's findings, plots, hover losses and size; and the
page in headless Chromium with the network cut off (marked slow: the analysis and its PNGs take ~20 s)."""

from __future__ import annotations

import html
import json
import re

import pytest
from report_summaries import expected_plots

from trajlab.report.findings import findings_of
from trajlab.report.page import PAGE_BUDGET_BYTES

pytestmark = pytest.mark.slow


def test_page_holds_the_analysis_findings_and_its_plots(report_dir):
    summary = json.loads((report_dir / "summary.json").read_text())
    page = (report_dir / "report.html").read_text()
    group = summary["groups"][0]["summary"]
    ids = [f["id"] for f in findings_of(group)]
    assert [f["id"] for f in summary["findings"]] == ids and ids
    assert re.findall(r'data-finding="([^"]+)"', page) == [html.escape(i) for i in ids]
    assert summary["page"]["plots"] == expected_plots(group) == page.count('class="plotly-graph-div"')
    assert summary["page"]["bytes"] == (report_dir / "report.html").stat().st_size < PAGE_BUDGET_BYTES
    # hover at pretrain's last snapshot (step 230): train loss logged there (5 -> 2 over 24 rows); validation
    # loss logged every 40 steps, last at step 200: 5 - 3 * 20 / 23 + 0.1
    hover = "step 230<br>train loss 2 nats/token<br>val loss 2.491 nats/token (logged at step 200)"
    assert (
        json.dumps(hover)[1:-1].replace("<", "\\u003c").replace(">", "\\u003e").replace("/", "\\u002f")
        in page
    )
    # the one-snapshot import: layers only; t-SNE is off (tsne=False), so nothing is said about it
    assert (
        'id="layers-imported"' in page and 'id="kl-imported"' not in page and 'id="maps-imported"' not in page
    )
    assert "t-SNE maps and their spiral tests are drawn only" not in page


def test_page_renders_offline_in_chromium(report_dir, tmp_path):
    from test_report import _needs_browser, render

    _needs_browser()
    page = report_dir / "report.html"
    png = tmp_path / "report.png"
    dom, console = render(page, png, tmp_path, 1400, 3000)
    summary = json.loads((report_dir / "summary.json").read_text())
    assert console == []
    drawn = int(re.search(r'data-plots="(\d+)"', dom).group(1))
    assert (
        drawn == summary["page"]["plots"] == len(re.findall(r'<div[^>]*class="[^"]*js-plotly-plot', dom)) > 0
    )
    assert 'data-broken="0"' in dom
    table = dom[
        dom.index('<section id="summary">') : dom.index("</section>", dom.index('<section id="summary">'))
    ]
    for f in summary["groups"][0]["summary"]["findings"]:
        row = re.search(rf'<tr data-finding="{re.escape(html.escape(f["id"]))}">(.*?)</tr>', table).group(1)
        text = html.unescape(re.sub(r"<[^>]+>", "", row))
        assert f["title"] in text and f["verdict"] in text and f["unit"] in text
    from matplotlib.image import imread

    pixels = imread(png)
    assert pixels.shape[:2] == (3000, 1400) and pixels[..., :3].std() > 0.05
