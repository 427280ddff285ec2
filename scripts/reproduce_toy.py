"""A toy reproduction of the papers' findings, designed like the papers' experiments, every number with its interval.

Design (fixed in advance from Pythia's ratios; never tuned on the evaluated seeds; recorded in results.json):
- Probe: held-out chunks of family A's mixture (60% Shakespeare, 30% Bible, 10% Python docs), domains recorded,
  held out from every family's training data (each bundled domain's fixed held-out pool), scored whole.
- Family A (GPT-NeoX, its own 4096-id BPE): the `tiny` preset with seeds 0, 1, 2 (a seed sets the initialisation
  and the data order: seed_everything and data.seed, as PolyPythias do), the `micro` and `small` presets on seed
  0's data order; Pythia's schedule (1% linear warm-up, cosine decay to 10% of the peak; peak lr 1e-3 as Pythia
  14m-70m; AdamW betas 0.9 / 0.95, weight decay 0.01). Seed 0 of `tiny` is snapshotted densely (a regular grid
  for diffusion fits, plus partners 0.75% of the run after the grid points nearest 7%, 35% and 70% of training
  for the paper's fixed-lag consecutive pairs).
- Lineages: fine-tunes of 5% of the pretraining steps at 10% of the peak lr, on shifted mixtures inside the data
  the base saw (Bible-heavy, docs-heavy), on several bases (tiny seeds 0, 1, 2 and the two other families).
- Families B (GPT-2 `gpt2-tiny`, 6144-id BPE, Bible-heavy mixture) and C (GPT-NeoX `micro`, 8192-id BPE,
  docs-heavy mixture): unrelated roots. Random pairs = models with different lineage roots.
- Every number through trajlab.analysis: kl_matrix, fixed_lag_pairs, bootstrap_kl, bootstrap_order,
  diffusion_exponents + bootstrap_exponent_order, spiral_test, thread_test.

    python scripts/reproduce_toy.py --out DIR            # the full design (~45 min on 2 CPU cores)
    python scripts/reproduce_toy.py --out DIR --quick    # the same pipeline in minutes (smoke test)
    python scripts/reproduce_toy.py --out DIR --write-doc   # also writes docs/reproduction.md

DIR/results.json holds the orderings, the table, the spiral and thread tests, the hyper-parameters and the wall
time; DIR/report/ holds the page of `trajlab report`. A rerun reuses finished runs in DIR.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from reproduce_toy_findings import findings, write_doc  # noqa: E402

MIX_A = {"shakespeare": 0.6, "bible": 0.3, "docs": 0.1}
MIX_B = {"shakespeare": 0.3, "bible": 0.5, "docs": 0.2}
MIX_C = {"shakespeare": 0.4, "bible": 0.2, "docs": 0.4}
FT_MIXES = {"bibleheavy": {"shakespeare": 0.2, "bible": 0.7, "docs": 0.1},
            "docsheavy": {"shakespeare": 0.3, "bible": 0.2, "docs": 0.5}}


@dataclass(frozen=True)
class Design:
    """Everything that decides the experiment; written to results.json as "hyperparameters"."""

    steps: int = 300  # pretraining optimizer steps of every base run (budget: ~40 min on 2 cores in all)
    batch_size: int = 4
    seq_len: int = 512  # = the model's context; holds every probe text whole (measured, in results.json)
    lr: float = 1e-3  # Pythia 14m / 31m / 70m peak
    warmup_fraction: float = 0.01  # Pythia: 1% linear warm-up
    min_lr_ratio: float = 0.1  # Pythia: cosine decay to 10% of the peak
    weight_decay: float = 0.01  # Pythia
    ft_fraction: float = 0.05  # fine-tunes: 5% of the pretraining steps
    ft_lr_ratio: float = 0.1  # at 10% of the pretraining peak
    n_probe: int = 256
    grid: int = 6  # seed-0 tiny: a snapshot every `grid` steps (2% of the run)
    lag_fraction: float = 0.0075  # partner snapshots this share of the run after the grid points near the targets
    seeds: tuple[int, ...] = (0, 1, 2)
    sizes: tuple[str, ...] = ("micro", "small")
    layers_every: int = 5  # seed-0 tiny: every lens layer at every 5th snapshot, the last layer at the others
    spiral_n_null: int = 200
    spiral_n_null_tsne: int = 40
    n_boot: int = 1000

    @property
    def warmup(self) -> int:
        return max(1, round(self.warmup_fraction * self.steps))

    @property
    def ft_steps(self) -> int:
        return max(2, round(self.ft_fraction * self.steps))


QUICK = Design(steps=24, n_probe=32, grid=3, lag_fraction=0.05, spiral_n_null=20, spiral_n_null_tsne=4,
               n_boot=200, layers_every=3)


@dataclass(frozen=True)
class Run:
    name: str
    root: str  # lineage root (the pretraining run a model descends from)
    preset: str = "tiny"
    seed: int = 0
    mixture: dict | None = None
    vocab: int = 4096
    parent: str | None = None  # fine-tunes: the base run


def runs(d: Design) -> list[Run]:
    """Base runs first (family A seeds, sizes, families B and C), then the fine-tunes."""
    base = [Run(f"A-tiny-s{s}", f"A-tiny-s{s}", "tiny", s, MIX_A) for s in d.seeds]
    base += [Run(f"A-{p}-s{d.seeds[0]}", f"A-{p}-s{d.seeds[0]}", p, d.seeds[0], MIX_A) for p in d.sizes]
    base += [Run("B-gpt2tiny", "B-gpt2tiny", "gpt2-tiny", 0, MIX_B, 6144),
             Run("C-micro", "C-micro", "micro", 0, MIX_C, 8192)]
    by = {r.name: r for r in base}
    s0, s1, s2 = (f"A-tiny-s{s}" for s in d.seeds)
    ft = [(s0, "bibleheavy"), (s0, "docsheavy"), (s1, "bibleheavy"), (s2, "docsheavy"),
          ("B-gpt2tiny", "docsheavy"), ("C-micro", "bibleheavy")]
    return base + [Run(f"{b}-ft-{m}", by[b].root, by[b].preset, by[b].seed, FT_MIXES[m], by[b].vocab, b)
                   for b, m in ft]


def dense_schedule(d: Design) -> list[int]:
    """Seed-0 tiny snapshots: 0 (and 1, 2 inside warm-up), a regular grid, and a partner lag_fraction * steps
    after the grid point at or after each of the paper's target fractions (so trajlab.analysis.fixed_lag_pairs
    finds that lag there)."""
    from trajlab.analysis.config import PAPER_TARGET_FRACTIONS

    lag = max(1, round(d.lag_fraction * d.steps))
    grid = list(range(0, d.steps + 1, d.grid))
    partners = [min(g for g in grid if g >= round(f * d.steps)) + lag for f in PAPER_TARGET_FRACTIONS]
    early = [s for s in (1, 2) if s < d.warmup]  # inside warm-up only, so they never set the lag
    return sorted({0, *early, *grid, *[p for p in partners if p <= d.steps]})


def config(d: Design, run: Run, out: Path, probe: Path) -> Path:
    """The run's recipe: configs/pretrain_tiny.yaml with the design's settings."""
    cfg = yaml.safe_load((ROOT / "configs" / "pretrain_tiny.yaml").read_text())
    ft = run.parent is not None
    steps = d.ft_steps if ft else d.steps
    dense = run.name == f"A-tiny-s{d.seeds[0]}"
    callback = {"probe": "parent" if ft else str(probe), "schedule": dense_schedule(d) if dense else [0, steps],
                "layers": "all", "weights": "sketch" if dense else "none"}
    if dense:
        callback["layers_every"] = d.layers_every
    for cb in cfg["trainer"]["callbacks"]:
        if cb["class_path"].endswith("TrajectoryCallback"):
            cb["init_args"] = {"record": callback}
        if cb["class_path"].endswith("ModelCheckpoint"):
            cb["init_args"]["every_n_train_steps"] = steps
    cfg.update({"seed_everything": run.seed, "run_dir": str(out / run.name)})
    cfg["trainer"].update({"max_steps": steps, "val_check_interval": steps, "limit_val_batches": 4,
                           "enable_progress_bar": False, "log_every_n_steps": max(1, steps // 20)})
    cfg["model"] = ({"init_from": str(out / run.parent / "hf")} if ft else
                    {"preset": run.preset, "context_length": d.seq_len})
    cfg["model"].update({"lr": d.lr * (d.ft_lr_ratio if ft else 1), "weight_decay": d.weight_decay,
                         "warmup_steps": max(1, round(d.warmup_fraction * steps)), "min_lr_ratio": d.min_lr_ratio})
    cfg["data"] = {"corpus": run.mixture, "vocab_size": run.vocab, "seq_len": d.seq_len,
                   "batch_size": d.batch_size, "n_probe": d.n_probe, "seed": run.seed}
    path = out / "configs" / f"{run.name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def train_all(d: Design, out: Path) -> dict[str, float]:
    """Train every run not yet finished in `out`; returns {run: wall seconds} of the runs trained now."""
    from trajlab.cli import main as cli
    from trajlab.data.probe import ProbeSet

    probe = out / "probe.json"
    if not probe.exists():
        ProbeSet.mixture(MIX_A, d.n_probe).save(probe)
    walls = {}
    for run in runs(d):
        if (out / run.name / "hf").exists():
            continue
        print(f"--- {run.name}: {run.preset}, seed {run.seed}, mixture {run.mixture}"
              + (f", fine-tuned from {run.parent}" if run.parent else ""), flush=True)
        t = time.perf_counter()
        if cli(["fit", "--config", str(config(d, run, out, probe))]) != 0:
            raise SystemExit(f"error: training {run.name} failed (see above)")
        walls[run.name] = round(time.perf_counter() - t, 1)
    return walls


def longest_probe_tokens(out: Path, d: Design) -> dict[str, int]:
    """The longest probe text in tokens with each family's tokenizer (each must fit seq_len = context)."""
    from transformers import AutoTokenizer

    from trajlab.data.probe import ProbeSet

    texts = ProbeSet.load(out / "probe.json").texts
    longest = {}
    for run in runs(d):
        if run.parent is None:
            tok = AutoTokenizer.from_pretrained(out / run.name / "hf")
            longest[run.name] = max(len(x) for x in tok(texts, add_special_tokens=False)["input_ids"])
    return longest


def machine() -> str:
    """'N CPU cores (model), torch T threads' for results.json and the doc."""
    import platform

    import torch

    model = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                      if ln.startswith("model name")), model)
    return f"{os.cpu_count()} CPU cores ({model}), torch {torch.get_num_threads()} threads"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/reproduce_toy", help="output folder (finished runs in it are reused)")
    ap.add_argument("--quick", action="store_true", help="the same pipeline, 24 steps and 32 texts (minutes)")
    ap.add_argument("--write-doc", action="store_true", help="write docs/reproduction.md from this run")
    args = ap.parse_args(argv)
    d = QUICK if args.quick else Design()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    walls = train_all(d, out)
    results = findings(d, out, runs(d))
    results["longest_probe_tokens"] = longest_probe_tokens(out, d)
    results["hyperparameters"] = dataclasses.asdict(d) | {
        "warmup_steps": d.warmup, "finetune_steps": d.ft_steps, "dense_schedule": dense_schedule(d),
        "mixtures": {"A": MIX_A, "B": MIX_B, "C": MIX_C, **FT_MIXES},
        "runs": [dataclasses.asdict(r) for r in runs(d)], "quick": args.quick}
    results["train_wall_s"] = walls
    from trajlab.report import write_report

    results["report"] = str(write_report([out], out / "report", tsne=True))
    results["wall_s"] = round(time.perf_counter() - t0, 1)
    results["machine"], results["out"] = machine(), str(out)
    results["command"] = "python scripts/reproduce_toy.py " + " ".join(sys.argv[1:] if argv is None else argv)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    for o in results["orderings"]:
        print(f"[{'holds' if o['holds'] else 'DOES NOT HOLD'}] {o['name']}: {o['detail']}")
    print(f"results: {out / 'results.json'}; wall time {results['wall_s']:.0f} s")
    if args.write_doc:
        print(f"wrote {write_doc(results, ROOT / 'docs' / 'reproduction.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
