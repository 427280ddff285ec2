"""`trajlab import|merge|analyze|report` are generated from their option dataclasses (jsonargparse):
`--print_config` shows the dataclasses' defaults, a `--config FILE` acts like the same flags, the old flag
spellings still work."""

from __future__ import annotations

import dataclasses
import inspect
import json

import numpy as np
import pytest
import yaml
from synthetic_stores import brownian_ll, write_store
from test_importers import PROBE, REPO, cache, one_thread, saved  # noqa: F401

from trajlab import analysis as ta
from trajlab._args import spelled
from trajlab.analysis.config import AnalysisConfig
from trajlab.cli import main
from trajlab.hub.config import SCORING_ALIASES, ImportConfig, import_parser
from trajlab.hub.importer import import_main
from trajlab.report.commands import ReportConfig
from trajlab.store import TrajectoryStore, open_stores
from trajlab.store.merge import merge_stores

# analysis options small enough for seconds, each one off its default
OPTIONS = dict(n_bytes_units=False, n_boot=7, tsne=False, spiral_n_null=5, thread_n_null=4, seed=3)
OLD_FLAGS = ["--nats", "--n-boot", "7", "--no-tsne", "--spiral-nulls", "5", "--thread-nulls", "4",
             "--seed", "3"]


def defaults(cls) -> dict:
    """Field -> default of a dataclass, as YAML writes it (tuples as lists); fields without one left out."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = list(f.default) if isinstance(f.default, tuple) else f.default
        elif f.default_factory is not dataclasses.MISSING:  # a nested option group is printed as a mapping
            value = f.default_factory()
            out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return out


def printed_config(argv: list[str], capsys) -> dict:
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main([*argv, "--print_config"])
    assert e.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    steps = np.arange(1, 8) * 1000
    ll = np.stack([brownian_ll(7, 1) - la for la in range(4)], axis=1)  # (K, 4, N)
    return write_store(root, "run", steps, ll, meta={"max_steps": 7000, "warmup_steps": 0})


def test_import_print_config_shows_the_importconfig_defaults(capsys):
    cfg = printed_config(["import", "some/model", "--out", "store"], capsys)
    assert cfg == {"model": "some/model", "out": "store", "revisions": None, "dry_run": False,
                   **defaults(ImportConfig)}


def test_merge_print_config_shows_merge_stores_defaults(capsys):
    cfg = printed_config(["merge", "a", "b", "--out", "m"], capsys)
    run = inspect.signature(merge_stores).parameters["run"].default
    assert cfg == {"stores": ["a", "b"], "out": "m", "run": run}


@pytest.mark.parametrize("command", ["analyze", "report"])
def test_analysis_print_config_shows_the_analysisconfig_defaults(command, capsys):
    cfg = printed_config([command, "s1", "s2", "--out", "o"], capsys)
    positional = "stores" if command == "analyze" else "paths"
    report_only = {k: v for k, v in defaults(ReportConfig).items() if k != "analysis"}
    assert cfg == {positional: ["s1", "s2"], "out": "o", **report_only, **defaults(AnalysisConfig), "preset": None}
    assert {f.name for f in dataclasses.fields(ReportConfig)} == {"out", "analysis"}


def test_analyze_config_file_gives_the_direct_analysis(store, tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(OPTIONS))
    config = ["--config", str(tmp_path / "c.yaml")]
    assert main(["analyze", str(store), "--out", str(tmp_path / "cli"), *config]) == 0
    direct = ta.analyze(open_stores([store]), tmp_path / "direct", **OPTIONS)
    written = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert written == json.loads((tmp_path / "direct" / "summary.json").read_text())
    assert written["units"] == direct["units"] != ta.analyze(open_stores([store]), tmp_path / "d0", n_boot=7,
                                                            tsne=False)["units"]
    assert written["options"] == {**defaults(AnalysisConfig), **OPTIONS}
    # the flags of earlier releases say the same; a flag after --config overrides the file
    assert main(["analyze", str(store), "--out", str(tmp_path / "old"), *OLD_FLAGS]) == 0
    old = json.loads((tmp_path / "old" / "summary.json").read_text())
    assert old == written
    main(["analyze", str(store), "--out", str(tmp_path / "over"), "--config", str(tmp_path / "c.yaml"),
          "--n-boot", "9"])
    assert json.loads((tmp_path / "over" / "summary.json").read_text())["options"]["n_boot"] == 9


def test_report_config_file_holds_paths_out_and_analysis(store, tmp_path, capsys):
    config = {"paths": [str(store)], "out": str(tmp_path / "report"), **OPTIONS}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(config))
    assert main(["report", "--config", str(tmp_path / "r.yaml")]) == 0
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())["groups"][0]["summary"]
    assert summary["options"] == {**defaults(AnalysisConfig), **OPTIONS} and summary["units"] == "nats/text"
    page = ReportConfig(str(tmp_path / "api"), AnalysisConfig(**OPTIONS)).write([store])
    assert json.loads((page.parent / "summary.json").read_text())["groups"][0]["summary"] == summary


def test_merge_config_file(store, tmp_path, capsys):
    later = write_store(tmp_path, "run", np.arange(8, 11) * 1000, np.stack([brownian_ll(3, 2)] * 4, axis=1),
                        meta={"max_steps": 7000, "warmup_steps": 0})
    config = {"stores": [str(store), str(later)], "out": str(tmp_path / "merged"), "run": "both"}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(config))
    assert main(["merge", "--config", str(tmp_path / "m.yaml")]) == 0
    merged = TrajectoryStore.open(tmp_path / "merged")
    assert merged.meta["run"] == "both" and [int(s) for s in merged.steps] == list(range(1000, 11000, 1000))


def test_import_config_file_gives_the_store_the_flags_give(tmp_path, cache, capsys):  # noqa: F811
    hub = cache[0]
    flags = [REPO, "--revisions", "step2,step4", "--out", str(tmp_path / "flags"), "--cache-dir", str(hub),
             "--window", "3", "--sketch-k", "64", "--no-progress", "--long-texts", "truncate",
             "--warmup-steps", "1", "--probe", str(PROBE.save(tmp_path / "probe.json"))]
    assert import_main(flags) == 0
    # the YAML --print_config writes for those flags, pointed at another store, imports the same
    cfg = printed_config(["import", *flags], capsys)
    assert (cfg["window"], cfg["sketch_k"], cfg["progress"]) == (3, 64, False)
    assert cfg["scoring"]["long_texts"] == "truncate"
    (tmp_path / "i.yaml").write_text(yaml.safe_dump({**cfg, "out": str(tmp_path / "file")}))
    assert import_main(["--config", str(tmp_path / "i.yaml")]) == 0
    a, b = TrajectoryStore.open(tmp_path / "flags"), TrajectoryStore.open(tmp_path / "file")
    assert [int(s) for s in a.steps] == [int(s) for s in b.steps] == [2, 4]
    assert np.array_equal(a.loglik_all(), b.loglik_all()) and a.weight_sq_dist(2, 4) == b.weight_sq_dist(2, 4)
    for key in ("scoring", "warmup_steps", "max_steps", "weights", "config"):
        assert a.meta[key] == b.meta[key], key
    assert a.meta["scoring"]["long_texts"] == "truncate" and a.meta["warmup_steps"] == 1


def test_old_spellings_reach_the_parser():
    p = import_parser()
    argv = ["--clean-cache", "m", "--out=o", "--batch-size", "3", "--no-progress", "--offline", "false",
            "--dry-run", "--allow_pickle", "true", "--max-steps=9"]
    assert spelled(p, argv, SCORING_ALIASES) == [
        "--clean_cache=true", "m", "--out=o", "--scoring.batch_size", "3", "--progress=false", "--offline",
        "false", "--dry_run=true", "--allow_pickle", "true", "--max_steps=9",
    ]
    ns = p.parse_args(spelled(p, argv, SCORING_ALIASES))
    assert (ns.model, ns.out, ns.scoring.batch_size, ns.clean_cache, ns.progress, ns.offline, ns.dry_run) == (
        "m", "o", 3, True, False, False, True)
    assert ns.allow_pickle is True and ns.max_steps == 9


@pytest.mark.parametrize("command", ["import", "merge", "analyze", "report"])
def test_help_lists_config_and_print_config(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "--config CONFIG" in out and "--print_config" in out and "--out OUT" in out
