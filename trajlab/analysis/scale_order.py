"""The KL scale's orderings (the paper's), each tested with runs as the unit (trajlab.analysis.order).

  Later < Early        units: runs. Each run with both kinds of intervals gives one value per side: the mean KL
                       of its Early intervals and of its Later intervals (its intervals are not independent
                       units; the runs are). Permutation over runs, unpaired (order_test).
  seeds < sizes        units: pairs of runs. Every size pair against all seed pairs, one test per size pair,
                       Holm-corrected over the size pairs (order_family).
  8-bit < 4-bit        units: quantized models (one pair each).
  fine-tune < random   units: pairs of models.
  intra-type < random  units: pairs of models.
An ordering is listed when both its settings have pairs. Pairs flagged above config.max_nats_per_token are left
out (KLScale.options["exclude_flagged"]), their count in n_left_out.
"""

from __future__ import annotations

import numpy as np

from trajlab.analysis.findings import fmt_p
from trajlab.analysis.order import order_family, order_test, paired_order_test

PAIR_ORDERINGS = (("8-bit", "4-bit"), ("fine-tune", "random"), ("intra-type", "random"))


def _result(name: str, small: str, large: str, unit: str, res: dict | None, n_left: int, scale, reason=None):
    """One ordering: the order_test keys plus name, settings, unit, n, n_left_out and a verdict in words."""
    units = scale.units
    out = {
        "name": name,
        "title": name,
        "smaller_setting": small,
        "larger_setting": large,
        "unit": unit,
        "n_left_out": n_left,
    }
    if res is None:
        return {
            **out,
            "n": None,
            "n_units": None,
            "test": None,
            "p_value": None,
            "min_p": None,
            "holds": False,
            "reason": reason,
            "verdict": f"{name}: not tested ({reason})",
        }
    p = res.get("p_holm", res["p_value"])
    min_p = res.get("min_p_holm", res["min_p"])
    level = scale.options.get("level", 0.95)
    numbers = (
        f"difference {res['diff']:.3g} {units} ({level:.0%} interval {res['lo']:.3g} to {res['hi']:.3g}), "
        f"{'Holm-adjusted ' if 'p_holm' in res else ''}{fmt_p(p, min_p)}, "
        f"{res['n_units'][0]} vs {res['n_units'][1]} {unit}"
    )
    verdict = (
        f"{name} holds: {numbers}" if res["holds"] else f"{name} is not shown, {res['reason']}: {numbers}"
    )
    if n_left:
        verdict += f"; {n_left} flagged pair(s) beyond the checked range left out"
    value = f"mean {res['smaller']:.3g} vs {res['larger']:.3g} {units}"
    return {**res, **out, "n": sum(res["n_units"]), "value": value, "verdict": verdict + "."}


def _run_means(records: list[dict]) -> dict[str, float]:
    by_run: dict[str, list[float]] = {}
    for r in records:
        by_run.setdefault(r["unit"], []).append(r["kl"])
    return {run: float(np.mean(v)) for run, v in by_run.items()}


def scale_orderings(scale, **order_kw) -> list[dict]:
    """Returns the paper's orderings of the scale's settings, each with name, smaller_setting, larger_setting,
    unit, n, n_units, test, diff, lo, hi, p_value, min_p (p_holm, min_p_holm in a family), holds, reason,
    n_left_out and verdict (a sentence).

    Args:
        scale: a KLScale (trajlab.analysis.scale.kl_scale).
        **order_kw: passed to order_test / order_family (n_perm, n_boot, seed, level); seed and level default
            to the scale's options.
    """
    kw = {"seed": scale.options.get("seed", 0), "level": scale.options.get("level", 0.95), **order_kw}
    excl = bool(scale.options.get("exclude_flagged", True))
    present = set(scale.settings)
    out = []
    if {"early", "later"} <= present:
        early, left_e = scale.units_of("early", exclude_flagged=excl)
        later, left_l = scale.units_of("later", exclude_flagged=excl)
        e, lt = _run_means(early), _run_means(later)
        both = [r for r in e if r in lt]
        unit = "runs (mean Early and mean Later KL per run, paired)"
        res = paired_order_test([lt[r] for r in both], [e[r] for r in both], **kw) if both else None
        out.append(
            _result(
                "Later < Early",
                "later",
                "early",
                unit,
                res,
                left_e + left_l,
                scale,
                "no run with both Early and Later intervals left",
            )
        )
    if {"seeds", "sizes"} <= present:
        seeds, left_s = scale.units_of("seeds", exclude_flagged=excl)
        sizes, left_z = scale.units_of("sizes", exclude_flagged=excl)
        if seeds and sizes:
            by_sizes: dict[str, list[dict]] = {}  # each pair of sizes, replicated over data orders
            for s in sizes:
                by_sizes.setdefault(s["pair"].get("group") or s["unit"], []).append(s)
            family = order_family(seeds, by_sizes, **kw)
            for size_pair, res in family.items():
                res = {**res, "test": f"{res['test']}, Holm over {len(family)} size pair(s)"}
                out.append(
                    _result(
                        f"seeds < sizes ({size_pair})",
                        "seeds",
                        "sizes",
                        "pairs of runs",
                        res,
                        left_s + left_z,
                        scale,
                    )
                )
        else:
            out.append(
                _result(
                    "seeds < sizes",
                    "seeds",
                    "sizes",
                    "pairs of runs",
                    None,
                    left_s + left_z,
                    scale,
                    "every pair of one side is flagged",
                )
            )
    for small, large in PAIR_ORDERINGS:
        if not {small, large} <= present:
            continue
        a, left_a = scale.units_of(small, exclude_flagged=excl)
        b, left_b = scale.units_of(large, exclude_flagged=excl)
        unit = "quantized models" if small.endswith("-bit") else "pairs of models"
        res = order_test(a, b, **kw) if a and b else None
        by_parent_a = {u["pair"]["store_b"]: u["kl"] for u in a}
        by_parent_b = {u["pair"]["store_b"]: u["kl"] for u in b}
        if (
            small.endswith("-bit")
            and a
            and by_parent_a.keys() == by_parent_b.keys()
            and len(by_parent_a) == len(a)
        ):
            parents = sorted(by_parent_a)  # both formats of the same models: paired within each model
            unit = "models quantized both ways (paired)"
            res = paired_order_test(
                [by_parent_a[m] for m in parents], [by_parent_b[m] for m in parents], **kw
            )
        elif res is not None and not small.endswith("-bit"):
            res["note"] = "pairs share models, so the units are not independent and p is approximate"
        out.append(
            _result(
                f"{small} < {large}",
                small,
                large,
                unit,
                res,
                left_a + left_b,
                scale,
                "every pair of one side is flagged",
            )
        )
    return out
