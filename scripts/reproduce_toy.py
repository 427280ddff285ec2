"""A toy reproduction of the papers' findings: seeds, sizes and fine-tunes of the tiny model on one probe set.

Trains (on the bundled corpora, with the TrajectoryCallback) three seeds of the `tiny` preset, one run of each
other size, and a Bible fine-tune of each tiny seed; scores them all on one probe set; then prints a table next to
the paper's Pythia-410M numbers and checks the orderings the paper reports, saying honestly which hold at toy scale.
Default settings take ~45-60 minutes on 2 CPU cores; `--steps 300` gives a rough version in ~10.

    python scripts/reproduce_toy.py [--out runs/reproduce_toy] [--steps 1200] [--finetune-steps 300]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAPER = {  # bits/byte, Pythia-410M (Kishino et al. v1 tables)
    "consecutive early (paper 10k->11k)": 0.069,
    "consecutive middle (paper 50k->51k)": 0.053,
    "consecutive late (paper 100k->101k)": 0.023,
    "between seeds (mean)": 0.11,
    "vs other sizes (paper 410M vs 1B..6.9B)": "0.28 .. 1.7",
    "fine-tuned vs base (median)": 0.40,
    "random pairs (median)": 2.1,
}


def recipe(base: str, out: Path, name: str, *, probe: Path, schedule: str, overrides: dict) -> Path:
    """Write a copy of a configs/ recipe with the callback pointed at the shared probe."""
    cfg = yaml.safe_load((ROOT / "configs" / base).read_text())
    cfg["run_dir"] = str(out / name)
    for cb in cfg["trainer"]["callbacks"]:
        if cb["class_path"].endswith("TrajectoryCallback"):
            cb.setdefault("init_args", {}).update(
                {"probe": str(probe), "n_texts": None, "schedule": schedule, "layers": "all"})
    for dotted, value in overrides.items():
        node = cfg
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    path = out / "configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def train_all(out: Path, steps: int, ft_steps: int, seeds: list[int], sizes: list[str], *, dense_snapshots: int,
              probe_per_domain: int) -> None:
    from trajlab import ProbeSet
    from trajlab.cli import main as cli

    probe = out / "probe.json"
    if not probe.exists():
        ProbeSet.default(n_per_domain=probe_per_domain).save(probe)
    dense, sparse = f"every:{max(steps // dense_snapshots, 1)}", f"every:{max(steps // 10, 1)}"
    warm = max(steps // 12, 10)
    runs = [(f"tiny-seed{s}", "tiny", s, dense if s == seeds[0] else sparse) for s in seeds]
    runs += [(f"{p}-seed{seeds[0]}", p, seeds[0], sparse) for p in sizes if p != "tiny"]
    for name, preset, seed, schedule in runs:
        if (out / name / "hf").exists():
            continue
        print(f"--- pretraining {name} ({steps} steps)", flush=True)
        cfg = recipe("pretrain_tiny.yaml", out, name, probe=probe, schedule=schedule, overrides={
            "seed_everything": seed, "model.preset": preset, "trainer.max_steps": steps,
            "model.warmup_steps": warm, "data.seed": seed})
        cli(["fit", "--config", str(cfg)])
    for s in seeds:
        name = f"tiny-seed{s}-bible"
        if (out / name / "hf").exists():
            continue
        print(f"--- fine-tuning {name} ({ft_steps} steps)", flush=True)
        cfg = recipe("finetune_tiny.yaml", out, name, probe=probe, schedule=f"every:{max(ft_steps // 5, 1)}",
                     overrides={"seed_everything": s, "model.init_from": str(out / f"tiny-seed{s}" / "hf"),
                                "trainer.max_steps": ft_steps})
        cli(["fit", "--config", str(cfg)])


def findings(out: Path, seeds: list[int], sizes: list[str]) -> tuple[list, list]:
    from trajlab import analysis as ta
    from trajlab.store import open_stores

    names = [f"tiny-seed{s}" for s in seeds] + [f"{p}-seed{seeds[0]}" for p in sizes if p != "tiny"]
    fts = [f"tiny-seed{s}-bible" for s in seeds]
    stores = dict(zip(names + fts, open_stores([out / n / "trajectory" for n in names + fts]), strict=True))
    nb = stores[names[0]].n_bytes
    finals = {n: s.loglik()[-1] for n, s in stores.items()}
    kl = lambda a, b: float(ta.kl_matrix(np.stack([a, b]), nb)[0, 1])  # noqa: E731

    main = stores[names[0]]
    ll, steps = main.loglik(), main.steps
    cons = {}
    for label, frac in (("early", 0.07), ("middle", 0.35), ("late", 0.70)):
        i = int(np.argmin(np.abs(steps - frac * steps[-1])))
        cons[label] = (kl(ll[i], ll[i + 1]), int(steps[i]), int(steps[i + 1]))
    seed_kl = [kl(finals[a], finals[b]) for i, a in enumerate(names[: len(seeds)]) for b in names[i + 1 : len(seeds)]]
    size_kl = {n: kl(finals[names[0]], finals[n]) for n in names[len(seeds):]}
    order = list(finals)
    ft = ta.finetune_vs_base(np.stack([finals[n] for n in order]),
                             [(order.index(f), order.index(f"tiny-seed{s}")) for f, s in zip(fts, seeds, strict=True)],
                             nb, seed=0)
    ll_fits = ta.diffusion_exponents(ta.kl_matrix(ll, nb), steps, window=10)
    w_fits = ta.diffusion_exponents(main.weight_sq_dist_matrix(), main.weight_steps, window=10)
    c_ll, c_w = ta.summarize_exponents(ll_fits)["median"], ta.summarize_exponents(w_fits)["median"]
    threads = ta.layer_threads(main.loglik_all(), nb)
    turns = {m: ta.spiral_stats(ta.embed(ll, m, 2, nb))["winding_turns"] for m in ("pca", "tsne")}

    rows = [(f"consecutive {k} (toy {a}->{b}; paper {p})", v, PAPER[f"consecutive {k} (paper {p})"])
            for (k, (v, a, b)), p in zip(cons.items(), ("10k->11k", "50k->51k", "100k->101k"), strict=True)]
    rows += [("between seeds (mean)", float(np.mean(seed_kl)), PAPER["between seeds (mean)"])]
    rows += [(f"tiny vs {n}", v, PAPER["vs other sizes (paper 410M vs 1B..6.9B)"]) for n, v in size_kl.items()]
    rows += [("fine-tuned vs base (median)", ft["pairs"]["median"], PAPER["fine-tuned vs base (median)"]),
             ("random pairs (median)", ft["random"]["median"], PAPER["random pairs (median)"]),
             ("LL-space diffusion exponent c (median)", c_ll, "< weight-space c"),
             ("weight-space diffusion exponent c (median)", c_w, "~1 or more"),
             ("thread score (adjacent / random layer-pair KL)", threads["thread_score"], "<< 1"),
             ("spiral: PCA-map winding (turns)", turns["pca"], ">= 1 (visual in the paper)"),
             ("spiral: t-SNE-map winding (turns)", turns["tsne"], ">= 1 (visual in the paper)")]
    min_size = min(size_kl.values()) if size_kl else float("nan")
    checks = [
        ("consecutive < between seeds < between sizes",
         max(c[0] for c in cons.values()) < np.mean(seed_kl) < min_size,
         f"{max(c[0] for c in cons.values()):.3g} < {np.mean(seed_kl):.3g} < {min_size:.3g}"),
        ("fine-tune-to-base < random pairs", ft["pairs"]["median"] < ft["random"]["median"],
         f"{ft['pairs']['median']:.3g} < {ft['random']['median']:.3g}"),
        ("late consecutive KL < early", cons["late"][0] < cons["early"][0],
         f"{cons['late'][0]:.3g} < {cons['early'][0]:.3g}"),
        ("LL-space diffusion exponent < weight-space", c_ll < c_w, f"{c_ll:.3g} < {c_w:.3g}"),
        ("adjacent layers far closer than random layer pairs (score < 0.5)", threads["thread_score"] < 0.5,
         f"thread score {threads['thread_score']:.3g}"),
        ("a spiral of at least one turn in the pretraining map", max(abs(t) for t in turns.values()) >= 1,
         ", ".join(f"{m} {t:+.2f} turns" for m, t in turns.items())),
    ]
    return rows, checks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/reproduce_toy")
    ap.add_argument("--steps", type=int, default=1200, help="pretraining steps per run")
    ap.add_argument("--finetune-steps", type=int, default=300)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--sizes", default="nano,micro,tiny,small")
    ap.add_argument("--dense-snapshots", type=int, default=100, help="snapshots of the seed-0 tiny run")
    ap.add_argument("--probe-per-domain", type=int, default=64, help="probe texts per bundled corpus")
    args = ap.parse_args()
    out = Path(args.out)
    seeds, sizes = [int(s) for s in args.seeds.split(",")], args.sizes.split(",")
    t0 = time.perf_counter()
    train_all(out, args.steps, args.finetune_steps, seeds, sizes, dense_snapshots=args.dense_snapshots,
              probe_per_domain=args.probe_per_domain)
    rows, checks = findings(out, seeds, sizes)
    lines = [f"toy reproduction: {args.steps} pretraining steps, seeds {seeds}, sizes {sizes}, "
             f"{2 * args.probe_per_domain} probe texts; KL in bits/byte",
             "", f"| {'quantity':<55} | {'toy':>9} | {'paper':<26} |", f"|{'-' * 57}|{'-' * 11}|{'-' * 28}|"]
    lines += [f"| {q:<55} | {v:>9.4g} | {str(p):<26} |" for q, v, p in rows]
    lines += ["", "orderings the paper reports:"]
    lines += [f"  [{'holds' if ok else 'DOES NOT HOLD'}] {name}: {detail}" for name, ok, detail in checks]
    lines += ["", f"wall time: {time.perf_counter() - t0:.0f} s"]
    text = "\n".join(lines)
    print("\n" + text)
    (out / "reproduce_toy.md").write_text(text + "\n")
    (out / "reproduce_toy.json").write_text(json.dumps(
        {"rows": [[q, v, str(p)] for q, v, p in rows], "checks": [[n, bool(ok), d] for n, ok, d in checks]},
        indent=1))


if __name__ == "__main__":
    main()
