"""The findings of scripts/reproduce_toy.py, every number through trajlab.analysis, and docs/reproduction.md.

Pairs keep the papers' definitions: consecutive = the seed-0 run's fixed-lag pairs after warm-up
(`fixed_lag_pairs`); between seeds = final snapshots of the three seeds; between sizes = the final snapshot of
the reference size against each other size trained on the same data order; fine-tuned vs base = each fine-tune's
final snapshot against the base snapshot it started from; random pairs = models of the fine-tune table with
different lineage roots. An ordering holds when its point estimates order that way and `bootstrap_order`'s (or
`bootstrap_exponent_order`'s) p < 0.05.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np

ALPHA = 0.05
PAPER = {  # bits/byte, Kishino et al. v1 tables (Pythia-410M)
    "consecutive early": "0.069 (10k->11k)", "consecutive middle": "0.053 (50k->51k)",
    "consecutive late": "0.023 (100k->101k)", "between seeds": "0.11 (mean)", "between sizes": "0.28 .. 1.7",
    "fine-tuned vs base": "0.40 (median)", "random pairs": "2.1 (median)",
}


def _jsonable(test: dict) -> dict:
    return {k: v for k, v in test.items() if not isinstance(v, np.ndarray)}


def p_text(p: float, n: int) -> str:
    """A resampling p-value as text: 'p < 1/n' when no resample went the other way (never 'p = 0')."""
    return f"p < {1 / n:.2g} (0 of {n} resamples)" if p == 0 else f"p = {p:.3g}"


def ordering_text(o: dict) -> str:
    """'smaller a < larger b: difference d [lo, hi], p' from the numbers of one results["orderings"] entry."""
    small, large = o.get("smaller", o.get("small")), o.get("larger", o.get("large"))
    a, b = (side.split(" (")[0] for side in o["name"].split(" < "))
    return (f"{a} {small:.4g} < {b} {large:.4g}: difference {o['diff']:.3g} [{o['lo']:.3g}, {o['hi']:.3g}], "
            f"{p_text(o['p_value'], o['n_boot'])}")


def _ordering(name: str, test: dict, pairs: tuple | None = None) -> dict:
    """One entry of results["orderings"] ("a < b" names); `pairs` = (smaller pairs, larger pairs) as row labels."""
    holds = bool(np.isfinite(test["diff"]) and test["diff"] > 0 and test["p_value"] < ALPHA)
    out = {"name": name, "holds": holds, "p_value": test["p_value"], **_jsonable(test)}
    out["detail"] = ordering_text(out)
    if pairs is not None:
        out["smaller_pairs"], out["larger_pairs"] = pairs
    return out


def findings(design, out: Path, runs: list) -> dict:
    """orderings, table, spiral_test, thread_test (and the pairs used) from the stores of a finished design."""
    from trajlab import analysis as ta
    from trajlab.analysis.config import PAPER_LAG_FRACTION, PAPER_TARGET_FRACTIONS
    from trajlab.store import TrajectoryStore

    stores = {r.name: TrajectoryStore.open(out / r.name / "trajectory") for r in runs}
    ref = f"A-tiny-s{design.seeds[0]}"
    main = stores[ref]
    nb, steps, ll0 = main.n_bytes, main.steps, main.loglik()
    names = [r.name for r in runs]
    ll = np.vstack([ll0, np.stack([stores[n].loglik()[-1] for n in names])])  # (K0 + R, N)
    row = {n: len(ll0) + i for i, n in enumerate(names)}
    at = {int(s): i for i, s in enumerate(steps)}

    lagged = ta.fixed_lag_pairs(steps, design.steps, design.warmup, PAPER_LAG_FRACTION, PAPER_TARGET_FRACTIONS)
    cons = [(at[a], at[b]) for _, a, b in lagged["pairs"]]
    seeds = [(row[f"A-tiny-s{a}"], row[f"A-tiny-s{b}"]) for a, b in itertools.combinations(design.seeds, 2)]
    sizes = [(row[ref], row[f"A-{p}-s{design.seeds[0]}"]) for p in design.sizes]
    fts = [r for r in runs if r.parent]
    ft_pairs = [(row[r.name], row[r.parent]) for r in fts]
    table_models = sorted({r.name for r in fts} | {r.parent for r in fts}, key=names.index)
    root = {r.name: r.root for r in runs}
    random = [(row[a], row[b]) for a, b in itertools.combinations(table_models, 2) if root[a] != root[b]]
    label = {i: f"{ref}@{s}" for s, i in at.items()} | {i: n for n, i in row.items()}

    def group(name: str, pairs: list, paper: str) -> dict:
        kls = [ta.bootstrap_kl(ll[i], ll[j], nb, n_boot=design.n_boot) for i, j in pairs]
        return {"quantity": name, "paper": paper, "n_pairs": len(pairs),
                "mean": float(np.mean([k[0] for k in kls])) if kls else float("nan"),
                "median": float(np.median([k[0] for k in kls])) if kls else float("nan"),
                "pairs": [{"a": label[i], "b": label[j], "kl": k[0], "lo": k[1], "hi": k[2]}
                          for (i, j), k in zip(pairs, kls, strict=True)]}

    names_cons = ["consecutive early", "consecutive middle", "consecutive late"][: len(cons)]
    table = [group(f"{n} ({lagged['pairs'][k][1]}->{lagged['pairs'][k][2]})", [p], PAPER[n])
             for k, (n, p) in enumerate(zip(names_cons, cons, strict=True))]
    table += [group("between seeds", seeds, PAPER["between seeds"]),
              group("between sizes", sizes, PAPER["between sizes"]),
              group("fine-tuned vs base", ft_pairs, PAPER["fine-tuned vs base"]),
              group("random pairs (different roots)", random, PAPER["random pairs"])]

    def order(name: str, smaller: list, larger: list) -> dict:
        test = ta.bootstrap_order(ll, smaller, larger, nb, n_boot=design.n_boot, seed=0)
        named = tuple([[label[i], label[j]] for i, j in p] for p in (smaller, larger))
        return _ordering(name, test, pairs=named)

    orderings = []
    if cons:
        orderings.append(order("consecutive < between seeds", cons, seeds))
    orderings.append(order("between seeds < between sizes", seeds, sizes))
    orderings.append(order("fine-tuned vs base < random pairs", ft_pairs, random))
    if len(cons) == 3:
        orderings.append(order("late consecutive < early consecutive (after warm-up)", [cons[2]], [cons[0]]))
    fits_ll = ta.diffusion_exponents(ta.kl_matrix(ll0, nb), steps, window=10, min_t0=design.warmup,
                                     full_window=True)
    fits_w = ta.diffusion_exponents(main.weight_sq_dist_matrix(), main.weight_steps, window=10,
                                    min_t0=design.warmup, full_window=True)
    orderings.append(_ordering("c_LL < c_W (diffusion exponents)",
                               ta.bootstrap_exponent_order(fits_ll, fits_w, n_boot=design.n_boot)))

    spiral = {m: _jsonable(ta.spiral_test(ll0, m, n, seed=0, n_bytes=nb))
              for m, n in (("pca", design.spiral_n_null), ("tsne", design.spiral_n_null_tsne))}
    full = main.full_layer_steps()  # layer threads: the snapshots that hold every lens layer
    threads = _jsonable(ta.thread_test(main.loglik_all(full), n_bytes=nb))
    threads["n_snapshots"] = len(full)
    return {"orderings": orderings, "table": table, "spiral_test": spiral, "thread_test": threads,
            "consecutive_pairs": {k: v for k, v in lagged.items() if k != "pairs"} | {"pairs": lagged["pairs"]},
            "n_texts": int(len(nb)), "mean_bytes": float(nb.mean()),
            "domains": list(main.probe().domains or []) and sorted(set(main.probe().domains))}


def write_doc(results: dict, path: Path) -> Path:
    """docs/reproduction.md from results.json: the table beside the paper's numbers, orderings with p-values,
    spiral and thread tests against their nulls, the report's figures, the exact command and the wall time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    report = Path(results["report"]).parent
    figures = path.parent / "reproduction"
    shutil.rmtree(figures, ignore_errors=True)
    figures.mkdir()
    ref = next(r["name"] for r in results["hyperparameters"]["runs"] if r["parent"] is None)
    keep = [f"map_{ref}.png", f"diffusion_{ref}.png", f"threads_{ref}.png", "map_all.png", "training_curves.png"]
    found = {p.name: p for p in report.rglob("*.png")}
    pngs = [found[k] for k in keep if k in found]
    for png in pngs:
        shutil.copy(png, figures / png.name)
    hp = results["hyperparameters"]
    trained = len(results["train_wall_s"])
    lines = [
        "# Toy reproduction of the papers' findings",
        "",
        "Written by `scripts/reproduce_toy.py --write-doc` from one run; do not edit by hand.",
        "",
        f"Command: `{results['command']}`  ",
        f"Wall time: {results['wall_s']:.0f} s ({results['wall_s'] / 60:.0f} min) on"
        f" {results.get('machine', 'this machine')}; {trained} of {len(hp['runs'])} runs trained in this invocation"
        + (f" (the others reused from {results['out']})" if trained < len(hp["runs"]) else "") + ".",
        "",
        f"Design: {len(hp['runs'])} runs; {hp['steps']} pretraining steps of {hp['batch_size']} x {hp['seq_len']}"
        f" tokens, peak lr {hp['lr']}, {hp['warmup_steps']} warm-up steps, cosine to {hp['min_lr_ratio']:.0%};"
        f" fine-tunes {hp['finetune_steps']} steps at lr {hp['lr'] * hp['ft_lr_ratio']:.2g}; probe"
        f" {results['n_texts']} texts (mean {results['mean_bytes']:.0f} bytes). KL in bits per byte.",
        "",
        "| quantity | toy (mean) | toy (median) | interval: one pair's 95% bootstrap, or the pairs' range | pairs |"
        " paper |",
        "|---|---|---|---|---|---|",
    ]

    def spread(r: dict) -> str:  # one pair: its 95% text-bootstrap interval; several: the range of their KLs
        ps = r["pairs"]
        if len(ps) == 1:
            return f"[{ps[0]['lo']:.4g}, {ps[0]['hi']:.4g}]"
        return f"{min(p['kl'] for p in ps):.4g} .. {max(p['kl'] for p in ps):.4g}" if ps else "–"

    lines += [f"| {r['quantity']} | {r['mean']:.4g} | {r['median']:.4g} | {spread(r)} | {r['n_pairs']} |"
              f" {r['paper']} |" for r in results["table"]]
    cp = results["consecutive_pairs"]
    lines += ["", f"Paper: Kishino et al., v1 tables (Pythia-410M, 143k steps). Consecutive pairs keep the paper's"
              f" fixed lag: {cp['lag']} steps = {cp['lag'] / cp['max_steps']:.2%} of the run (paper: 1000 of 143000"
              f" = {1000 / 143000:.2%}), at the first snapshot after warm-up at or after 7%, 35% and 70% of"
              " training (the paper's 10k, 50k and 100k of 143k). Random pairs: final models with different lineage"
              " roots."]
    held = sum(o["holds"] for o in results["orderings"])
    lines += ["", "## Orderings", "",
              "Paired bootstrap over the probe texts (the exponent ordering: over start snapshots); an ordering holds"
              " when the point estimates order that way and the share of resamples where it fails is below"
              f" {ALPHA}. {held} of {len(results['orderings'])} hold.", ""]
    lines += [f"- **{'holds' if o['holds'] else 'does not hold'}**: {o['name']}: {ordering_text(o)}"
              for o in results["orderings"]]
    lines += ["", "## Spiral and layer threads against their nulls", ""]
    for m, s in results["spiral_test"].items():
        verdict = "stands out from" if s["p_value"] < ALPHA else "does not stand out from"
        lines.append(f"- spiral ({m}): |winding| {s['winding_turns']:.2f} turns; random walks with the same step"
                     f" sizes, embedded the same way: mean {s['null_mean']:.2f}, 95% quantile {s['null_q95']:.2f};"
                     f" p = {s['p_value']:.3g} ({s['n_null']} walks): the trajectory {verdict} random walks.")
    t = results["thread_test"]
    verdict = "layers form threads beyond" if t["p_value"] < ALPHA else "no threads beyond"
    lines.append(f"- layer threads: score {t['thread_score']:.3g} (adjacent / non-adjacent layer KL); shuffled layer"
                 f" orders: mean {t['null_mean']:.3g}, 5% quantile {t['null_q05']:.3g}; p = {t['p_value']:.3g}"
                 f" ({t['n_perms']} permutations) over the {t['n_snapshots']} snapshots holding every layer:"
                 f" {verdict} shuffled layer orders." + (f" ({t['note']})" if t.get("note") else ""))
    lines += ["", "## Figures", "",
              f"The seed-0 `tiny` run (the dense one) and all runs together; every run's figures and tables are on"
              f" the report page `{results['report']}`.", ""]
    lines += [f"![{p.stem}](reproduction/{p.name})" for p in pngs]
    path.write_text("\n".join(lines) + "\n")
    return path
