"""Cost of TrajectoryCallback: the same short run without it, with it, and with bare score_model calls instead.

The callback runs with the recipe's own settings (probe, n_texts, layers, weights) on an every-N schedule. Runs
alternate (none, callback, score-only, none, ...) so machine noise hits all three. Prints
  (a) the callback's total time on the training thread (scoring, sketch, distances, KL, map, waiting for writes),
  (b) score_model alone at the same steps on the same model states (the runs are deterministic), and the
      callback's own score_model time,
  the ratios of (a) to both (goal <= 1.15), the time of the steps that take no snapshot, with vs without the
  callback (goal: within 3%; the store writes run on a background thread), and one snapshot's cost in training
  steps, with the share that the recipe's own schedule adds to its training time.
Then the cost of one snapshot of a recipe's model on its callback's probe (default: configs/pretrain_tiny.yaml),
by part.

    python scripts/bench_callback.py [--config configs/debug.yaml] [--steps 100] [--every 10] [--repeats 2]
        [--cost-config configs/pretrain_tiny.yaml]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import lightning as L  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from trajlab.record.callback import TrajectoryCallback  # noqa: E402
from trajlab.lens import score_model  # noqa: E402
from trajlab.train.lit import LitLM, LMDataModule  # noqa: E402
from trajlab.record.schedule import snapshot_steps  # noqa: E402
from trajlab.sketch import WeightHistory, WeightSketch  # noqa: E402


class StepTimer(L.Callback):
    """Seconds of each training batch (batch start to batch end, before later callbacks' end hooks)."""

    def __init__(self):
        self.times: list[tuple[int, float]] = []  # (global_step after the batch, seconds)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.times.append((trainer.global_step, time.perf_counter() - self.t0))


class ScoreOnly(L.Callback):
    """score_model on the callback's schedule, texts and layers, timed; nothing else."""

    def __init__(self, steps: list[int], settings: dict):
        self.steps, self.settings, self.seconds = set(steps), settings, 0.0

    def _score(self, trainer, pl_module):
        if trainer.global_step in self.steps:
            self.steps.discard(trainer.global_step)
            texts = trainer.datamodule.probe_texts[: self.settings.get("n_texts")]
            t0 = time.perf_counter()
            score_model(pl_module.model, pl_module.tokenizer, texts, self.settings.get("layers", "all"))
            self.seconds += time.perf_counter() - t0

    def on_train_start(self, trainer, pl_module):
        self._score(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, *args):
        self._score(trainer, pl_module)


def fit(cfg: dict, steps: int, callbacks: list, root: str) -> None:
    L.seed_everything(cfg.get("seed_everything", 0), verbose=False)
    args = {k: v for k, v in cfg["trainer"].items() if k not in ("logger", "callbacks", "max_steps")}
    args |= {
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "limit_val_batches": 0,
        "logger": False,
        "accelerator": "cpu",
    }
    trainer = L.Trainer(max_steps=steps, default_root_dir=root, callbacks=callbacks, **args)
    trainer.fit(LitLM(**cfg["model"]), LMDataModule(**cfg["data"]))


def callback_settings(cfg: dict) -> dict:
    """The recipe's TrajectoryCallback options, its record and scoring groups as one flat dict ({} when it has
    none)."""
    entries = [
        c for c in cfg["trainer"].get("callbacks") or [] if c["class_path"].endswith("TrajectoryCallback")
    ]
    init = dict(entries[0].get("init_args") or {}) if entries else {}
    return {k: v for k, v in init.items() if k not in ("record", "scoring")} | (init.get("record") or {}) | (
        init.get("scoring") or {})


def overhead(args) -> None:
    cfg = yaml.safe_load(Path(args.config).read_text())
    settings = callback_settings(cfg) | {"schedule": f"every:{args.every}", "final": False}
    schedule = snapshot_steps(settings["schedule"], args.steps)
    print(
        f"recipe {args.config}: {args.steps} steps, snapshots at {schedule}; runs alternate x{args.repeats}"
    )
    cb_s, score_s, inner_score_s, plain_steps, cb_steps = [], [], [], [], []
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            timer = StepTimer()
            fit(cfg, args.steps, [timer], tmp)
            plain_steps.append([t for s, t in timer.times if s not in schedule])
            timer, cb = StepTimer(), TrajectoryCallback(**settings | {"out_dir": f"{tmp}/store"})
            fit(cfg, args.steps, [timer, cb], tmp)
            cb_steps.append([t for s, t in timer.times if s not in schedule])
            cb_s.append(cb.timings["callback_s"])
            inner_score_s.append(cb.timings["score_s"])
            only = ScoreOnly(schedule, settings)
            fit(cfg, args.steps, [only], tmp)
            score_s.append(only.seconds)
        print(
            f"  round {r + 1}: callback {cb_s[-1]:.2f} s (its scoring {inner_score_s[-1]:.2f} s), "
            f"score_model alone {score_s[-1]:.2f} s"
        )
    a, b, inner = statistics.mean(cb_s), statistics.mean(score_s), statistics.mean(inner_score_s)
    print(
        f"(a) callback total time per run: {a:.3f} s for {len(schedule)} snapshots ({a / len(schedule):.3f} s each)"
    )
    print(
        f"(b) score_model alone, same snapshots, separate runs: {b:.3f} s; inside the callback runs: {inner:.3f} s"
    )
    print(f"ratio (a)/(b) callback / score_model, side by side: {a / b:.3f} (goal <= 1.15)")
    print(f"ratio (a) / the callback's own score_model time in the same runs: {a / inner:.3f} (goal <= 1.15)")
    # Step times per round (each round's two runs are minutes apart at most), then the median over rounds.
    m0, m1 = (statistics.median(statistics.mean(r) for r in runs) for runs in (plain_steps, cb_steps))
    md0, md1 = (statistics.median(statistics.median(r) for r in runs) for runs in (plain_steps, cb_steps))
    paired = statistics.median(
        statistics.median(c) / statistics.median(p) for p, c in zip(plain_steps, cb_steps)
    )
    print(
        f"non-snapshot step time: without {m0 * 1e3:.1f} ms, with {m1 * 1e3:.1f} ms (means; medians "
        f"{md0 * 1e3:.1f} / {md1 * 1e3:.1f} ms; {len(plain_steps[0])} steps a run)"
    )
    print(
        f"ratio step time with / without callback: mean {m1 / m0:.3f}, median {md1 / md0:.3f}, "
        f"per round {paired:.3f} (goal <= 1.03)"
    )
    # In units of training steps measured in the same runs, the cost survives a shared, noisy machine.
    per_snapshot = a / len(schedule) / md0
    recipe = callback_settings(cfg).get("schedule")
    print(
        f"one snapshot costs {per_snapshot:.1f} training steps (median step of the runs without the callback)"
    )
    if recipe:
        n, total = len(snapshot_steps(recipe, cfg["trainer"]["max_steps"])), cfg["trainer"]["max_steps"]
        print(
            f"the recipe's schedule {recipe!r}: {n} snapshots in {total} steps add {n * per_snapshot / total:.0%} "
            "to its training time"
        )


def snapshot_cost(config: str, repeats: int) -> None:
    """One snapshot of the recipe's model (random init) on the probe its TrajectoryCallback scores, by part."""
    from trajlab.train.models import build_model

    cfg = yaml.safe_load(Path(config).read_text())
    dm = LMDataModule(**cfg["data"])
    dm.setup()
    settings = callback_settings(cfg)
    texts = dm.probe_texts[: settings.get("n_texts") or len(dm.probe_texts)]
    model_args = cfg["model"]
    model = build_model(
        model_args.get("preset", "tiny"), len(dm.tokenizer), model_args.get("context_length", 256)
    )
    times = {"score all layers": [], "score last layer": [], "sketch": [], "exact distances (window 10)": []}
    sketch, history = WeightSketch(), WeightHistory(10)
    for i in range(max(repeats, 11)):  # fill the history window so the distance time is the steady state
        if i < repeats:
            for layers, name in (("all", "score all layers"), ("last", "score last layer")):
                t0 = time.perf_counter()
                score_model(model, dm.tokenizer, texts, layers)
                times[name].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sketch.sketch(model)
        times["sketch"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        history.push(i, model)
        times["exact distances (window 10)"].append(time.perf_counter() - t0)
    ids = dm.tokenizer(texts, add_special_tokens=False)["input_ids"]
    n_tokens = np.mean([min(len(x), model_args.get("context_length", 256)) for x in ids])
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"one snapshot of {config} ({model_args.get('preset')}, {n_params} params) on its callback's probe "
        f"({len(texts)} texts, {n_tokens:.0f} tokens each):"
    )
    medians = {name: statistics.median(ts[-repeats:]) for name, ts in times.items()}
    for name, median in medians.items():
        print(f"  {name}: median {median:.3f} s, min {min(times[name][-repeats:]):.3f} s over {repeats}")
    if "schedule" in settings:
        n = len(snapshot_steps(settings["schedule"], cfg["trainer"]["max_steps"]))
        part = "score all layers" if settings.get("layers", "all") == "all" else "score last layer"
        per = medians[part] + medians["sketch"] + medians["exact distances (window 10)"]
        print(
            f"  the recipe's schedule {settings['schedule']!r}: {n} snapshots x {per:.2f} s = {n * per:.0f} s"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/debug.yaml")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2, help="0: only the snapshot cost")
    ap.add_argument(
        "--cost-config", default="configs/pretrain_tiny.yaml", help="'' to skip the snapshot cost"
    )
    args = ap.parse_args()
    if args.repeats:
        overhead(args)
    if args.cost_config:
        snapshot_cost(args.cost_config, repeats=3)


if __name__ == "__main__":
    main()
