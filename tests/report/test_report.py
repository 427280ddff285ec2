"""The demo pipeline end to end on the debug recipe, its report's numbers, and the page in a real browser."""

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from trajlab import analysis as ta
from trajlab.store import TrajectoryStore


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from trajlab.report.demo import run_demo

    out = tmp_path_factory.mktemp("demo")
    return run_demo(out, debug=True)


def test_demo_writes_report_and_summary(demo):
    report = Path(demo["report"])
    assert report.name == "report.html" and report.exists()
    summary = json.loads((report.parent / "summary.json").read_text())
    assert {"groups", "training", "figures"} <= set(summary)
    for fig in summary["figures"]:
        assert (report.parent / fig).stat().st_size > 1000, fig
    toy = next(g["summary"] for g in summary["groups"] if "pretrain" in g["summary"]["runs"])
    assert {"pretrain", "finetune"} <= set(toy["runs"])
    rec = toy["runs"]["pretrain"]
    for key in ("steps", "kl_matrix", "consecutive_kl", "kl_to_first", "maps", "layer_threads", "diffusion"):
        assert key in rec, key
    assert {"ll", "weight"} <= set(rec["diffusion"])
    assert set(summary["training"]) >= {"pretrain", "finetune"}


def _kept(toy: dict, n_texts: int) -> np.ndarray:
    """The texts the analysis kept (its outlier handling drops a few by their jumps)."""
    kept = np.ones(n_texts, dtype=bool)
    kept[(toy.get("outliers") or {}).get("dropped") or []] = False
    return kept


def test_report_numbers_match_a_direct_computation(demo):
    out = Path(demo["report"]).parent
    summary = json.loads((out / "summary.json").read_text())
    toy = next(g["summary"] for g in summary["groups"] if "pretrain" in g["summary"]["runs"])
    store = TrajectoryStore.open(Path(demo["pretrain"]) / "trajectory")
    ll = store.loglik()
    q = toy["options"].get("clip_quantile")  # the authors' rule: clip the pretraining run at its 2% quantile
    ll = np.maximum(ll, np.quantile(ll, q)) if q else ll
    kept = _kept(toy, ll.shape[1])
    d = ll[1:, kept] - ll[:-1, kept]
    direct = d.var(axis=1) / 2 / (store.n_bytes[kept].mean() * np.log(2))  # Var/2 in bits per byte, ddof=0
    np.testing.assert_allclose(toy["runs"]["pretrain"]["consecutive_kl"], direct, rtol=1e-9, atol=1e-15)
    page = (out / "report.html").read_text()
    # The page's first-consecutive-KL cell is the summary's number.
    assert f"{direct[0]:.4g}" in page


def test_page_shows_each_finding_with_its_null_and_interval(demo):
    out = Path(demo["report"]).parent
    summary = json.loads((out / "summary.json").read_text())
    toy = next(g["summary"] for g in summary["groups"] if "pretrain" in g["summary"]["runs"])
    page = (out / "report.html").read_text()
    store = TrajectoryStore.open(Path(demo["pretrain"]) / "trajectory")
    o, rec = toy["options"], toy["runs"]["pretrain"]
    kept = _kept(toy, len(store.n_bytes))
    ll, nb = store.loglik()[:, kept], store.n_bytes[kept]  # maps and layers use unclipped values
    spiral = ta.spiral_test(
        ll, "pca", o["spiral_n_null"], o["seed"], nb, steps=store.steps, warmup_steps=rec["warmup_steps"]
    )
    assert rec["maps"]["pca"]["spiral"]["p_value"] == pytest.approx(spiral["p_value"])
    assert rec["maps"]["pca"]["spiral"]["winding_turns"] == pytest.approx(spiral["winding_turns"])
    layers = store.loglik_all(steps=store.full_layer_steps())[:, :, kept]
    threads = ta.thread_test(layers, o["thread_n_null"], o["seed"], nb)
    assert rec["layer_threads"]["test"]["p_value"] == pytest.approx(threads["p_value"])
    for number in (
        spiral["winding_turns"],
        spiral["null_q95"],
        spiral["p_value"],
        threads["p_value"],
        threads["null_mean"],
    ):
        assert f"{number:.4g}" in page
    for row in toy["comparison"]:
        assert row["ci_lo_bits_per_byte"] <= row["kl_bits_per_byte"] <= row["ci_hi_bits_per_byte"]
        assert f"[{row['ci_lo_bits_per_byte']:.4g}, {row['ci_hi_bits_per_byte']:.4g}]" in page
    assert "adjacent / random" not in page and "winding (turns)" not in page  # no signed winding, no old rule


def test_training_curves_are_the_logged_losses(demo):
    out = Path(demo["report"]).parent
    summary = json.loads((out / "summary.json").read_text())
    import csv

    with open(Path(demo["pretrain"]) / "metrics.csv") as f:
        logged = [[int(r["step"]), float(r["val/loss"])] for r in csv.DictReader(f) if r["val/loss"]]
    assert summary["training"]["pretrain"]["val_loss"] == logged


def chromium() -> str | None:
    return next(
        (shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None
    )


def render(page: Path, png: Path, tmp: Path, width: int = 1280, height: int = 2400) -> tuple[str, list[str]]:
    """Load a page in headless Chromium with the network cut off: (DOM after load, console lines); also saves
    a screenshot. Any request beyond the file (a CDN script) fails and logs a console error."""
    exe = chromium()
    flags = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--proxy-server=127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        "--virtual-time-budget=10000",
        "--enable-logging=stderr",
        "--v=0",
    ]
    url = page.resolve().as_uri()
    dom = subprocess.run(
        [*flags, "--dump-dom", url], capture_output=True, text=True, timeout=180, check=False
    )
    shot = subprocess.run(
        [*flags, f"--screenshot={png}", f"--window-size={width},{height}", url],
        check=False,
        capture_output=True,
        text=True,
        timeout=180,
    )
    console = [ln for ln in (dom.stderr + shot.stderr).splitlines() if ":CONSOLE" in ln]
    return dom.stdout, console


def _needs_browser():
    if chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: `make test` installs it with scripts/ensure_chromium.sh")
        pytest.skip("chromium not installed (apt-get install chromium)")


@pytest.mark.slow
def test_browser_detects_broken_pages(tmp_path):
    """The check itself can fail: a page with a broken image and a script error is caught."""
    _needs_browser()
    from trajlab.report.page import _LOAD_CHECK

    bad = tmp_path / "bad.html"
    bad.write_text(
        f"<html><head>{_LOAD_CHECK}</head><body><img src='missing.png'>"
        "<script>noSuchFunction()</script></body></html>"
    )
    dom, console = render(bad, tmp_path / "bad.png", tmp_path)
    assert 'data-broken="1"' in dom
    assert any("noSuchFunction" in c for c in console)
    # plotly.js from a CDN cannot load with the network cut off: the plot call fails in the console
    cdn = tmp_path / "cdn.html"
    cdn.write_text(
        f"<html><head><script src='https://cdn.plot.ly/plotly-2.35.2.min.js'></script>{_LOAD_CHECK}"
        "</head><body><div id=p></div><script>Plotly.newPlot('p', [{y: [1, 2]}])</script></body></html>"
    )
    dom, console = render(cdn, tmp_path / "cdn.png", tmp_path)
    assert 'data-plots="0"' in dom and any("Plotly is not defined" in c for c in console)


@pytest.mark.slow
def test_report_renders_in_headless_chromium(demo, tmp_path):
    from trajlab.report.page import PAGE_BUDGET_BYTES

    _needs_browser()
    page = Path(demo["report"])
    png = tmp_path / "report.png"
    dom, console = render(page, png, tmp_path, 1400, 2400)
    summary = json.loads((page.parent / "summary.json").read_text())
    n_images = int(re.search(r'data-images="(\d+)"', dom).group(1))
    assert n_images == page.read_text().count('<img src="data:image/png;base64,') > 0
    assert 'data-broken="0"' in dom
    n_plots = int(re.search(r'data-plots="(\d+)"', dom).group(1))
    assert (
        n_plots
        == summary["page"]["plots"]
        == int(re.search(r'data-plots-expected="?(\d+)', dom).group(1))
        > 0
    )
    assert console == []
    for g in summary["groups"]:
        for f in g["summary"].get("findings") or []:
            assert f'data-finding="{html.escape(f["id"])}"' in dom, f["id"]
    assert page.stat().st_size == summary["page"]["bytes"] < PAGE_BUDGET_BYTES
    from matplotlib.image import imread

    pixels = imread(png)
    assert pixels.shape[0] >= 2000 and pixels[..., :3].std() > 0.05  # a rendered page, not a blank one
