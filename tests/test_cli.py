"""The `trajlab` command: a user's mistake (a missing path, a bad option) is one line `error: ...` with exit 2
for every subcommand."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from trajlab import _args, cli


def _run(args: list[str], tmp_path, debug: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    env.pop("TRAJLAB_DEBUG", None)
    if debug:
        env["TRAJLAB_DEBUG"] = "1"
    return subprocess.run([sys.executable, "-m", "trajlab.cli", *args], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=300)


@pytest.mark.parametrize(
    "args, says",
    [
        (["analyze", "/no/such/store", "--out", "out"], "/no/such/store"),
        (["report", "/no/such/run", "--out", "out"], "/no/such/run"),
        (["merge", "/no/such/shard", "--out", "merged"], "/no/such/shard"),
        (["import", "/no/such/model", "--revisions", "main", "--out", "store"], "/no/such/model"),
        (["frobnicate"], "unknown subcommand"),
        # option mistakes, caught by the jsonargparse parsers
        (["analyze", "store", "--out", "out", "--n-boot", "x"], 'key "n_boot"'),
        (["report", "run"], "required: out"),
        (["merge", "a", "--out", "b", "--frob", "1"], "unrecognized arguments: --frob"),
        (["import", "model", "--out", "store", "--layers", "mid"], 'key "layers"'),
        (["analyze", "--config", "/no/such.yaml"], "/no/such.yaml"),
    ],
)
def test_user_mistake_is_one_line(args, says, tmp_path):
    r = _run(args, tmp_path)
    lines = [s for s in r.stderr.splitlines() if s.strip()]
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_fit_unknown_preset_is_one_line(tmp_path):
    from pathlib import Path

    config = Path(__file__).resolve().parents[1] / "configs" / "debug.yaml"
    r = _run(["fit", "--config", str(config), "--model.preset", "huge", "--run_dir", str(tmp_path / "run")],
             tmp_path)
    errors = [s for s in r.stderr.splitlines() if s.startswith("error:")]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert len(errors) == 1 and "unknown model preset 'huge'" in errors[0]


def test_debug_shows_the_traceback(tmp_path):
    r = _run(["analyze", "/no/such/store", "--out", "out"], tmp_path, debug=True)
    assert r.returncode != 0 and "Traceback" in r.stderr and "FileNotFoundError" in r.stderr


def test_messages_are_single_lines():
    assert _args.one_line(ValueError("a\n  b")) == "a b"
    assert _args.one_line(KeyError("no step 7 in the store")) == "no step 7 in the store"


def test_recipes_by_name_or_path(tmp_path):
    from pathlib import Path

    from trajlab.train.fit import recipes_resolved

    shipped = Path(cli.__file__).parent / "recipes"
    assert recipes_resolved(["fit", "--config", "debug"]) == ["fit", "--config", str(shipped / "debug.yaml")]
    assert recipes_resolved(["fit", "--config=pretrain_tiny.yaml"]) == [
        "fit", f"--config={shipped / 'pretrain_tiny.yaml'}"]
    own = tmp_path / "mine.yaml"
    own.write_text("trainer: {}\n")
    assert recipes_resolved(["fit", "--config", str(own)])[2] == str(own)
    r = _run(["fit", "--config", "no_such_recipe"], tmp_path)
    assert r.returncode == 2 and "no recipe 'no_such_recipe'" in r.stderr and "pretrain_tiny" in r.stderr
