"""Which snapshots the paper compares: fixed-lag consecutive pairs past warm-up, lineage; domain parts of KL.

Store meta keys read here (all optional, v1 stores lack them): "warmup_steps", "max_steps", "id",
"lineage" = {"root": id, "parent": {"id", "step"} | None}, the older "parent" = {"run", "step"}, and
"scoring" = {"n_tokens": [N ints] | None, ...}.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trajlab.analysis.kl import kl_unit_factor


def fixed_lag_pairs(
    steps: np.ndarray,
    max_steps: int | None,
    warmup_steps: int | None,
    lag_fraction: float,
    target_fractions: Sequence[float],
) -> dict:
    """Returns the paper's consecutive-checkpoint pairs of a run: a fixed lag at fixed fractions of training.

    lag = the smallest spacing between neighbouring recorded steps (both >= warmup_steps) that is >=
    lag_fraction * max_steps (rounded to a step; Pythia: 1000 of 143,000). For each target fraction f: the first snapshot at
    or after round(f * max_steps), at or after warmup_steps, with a partner exactly one lag later. Targets
    without such a snapshot are skipped with a note.

    Args:
        steps: (K,) increasing recorded steps.
        max_steps: planned training length; None: the last recorded step stands in (noted).
        warmup_steps: warm-up length; None: 0, no snapshot excluded (noted).
        lag_fraction, target_fractions: see AnalysisConfig.

    Returns:
        dict(pairs = [(target, step_a, step_b)], lag (None if no spacing qualifies), max_steps, warmup_steps,
        notes = [str]).
    """
    st = np.asarray(steps, dtype=np.int64)
    notes = []
    if max_steps is None:
        max_steps = int(st[-1]) if len(st) else 0
        notes.append(f"max_steps unknown: the last recorded step {max_steps} stands in")
    if warmup_steps is None:
        warmup_steps = 0
        notes.append("warmup_steps unknown: no snapshot is excluded as warm-up")
    post = st[st >= warmup_steps]
    threshold = max(1, round(lag_fraction * max_steps))
    out = {
        "pairs": [],
        "lag": None,
        "max_steps": int(max_steps),
        "warmup_steps": int(warmup_steps),
        "notes": notes,
    }
    spacing = np.diff(post)  # between neighbouring recorded snapshots after warm-up
    if not (spacing >= threshold).any():
        notes.append(
            f"no neighbouring snapshots after warm-up are >= {threshold} steps apart: no consecutive pairs"
        )
        return out
    lag = int(spacing[spacing >= threshold].min())
    out["lag"] = lag
    have_partner = post[np.isin(post + lag, post)]
    for f in target_fractions:
        target = round(f * max_steps)
        cand = have_partner[have_partner >= target]
        if len(cand) == 0:
            notes.append(
                f"no snapshot at or after step {target} ({f:.1%} of {max_steps}) has a partner {lag} steps "
                "later: that consecutive pair is skipped"
            )
            continue
        pair = (target, int(cand[0]), int(cand[0]) + lag)
        if any(p[1] == pair[1] for p in out["pairs"]):
            notes.append(f"target step {target} gives the same pair as an earlier target: not repeated")
            continue
        out["pairs"].append(pair)
    return out


def resolve_schedule(meta: dict, steps: np.ndarray, assumed_warmup_fraction: float) -> dict:
    """Returns a run's max_steps and warmup_steps: from meta, else stand-ins, with a note for each stand-in.

    max_steps unknown: the last recorded step. warmup_steps unknown: round(assumed_warmup_fraction *
    max_steps) (AnalysisConfig default 0.01, Pythia's 1,430 of 143,000).
    """
    notes = []
    max_steps = meta.get("max_steps")
    if max_steps is None:
        max_steps = int(steps[-1]) if len(steps) else 0
        notes.append(f"max_steps unknown: the last recorded step {max_steps} stands in")
    warmup = meta.get("warmup_steps")
    if warmup is None:
        warmup = round(assumed_warmup_fraction * max_steps)
        notes.append(
            f"warmup_steps unknown: {assumed_warmup_fraction:.1%} of max_steps ({warmup} steps) is assumed"
        )
    return {"max_steps": int(max_steps), "warmup_steps": int(warmup), "notes": notes}


def parent_of(meta: dict, others: dict[str, dict]) -> tuple[str, int] | None:
    """Returns (name, step) of the run and snapshot a run was fine-tuned from, or None.

    meta["lineage"]["parent"] = {"id", "step"} names the parent store by its meta id; the older
    meta["parent"] = {"run", "step"} names it by run name. others: run name -> meta of every analysed run.
    """
    parent = (meta.get("lineage") or {}).get("parent")
    if parent and parent.get("id") is not None:
        for name, m in others.items():
            if m.get("id") == parent["id"]:
                return name, int(parent["step"])
        if str(parent["id"]).startswith("hf:"):  # a model card's base_model: the analysed import of that repo
            return _hub_parent(str(parent["id"])[3:], int(parent.get("step") or 0), others)
        return None
    old = meta.get("parent")
    if isinstance(old, dict) and old.get("run") in others and old.get("step") is not None:
        return old["run"], int(old["step"])
    return None


def _hub_parent(repo: str, step: int, others: dict[str, dict]) -> tuple[str, int] | None:
    """Returns (name, step) of the analysed import of a hub repo: at `step` if stored, else its last step.

    The steps a store holds are not in its meta, so the step is resolved by the caller (lineage_pairs checks
    that the parent snapshot exists and notes it when not); 0 stands for "the base's final snapshot".
    """
    for name, m in others.items():
        model = m.get("model") or {}
        if repo in (model.get("name"), model.get("repo"), (m.get("source") or {}).get("repo")):
            return name, step if step else -1
    return None


def has_parent(meta: dict) -> bool:
    """True when the run names a parent snapshot (lineage or the older meta["parent"])."""
    return bool((meta.get("lineage") or {}).get("parent")) or bool(meta.get("parent"))


def root_of(name: str, metas: dict[str, dict]) -> str:
    """Returns a run's lineage root: its oldest analysed ancestor's root, else meta lineage root, id or name.

    Walking up the analysed parents first keeps a fine-tune with only the older meta["parent"] (whose v1
    lineage default names itself as root) in its base's family.
    """
    seen = set()
    while name not in seen:
        seen.add(name)
        meta = metas[name]
        parent = parent_of(meta, metas)
        if parent is None:
            root = (meta.get("lineage") or {}).get("root")
            return str(root if root is not None else meta.get("id") or name)
        name = parent[0]
    return str(name)  # a cycle: the run stands for its own family


def mean_tokens(meta: dict, n_texts: int) -> float | None:
    """Returns the mean scored tokens per text from meta["scoring"]["n_tokens"], or None when not recorded."""
    n_tokens = (meta.get("scoring") or {}).get("n_tokens")
    if n_tokens is None or len(n_tokens) != n_texts:
        return None
    return float(np.mean(n_tokens))


def domain_split(
    l_a: np.ndarray, l_b: np.ndarray, domains: Sequence[str], n_bytes: np.ndarray | None = None
) -> dict[str, float]:
    """Returns Var[l_a - l_b]/2 split into within- and between-domain parts (law of total variance).

    With d = l_a - l_b, w_g = n_g / N and population variances:
        Var d = sum_g w_g Var_g d + sum_g w_g (mean_g d - mean d)^2.
    When a change sits in one domain of a mixed probe, Var/2 ~ KL + Var_domain(KL_x)/2: the between part
    inflates the estimate (../shared/REFERENCE.md, "Calibration").

    Returns:
        dict(total, within, between) in nats per text, or bits per byte with n_bytes (B from all N texts).
    """
    d = np.asarray(l_a, dtype=np.float64) - np.asarray(l_b, dtype=np.float64)
    dom = np.asarray(list(domains))
    if dom.shape != d.shape:
        raise ValueError(f"domains must name one domain per text ({d.shape[0]}), got {dom.shape[0]}")
    factor = kl_unit_factor(n_bytes, len(d)) / 2
    mean = d.mean()
    within = between = 0.0
    for g in np.unique(dom):
        x = d[dom == g]
        w = len(x) / len(d)
        within += w * x.var()
        between += w * (x.mean() - mean) ** 2
    return {
        "total": float(d.var() * factor),
        "within": float(within * factor),
        "between": float(between * factor),
    }
