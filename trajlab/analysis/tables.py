"""Comparison tables across trajectories (the papers' Tables 1 and 2), from LL vectors on shared texts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from trajlab.analysis.bootstrap import bootstrap_kl, bootstrap_order
from trajlab.analysis.config import AnalysisConfig
from trajlab.analysis.kl import as_ll, kl_paired, kl_unit_factor
from trajlab.analysis.pairs import (
    domain_split,
    fixed_lag_pairs,
    has_parent,
    mean_tokens,
    parent_of,
    resolve_schedule,
)


@dataclass(frozen=True)
class Trajectory:
    """One run's snapshots scored on the shared probe texts.

    Attributes:
        name: unique run name.
        steps: (K,) strictly increasing training steps.
        ll: (K, N) LL vectors in nats.
        meta: optional keys "seed" (int), "size" or "preset" (model size label), "warmup_steps", "max_steps",
            "id", "lineage" ({"root", "parent": {"id", "step"} | None}), the older "parent" ({"run": name,
            "step": int}) and "scoring" ({"n_tokens": [N ints]}), as in store meta (trajlab.analysis.pairs).
    """

    name: str
    steps: np.ndarray
    ll: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def size(self):
        return self.meta.get("size", self.meta.get("preset"))

    def row(self, step: int) -> np.ndarray:
        """Returns the (N,) LL vector at a training step."""
        return self.ll[int(np.flatnonzero(self.steps == step)[0])]


def as_trajectories(trajectories: Sequence) -> list[Trajectory]:
    """Returns checked Trajectory objects from Trajectory or (name, steps, ll[, meta]) tuples."""
    out = []
    for t in trajectories:
        t = t if isinstance(t, Trajectory) else Trajectory(*t)
        ll = as_ll(t.ll, f"ll of {t.name!r}")
        steps = np.asarray(t.steps, dtype=np.int64)
        if steps.shape != (ll.shape[0],) or (np.diff(steps) <= 0).any():
            raise ValueError(
                f"steps of {t.name!r} must be ({ll.shape[0]},) strictly increasing, got {t.steps!r}"
            )
        out.append(Trajectory(t.name, steps, ll, dict(t.meta or {})))
    names = [t.name for t in out]
    if len(set(names)) != len(names):
        raise ValueError(f"trajectory names must be unique, got {names}")
    if len({t.ll.shape[1] for t in out}) > 1:
        raise ValueError("all trajectories must be scored on the same N texts")
    return out


def _last_common_step(a: Trajectory, b: Trajectory) -> int | None:
    common = np.intersect1d(a.steps, b.steps)
    return int(common[-1]) if len(common) else None


def comparison_pairs(
    trajectories: Sequence[Trajectory],
    at_steps: Sequence[int] | None = None,
    *,
    config: AnalysisConfig | None = None,
    notes: list[str] | None = None,
) -> list[tuple]:
    """Returns (kind, traj_a, step_a, traj_b, step_b) for every comparison of the Table-1 style table.

    Kinds:
      consecutive: within each trajectory, the paper's fixed-lag pairs after warm-up (fixed_lag_pairs with the
          run's meta warmup_steps / max_steps, resolve_schedule's stand-ins when missing, and config's
          lag_fraction / target_fractions); with at_steps,
          each listed step (that has a next snapshot) vs the next snapshot instead.
      seed: runs of the same size (meta "size" or "preset") with different meta "seed", at their last common
          step.
      size: runs of different sizes with the same seed (or both without one), at their last common step.
      finetune: a run with a parent (meta lineage, or the older meta "parent") at its last snapshot vs the
          parent run at the parent step (skipped, with a note, when the parent run or step is not analysed).
    Runs with a parent take part only in "consecutive" and "finetune". notes, if given, collects why pairs
    were skipped.
    """
    cfg = config or AnalysisConfig()
    at_steps = cfg.at_steps if at_steps is None else at_steps
    notes = [] if notes is None else notes
    out = []
    for t in trajectories:
        if at_steps is None:
            sched = resolve_schedule(t.meta, t.steps, cfg.assumed_warmup_fraction)
            fl = fixed_lag_pairs(
                t.steps, sched["max_steps"], sched["warmup_steps"], cfg.lag_fraction, cfg.target_fractions
            )
            notes += [f"{t.name}: {n}" for n in sched["notes"] + fl["notes"]]
            out += [("consecutive", t, sa, t, sb) for _, sa, sb in fl["pairs"]]
        else:
            idx = [int(i) for s in at_steps for i in np.flatnonzero(t.steps[:-1] == s)]
            out += [("consecutive", t, int(t.steps[i]), t, int(t.steps[i + 1])) for i in idx]
    roots = [t for t in trajectories if not has_parent(t.meta)]
    for a, b in combinations(roots, 2):
        step = _last_common_step(a, b)
        if step is None:
            continue
        seeds = (a.meta.get("seed"), b.meta.get("seed"))
        same_kind = a.meta.get("seed_varies") == b.meta.get("seed_varies")  # PolyPythia data- / weight-seeds
        if a.size == b.size and None not in seeds and seeds[0] != seeds[1] and same_kind:
            out.append(("seed", a, step, b, step))
        elif a.size != b.size and seeds[0] == seeds[1]:
            out.append(("size", a, step, b, step))
    out += [("finetune", t, int(t.steps[-1]), p, step) for t, p, step in lineage_pairs(trajectories, notes)]
    return out


def lineage_pairs(
    trajectories: Sequence[Trajectory], notes: list[str] | None = None
) -> list[tuple[Trajectory, Trajectory, int]]:
    """Returns (child, parent run, parent step) for every run whose parent snapshot is among the trajectories.

    The parent is named by meta lineage (parent id = the other run's meta id) or the older meta "parent" (run
    name). notes, if given, collects the runs whose parent snapshot is missing.
    """
    by_name = {t.name: t for t in trajectories}
    metas = {t.name: t.meta for t in trajectories}
    out = []
    for t in trajectories:
        if not has_parent(t.meta):
            continue
        parent = parent_of(t.meta, metas)
        if parent is not None and parent[1] < 0:  # a hub base named by a model card: its last snapshot
            parent = (parent[0], int(by_name[parent[0]].steps[-1]))
        if parent is None or parent[1] not in by_name[parent[0]].steps:
            if notes is not None:
                notes.append(f"fine-tuned vs base: the parent snapshot of {t.name!r} is not analysed here")
            continue
        out.append((t, by_name[parent[0]], parent[1]))
    return out


def _per_token(kl_nats: float, a: Trajectory, b: Trajectory, n: int) -> float | None:
    """KL in nats per scored token (mean tokens per text of the two stores); None if neither records them."""
    tokens = [m for m in (mean_tokens(a.meta, n), mean_tokens(b.meta, n)) if m]
    return kl_nats / float(np.mean(tokens)) if tokens else None


def comparison_table(
    trajectories: Sequence,
    n_bytes: np.ndarray | None = None,
    *,
    at_steps: Sequence[int] | None = None,
    config: AnalysisConfig | None = None,
    domains: Sequence[str] | None = None,
    notes: list[str] | None = None,
    kinds: Sequence[str] | None = None,
) -> list[dict]:
    """Returns Table-1-style rows: consecutive-snapshot, between-seed, between-size, fine-tuned-vs-base KL.

    Args:
        trajectories: Trajectory objects or (name, steps, ll, meta) tuples over the same N texts.
        n_bytes: optional (N,) byte counts; adds bits-per-byte columns.
        at_steps: explicit steps of the consecutive rows (see comparison_pairs).
        config: lag / target fractions, bootstrap size, level, seed and the per-token range (AnalysisConfig).
        domains: optional (N,) domain of each text; adds the within- and between-domain parts of Var/2.
        notes: collects why pairs were skipped.
        kinds: only rows of these kinds (None: all).

    Returns:
        One dict per comparison: kind, a, step_a, b, step_b, lag (step_b - step_a for consecutive rows),
        kl_nats, se_nats (delta method), ci_lo_nats, ci_hi_nats (paired text bootstrap at config.level),
        the same four in bits per byte (None without n_bytes), kl_nats_per_token (None when no store recorded
        meta scoring n_tokens), beyond_checked_range (KL per token > config.max_nats_per_token; None when
        unknown), and with domains within_nats, between_nats, within_bits_per_byte, between_bits_per_byte.
    """
    cfg = config or AnalysisConfig()
    trajs = as_trajectories(trajectories)
    pairs = comparison_pairs(trajs, at_steps, config=cfg, notes=notes)
    pairs = [p for p in pairs if kinds is None or p[0] in kinds]
    if not pairs:
        return []
    n = trajs[0].ll.shape[1]
    rows_a = np.stack([a.row(sa) for _, a, sa, _, _ in pairs])
    rows_b = np.stack([b.row(sb) for _, _, _, b, sb in pairs])
    kl, se = kl_paired(rows_a, rows_b, return_se=True)
    to_bits = None if n_bytes is None else kl_unit_factor(n_bytes, n)
    out = []
    for p, ((kind, a, sa, b, sb), v, e) in enumerate(zip(pairs, kl, se, strict=True)):
        _, lo, hi = bootstrap_kl(rows_a[p], rows_b[p], None, cfg.n_boot, cfg.seed + p, cfg.level)
        per_token = _per_token(float(v), a, b, n)
        row = {
            "kind": kind,
            "a": a.name,
            "step_a": sa,
            "b": b.name,
            "step_b": sb,
            "lag": sb - sa if kind == "consecutive" else None,
            "kl_nats": float(v),
            "se_nats": float(e),
            "ci_lo_nats": lo,
            "ci_hi_nats": hi,
        }
        for key, x in (("kl", v), ("se", e), ("ci_lo", lo), ("ci_hi", hi)):
            row[f"{key}_bits_per_byte"] = None if to_bits is None else float(x * to_bits)
        row["kl_nats_per_token"] = per_token
        row["beyond_checked_range"] = None if per_token is None else bool(per_token > cfg.max_nats_per_token)
        if domains is not None:
            split = domain_split(rows_a[p], rows_b[p], domains)
            row["within_nats"], row["between_nats"] = split["within"], split["between"]
            row["within_bits_per_byte"] = None if to_bits is None else split["within"] * to_bits
            row["between_bits_per_byte"] = None if to_bits is None else split["between"] * to_bits
        out.append(row)
    return out


def _stats(x: np.ndarray) -> dict[str, float | int]:
    return {
        "median": float(np.median(x)),
        "mean": float(x.mean()),
        "sd": float(x.std(ddof=1)) if len(x) > 1 else float("nan"),
        "n": len(x),
    }


def finetune_vs_base(
    ll: np.ndarray,
    pairs: Sequence[tuple[int, int]],
    n_bytes: np.ndarray | None = None,
    n_random: int = 1000,
    seed: int = 0,
    *,
    roots: Sequence[str | None] | None = None,
    n_boot: int = 0,
    level: float = 0.95,
) -> dict:
    """Returns KL of each fine-tuned model to its base against KL of random model pairs (the papers' Table 2).

    Random pairs (the paper's): pairs of models with different bases, i.e. rows whose lineage roots differ;
    rows with root None (e.g. an intermediate parent snapshot) are never drawn. Without roots every distinct
    pair not listed in `pairs` counts (use only when no lineage is known).

    Args:
        ll: (K, N) LL vectors of all models in the set (fine-tuned and base models, and any others).
        pairs: (fine-tuned row, base row) index pairs.
        n_bytes: optional (N,) byte counts; if given, bits per byte, else nats per text.
        n_random: number of random pairs, drawn without replacement; all of them if there are at most
        n_random.
        seed: sampling seed (and bootstrap seed).
        roots: optional (K,) lineage root of each row (None: not a random-pair candidate).
        n_boot: if > 0, add "order": bootstrap_order of mean KL(pairs) < mean KL(random pairs) (paired text
            bootstrap, level `level`).

    Returns:
        dict(pairs=stats, random=stats, pair_kl=(P,) array, random_pairs=(R, 2) row indices (i < j),
        median_ratio=pairs median / random median, order=dict or None), stats being dict(median, mean,
        sd (ddof=1), n).
    """
    a = as_ll(ll)
    k = a.shape[0]
    p = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if len(p) == 0:
        raise ValueError("finetune_vs_base needs at least one (fine-tuned, base) pair")
    if (p < 0).any() or (p >= k).any() or (p[:, 0] == p[:, 1]).any():
        raise ValueError(
            f"pairs must be (fine-tuned, base) row indices in [0, {k}) with distinct rows, got {p.tolist()}"
        )
    pair_kl = kl_paired(a[p[:, 0]], a[p[:, 1]], n_bytes)
    iu, ju = np.triu_indices(k, 1)
    if roots is None:
        eligible = np.ones((k, k), dtype=bool)
        eligible[p.min(axis=1), p.max(axis=1)] = False
    else:
        if len(roots) != k:
            raise ValueError(f"roots must give one root (or None) per row ({k}), got {len(roots)}")
        r = list(roots)
        eligible = np.array(
            [[r[i] is not None and r[j] is not None and r[i] != r[j] for j in range(k)] for i in range(k)]
        )
    iu, ju = iu[eligible[iu, ju]], ju[eligible[iu, ju]]
    if len(iu) == 0:
        raise ValueError(
            "no random pairs: add models with a different lineage root (or, without roots, models that are "
            "not in the (fine-tuned, base) pairs)"
        )
    if len(iu) > n_random:
        pick = np.random.default_rng(seed).choice(len(iu), size=n_random, replace=False)
        iu, ju = iu[pick], ju[pick]
    random_kl = kl_paired(a[iu], a[ju], n_bytes)
    pair_stats, random_stats = _stats(pair_kl), _stats(random_kl)
    order = None
    if n_boot > 0:
        order = bootstrap_order(
            a, p.tolist(), np.column_stack([iu, ju]).tolist(), n_bytes, n_boot, seed, level
        )
    return {
        "pairs": pair_stats,
        "random": random_stats,
        "pair_kl": pair_kl,
        "random_pairs": np.column_stack([iu, ju]),
        "median_ratio": pair_stats["median"] / random_stats["median"]
        if random_stats["median"] > 0
        else float("nan"),
        "order": order,
    }
