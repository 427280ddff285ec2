"""The paper-style pipeline for one Pythia model: import its 154 revisions (sharded if asked), merge, analyse.

    python scripts/pythia_trajectory.py EleutherAI/pythia-70m --out runs/pythia-70m [--shards 4] [--dry-run]

Needs network or an HF cache holding the revisions (HF_HUB_OFFLINE=1 then reads only the cache). Writes
OUT/store (the merged trajectory; shards under OUT/shards/) and OUT/analysis (summary.json, tables, figures).
`--dry-run` prints the revisions, size estimates and the equivalent `trajlab` commands, and touches neither
the network nor the disk. Run a single shard (`--only-shard i`) to spread shards over a scheduler's jobs;
rerun without it afterwards to merge and analyse (finished shards are skipped: imports resume).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from trajlab.hub.checkpoints import ModelRef, model_ref
from trajlab.hub.dryrun import PYTHIA_SIZES as SIZES
from trajlab.hub.dryrun import pythia_params as n_params
from trajlab.hub.revisions import expand_revisions


def commands(args, ref: ModelRef) -> list[list[str]]:
    """The trajlab commands of the pipeline, in order (import per shard, merge, analyze)."""
    out = Path(args.out)
    shard_out = [out / "store"] if args.shards == 1 else [out / "shards" / str(i) for i in range(args.shards)]
    common = ["--revisions", args.revisions, "--window", str(args.window), "--layers", args.layers]
    for flag, value in (
        ("--probe", args.probe),
        ("--device", args.device),
        ("--batch-size", args.batch_size),
    ):
        if value is not None:
            common += [flag, str(value)]
    common += [
        f for f, on in (("--clean-cache", args.clean_cache), ("--allow-pickle", args.allow_pickle)) if on
    ]
    steps = []
    for i, path in enumerate(shard_out):
        if args.only_shard in (None, i):
            shard = ["--shard", f"{i}/{args.shards}"] if args.shards > 1 else []
            steps.append(["import", ref.name, *common, *shard, "--out", str(path)])
    if args.only_shard is None:
        if args.shards > 1:
            steps.append(["merge", *map(str, shard_out), "--out", str(out / "store")])
        steps.append(["analyze", str(out / "store"), "--out", str(out / "analysis")])
    return steps


def describe(args, ref: ModelRef, revisions: list[str]) -> None:
    """Print what the pipeline will do and how big it is."""
    shown = revisions if len(revisions) <= 5 else [*revisions[:4], "...", revisions[-1]]
    print(f"model {ref.name}: {len(revisions)} revisions: {', '.join(shown)}")
    size = ref.meta.get("size")
    if size in SIZES:
        layers, gib = SIZES[size][0], 2**30
        n = n_params(*SIZES[size])
        print(f"~{n:,} parameters; {layers} layers -> {layers + 1} LL rows per revision")
        keep = "deleted after each revision" if args.clean_cache else "add --clean-cache to keep ~one on disk"
        print(f"download: ~{2 * n / gib:.1f} GiB per revision (fp16), "
              f"~{len(revisions) * 2 * n / gib:.1f} GiB for all ({keep})")
        print(f"memory: model {4 * n / gib:.1f} GiB (fp32) + exact-distance window {args.window} x "
              f"{4 * n / gib:.2f} GiB = {args.window * 4 * n / gib:.1f} GiB (--window 0: sketch only)")
    print("commands:")
    for argv in commands(args, ref):
        print("  trajlab " + shlex.join(argv))


def run(args, ref: ModelRef) -> int:
    """Run the commands in this process; stop at the first that fails."""
    from trajlab.analysis import analyze
    from trajlab.cli import main as trajlab_main
    from trajlab.store import open_stores

    for argv in commands(args, ref):
        print("+ trajlab " + shlex.join(argv), flush=True)
        if argv[0] == "analyze":
            summary = analyze(open_stores([argv[1]]), argv[3])
            print(f"analysis written to {argv[3]}: {', '.join(summary.get('tables', []))}")
            continue
        rc = trajlab_main(argv)
        if rc:
            print(f"stopped: `trajlab {argv[0]}` exited with {rc}", file=sys.stderr)
            return rc
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="e.g. EleutherAI/pythia-70m (or an HF cache folder models--ORG--NAME)")
    p.add_argument("--out", required=True, help="run folder: OUT/store, OUT/shards/i, OUT/analysis")
    p.add_argument("--revisions", default="pythia", help="default all 154; or a list / range stepA-stepB")
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--only-shard", type=int, help="import just this shard (for a scheduler job)")
    p.add_argument("--window", type=int, default=10)
    p.add_argument("--layers", choices=("all", "last"), default="all")
    p.add_argument("--probe")
    p.add_argument("--device")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--clean-cache", action="store_true")
    p.add_argument("--allow-pickle", action="store_true", help="for revisions with only pytorch_model*.bin")
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args(argv)
    if args.shards < 1 or (args.only_shard is not None and not 0 <= args.only_shard < args.shards):
        p.error("need --shards >= 1 and 0 <= --only-shard < --shards")
    ref = model_ref(args.model)
    revisions = expand_revisions(args.revisions, pythia=ref.pythia)
    describe(args, ref, revisions)
    return 0 if args.dry_run else run(args, ref)


if __name__ == "__main__":
    sys.exit(main())
