"""The quirks registry matched to repos and revisions, PolyPythia and OLMo revision names, branch lists from
the offline cache, and model-card lineage (one parent recorded; merges and quantizations noted, not recorded)."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from trajlab.hub.cards import card_meta
from trajlab.hub.checkpoints import hub_branches, model_ref
from trajlab.hub.quirks import describe, quirks_for, registry
from trajlab.hub.revisions import (
    PYTHIA_REVISIONS,
    expand_revisions,
    pythia_meta,
    revision_steps,
)

OLMO = ["main", "stage1-step1000-tokens5B", "stage1-step101000-tokens424B", "stage1-step2000-tokens9B",
        "stage2-ingredient1-step1000-tokens5B", "stage2-ingredient1-step2000-tokens9B"]


def test_registry_holds_the_documented_quirks_with_references():
    raw = json.loads((resources.files("trajlab.hub") / "quirks.json").read_text())["quirks"]
    assert len(registry()) == len(raw) == 14
    refs = {e["reference"] for e in registry()}
    for issue in ("#198", "#195", "#203", "#202", "#108", "#205", "allenai/OLMo#915"):
        assert any(issue in r for r in refs), issue
    assert {e["id"] for e in registry() if e["excluded_by_paper"]} == {
        "paper-excludes-pythia-1b-step116000", "paper-excludes-pythia-410m-seed3",
        "paper-excludes-pythia-410m-seed4"}


def test_quirks_apply_to_the_requested_revisions_only():
    ids = lambda repo, revs: [q["id"] for q in quirks_for(repo, revs)]
    assert ids("EleutherAI/pythia-410m", ["step1000", "step2000"]) == []
    (q,) = quirks_for("EleutherAI/pythia-410m-deduped", ["step0", "step2", "step4"])
    assert q["revisions"] == ["step0", "step2"] and q["reference"] == "EleutherAI/pythia#198"
    # a step range: the 154 Pythia revisions with step <= 6300 (step0..step512, step1000..step6000)
    found = quirks_for("EleutherAI/pythia-2.8b", PYTHIA_REVISIONS)
    early = next(q for q in found if "#195" in q["reference"])
    assert early["revisions"] == [r for r in PYTHIA_REVISIONS if int(r[4:]) <= 6300]
    assert len(early["revisions"]) == 17
    assert ids("EleutherAI/pythia-1b", ["step115000", "step116000"]) == [
        "paper-excludes-pythia-1b-step116000"]
    assert ids("eleutherai/PYTHIA-410m-seed4", ["step1"]) == ["paper-excludes-pythia-410m-seed4"]  # any case
    assert ids("EleutherAI/pythia-410m-seed9", ["step39000", "step40000"]) == [
        "pythia-410m-seed9-missing-step40000"]
    assert ids("EleutherAI/pythia-160m-weight-seed2", ["step0"]) == ["pythia-160m-weight-seed-step0"]
    assert ids("allenai/OLMo-2-1124-7B", OLMO) == ["olmo-2-7b-stage1-identical-steps"]
    assert ids("allenai/OLMo-2-1124-13B", OLMO) == []
    whole = quirks_for("EleutherAI/pythia-410m-seed3", ["step0"])[0]
    assert whole["revisions"] is None and "the whole run" in describe(whole)


def test_polypythia_and_olmo_revision_names():
    assert expand_revisions("pythia", pythia=True) == list(PYTHIA_REVISIONS)
    assert pythia_meta("EleutherAI/pythia-410m-seed3") == {"size": "410m", "seed": 3, "dataset": "pile",
                                                          "seed_varies": "both"}
    assert pythia_meta("EleutherAI/pythia-160m-data-seed1")["seed_varies"] == "data"
    assert pythia_meta("EleutherAI/pythia-160m-weight-seed2") | {} == {
        "size": "160m", "seed": 2, "dataset": "pile", "seed_varies": "weight"}
    assert "seed_varies" not in pythia_meta("EleutherAI/pythia-1.4b-deduped")
    branches = lambda: OLMO
    stage1 = expand_revisions("olmo", pythia=False, branches=branches)
    assert stage1 == ["stage1-step1000-tokens5B", "stage1-step2000-tokens9B", "stage1-step101000-tokens424B"]
    assert revision_steps(stage1, pythia=False) == [1000, 2000, 101000]
    assert expand_revisions("step1500-step200000", pythia=False, branches=branches) == stage1[1:]
    assert expand_revisions("stage2-ingredient1-step0-step1500", pythia=False, branches=branches) == [
        "stage2-ingredient1-step1000-tokens5B"]
    assert expand_revisions("olmo:stage2-ingredient1", pythia=False, branches=branches) == OLMO[4:]
    with pytest.raises(ValueError, match="both map to step 1000; list only one"):
        revision_steps(["stage1-step1000-tokens5B", "stage2-ingredient1-step1000-tokens5B"], pythia=False)
    with pytest.raises(ValueError, match="group 'stage3'.*groups: 'stage1', 'stage2-ingredient1'"):
        expand_revisions("olmo:stage3", pythia=False, branches=branches)
    with pytest.raises(ValueError, match="needs the branch list of a hub model"):
        expand_revisions("olmo", pythia=False)


def test_branches_offline_come_from_the_cache_refs(tmp_path):
    refs = tmp_path / "models--allenai--OLMo-2-1124-7B" / "refs"
    (refs / "pr").mkdir(parents=True)
    for name in ["main", *OLMO[1:3]]:
        (refs / name).write_text("0" * 40)
    (refs / "pr" / "1").write_text("1" * 40)
    ref = model_ref("allenai/OLMo-2-1124-7B", cache_dir=tmp_path)
    assert hub_branches(ref, offline=True) == ["main", OLMO[1], OLMO[2]]
    with pytest.raises(FileNotFoundError, match="holds no branch of allenai/OLMo-2-1124-13B"):
        hub_branches(model_ref("allenai/OLMo-2-1124-13B", cache_dir=tmp_path), offline=True)


@pytest.mark.parametrize("front, expected", [
    ("base_model: EleutherAI/pythia-410m", {"lineage": {"root": "hf:EleutherAI/pythia-410m", "parent": {
        "id": "hf:EleutherAI/pythia-410m", "step": 143000}}, "recorded": True}),
    ("base_model:\n- meta-llama/Llama-2-7b-hf", {"lineage": {
        "root": "hf:meta-llama/Llama-2-7b-hf", "parent": {"id": "hf:meta-llama/Llama-2-7b-hf", "step": 0}},
        "recorded": True}),
    ("base_model:\n- a/one\n- b/two", {"recorded": False, "why": "the card names 2 base models ['a/one', "
                                       "'b/two'] (a merge)"}),
    ("base_model: a/one\nbase_model_relation: quantized", {"recorded": False, "why": "base_model_relation is "
                                                           "'quantized', not a fine-tune"}),
    ("license: mit", None),
    ("base_model: [unclosed", None),  # a card that does not parse is no lineage, and no error
])
def test_card_base_model_to_lineage(tmp_path, front, expected):
    (tmp_path / "README.md").write_text(f"---\n{front}\n---\n# card\n")
    meta = card_meta("org/child", tmp_path)
    if expected is None:
        assert meta == {}
        return
    assert meta["base_model"]["recorded"] is expected["recorded"]
    assert meta.get("lineage") == expected.get("lineage")
    assert meta["base_model"].get("why") == expected.get("why")
