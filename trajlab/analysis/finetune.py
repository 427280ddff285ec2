"""Fine-tuned vs base: each child's KL to its parent snapshot, and fine-tune pairs against random pairs."""

from __future__ import annotations

import numpy as np

from trajlab.analysis.config import AnalysisConfig
from trajlab.analysis.kl import kl_paired, kl_unit_factor
from trajlab.analysis.order import order_test
from trajlab.analysis.pairs import mean_tokens, root_of
from trajlab.analysis.tables import Trajectory, finetune_vs_base, lineage_pairs


def finetune_summary(
    trajs: list[Trajectory], n_bytes: np.ndarray | None, cfg: AnalysisConfig, notes: list[str]
) -> dict | None:
    """Returns fine-tuned vs base over all runs' final snapshots plus the parents' snapshots.

    Pairs: each child's final snapshot vs its parent snapshot. Random pairs: final snapshots of runs with
    different lineage roots (parent snapshots that are not a run's final one are never drawn).
    """
    rows, labels, roots, tokens, pairs = [], [], [], [], []
    metas = {t.name: t.meta for t in trajs}
    n = trajs[0].ll.shape[1]

    def index_of(t: Trajectory, step: int, root: str | None) -> int:
        label = f"{t.name}@{step}"
        if label not in labels:
            labels.append(label)
            rows.append(t.row(step))
            roots.append(root)
            tokens.append(mean_tokens(t.meta, n))
        return labels.index(label)

    for t in trajs:
        index_of(t, int(t.steps[-1]), root_of(t.name, metas))
    for t, parent, step in lineage_pairs(trajs):  # missing parents: noted by the comparison table
        pairs.append((index_of(t, int(t.steps[-1]), None), index_of(parent, step, None)))
    if not pairs:
        return None
    if len({r for r in roots if r is not None}) < 2:
        notes.append(
            "fine-tuned vs base: random pairs need final snapshots of runs with different lineage roots"
        )
        return None
    out = finetune_vs_base(
        np.stack(rows),
        pairs,
        n_bytes,
        cfg.n_random,
        cfg.seed,
        roots=roots,
        n_boot=cfg.n_boot,
        level=cfg.level,
    )
    factor = kl_unit_factor(n_bytes, n)

    def flagged(index_pairs, kls) -> list[bool | None]:
        flags = []
        for (i, j), v in zip(index_pairs, kls, strict=True):
            known = [tk for tk in (tokens[i], tokens[j]) if tk]
            flags.append(bool(v / factor / np.mean(known) > cfg.max_nats_per_token) if known else None)
        return flags

    flags = flagged(pairs, out["pair_kl"])
    random_pairs = [tuple(int(x) for x in p) for p in out["random_pairs"]]
    random_kl = kl_paired(
        np.stack(rows)[[i for i, _ in random_pairs]], np.stack(rows)[[j for _, j in random_pairs]], n_bytes
    )
    random_flags = flagged(random_pairs, random_kl)
    out["order_runs"] = _pairs_order(
        rows, pairs, out["pair_kl"], flags, random_pairs, random_kl, random_flags, factor, cfg
    )
    return {
        **out,
        "models": labels,
        "roots": roots,
        "pair_labels": [(labels[a], labels[b]) for a, b in pairs],
        "beyond_checked_range": flags,
        "random_beyond_checked_range": random_flags,
    }


def _pairs_order(rows, pairs, pair_kl, flags, random_pairs, random_kl, random_flags, factor, cfg) -> dict:
    """Returns order_test of fine-tune pair KLs < random pair KLs with pairs of runs as units.

    Flagged pairs (beyond max_nats_per_token) are left out when cfg.exclude_flagged. With at most 100 pairs
    in all, each unit carries its per-text differences (the interval resamples pairs, then texts).
    """

    def units(index_pairs, kls, fl):
        keep = [k for k, f in enumerate(fl) if not (cfg.exclude_flagged and f)]
        if len(pairs) + len(random_pairs) > 100:
            return [float(kls[k]) for k in keep], len(fl) - len(keep)
        return [
            {"kl": float(kls[k]), "d": rows[index_pairs[k][0]] - rows[index_pairs[k][1]], "factor": factor}
            for k in keep
        ], len(fl) - len(keep)

    small, left_small = units(pairs, pair_kl, flags)
    large, left_large = units(random_pairs, random_kl, random_flags)
    if not small or not large:
        return {
            "holds": False,
            "reason": "every pair of one side is flagged beyond the checked range",
            "n_left_out": left_small + left_large,
            "n_units": [len(small), len(large)],
        }
    res = order_test(small, large, seed=cfg.seed, level=cfg.level)
    res["n_left_out"] = left_small + left_large
    res["note"] = "random pairs share runs, so they are not independent units (as in the paper's Table 2)"
    return res


def kl_to_parent(runs: dict, trajs: list[Trajectory], nb: np.ndarray | None) -> None:
    """Adds each child's KL to its parent snapshot, one value per child snapshot."""
    for t, parent, step in lineage_pairs(trajs):
        kl = kl_paired(t.ll, np.broadcast_to(parent.row(step), t.ll.shape), nb)
        runs[t.name]["kl_to_parent"] = {"parent": parent.name, "step": step, "kl": kl}
