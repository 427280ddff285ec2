"""Import throughput on a fake HF cache: in-process vs Ray with 1 and 2 workers, measured side by side.

    python scripts/bench_import.py [--revisions 12] [--rounds 2] [--texts 60]

Builds a fake cache of tiny GPT-NeoX revisions (the tests' builder), starts a local Ray cluster
(num_cpus=2) once, then per round imports every revision with each executor into a fresh store, in turn, so
the three see the same machine load. Prints revisions per minute, the Ray path's overhead per revision (Ray
with 1 worker minus in-process, over the revisions) and the 2-worker speed-up next to its ceiling: with W
workers each task also imports max(window, 1) preloaded revisions, so the ideal is K / (ceil(K / W) +
window). One torch thread everywhere (every Ray task takes the driver's count).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build_cache(root: Path, k: int) -> str:
    from conftest import make_tokenizer
    from test_importers import hub_cache, revision_model

    tok, folders = make_tokenizer(), {}
    for seed in range(1, k + 1):
        folders[seed] = root / "saved" / str(seed)
        revision_model(seed).save_pretrained(folders[seed])
        tok.save_pretrained(folders[seed])
    hub_cache(root / "hub", folders, {f"step{1000 * s}": s for s in folders})
    return ",".join(f"step{1000 * s}" for s in folders)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--revisions", type=int, default=12)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--texts", type=int, default=60, help="probe texts (the sample texts repeated)")
    p.add_argument("--window", type=int, default=3)
    args = p.parse_args()

    import ray
    import torch
    from conftest import SAMPLE_TEXTS
    from test_importers import REPO

    from trajlab import import_checkpoints
    from trajlab.data.probe import ProbeSet

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    probe = ProbeSet.from_texts((SAMPLE_TEXTS * args.texts)[: args.texts], name="bench")
    k = args.revisions
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        revisions = build_cache(root, k)
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - t0
        modes = {
            "in-process": {},
            "ray 1 worker": {"executor": "ray", "workers": 1},
            "ray 2 workers": {"executor": "ray", "workers": 2},
        }
        times: dict[str, list[float]] = {m: [] for m in modes}
        opts = dict(cache_dir=root / "hub", window=args.window, sketch_k=256, progress=False)
        for r in range(args.rounds + 1):  # round 0 warms up (imports, Ray workers) and is not counted
            for mode, extra in modes.items():
                t = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):  # the per-revision lines
                    result = import_checkpoints(REPO, revisions, root / f"{mode}-{r}", probe, **opts, **extra)
                assert len(result.imported) == k, (mode, result)
                if r:
                    times[mode].append(time.perf_counter() - t)
        ray.shutdown()
    med = {m: statistics.median(v) for m, v in times.items()}
    print(
        f"{k} revisions, {args.texts} probe texts, window {args.window}, median of {args.rounds} rounds; "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; Ray start {ray_start:.1f} s (once)"
    )
    for mode, s in med.items():
        print(f"  {mode:<14} {s:7.2f} s  {60 * k / s:7.1f} revisions/min")
    ceiling = k / (math.ceil(k / 2) + max(args.window, 1))
    print(
        f"ratio ray 1 worker / in-process time: {med['ray 1 worker'] / med['in-process']:.2f}x; Ray overhead "
        f"{(med['ray 1 worker'] - med['in-process']) / k:+.3f} s per revision "
        f"({med['ray 1 worker'] / med['in-process'] - 1:+.0%} of in-process)"
    )
    print(
        f"speed-up ray 2 workers vs ray 1 worker: {med['ray 1 worker'] / med['ray 2 workers']:.2f}x "
        f"(ceiling with {max(args.window, 1)} preloaded revisions per extra shard: {ceiling:.2f}x); "
        f"vs in-process: {med['in-process'] / med['ray 2 workers']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
