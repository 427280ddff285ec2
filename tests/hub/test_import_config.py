"""ImportConfig: the options object and the keyword API agree, every flag reaches the import (scoring
options, schedule, lineage, executor), bad options are refused in one line; --dry-run's numbers; the sbatch
examples."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from test_importers import FAST, PROBE, REPO, cache, make_tokenizer, one_thread, saved  # noqa: F401
from tiny_models import tiny_llama

import trajlab.lens
from trajlab import ImportConfig, ScoringConfig, import_checkpoints
from trajlab.cli import main as trajlab_main
from trajlab.data.probe import ProbeSet
from trajlab.hub.config import PYTHIA_WARMUP_STEPS
from trajlab.hub.importer import import_main
from trajlab.store import TrajectoryStore

ROOT = Path(__file__).parents[2]


@pytest.fixture
def hub(cache):  # noqa: F811
    return cache[0]  # the fake HF cache of tests/test_importers.py


def test_config_object_and_keywords_give_the_same_store(tmp_path, hub):
    cfg = ImportConfig(window=3, sketch_k=64, progress=False, cache_dir=hub, probe=PROBE)
    a = import_checkpoints(REPO, "step2,step4", tmp_path / "a", config=cfg)
    b = import_checkpoints(REPO, "step2,step4", tmp_path / "b", PROBE, cache_dir=hub, **FAST)
    c = import_checkpoints(REPO, "step2,step4", tmp_path / "c", cfg.replace(window=0), window=3)
    assert a.imported == b.imported == c.imported == [2, 4]
    sa, sb, sc = (TrajectoryStore.open(tmp_path / x) for x in "abc")
    assert np.array_equal(sa.loglik_all(), sb.loglik_all()) and np.array_equal(
        sa.loglik_all(), sc.loglik_all()
    )
    assert sa.weight_sq_dist(2, 4) == sb.weight_sq_dist(2, 4) == sc.weight_sq_dist(2, 4)  # the override won
    with pytest.raises(TypeError, match=r"unknown ImportConfig option\(s\) \['windw'\]; valid: .*window"):
        import_checkpoints(REPO, "step2", tmp_path / "d", windw=3)
    for bad, match in (
        ({"scoring": {"long_texts": "wrap"}}, "long_texts must be one of 'rolling', 'truncate', 'error'"),
        ({"executor": "dask"}, "executor must be one of local, ray"),
        ({"workers": 0}, "need workers >= 1"),
        ({"executor": "ray", "shard": "0/2"}, "--shard and --executor ray both split"),
    ):
        with pytest.raises(ValueError, match=match):
            ImportConfig(**bad)
    assert not (tmp_path / "d").exists()


def test_schedule_and_parent_lineage_are_recorded(tmp_path, hub, capsys):
    parent = tmp_path / "parent"
    import_checkpoints(REPO, "step0,step2", parent, PROBE, cache_dir=hub, **FAST)
    pmeta = TrajectoryStore.open(parent).meta
    assert (pmeta["warmup_steps"], pmeta["max_steps"]) == (PYTHIA_WARMUP_STEPS, 143000) == (1430, 143000)
    model, tok = tiny_llama(), make_tokenizer()  # not a Pythia: nothing known unless given
    model.save_pretrained(tmp_path / "llama")
    tok.save_pretrained(tmp_path / "llama")
    import_checkpoints(tmp_path / "llama", None, tmp_path / "plain", PROBE, **FAST)
    meta = TrajectoryStore.open(tmp_path / "plain").meta
    assert meta["warmup_steps"] is None and meta["max_steps"] is None
    # every flag reaches the store: schedule and lineage through the CLI
    argv = [
        str(tmp_path / "llama"),
        "--out",
        str(tmp_path / "child"),
        "--window",
        "0",
        "--sketch-k",
        "0",
        "--no-progress",
        "--warmup-steps",
        "10",
        "--max-steps",
        "200",
        "--parent",
        f"{parent}@0",
        "--probe",
        str(PROBE.save(tmp_path / "probe.json")),
    ]
    assert import_main(argv) == 0
    child = TrajectoryStore.open(tmp_path / "child").meta
    assert (child["warmup_steps"], child["max_steps"]) == (10, 200)
    root = (pmeta.get("lineage") or {}).get("root") or pmeta.get("id")
    assert child["lineage"] == {"root": root, "parent": {"id": pmeta.get("id"), "step": 0}}
    import_main([*argv[:2], str(tmp_path / "child2"), *argv[3:-4], "--parent", str(parent), *argv[-2:]])
    assert TrajectoryStore.open(tmp_path / "child2").meta["lineage"]["parent"]["step"] == 2  # its last step
    capsys.readouterr()
    child3 = [*argv[:2], str(tmp_path / "child3"), *argv[3:-4], "--parent", f"{parent}@1"]
    assert trajlab_main(["import", *child3]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --parent {parent}@1: step 1 is not in {parent}; nearest stored: [0, 2]")
    assert not (tmp_path / "child3").exists()


def test_scoring_options_reach_score_model(tmp_path, hub, monkeypatch):
    real, seen = trajlab.lens.score_model, []

    def recording(*args, **kwargs):
        scoring = kwargs["scoring"]  # the importer hands score_model its ScoringConfig whole
        seen.append({k: getattr(scoring, k) for k in ("long_texts", "stride", "lens_dtype")})
        return real(*args, **kwargs)

    monkeypatch.setattr(trajlab.lens, "score_model", recording)
    argv = [
        REPO,
        "--revisions",
        "step2",
        "--out",
        str(tmp_path / "s"),
        "--cache-dir",
        str(hub),
        "--window",
        "0",
        "--no-progress",
        "--long-texts",
        "truncate",
        "--lens-dtype",
        "float32",
        "--probe",
        str(PROBE.save(tmp_path / "probe.json")),
    ]
    assert import_main(argv) == 0
    argv_b = [*argv[:4], str(tmp_path / "b"), *argv[5:9], "--stride", "16", *argv[-2:]]
    assert import_main(argv_b) == 0
    assert seen == [
        {"long_texts": "truncate", "stride": None, "lens_dtype": "float32"},
        {"long_texts": "rolling", "stride": 16, "lens_dtype": None},
    ]
    store = TrajectoryStore.open(tmp_path / "s")
    from transformers import AutoModelForCausalLM

    folder = next((hub / "models--EleutherAI--pythia-fake" / "snapshots").iterdir()).parent
    ref = (hub / "models--EleutherAI--pythia-fake" / "refs" / "step2").read_text()
    m = AutoModelForCausalLM.from_pretrained(folder / ref).eval()
    expected, info = real(
        m, make_tokenizer(), PROBE, "all", long_texts="truncate", lens_dtype="float32", return_info=True
    )
    assert np.array_equal(store.loglik_all()[0], expected)  # score_model's rows with those options
    assert store.meta["scoring"] == info.scoring() and info.scoring()["long_texts"] == "truncate"
    assert TrajectoryStore.open(tmp_path / "b").meta["scoring"]["stride"] == 16
    with pytest.raises(ValueError, match="stride=16 applies only to long_texts='rolling', not 'truncate'"):
        ImportConfig().replace(long_texts="truncate", stride=16)
    assert ImportConfig().replace(long_texts="truncate").scoring == ScoringConfig(long_texts="truncate")


def test_ray_executor_without_ray_is_refused_in_one_line(tmp_path, hub, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    argv = [
        REPO,
        "--revisions",
        "step0,step2",
        "--out",
        str(tmp_path / "s"),
        "--cache-dir",
        str(hub),
        "--executor",
        "ray",
        "--no-progress",
    ]
    assert trajlab_main(["import", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        "error: --executor ray needs Ray, which is not installed: pip install 'trajlab[ray]'"
    )
    assert trajlab_main(["import", *argv, "--shard", "0/2"]) == 2
    assert "--shard and --executor ray both split the revisions; pass one of them" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_dry_run_sizes_a_pythia_import_and_touches_nothing(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from trajlab.hub.importer import import_main
        out = {str(tmp_path / "s")!r}
        assert import_main(["EleutherAI/pythia-410m", "--revisions", "pythia", "--out", out,
                            "--dry-run", "--window", "10"]) == 0
        heavy = ("huggingface_hub", "transformers", "torch")
        print("imported:", sorted(m for m in heavy if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text, gib = out.stdout, 2**30
    n = 2 * 50304 * 1024 + 24 * (12 * 1024**2 + 13 * 1024) + 2 * 1024  # pythia-410m, from its shapes
    assert "imported: []" in text and not (tmp_path / "s").exists()
    assert "154 revision(s): step0, step1, step2, step4, ..., step143000" in text
    n_texts = len(ProbeSet.default())  # the default probe: every bundled domain's held-out chunks
    assert f"~{n:,} parameters, 24 layers -> 25 LL row(s) x {n_texts} texts" in text
    assert f"download ~{2 * n / gib:.2f} GiB per revision, ~{154 * 2 * n / gib:,.1f} GiB in all" in text
    rows = [r.split("|") for r in text.splitlines() if r.strip()[:2].strip().isdigit() and "|" in r]
    assert [int(r[0]) for r in rows] == [1, 2, 4, 8, 16]
    assert [r[1].split() for r in rows] == [
        ["154", "+", "0"],
        ["77", "+", "10"],
        ["39", "+", "10"],
        ["20", "+", "10"],
        ["10", "+", "10"],
    ]
    memory = 4 * n + 11 * 4 * n  # fp32 model + window 10 (+ the one being pushed) fp32 copies
    assert {r[3].strip() for r in rows} == {f"{memory / gib:,.1f} GiB"}
    disk = [w * 2 * n / gib for w in (1, 2, 4, 8, 16)]  # --clean-cache: one revision per task at a time
    assert [r[2].strip() for r in rows] == [f"{d:,.1f} GiB" for d in disk]


@pytest.mark.parametrize("script", sorted((ROOT / "scripts").glob("*.sbatch")), ids=lambda p: p.name)
def test_sbatch_examples_parse(script):
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert "trajlab import" in script.read_text()
