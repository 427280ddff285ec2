"""Every finding of an analysis in words: its unit, n, test, p, the smallest p the design can reach, verdict.

`findings(summary)` reads the summary dict of analyze() and returns one row per finding, in the order a reader
wants them (the KL scale orderings, fine-tuned vs base, then per run: spiral, layer order, layers against a
random walk, c_LL vs c_W). summary.json holds them under "findings"; the report page and the reproduction doc
print them. A finding says only what its test supports: a text bootstrap is labelled "texts (runs fixed)", a
design that cannot reach p < 0.05 says so.
"""

from __future__ import annotations

import math
import re

ALPHA = 0.05


def section_id(kind: str, run: str | None = None) -> str:
    """Returns the id of the report section a finding belongs to: kind, or kind-<run with unsafe characters
    replaced by '-'> (kinds: maps, layers, exponents, kl per run; finetune, kl-scale per probe group)."""
    if run is None:
        return kind
    return f"{kind}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', str(run)).strip('-') or 'run'}"


def fmt_p(p: float | None, min_p: float | None = None) -> str:
    """Returns 'p = 0.012 (smallest reachable 0.001)'; never 'p = 0'."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "p not computed"
    text = f"p = {p:.2g}"
    if min_p is not None and not (isinstance(min_p, float) and math.isnan(min_p)):
        text += f" (smallest reachable {min_p:.2g})"
    return text


def _num(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}g}"


def _row(
    fid: str, title: str, unit: str, n, test: str, p, min_p, verdict: str, holds, section: str, value: str
) -> dict:
    """One finding; holds is None (open) when the design cannot reach p < 0.05: no verdict either way."""
    if holds is False and min_p is not None and not math.isnan(min_p) and min_p >= ALPHA:
        holds = None
    return {
        "id": fid,
        "title": title,
        "unit": unit,
        "n": n,
        "test": test,
        "p_value": p,
        "min_p": min_p,
        "verdict": verdict,
        "holds": holds,
        "section": section,
        "value": value,
    }


def _spiral_rows(run: str, rec: dict) -> list[dict]:
    out = []
    k = len(rec["steps"]) if rec.get("steps") is not None else 0
    for method, m in (rec.get("maps") or {}).items():
        s = m.get("spiral")
        if not s:
            continue
        verdict = s.get("verdict") or (
            "spiral beyond the null" if (s.get("p_value") or 1) < ALPHA else "not distinguishable"
        )
        null = s.get("null", "gaussian")
        k_used = k - int(s.get("n_left_out") or 0)
        out.append(
            _row(
                f"spiral-{method}-{run}",
                f"{run}: does the {method.upper()} map spiral?",
                f"snapshots of one run ({k_used})",
                s.get("n_null"),
                f"|winding| against {s.get('n_null')} {null} walks embedded the same way, each direction one-sided at 0.05",
                s.get("p_value"),
                s.get("min_p"),
                f"{verdict} ({fmt_p(s.get('p_value'), s.get('min_p'))} for winding more; "
                f"p_less {_num(s.get('p_less'), 2)})",
                verdict == "spiral beyond the null",
                section_id("maps", run),
                f"{_num(s.get('winding_turns'), 2)} turns (null mean {_num(s.get('null_mean'), 2)})",
            )
        )
    return out


def _thread_rows(run: str, rec: dict) -> list[dict]:
    lt = rec.get("layer_threads")
    if not lt or not lt.get("test"):
        return []
    t = lt["test"]
    p_order = t.get("order_p", t.get("p_value"))
    order_verdict = t.get("verdict_order") or (
        "layer order matters" if (p_order or 1) < ALPHA else "layer order not shown to matter"
    )
    rows = [
        _row(
            f"layer-order-{run}",
            f"{run}: does layer order matter?",
            "layer orders",
            t.get("n_perms"),
            "thread score against shuffled layer orders" + (" (all orders)" if t.get("exact") else ""),
            p_order,
            t.get("min_p"),
            f"{order_verdict} ({fmt_p(p_order, t.get('min_p'))})",
            (p_order or 1) < ALPHA,
            section_id("layers", run),
            f"score {_num(t.get('thread_score'))} (shuffled mean {_num(t.get('null_mean'))})",
        )
    ]
    if t.get("walk_p_less") is not None:
        verdict = t.get("verdict_walk") or "not distinguishable from a random walk across layers"
        rows.append(
            _row(
                f"layer-walk-{run}",
                f"{run}: are layers more thread-like than a random walk across layers?",
                "sign-flipped layer paths",
                t.get("walk_n"),
                "thread score against sign-flipped layer increments (same adjacent steps)",
                t.get("walk_p_less"),
                t.get("walk_min_p"),
                f"{verdict} ({fmt_p(t.get('walk_p_less'), t.get('walk_min_p'))} for more thread-like)",
                verdict.startswith("more thread-like"),
                section_id("layers", run),
                f"score {_num(t.get('thread_score'))} (walk null mean {_num(t.get('walk_null_mean'))})",
            )
        )
    return rows


def _exponent_rows(run: str, rec: dict) -> list[dict]:
    e = rec.get("exponent_order")
    if not e or e.get("p_value") is None or not e.get("n_starts"):
        return []
    holds = bool(e.get("holds")) if "holds" in e else bool((e.get("diff") or 0) > 0 and e["p_value"] < ALPHA)
    n_eff = e.get("n_effective")
    unit = (
        f"blocks of start points of one run ({_num(n_eff, 2)} independent windows)"
        if n_eff
        else ("start points of one run")
    )
    return [
        _row(
            f"exponents-{run}",
            f"{run}: is c_LL < c_W?",
            unit,
            e.get("n_starts"),
            e.get("test") or f"{e.get('method', 'bootstrap')} bootstrap of median c_W - median c_LL",
            e["p_value"],
            e.get("min_p"),
            (
                "c_LL < c_W"
                if holds
                else f"c_LL < c_W not shown{': ' + e['reason'] if e.get('reason') else ''}"
            )
            + f" ({fmt_p(e['p_value'], e.get('min_p'))}); about this run's start points, not across runs",
            holds,
            section_id("exponents", run),
            f"c_LL {_num(e.get('small'))} vs c_W {_num(e.get('large'))}",
        )
    ]


def _parent_rows(run: str, rec: dict, units: str) -> list[dict]:
    tp = rec.get("kl_to_parent") or {}
    kl = list(tp.get("kl") if tp.get("kl") is not None else [])
    if not kl:
        return []
    return [
        _row(
            f"parent-{run}",
            f"{run}: how far it moved from its parent {tp.get('parent')}@{tp.get('step')}",
            "texts (one fine-tune)",
            len(kl),
            "Var/2 estimate along the fine-tune (no test)",
            None,
            None,
            f"moved {_num(kl[-1])} {units} from its parent by its last snapshot",
            None,
            section_id("kl", run),
            f"{_num(kl[-1])} {units} (first snapshot {_num(kl[0])})",
        )
    ]


def _order_row(fid: str, title: str, o: dict, section: str) -> dict:
    n_units = o.get("n_units") or []
    holm = "p_holm" in o
    p, min_p = o.get("p_holm", o.get("p_value")), o.get("min_p_holm", o.get("min_p"))
    shown = ("Holm-adjusted " if holm else "") + fmt_p(p, min_p)
    verdict = f"holds ({shown})" if o.get("holds") else f"not shown: {o.get('reason') or shown}"
    if o.get("n_left_out"):
        verdict += f"; {o['n_left_out']} flagged pair(s) left out"
    if o.get("note"):
        verdict += f"; {o['note']}"
    return _row(
        fid,
        title,
        o.get("unit", "pairs of runs"),
        " vs ".join(str(x) for x in n_units) if n_units else o.get("n"),
        o.get("test", "permutation over pairs"),
        p,
        min_p,
        verdict,
        bool(o.get("holds")),
        section,
        f"{_num(o.get('smaller'))} < {_num(o.get('larger'))}? difference {_num(o.get('diff'))} "
        f"[{_num(o.get('lo'))}, {_num(o.get('hi'))}]",
    )


def findings(summary: dict) -> list[dict]:
    """Returns the findings of an analyze() summary as rows (see the module docstring): holds True (the test
    supports the finding), False (tested, not supported) or None (no test, or a design that cannot reach
    p < 0.05)."""
    rows = []
    for o in (summary.get("kl_scale") or {}).get("orderings") or []:
        rows.append(
            _order_row(f"scale-{o.get('name')}", f"KL scale: {o.get('name')}", o, section_id("kl-scale"))
        )
    ft = summary.get("finetune_vs_base") or {}
    if ft.get("order_runs"):
        rows.append(
            _order_row(
                "finetune-vs-random",
                "fine-tuned vs base < random pairs",
                ft["order_runs"],
                section_id("finetune"),
            )
        )
    units = summary.get("units", "")
    for run, rec in (summary.get("runs") or {}).items():
        rows += _spiral_rows(run, rec) + _thread_rows(run, rec) + _exponent_rows(run, rec)
        rows += _parent_rows(run, rec, units)
    return rows
