"""Which pairs the KL scale compares, found from store meta and lineage alone; no pair is in two settings.

Each candidate pair goes to the first setting of PRIORITY it matches:
  layers      adjacent lens rows l, l+1 of one snapshot: each store's last snapshot holding every layer
              (quantized copies left out: their layers repeat their source's).
  early/later consecutive snapshots `lag` steps apart, both at or after warm-up, within one pretraining store
              (no lineage parent, no meta "quantization"). lag: the most common spacing of neighbouring
              post-warm-up snapshots over those stores (ties: the smaller). Per store the first and the last
              n = min(config.scale_intervals or 50, n_intervals // 2) intervals (the paper: the first and
              last 50 one-thousand-step intervals after warm-up), pooled over stores.
  N-bit       a store whose meta["quantization"]["format"] names N bits (q8_0: 8-bit; q4_0, q4_1: 4-bit;
              q5_*: 5-bit; the first number in the name), its last snapshot vs the parent snapshot (lineage
              parent, else meta["quantization"]["parent"] as {"id" or "run", "step"} or "RUN[@STEP]").
  fine-tune   any other store with a lineage parent: its last snapshot vs the parent snapshot.
  seeds       two pretraining stores of the same data and size, different data order, at their last common
              step.
  sizes       same data and data order, different size, at their last common step (all pairs among sizes).
  intra-type  last snapshots of two models (pretraining or fine-tuned stores) with different lineage roots
              whose root runs are not related, same model class (meta["model"]["class"]).
  random      likewise, different (or unrecorded) model classes.
Related runs: same data (meta "data" / "dataset" / "mixture" less its "seed", and the tokenizer fingerprint),
with data order (data["seed"], else meta "seed") and size (meta "size" / "preset") both recorded. Pairs of
related roots are seeds or sizes, or in no setting (same data, another seed and size; fine-tunes of related
roots), counted in the notes. A run whose data, order or size is not recorded is never related: its pairs go
to intra-type / random by root and class, never to seeds or sizes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from trajlab.analysis.pairs import has_parent, parent_of, resolve_schedule, root_of

PRIORITY = ("layers", "early", "later", "quantization", "fine-tune", "seeds", "sizes", "intra-type", "random")


def bits_setting(fmt) -> str:
    """Returns the setting of a quantization format: "q8_0" -> "8-bit", "q4_1" -> "4-bit", "nf4" -> "4-bit"."""
    m = re.search(r"\d+", str(fmt or ""))
    if m is None:
        raise ValueError(f'meta["quantization"]["format"] must name its bits (e.g. "q8_0"), got {fmt!r}')
    return f"{int(m.group())}-bit"


def option(cfg, names: tuple[str, ...], default):
    """The first of `names` the config has (its value, None included: switched off), else default."""
    for name in names:
        if hasattr(cfg, name):
            return getattr(cfg, name)
    return default


@dataclass
class Run:
    """One store as the scale reads it."""

    name: str
    store: object
    meta: dict
    steps: np.ndarray  # (K,)
    ll: np.ndarray  # (K, N) final layer, nats
    warmup: int
    tokens: np.ndarray | None  # (N,) scored tokens per text
    kind: str = "pretraining"  # or "quantized", "fine-tune"
    parent: tuple[str, int] | None = None

    def row(self, step: int) -> np.ndarray:
        return self.ll[int(np.flatnonzero(self.steps == step)[0])]


def load_runs(stores: list, cfg, notes: list[str]) -> tuple[dict[str, Run], np.ndarray]:
    """Returns {run name: Run} of the stores and the shared (N,) byte counts, checked."""
    if not stores:
        raise ValueError("kl_scale needs at least one trajectory store")
    names = [str(s.meta.get("run") or Path(s.path).stem) for s in stores]
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise ValueError(f"stores must have distinct run names, these repeat: {dupes}")
    if len({getattr(s, "probe_fingerprint", None) for s in stores}) > 1:
        raise ValueError("stores were scored on different probe sets; put stores of one probe set on a scale")
    n_bytes = np.asarray(stores[0].n_bytes)
    if any(not np.array_equal(np.asarray(s.n_bytes), n_bytes) for s in stores):
        raise ValueError("stores disagree on the per-text byte counts: score them on the same probe set")
    warmup_step = option(cfg, ("warmup_step",), None)
    runs = {}
    for s, name in zip(stores, names, strict=True):
        steps = np.asarray(s.steps, dtype=np.int64)
        if len(steps) == 0:
            notes.append(f"{name}: holds no snapshots; left out")
            continue
        meta = s.meta
        warmup = warmup_step
        if warmup is None:
            warmup = resolve_schedule(meta, steps, cfg.assumed_warmup_fraction)["warmup_steps"]
            if meta.get("warmup_steps") is None and len(steps) > 1:  # a one-snapshot store has no trajectory
                notes.append(f"{name}: warmup_steps not recorded; {warmup} assumed")
        tok = (meta.get("scoring") or {}).get("n_tokens")
        tokens = np.asarray(tok, dtype=np.float64) if tok is not None and len(tok) == len(n_bytes) else None
        runs[name] = Run(name, s, meta, steps, np.asarray(s.loglik(), dtype=np.float64), int(warmup), tokens)
    metas = {n: r.meta for n, r in runs.items()}
    for r in runs.values():
        quant = r.meta.get("quantization")
        r.kind = "quantized" if quant else "fine-tune" if has_parent(r.meta) else "pretraining"
        r.parent = parent_of(r.meta, metas) or (_quant_parent(quant, runs) if quant else None)
        if r.parent is not None and r.parent[1] < 0:  # a hub base named by a model card: its last snapshot
            r.parent = (r.parent[0], int(runs[r.parent[0]].steps[-1]))
    return runs, n_bytes


def _quant_parent(quant, runs: dict[str, Run]) -> tuple[str, int] | None:
    """The parent snapshot meta["quantization"]["parent"] names: {"id" | "store" | "run", "step"} or
    "RUN[@STEP]" (a run name or store path)."""
    ref = quant.get("parent") if isinstance(quant, dict) else None
    name, step = None, None
    if isinstance(ref, dict):
        step = ref.get("step")
        store = Path(str(ref.get("store") or "")).resolve()
        by_ref = [n for n, r in runs.items() if ref.get("id") and r.meta.get("id") == ref["id"]]
        by_ref += [
            n for n, r in runs.items() if ref.get("store") and Path(str(r.store.path)).resolve() == store
        ]
        name = by_ref[0] if by_ref else ref.get("run")
    elif isinstance(ref, str) and (m := re.fullmatch(r"(.+?)(?:@(\d+))?", ref)):
        path, step = m.group(1), m.group(2)
        name = next((n for n, r in runs.items() if path in (n, str(r.store.path), Path(path).name)), None)
    if name not in runs:
        return None
    return name, int(runs[name].steps[-1] if step is None else step)


def _descriptor(run: Run, runs: dict[str, Run], roots: dict[str, str]) -> tuple | None:
    """(data, order, size) of the run's root run (its store when analysed), or None if any is unrecorded."""
    family = [r for r in runs.values() if r.kind == "pretraining" and roots[r.name] == roots[run.name]]
    meta = (family[0] if family else run).meta
    data = next((meta[k] for k in ("data", "dataset", "mixture") if meta.get(k) is not None), None)
    order = meta.get("seed")
    if isinstance(data, dict):
        order = data.get("seed", order)  # a data block's seed is the data order
        data = {k: v for k, v in data.items() if k != "seed"}
    tok = (meta.get("tokenizer") or {}).get("fingerprint")
    size = meta.get("size") or meta.get("preset")
    if (data is None and tok is None) or order is None or size is None:
        return None
    return json.dumps([data, tok], sort_keys=True, default=str), order, str(size)


def _model_class(meta: dict) -> str | None:
    model = meta.get("model")
    return model.get("class") if isinstance(model, dict) else None


def consecutive_pairs(
    runs: dict[str, Run], cfg, lag: int | None, notes: list[str]
) -> tuple[list, int | None]:
    """Returns (early and later candidates, the lag used)."""
    pre = [r for r in runs.values() if r.kind == "pretraining"]
    post = {r.name: r.steps[r.steps >= r.warmup] for r in pre}
    if lag is None:
        spacing = np.concatenate([np.diff(p) for p in post.values()] or [np.empty(0, np.int64)])
        if len(spacing) == 0:
            return [], None
        values, counts = np.unique(spacing, return_counts=True)
        lag = int(values[counts == counts.max()].min())
    n_max = option(cfg, ("scale_intervals",), None) or 50
    out, used = [], []
    for r in pre:
        starts = post[r.name][np.isin(post[r.name] + lag, post[r.name])]
        n = min(n_max, len(starts) // 2)  # Early and Later never share an interval
        if n == 0:
            continue
        used.append(f"{r.name} ({n} of {len(starts)})")
        out += [("early", r.name, int(s), r.name, int(s) + lag, None, r.name) for s in starts[:n]]
        out += [("later", r.name, int(s), r.name, int(s) + lag, None, r.name) for s in starts[-n:]]
    if used:
        notes.append(f"early / later: lag {lag} steps; first and last intervals of {', '.join(used)}")
    return out, lag


def model_pairs(runs: dict[str, Run], notes: list[str]) -> list[tuple]:
    """Returns the quantization, fine-tune, seeds, sizes, intra-type and random candidates."""
    metas = {n: r.meta for n, r in runs.items()}
    roots = {n: root_of(n, metas) for n in runs}
    out = []
    for r in runs.values():
        if r.kind == "pretraining":
            continue
        if r.parent is None or r.parent[0] not in runs or r.parent[1] not in runs[r.parent[0]].steps:
            notes.append(f"{r.name}: its parent snapshot is not among the stores; no {r.kind} pair")
            continue
        setting = bits_setting(r.meta["quantization"].get("format")) if r.kind == "quantized" else "fine-tune"
        out.append((setting, r.name, int(r.steps[-1]), r.parent[0], r.parent[1], None, r.name))
    desc = {n: _descriptor(r, runs, roots) for n, r in runs.items()}
    related_left = 0
    for a, b in combinations([r for r in runs.values() if r.kind != "quantized"], 2):
        if roots[a.name] == roots[b.name]:
            continue
        da, db, unit = desc[a.name], desc[b.name], f"{a.name}|{b.name}"
        if da is not None and db is not None and da[0] == db[0]:  # related runs: seeds, sizes or none
            common = np.intersect1d(a.steps, b.steps)
            same_order, same_size = da[1] == db[1], da[2] == db[2]
            if a.kind == b.kind == "pretraining" and same_order != same_size and len(common):
                out.append(
                    (
                        "sizes" if same_order else "seeds",
                        a.name,
                        int(common[-1]),
                        b.name,
                        int(common[-1]),
                        None,
                        unit,
                    )
                )
            else:
                related_left += 1
            continue
        same = _model_class(a.meta) is not None and _model_class(a.meta) == _model_class(b.meta)
        out.append(
            (
                "intra-type" if same else "random",
                a.name,
                int(a.steps[-1]),
                b.name,
                int(b.steps[-1]),
                None,
                unit,
            )
        )
    if related_left:
        notes.append(
            f"{related_left} pair(s) of models from related runs (same data) that are neither seeds nor sizes "
            "(another seed and size, a fine-tune, or no common step): in no setting"
        )
    return out


def layer_pairs(runs: dict[str, Run], notes: list[str]) -> tuple[list, dict[str, np.ndarray]]:
    """Returns (layer candidates, {run: (L+1, N) LL of its last snapshot holding every layer})."""
    out, rows = [], {}
    for r in runs.values():
        s = r.store
        if r.kind == "quantized" or getattr(s, "n_layers", 0) < 1:
            continue
        full = np.asarray(s.full_layer_steps() if hasattr(s, "full_layer_steps") else r.steps, dtype=np.int64)
        full = full[np.isin(full, r.steps)]
        if len(full) == 0:
            notes.append(f"{r.name}: no snapshot holds every layer; no layer pairs")
            continue
        step = int(full[-1])
        rows[r.name] = np.asarray(s.loglik_all(steps=[step]), dtype=np.float64)[0]  # (L+1, N)
        out += [("layers", r.name, step, r.name, step, la, r.name) for la in range(s.n_layers)]
    return out, rows


def assign(candidates: list[tuple]) -> list[tuple]:
    """Returns the candidates in PRIORITY order, each pair (its two rows) kept in its first setting only."""
    rank = {s: i for i, s in enumerate(PRIORITY)}
    ordered = sorted(candidates, key=lambda c: rank["quantization" if c[0].endswith("-bit") else c[0]])
    out, seen = [], set()
    for c in ordered:
        layer = c[5]
        key = frozenset({(c[1], c[2], layer), (c[3], c[4], None if layer is None else layer + 1)})
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out
