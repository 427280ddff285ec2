"""``trajlab analyze`` and ``trajlab report``: the command lines over `trajlab.analysis.analyze` and
`trajlab.report.page.write_report`."""

from __future__ import annotations

import argparse
from pathlib import Path

from trajlab.report.page import write_report
from trajlab.store import open_stores


def _analysis_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--nats", action="store_true", help="KL in nats per text instead of bits per byte")
    ap.add_argument("--clip-quantile", type=float, default=None, help="clip LL from below (paper: 0.02)")
    ap.add_argument("--drop-jump-fraction", type=float, default=None,
                    help="drop texts with the largest post-warm-up jumps (paper: 0.03)")
    ap.add_argument("--window", type=int, default=10, help="snapshots per diffusion fit (paper: 10)")
    ap.add_argument("--no-tsne", action="store_true", help="skip the t-SNE maps")
    ap.add_argument("--spiral-nulls", type=int, default=200, help="random walks in the PCA spiral null")
    ap.add_argument("--spiral-nulls-tsne", type=int, default=40, help="random walks in the t-SNE spiral null")
    ap.add_argument("--thread-nulls", type=int, default=500, help="layer permutations in the thread null")
    ap.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of every interval")
    ap.add_argument("--seed", type=int, default=0, help="seed of the nulls and bootstraps")


def _analysis_kwargs(args) -> dict:
    return {
        "n_bytes_units": not args.nats, "clip_quantile": args.clip_quantile,
        "drop_jump_fraction": args.drop_jump_fraction, "window": args.window, "tsne": not args.no_tsne,
        "spiral_n_null": args.spiral_nulls, "spiral_n_null_tsne": args.spiral_nulls_tsne,
        "thread_n_null": args.thread_nulls, "n_boot": args.n_boot, "seed": args.seed,
    }


def analyze_main(argv: list[str]) -> int:
    from trajlab import analysis as ta

    ap = argparse.ArgumentParser(prog="trajlab analyze", description="summary.json, CSV tables, PNG figures")
    ap.add_argument("stores", nargs="+", help="trajectory store folders sharing one probe set")
    _analysis_args(ap)
    args = ap.parse_args(argv)
    summary = ta.analyze(open_stores(args.stores), args.out, **_analysis_kwargs(args))
    print(f"wrote {Path(args.out) / 'summary.json'} with {len(summary['figures'])} figures, "
          f"{len(summary['tables'])} tables")
    return 0


def report_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="trajlab report", description="one self-contained report.html")
    ap.add_argument("paths", nargs="+", help="run folders, store folders, or a folder of runs (runs/demo)")
    _analysis_args(ap)
    args = ap.parse_args(argv)
    page = write_report(args.paths, args.out, **_analysis_kwargs(args))
    print(f"report: {page.resolve()}")
    return 0
