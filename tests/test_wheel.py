"""A wheel is a complete install: built from this tree, installed into a fresh venv (reusing the installed torch
and the other dependencies through a .pth line), `trajlab demo --debug` runs there on the shipped recipes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_runs_the_demo_from_a_fresh_venv(tmp_path):
    wheels = tmp_path / "wheels"
    import setuptools

    # Build with the installed setuptools when it builds wheels itself (>= 70.1), else in pip's isolated env.
    isolation = [] if tuple(map(int, setuptools.__version__.split(".")[:2])) < (70, 1) else ["--no-build-isolation"]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", str(wheels),
                    str(ROOT)], check=True, timeout=600)
    (wheel,) = wheels.glob("trajlab-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in ("trajlab/recipes/debug.yaml", "trajlab/recipes/pretrain_tiny.yaml",
                    "trajlab/data/shakespeare.jsonl.gz", "trajlab/data/corpora.json", "trajlab/store/meta.py"):
        assert shipped in names, f"{shipped} missing from {wheel.name}"

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], capture_output=True, text=True, check=True).stdout.strip())
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, timeout=600)
    # The dependencies (torch, lightning, transformers, ...) from this interpreter, after the venv's own packages.
    (site / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import trajlab; print(trajlab.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(site), f"trajlab imported from {where}, not the wheel"

    run = subprocess.run([str(venv / "bin" / "python"), "-m", "trajlab.cli", "demo", "--debug", "--out",
                          str(tmp_path / "demo")], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=1800)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads((tmp_path / "demo" / "report" / "summary.json").read_text())
    assert (tmp_path / "demo" / "report" / "report.html").stat().st_size > 10_000 and summary["groups"]
