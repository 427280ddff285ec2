"""The toy KL scale: the paper's settings at toy scale, every arm replicated over seeds, orderings with runs as units.

Design (every choice fixed here before the run, written to results.json; never tuned on the evaluated seeds):
- Probe: 256 held-out chunks of family A's mixture (60% Shakespeare, 30% Bible, 10% Python docs), domains
  recorded, held out from every family's training data, scored whole (context 512 tokens). One probe for all
  stores (the scale compares stores of one probe only).
- Family A (GPT-NeoX, its own 4096-id BPE): sizes nano / tiny / small (~0.6M / 2.2M / 6.8M parameters with the
  untied 4096 vocabulary, neighbours >= 3x apart; micro is left out: only 1.8x below tiny), each with seeds 0, 1, 2;
  a seed sets the initialisation and the data order (seed_everything and data.seed, as PolyPythias), so the
  three sizes of one seed share one data order (size pairs: all pairs among the sizes per data order, 3 x 3).
  Pythia's schedule: 1% linear warm-up, cosine to 10% of the peak lr 1e-3 (Pythia 14m-70m), AdamW betas
  0.9 / 0.95, weight decay 0.01; 240 steps of 4 x 512 tokens.
- Snapshots: tiny and nano runs on a regular grid (every 8 steps = 3.3% of the run, which is the consecutive
  lag of Early / Later; the paper's 1000 steps are 0.7% of its run), the model's output at every grid point,
  weight sketches and exact weight distances (for c_W); tiny runs ("dense") also every lens row at every 5th
  grid point (layer threads). Early / Later and c_LL < c_W are pooled over the six gridded runs (the paper
  pools Early / Later over its five sizes): with 3 runs per side a permutation over runs cannot go below
  p = 0.05. small runs and the other families score every lens row once, at their final step.
- Fine-tunes: continued pretraining of each tiny seed (and of family B) for 30% of the pretraining steps at the
  full peak lr, on a mixture that moves weight to another domain (A: docs 10% -> 50%; B: Shakespeare 30% ->
  70%); lineage parent = the base's final snapshot. Sized from reasoning, not from these runs: 15 steps at 10%
  of the peak (the previous design) gave KL 0.018 against seeds ~0.2; KL grows at least like (lr x steps)^0.8,
  so 48x more lr x steps gives >= 0.4, the paper's fine-tune / seed ratio (~4).
- Quantization: GGUF Q8_0 and Q4_0 (the gguf package's quantizers, llama-quantize's default tensor mix) of
  every final tiny and nano model (6 vs 6 quantized models), parent = that run's final snapshot.
- Other roots: family B (GPT-2 gpt2-tiny, 6144-id BPE, Bible-heavy), family B2 (GPT-2 gpt2-nano, 3072-id BPE,
  docs-heavy) and family C (GPT-NeoX micro, 8192-id BPE, docs-heavy). Intra-type pairs: different roots of one
  model class (A or its fine-tunes vs C; B vs B2); random pairs: different classes.
- Runs execute in `--jobs` parallel processes of one torch thread each (2 on 2 cores): small models use one
  core far better than two threads do.

    python scripts/reproduce_toy.py --out DIR               # the full design (estimate: ~35 min on 2 cores)
    python scripts/reproduce_toy.py --out DIR --quick       # the same pipeline, small (minutes)
    python scripts/reproduce_toy.py --out DIR --write-doc   # also writes docs/reproduction.md
    python scripts/reproduce_toy.py --out DIR --doc-only    # the doc again from DIR/results.json

DIR/results.json holds the scale, every ordering with its unit, n, test, p, smallest reachable p and verdict,
the spiral and thread tests per dense seed, the design, the machine and the wall time. A rerun reuses finished
runs in DIR.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from reproduce_toy_findings import findings, write_doc

MIX = {
    "A": {"shakespeare": 0.6, "bible": 0.3, "docs": 0.1},
    "B": {"shakespeare": 0.3, "bible": 0.5, "docs": 0.2},
    "B2": {"shakespeare": 0.3, "bible": 0.2, "docs": 0.5},  # docs <= 0.5: its held-out pool has 128 of 256
    "C": {"shakespeare": 0.4, "bible": 0.2, "docs": 0.4},
    "A-ft": {"shakespeare": 0.3, "bible": 0.2, "docs": 0.5},  # A's with weight moved to docs (pool: <= 0.5)
    "B-ft": {"shakespeare": 0.7, "bible": 0.2, "docs": 0.1},  # B's with weight moved to Shakespeare
}


@dataclass(frozen=True)
class Design:
    """Everything that decides the experiment; written to results.json as "hyperparameters"."""

    steps: int = 240  # pretraining optimizer steps of every root run
    batch_size: int = 4
    seq_len: int = 512  # = the model's context; holds every probe text whole (checked: longest_probe_tokens)
    lr: float = 1e-3  # Pythia 14m / 31m / 70m peak
    warmup_fraction: float = 0.01  # Pythia: 1% linear warm-up
    min_lr_ratio: float = 0.1  # Pythia: cosine decay to 10% of the peak
    weight_decay: float = 0.01
    ft_fraction: float = 0.3  # fine-tunes: 30% of the pretraining steps ...
    ft_lr_ratio: float = 1.0  # ... at the full peak lr
    n_probe: int = 256
    seeds: tuple[int, ...] = (0, 1, 2)
    sizes: tuple[str, ...] = ("nano", "tiny", "small")  # family A, each with every seed
    gridded: tuple[str, ...] = ("nano", "tiny")  # sizes snapshotted on the grid (Early / Later, c_LL vs c_W)
    dense: str = "tiny"  # the gridded size that also scores every lens row (threads, spiral)
    grid: int = 8  # snapshot spacing of gridded runs = the consecutive lag
    layers_every: int = 5  # dense runs: every lens row at every 5th grid point and at the end
    quantized: tuple[str, ...] = ("nano", "tiny")  # Q8_0 and Q4_0 of every final model of these sizes
    formats: tuple[str, ...] = ("q8_0", "q4_0")
    spiral_n_null: int = 200
    spiral_n_null_tsne: int = 40
    n_boot: int = 1000
    # Pairs above 1 nat/token (AnalysisConfig.max_nats_per_token) stay in the orderings, flagged in the table:
    # random and intra-type pairs lie there by construction (the paper's too: 2.1 bits/byte ~ 6 nats/token).
    exclude_flagged: bool = False

    @property
    def ft_steps(self) -> int:
        return max(2, round(self.ft_fraction * self.steps))


# The same pipeline small: 12 snapshots after warm-up are the fewest that give full 10-lag diffusion fits.
QUICK = Design(steps=12, batch_size=2, n_probe=24, grid=1, layers_every=4, spiral_n_null=20, spiral_n_null_tsne=4,
               n_boot=200)


@dataclass(frozen=True)
class Run:
    """One store of the design: a pretraining run, a fine-tune (parent = base run) or a quantized copy."""

    name: str
    family: str
    preset: str | None = None
    seed: int = 0
    vocab: int = 4096
    parent: str | None = None
    fmt: str | None = None  # quantized copies: the GGUF format

    @property
    def kind(self) -> str:
        return "quantized" if self.fmt else "fine-tune" if self.parent else "pretraining"


def runs(d: Design) -> list[Run]:
    """Roots first (costliest first, for the parallel schedule), then fine-tunes, then quantized copies."""
    order = sorted(d.sizes, key=lambda p: (p not in ("small", d.dense), p))
    roots = [Run(f"A-{p}-s{s}", "A", p, s) for p in order for s in d.seeds]
    roots += [Run("B-gpt2tiny", "B", "gpt2-tiny", 0, 6144), Run("C-micro", "C", "micro", 0, 8192),
              Run("B2-gpt2nano", "B2", "gpt2-nano", 0, 3072)]
    by = {r.name: r for r in roots}
    fts = [Run(f"{b}-ft", f"{by[b].family}-ft", None, by[b].seed, by[b].vocab, b)
           for b in [f"A-{d.dense}-s{s}" for s in d.seeds] + ["B-gpt2tiny"]]
    quant = [Run(f"A-{p}-s{s}-{f}", "A", p, s, parent=f"A-{p}-s{s}", fmt=f)
             for p in d.quantized for s in d.seeds for f in d.formats]
    return roots + fts + quant


def schedule(d: Design, run: Run) -> list[int]:
    """Gridded sizes: 0, grid, 2 grid, ..., steps; every other run: its last step only."""
    if run.kind == "pretraining" and run.family == "A" and run.preset in d.gridded:
        return sorted({*range(0, d.steps + 1, d.grid), d.steps})
    return [d.ft_steps if run.parent else d.steps]


def config(d: Design, run: Run, out: Path, probe: Path) -> Path:
    """The run's recipe: configs/pretrain_tiny.yaml with the design's settings."""
    cfg = yaml.safe_load((ROOT / "configs" / "pretrain_tiny.yaml").read_text())
    ft = run.parent is not None
    steps = d.ft_steps if ft else d.steps
    sched = schedule(d, run)
    gridded = len(sched) > 1
    callback = {"probe": "parent" if ft else str(probe), "schedule": sched, "layers": "all",
                "weights": "sketch" if gridded else "none", "map_every": 0,
                "layers_every": d.layers_every if run.preset == d.dense else max(1, len(sched))}
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
    cfg["data"] = {"corpus": MIX[run.family], "vocab_size": run.vocab, "seq_len": d.seq_len,
                   "batch_size": d.batch_size, "n_probe": d.n_probe, "seed": run.seed}
    path = out / "configs" / f"{run.name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def command(d: Design, run: Run, out: Path, probe: Path) -> list[str]:
    """The `trajlab` argv that makes the run's store."""
    if run.fmt:
        return ["quantize", str(out / run.parent / "hf"), "--format", run.fmt, "--out",
                str(out / run.name / "trajectory"), "--parent", f"{out / run.parent / 'trajectory'}@{d.steps}",
                "--run", run.name, "--progress", "false", "--layers", "last"]  # the scale reads their output only
    return ["fit", "--config", str(config(d, run, out, probe))]


def finished(run: Run, out: Path) -> bool:
    return (out / run.name / ("trajectory" if run.fmt else "hf")).exists()


def _job(argv: list[str], log: Path, in_process: bool) -> float:
    """Runs one trajlab command (in this process, or a one-thread subprocess); returns its wall seconds."""
    t = time.perf_counter()
    if in_process:
        from trajlab.cli import main as cli

        rc = cli(argv)
    else:
        env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        with log.open("w") as fh:
            rc = subprocess.run([sys.executable, "-m", "trajlab.cli", *argv], stdout=fh, stderr=subprocess.STDOUT,
                                env=env, cwd=ROOT, check=False).returncode
    if rc != 0:
        tail = "" if in_process else "\n" + "\n".join(log.read_text().splitlines()[-15:])
        raise RuntimeError(f"trajlab {' '.join(argv[:2])} failed (exit {rc}; log {log}){tail}")
    return round(time.perf_counter() - t, 1)


def train_all(d: Design, out: Path, jobs: int) -> dict[str, float]:
    """Makes every store not yet finished in `out`, `jobs` at a time, each after the runs it starts from;
    returns {run: wall seconds} of the runs made now."""
    from trajlab.data.probe import ProbeSet

    probe = out / "probe.json"
    if not probe.exists():
        ProbeSet.mixture(MIX["A"], d.n_probe).save(probe)
    (out / "logs").mkdir(exist_ok=True)
    todo = [r for r in runs(d) if not finished(r, out)]
    walls, done, running = {}, {r.name for r in runs(d)} - {r.name for r in todo}, {}
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        while todo or running:
            for r in [r for r in todo if r.parent is None or r.parent in done][: jobs - len(running)]:
                todo.remove(r)
                shutil.rmtree(out / r.name, ignore_errors=True)  # a run that died half-way starts afresh
                print(f"--- {r.name}: {r.kind}, {r.preset or 'from ' + str(r.parent)}, seed {r.seed}", flush=True)
                running[pool.submit(_job, command(d, r, out, probe), out / "logs" / f"{r.name}.log",
                                    jobs == 1)] = r
            if not running:
                raise SystemExit(f"error: runs {[r.name for r in todo]} wait for parents that were not made")
            for f in wait(running, return_when=FIRST_COMPLETED).done:
                r = running.pop(f)
                try:
                    walls[r.name] = f.result()
                except RuntimeError as e:
                    raise SystemExit(f"error: {r.name}: {e}") from None
                done.add(r.name)
                print(f"    {r.name} done in {walls[r.name]:.0f} s", flush=True)
    return walls


def parameters(d: Design) -> dict[str, int]:
    """Parameters of each root run's model (vocabulary included), from the presets."""
    from trajlab.train.models import build_model, n_parameters

    return {r.name: n_parameters(build_model(r.preset, r.vocab, d.seq_len)) for r in runs(d)
            if r.kind == "pretraining" and r.seed == d.seeds[0]}


def longest_probe_tokens(out: Path, d: Design) -> dict[str, int]:
    """The longest probe text in tokens with each root family's tokenizer (each must fit seq_len = context)."""
    from transformers import AutoTokenizer

    from trajlab.data.probe import ProbeSet

    texts = ProbeSet.load(out / "probe.json").texts
    longest = {}
    for r in runs(d):
        if r.kind == "pretraining" and (r.family != "A" or r.name == f"A-{d.dense}-s{d.seeds[0]}"):
            tok = AutoTokenizer.from_pretrained(out / r.name / "hf")
            longest[r.family] = max(len(x) for x in tok(texts, add_special_tokens=False)["input_ids"])
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
    return f"{os.cpu_count()} CPU cores ({model}), torch {torch.get_num_threads()} threads in the analysis"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/reproduce_toy", help="output folder (finished runs in it are reused)")
    ap.add_argument("--quick", action="store_true", help="the same pipeline, 12 steps and 24 texts (minutes)")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                    help="runs trained at once, one torch thread each (default: min(2, CPU cores)); 1: in-process")
    ap.add_argument("--write-doc", action="store_true", help="write docs/reproduction.md from this run")
    ap.add_argument("--doc-only", action="store_true",
                    help="rewrite docs/reproduction.md from DIR/results.json of a finished run (no training)")
    args = ap.parse_args(argv)
    if args.doc_only:
        results = json.loads((Path(args.out) / "results.json").read_text())
        print(f"wrote {write_doc(results, ROOT / 'docs' / 'reproduction.md')} from {Path(args.out) / 'results.json'}")
        return 0
    if args.jobs < 1:
        ap.error(f"--jobs must be >= 1, got {args.jobs}")
    d = QUICK if args.quick else Design()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    walls = train_all(d, out, args.jobs)
    train_s = round(time.perf_counter() - t0, 1)
    results = findings(d, out, runs(d))
    results["longest_probe_tokens"] = longest_probe_tokens(out, d)
    results["parameters"] = parameters(d)
    results["hyperparameters"] = dataclasses.asdict(d) | {
        "warmup_steps": max(1, round(d.warmup_fraction * d.steps)), "finetune_steps": d.ft_steps,
        "schedules": {r.name: schedule(d, r) for r in runs(d) if r.kind != "quantized"},
        "mixtures": MIX, "runs": [dataclasses.asdict(r) | {"kind": r.kind} for r in runs(d)],
        "quick": args.quick, "jobs": args.jobs}
    results["train_wall_s"] = walls
    results["stage_wall_s"] = {"train": train_s, "analysis": round(time.perf_counter() - t0 - train_s, 1)}
    results["wall_s"] = round(time.perf_counter() - t0, 1)
    results["machine"], results["out"] = machine(), str(out)
    results["command"] = "python scripts/reproduce_toy.py " + " ".join(sys.argv[1:] if argv is None else argv)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    for o in results["orderings"]:
        print(f"[{'holds' if o['holds'] else 'not shown'}] {o['verdict']}")
    print(f"results: {out / 'results.json'}; wall time {results['wall_s']:.0f} s")
    if args.write_doc:
        print(f"wrote {write_doc(results, ROOT / 'docs' / 'reproduction.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
