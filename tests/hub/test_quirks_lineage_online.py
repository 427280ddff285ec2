"""PolyPythia and OLMo repos served by the local hub stand-in (tests/test_hub_online.py), used as a user
would: `trajlab import --dry-run` lists the documented quirks of the requested revisions, the import prints them once
and records them in the store notes, the hashes still find the byte-identical OLMo revision, `--revisions
olmo` and an OLMo range take the hub's branch list, a model card's base_model becomes the store's lineage, and
a probe built with `trajlab probe build` reaches the store with its recipe."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from test_hub_online import Hub, folders, hub_env  # noqa: F401  (folders: the saved tiny revisions fixture)
from tiny_models import SAMPLE_TEXTS

from trajlab.data.probe import ProbeSet
from trajlab.hub.cards import HUB_ID_PREFIX
from trajlab.hub.quirks import NOTE_KIND, quirks_for
from trajlab.store import TrajectoryStore

pytestmark = pytest.mark.slow

POLY = "EleutherAI/pythia-410m-seed3"
OLMO = "allenai/OLMo-2-1124-7B"
SFT = "allenai/OLMo-2-1124-7B-SFT"
# stage-1 steps 101000 and 175000 serve the same files (allenai/OLMo#915); main is not an OLMo step branch
OLMO_BRANCHES = {"main": 4, "stage1-step1000-tokens5B": 0, "stage1-step101000-tokens424B": 2,
                 "stage1-step175000-tokens734B": 2, "stage2-ingredient1-step1000-tokens5B": 4}
CARD = f"---\nlicense: apache-2.0\nbase_model: {OLMO}\nbase_model_relation: finetune\n---\n# An SFT model\n"


def run_cli(hub: Hub, home, commands: list[list[str]]) -> list[tuple[int, str]]:
    """Each `trajlab ...` command in one subprocess (one interpreter start): [(exit code, its stdout)]."""
    code = textwrap.dedent(f"""
        import contextlib, io, json, sys
        from trajlab.cli import main
        out = []
        for argv in {commands!r}:
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                rc = main(argv)
            out.append((rc, buf.getvalue()))
        print(json.dumps(out))
    """)
    run = subprocess.run([sys.executable, "-c", code], env=hub_env(hub, home), capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return [tuple(x) for x in json.loads(run.stdout.splitlines()[-1])]


def test_dry_run_import_notes_branches_and_card_lineage(tmp_path, folders):  # noqa: F811
    hub = Hub(folders, {"step0": 0})
    hub.add_repo(POLY, folders, {"step0": 0, "step1000": 2, "step2000": 4})
    hub.add_repo(OLMO, folders, OLMO_BRANCHES)
    hub.add_repo(SFT, folders, {"main": 4}, card=CARD)
    rows = [json.dumps({"text": t * 8, "id": i}) for i, t in enumerate(SAMPLE_TEXTS)]  # 8 copies: > 256 B
    (tmp_path / "docs.jsonl").write_text("\n".join(rows) + "\n")
    probe_file, flags = tmp_path / "probe.json", ["--window", "2", "--sketch-k", "32", "--no-progress"]
    out = {k: str(tmp_path / k) for k in ("poly", "olmo", "sft")}
    try:
        results = run_cli(hub, tmp_path / "hf", [
            ["probe", "build", "--dataset", str(tmp_path / "docs.jsonl"), "--n", "6", "--max-bytes", "400",
             "--cache-dir", str(tmp_path / "ds-cache"), "--out", str(probe_file)],
            ["import", POLY, "--revisions", "step0,step1000-step2000", "--out", out["poly"], "--dry-run"],
            ["import", OLMO, "--revisions", "olmo", "--out", out["olmo"], "--dry-run"],
            ["import", OLMO, "--revisions", "olmo", "--out", out["olmo"], "--probe", str(probe_file), *flags],
            ["import", POLY, "--revisions", "step0,step1000-step2000", "--out", out["poly"],
             "--probe", str(probe_file), *flags],
            ["import", SFT, "--out", out["sft"], "--probe", str(probe_file), *flags],
        ])
    finally:
        hub.stop()
    assert [rc for rc, _ in results] == [0] * 6, results
    (_, built), (_, poly_dry), (_, olmo_dry), (_, olmo_run), (_, poly_run), (_, sft_run) = results
    assert built.startswith(f"{probe_file}: 6 texts")

    # the dry runs: revisions from the hub's branch list (stage 1 only, by step) and the quirks that apply
    olmo_revs = ["stage1-step1000-tokens5B", "stage1-step101000-tokens424B", "stage1-step175000-tokens734B"]
    assert olmo_dry.splitlines()[0] == f"{OLMO}: 3 revision(s): {', '.join(olmo_revs)} -> {out['olmo']}"
    assert "  olmo-2-7b-stage1-identical-steps [allenai/OLMo#915] stage1-step101000-tokens424B, " \
           "stage1-step175000-tokens734B: " in olmo_dry
    assert "paper-excludes-pythia-410m-seed3 [Kishino et al. 2025" in poly_dry
    assert "excluded by the paper] the whole run" in poly_dry
    assert "3 revision(s): step0, step1000, step2000" in poly_dry
    # the import prints each quirk once; the hashes find the identical revision; the notes carry the quirks
    assert olmo_run.count("olmo-2-7b-stage1-identical-steps") == 1
    olmo = TrajectoryStore.open(out["olmo"])
    assert olmo.steps.tolist() == [1000, 101000, 175000]
    assert [n["payload"]["duplicate_of"] for n in olmo.notes("duplicate")] == [101000]
    (note,) = olmo.notes(NOTE_KIND)
    assert note["payload"] == quirks_for(OLMO, olmo_revs)[0]
    assert note["payload"]["reference"] == "allenai/OLMo#915"
    assert note["payload"]["revisions"] == olmo_revs[1:]
    poly = TrajectoryStore.open(out["poly"])
    assert poly_run.count("paper-excludes-pythia-410m-seed3") == 1
    (pnote,) = poly.notes(NOTE_KIND)
    assert pnote["payload"]["excluded_by_paper"] is True and pnote["payload"]["revisions"] is None
    assert {k: poly.meta[k] for k in ("size", "seed", "seed_varies")} == {"size": "410m", "seed": 3,
                                                                          "seed_varies": "both"}
    # the card's base_model: the lineage names the parent by repo id; a base without a card has none
    sft = TrajectoryStore.open(out["sft"])
    parent_id = HUB_ID_PREFIX + OLMO
    assert sft.meta["lineage"] == {"root": parent_id, "parent": {"id": parent_id, "step": 0}}
    assert sft.meta["base_model"] == {"repo": OLMO, "relation": "finetune", "source": "model card",
                                      "recorded": True}
    assert f"model card names base model {OLMO}; recorded as its lineage parent" in sft_run
    assert olmo.meta["lineage"]["parent"] is None and "base_model" not in olmo.meta
    # the built probe and its recipe reach every store scored with it
    probe = ProbeSet.from_json(probe_file)
    for store in (olmo, poly, sft):
        assert store.probe_fingerprint == probe.fingerprint and store.probe().recipe == probe.recipe
    assert probe.recipe["n"] == 6 and probe.recipe["max_bytes"] == 400
