"""Comparison tables across trajectories (the papers' Tables 1 and 2), from LL vectors on shared texts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from trajlab.analysis.kl import as_ll, kl_paired, kl_unit_factor

CONSECUTIVE_FRACTIONS = (0.1, 0.5, 0.9)


@dataclass(frozen=True)
class Trajectory:
    """One run's snapshots scored on the shared probe texts.

    Attributes:
        name: unique run name.
        steps: (K,) strictly increasing training steps.
        ll: (K, N) LL vectors in nats.
        meta: optional keys "seed" (int), "size" or "preset" (model size label), "parent"
            ({"run": name, "step": int} for a run fine-tuned from another run's snapshot).
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
    trajectories: Sequence[Trajectory], at_steps: Sequence[int] | None = None
) -> list[tuple]:
    """Returns (kind, traj_a, step_a, traj_b, step_b) for every comparison of the Table-1 style table.

    Kinds:
      consecutive: within each trajectory, each step s in at_steps (that has a next snapshot) vs the next
          snapshot; at_steps=None takes the snapshots at 10%, 50% and 90% of each trajectory.
      seed: runs of the same size (meta "size" or "preset") with different meta "seed", at their last common
          step.
      size: runs of different sizes with the same seed (or both without one), at their last common step.
      finetune: a run with meta "parent" at its last snapshot vs the parent run at the parent step (skipped
          when the parent run or step is not among the trajectories).
    Runs with a parent take part only in "consecutive" and "finetune".
    """
    out = []
    for t in trajectories:
        if at_steps is None:
            idx = (
                sorted({int(round(f * (len(t.steps) - 2))) for f in CONSECUTIVE_FRACTIONS})
                if len(t.steps) > 1
                else []
            )
        else:
            idx = [int(i) for s in at_steps for i in np.flatnonzero(t.steps[:-1] == s)]
        out += [("consecutive", t, int(t.steps[i]), t, int(t.steps[i + 1])) for i in idx]
    roots = [t for t in trajectories if "parent" not in t.meta]
    for a, b in combinations(roots, 2):
        step = _last_common_step(a, b)
        if step is None:
            continue
        seeds = (a.meta.get("seed"), b.meta.get("seed"))
        if a.size == b.size and None not in seeds and seeds[0] != seeds[1]:
            out.append(("seed", a, step, b, step))
        elif a.size != b.size and seeds[0] == seeds[1]:
            out.append(("size", a, step, b, step))
    by_name = {t.name: t for t in trajectories}
    for t in trajectories:
        parent = t.meta.get("parent")
        if parent and parent.get("run") in by_name and parent.get("step") in by_name[parent["run"]].steps:
            out.append(("finetune", t, int(t.steps[-1]), by_name[parent["run"]], int(parent["step"])))
    return out


def comparison_table(
    trajectories: Sequence, n_bytes: np.ndarray | None = None, *, at_steps: Sequence[int] | None = None
) -> list[dict]:
    """Returns Table-1-style rows: consecutive-snapshot, between-seed, between-size, fine-tuned-vs-base KL.

    Args:
        trajectories: Trajectory objects or (name, steps, ll, meta) tuples over the same N texts.
        n_bytes: optional (N,) byte counts; adds bits-per-byte columns.
        at_steps: steps for the consecutive rows (see comparison_pairs).

    Returns:
        One dict per comparison (see comparison_pairs for the kinds): kind, a, step_a, b, step_b, kl_nats,
        se_nats, and kl_bits_per_byte, se_bits_per_byte (None without n_bytes).
    """
    trajs = as_trajectories(trajectories)
    pairs = comparison_pairs(trajs, at_steps)
    if not pairs:
        return []
    kl, se = kl_paired(
        np.stack([a.row(sa) for _, a, sa, _, _ in pairs]),
        np.stack([b.row(sb) for _, _, _, b, sb in pairs]),
        return_se=True,
    )
    to_bits = None if n_bytes is None else kl_unit_factor(n_bytes, trajs[0].ll.shape[1])
    return [
        {
            "kind": kind,
            "a": a.name,
            "step_a": sa,
            "b": b.name,
            "step_b": sb,
            "kl_nats": float(v),
            "se_nats": float(e),
            "kl_bits_per_byte": None if to_bits is None else float(v * to_bits),
            "se_bits_per_byte": None if to_bits is None else float(e * to_bits),
        }
        for (kind, a, sa, b, sb), v, e in zip(pairs, kl, se, strict=True)
    ]


def _stats(x: np.ndarray) -> dict[str, float | int]:
    return {
        "median": float(np.median(x)),
        "mean": float(x.mean()),
        "sd": float(x.std(ddof=1)) if len(x) > 1 else float("nan"),
        "n": int(len(x)),
    }


def finetune_vs_base(
    ll: np.ndarray,
    pairs: Sequence[tuple[int, int]],
    n_bytes: np.ndarray | None = None,
    n_random: int = 1000,
    seed: int = 0,
) -> dict:
    """Returns KL of each fine-tuned model to its base against KL of random model pairs (the papers' Table 2).

    Args:
        ll: (K, N) LL vectors of all models in the set (fine-tuned and base models, and any others).
        pairs: (fine-tuned row, base row) index pairs.
        n_bytes: optional (N,) byte counts; if given, bits per byte, else nats per text.
        n_random: number of random pairs: distinct unordered pairs of rows that are not in `pairs`, drawn
            without replacement; all of them if there are at most n_random.
        seed: sampling seed.

    Returns:
        dict(pairs=stats, random=stats, pair_kl=(P,) array, random_pairs=(R, 2) row indices (i < j),
        median_ratio=pairs median / random median), stats being dict(median, mean, sd (ddof=1), n).
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
    listed = np.zeros((k, k), dtype=bool)
    listed[p.min(axis=1), p.max(axis=1)] = True
    iu, ju = iu[~listed[iu, ju]], ju[~listed[iu, ju]]
    if len(iu) == 0:
        raise ValueError("no random pairs left: add models that are not in the (fine-tuned, base) pairs")
    if len(iu) > n_random:
        pick = np.random.default_rng(seed).choice(len(iu), size=n_random, replace=False)
        iu, ju = iu[pick], ju[pick]
    random_kl = kl_paired(a[iu], a[ju], n_bytes)
    pair_stats, random_stats = _stats(pair_kl), _stats(random_kl)
    return {
        "pairs": pair_stats,
        "random": random_stats,
        "pair_kl": pair_kl,
        "random_pairs": np.column_stack([iu, ju]),
        "median_ratio": pair_stats["median"] / random_stats["median"]
        if random_stats["median"] > 0
        else float("nan"),
    }
