"""The findings of scripts/reproduce_toy.py, every number through trajlab.analysis, and docs/reproduction.md.

- The KL scale: `kl_scale` over every store of the design (settings found from meta and lineage; the paper's
  outlier handling per pretraining comparison), `scale_orderings` with runs as units.
- seeds < sizes: one test per pair of sizes (e.g. nano vs tiny), its units the size pairs of that pair of sizes
  at every data order, against all seed pairs; Holm over the pairs of sizes. (One size pair against the seed
  pairs alone has 1 vs n units: smallest reachable p 1 / (n + 1), never below 0.05 with n < 19.)
- c_LL < c_W: `bootstrap_exponent_order` with the gridded runs as units (each run's fits of the LL-space KL and
  of the squared weight distance; runs permuted between the two sides).
- Spiral (PCA and t-SNE, sign-flip null, two-sided, after warm-up) and layer threads (order test and walk test)
  per dense seed.
Every ordering carries unit, n, test, p, smallest reachable p and a verdict in words (trajlab.analysis.findings).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

ALPHA = 0.05


def _jsonable(x):
    from trajlab.analysis.outputs import json_safe

    if isinstance(x, dict):
        x = {k: v for k, v in x.items() if k not in ("xy", "null_turns")}  # arrays the doc never shows
    return json_safe(x)


def _verdict(name: str, res: dict, unit: str) -> str:
    """A sentence: the ordering holds or why it is not shown, with its numbers."""
    from trajlab.analysis.findings import fmt_p

    p, min_p = res.get("p_holm", res["p_value"]), res.get("min_p_holm", res["min_p"])
    n_s, n_l = res["n_units"]
    numbers = (f"difference {res['diff']:.3g} [{res['lo']:.3g}, {res['hi']:.3g}], "
               f"{'Holm-adjusted ' if 'p_holm' in res else ''}{fmt_p(p, min_p)}, {n_s} vs {n_l} {unit}")
    return f"{name} holds: {numbers}." if res["holds"] else f"{name} is not shown, {res['reason']}: {numbers}."


def exponent_ordering(stores: dict, gridded: list[str], cfg, n_boot: int) -> tuple[dict, dict]:
    """c_LL < c_W with runs as units; also {run: {c_ll, c_w medians, n_fits}}."""
    from trajlab import analysis as ta

    lls = [stores[n].loglik() for n in gridded]
    masks = [stores[n].steps >= stores[n].meta["warmup_steps"] for n in gridded]
    cleaned, nb, _ = ta.prepare(lls, stores[gridded[0]].n_bytes, clip_quantile=cfg.clip_quantile,
                                drop_jump_fraction=cfg.jump_drop, jump_rows=masks)
    fits_ll, fits_w, per_run = [], [], {}
    for n, ll in zip(gridded, cleaned, strict=True):
        s, warm = stores[n], stores[n].meta["warmup_steps"]
        fl = ta.diffusion_exponents(ta.kl_matrix(ll, nb), s.steps, window=cfg.window, min_t0=warm,
                                    full_window=True)
        fw = ta.diffusion_exponents(s.weight_sq_dist_matrix(), s.weight_steps, window=cfg.window, min_t0=warm,
                                    full_window=True)
        fits_ll.append(fl)
        fits_w.append(fw)
        per_run[n] = {"c_ll": float(np.median(fl["c"])), "c_w": float(np.median(fw["c"])), "n_fits": len(fl)}
    res = ta.bootstrap_exponent_order(None, None, n_boot=n_boot, seed=0, runs_small=fits_ll, runs_large=fits_w)
    title = "c_LL < c_W"
    unit = "runs (median exponent per run)"
    res = res | {"name": title, "title": title, "unit": unit, "n": sum(res["n_units"]),
                 "smaller_setting": "c_LL", "larger_setting": "c_W", "verdict": _verdict(title, res, "runs")}
    return res, per_run


def findings(design, out: Path, runs: list) -> dict:
    """The scale, orderings, spiral and thread tests per dense seed, and the findings rows of a finished design."""
    from trajlab import analysis as ta
    from trajlab.analysis.findings import findings as finding_rows
    from trajlab.store import TrajectoryStore

    stores = {r.name: TrajectoryStore.open(out / r.name / "trajectory") for r in runs}
    cfg = ta.AnalysisConfig(n_boot=design.n_boot, seed=0, exclude_flagged=design.exclude_flagged)
    scale = ta.kl_scale(list(stores.values()), config=cfg)
    written = ta.write_scale(out / "scale", scale)
    orderings = ta.scale_orderings(scale, n_boot=design.n_boot)  # seeds < sizes: one test per pair of sizes
    gridded = [r.name for r in runs if r.kind == "pretraining" and r.family == "A" and r.preset in design.gridded]
    exp_order, exponents = exponent_ordering(stores, gridded, cfg, design.n_boot)
    orderings.append(exp_order)

    dense = [r.name for r in runs if r.kind == "pretraining" and r.family == "A" and r.preset == design.dense]
    per_run = {}
    for name in dense:
        s = stores[name]
        warm, nb = s.meta["warmup_steps"], s.n_bytes
        maps = {m: {"spiral": _jsonable(ta.spiral_test(s.loglik(), m, n, seed=0, n_bytes=nb, steps=s.steps,
                                                       warmup_steps=warm))}
                for m, n in (("pca", design.spiral_n_null), ("tsne", design.spiral_n_null_tsne))}
        full = s.full_layer_steps()
        threads = _jsonable(ta.thread_test(s.loglik_all(full), n_bytes=nb)) | {"n_snapshots": len(full)}
        per_run[name] = {"steps": [int(x) for x in s.steps], "maps": maps, "layer_threads": {"test": threads}}
    rows = finding_rows({"kl_scale": {"orderings": orderings}, "runs": per_run})
    s0 = stores[dense[0]]
    return {
        "kl_scale": _jsonable(scale.to_json(orderings=orderings)),
        "scale_files": {k: str(out / "scale" / v) for k, v in written.items()},
        "orderings": _jsonable(orderings),
        "exponents": exponents,
        "runs": _jsonable(per_run),
        "findings": _jsonable(rows),
        "n_texts": len(s0.n_bytes),
        "mean_bytes": float(np.mean(s0.n_bytes)),
        "domains": sorted(set(s0.probe().domains or [])),
    }


def _g(x, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}g}"


def write_doc(results: dict, path: Path) -> Path:
    """docs/reproduction.md from results.json: the scale table beside the paper's values, the scale figure, every
    ordering with unit, n, p, smallest reachable p and verdict, spiral and threads, the design, machine, time."""
    from trajlab.analysis.findings import fmt_p

    path.parent.mkdir(parents=True, exist_ok=True)
    figures = path.parent / "reproduction"
    shutil.rmtree(figures, ignore_errors=True)
    figures.mkdir()
    png = Path(results["scale_files"]["figure"])
    if png.is_file():
        shutil.copy(png, figures / "kl_scale.png")
    hp, ks = results["hyperparameters"], results["kl_scale"]
    trained = len(results["train_wall_s"])
    n_runs = len(hp["runs"])
    lines = [
        "# The KL scale at toy scale, replicated over seeds",
        "",
        "Written by `scripts/reproduce_toy.py --write-doc` from one run; do not edit by hand.",
        "",
        f"Command: `{results['command']}`  ",
        f"Wall time: {results['wall_s']:.0f} s ({results['wall_s'] / 60:.0f} min; training"
        f" {results['stage_wall_s']['train']:.0f} s, analysis {results['stage_wall_s']['analysis']:.0f} s) on"
        f" {results['machine']}, {hp['jobs']} runs at a time; {trained} of {n_runs} stores made in this invocation"
        + (f" (the others reused from {results['out']})" if trained < n_runs else "") + ".",
        "",
        "## The scale",
        "",
        (f"KL in {ks['units']} (Var/2 of per-text LL differences over {results['n_texts']} probe texts, mean"
        f" {results['mean_bytes']:.0f} bytes). Interval: the range of the setting's pairs; each pair's own interval"
        " is a BCa text bootstrap (texts only, runs fixed) in results.json."),
        "",
        "| setting | pairs | runs | median | mean | sd | range | flagged | paper | paper's source |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['label']} | {r['n_pairs']} | {r['n_runs']} | {_g(r['median'], 4)} | {_g(r['mean'], 4)} |"
              f" {_g(r['sd'])} | {_g(r['min'])} .. {_g(r['max'])} | {r['n_flagged']} | {_g(r['paper'])} |"
              f" {r['paper_note']} |" for r in ks["summary"]]
    lines += ["", "![KL scale](reproduction/kl_scale.png)", "",
              "Outlier handling (the authors' code): the pretraining comparisons (Early and Later, seeds, sizes)"
              " are clipped at the 2% quantile over their runs and lose the 3% of texts with the largest"
              " post-warm-up jumps, B recomputed; other settings use every text, unclipped. "
              + " ".join(f"{g}: {h['n_texts_kept']} texts kept." for g, h in ks["handling"].items()),
              ""] + [f"- note: {n}" for n in ks["notes"]]
    lines += ["", "## Orderings (runs as units)", "",
              ("Permutation tests over units (exact when the splits number <= 10^5); an ordering holds when the"
              f" estimates order that way and p < {ALPHA} (Holm-adjusted in a family). Pairs flagged above"
              f" {ks['options']['max_nats_per_token']} nat/token are"
              f" {'left out' if ks['options']['exclude_flagged'] else 'kept (the paper keeps them)'}."), "",
              "| ordering | unit | n | test | p | smallest reachable p | verdict |", "|---|---|---|---|---|---|---|"]
    for o in results["orderings"]:
        p, mp = o.get("p_holm", o.get("p_value")), o.get("min_p_holm", o.get("min_p"))
        n = " vs ".join(str(x) for x in o["n_units"]) if o.get("n_units") else "–"
        lines.append(f"| {o['name']} | {o['unit']} | {n} | {o.get('test') or '–'} | {_g(p, 2)} | {_g(mp, 2)} |"
                     f" {'holds' if o['holds'] else 'not shown'} |")
    lines += [""] + [f"- {o['verdict']}" for o in results["orderings"]]
    lines += ["", "Per gridded run, median local exponent c over start points (window 10): "
              + "; ".join(f"{n} c_LL {e['c_ll']:.3g}, c_W {e['c_w']:.3g} ({e['n_fits']} fits)"
                          for n, e in results["exponents"].items()) + "."]
    lines += ["", "## Spiral and layer threads, per dense seed", ""]
    for f in results["findings"]:
        if f["id"].startswith(("spiral-", "layer-")):
            lines.append(f"- {f['title']} {f['verdict']}; {f['value']}; unit: {f['unit']}, n = {f['n']},"
                         f" test: {f['test']}, {fmt_p(f['p_value'], f['min_p'])}.")
    lines += ["", "## Design", "", *design_lines(results), ""]
    path.write_text("\n".join(lines) + "\n")
    return path


def design_lines(results: dict) -> list[str]:
    """The design and what was traded for the time budget, from the recorded hyper-parameters."""
    hp = results["hyperparameters"]
    params = ", ".join(f"{n} {v / 1e6:.2f}M" for n, v in results["parameters"].items())
    kinds = {k: sum(r["kind"] == k for r in hp["runs"]) for k in ("pretraining", "fine-tune", "quantized")}
    dense = f"A-{hp['dense']}-s{hp['seeds'][0]}"
    k = len(hp["schedules"][dense])
    return [
        (f"- {len(hp['runs'])} stores: {kinds['pretraining']} pretraining runs, {kinds['fine-tune']} fine-tunes,"
        f" {kinds['quantized']} quantized copies. Parameters: {params}."),
        (f"- Pretraining: {hp['steps']} steps of {hp['batch_size']} x {hp['seq_len']} tokens, peak lr {hp['lr']},"
        f" {hp['warmup_steps']} warm-up steps, cosine to {hp['min_lr_ratio']:.0%}; family A sizes"
        f" {', '.join(hp['sizes'])} x seeds {', '.join(map(str, hp['seeds']))} (a seed sets init and data order)."),
        (f"- Gridded runs ({', '.join(hp['gridded'])}): {k} snapshots every {hp['grid']} steps (the Early / Later"
        f" lag, {hp['grid'] / hp['steps']:.1%} of the run; paper 0.7%), weight distances for c_W; dense"
        f" ({hp['dense']}): every lens row at every {hp['layers_every']}th snapshot and the last."),
        (f"- Fine-tunes: {hp['finetune_steps']} steps ({hp['ft_fraction']:.0%} of pretraining) at"
        f" {hp['ft_lr_ratio']:.0%} of the peak lr on shifted mixtures {hp['mixtures']['A-ft']} (A) and"
        f" {hp['mixtures']['B-ft']} (B); sized from reasoning before the run (see the script's docstring)."),
        f"- Quantization: {', '.join(hp['formats'])} of every final {', '.join(hp['quantized'])} model.",
        ("- Traded for the time budget: lens rows only on the dense runs and only at every"
        f" {hp['layers_every']}th snapshot; the grid ({hp['grid']} steps)"
        f" {hp['grid'] / hp['steps'] / (1000 / 143000):.1f}x the paper's relative lag; small and the other families scored once (final step); quantization of the two smaller sizes"
        " only, their output row only (the scale compares layers within unquantized models); one probe of"
        f" {results['n_texts']} texts for every arm (the scale compares stores of one probe only)."),
        f"- Longest probe text in tokens per family: {results['longest_probe_tokens']} (context {hp['seq_len']}).",
    ]
