"""`trajlab import --dry-run`: what an import downloads, holds on disk and in memory, and takes per worker
count, and the known quirks of the requested revisions (trajlab.hub.quirks).

Nothing is downloaded or written and neither torch nor huggingface_hub is imported (except to list the
branches of a non-Pythia hub model for ``--revisions olmo`` or a range). Sizes come from the model:
Pythia sizes from their published shapes (weights served as fp16: 2 bytes per parameter), a local folder or an
HF cache folder from its weight files. Time per revision = download (at an assumed bandwidth) + scoring (the
forward pass and the logit lens as FLOPs, at this machine's measured fp32 matmul rate, or an assumed GPU rate
with a CUDA device); with W Ray workers a task imports its share of the revisions plus the previous shard's
last max(window, 1) (see trajlab.hub.ray_executor).
"""

from __future__ import annotations

import math
import time

import numpy as np

from trajlab.hub.config import ImportConfig, import_probe

# Pythia sizes: (layers, d_model); embedding rows padded to 50304 (approximate for 6.9b and 12b)
PYTHIA_SIZES = {
    "14m": (6, 128), "31m": (6, 256), "70m": (6, 512), "160m": (12, 768), "410m": (24, 1024),
    "1b": (16, 2048), "1.4b": (24, 2048), "2.8b": (32, 2560), "6.9b": (32, 4096), "12b": (36, 5120),
}  # fmt: skip
PYTHIA_VOCAB = 50304
BANDWIDTH_MB_S = 100.0  # assumed download rate per worker
GPU_TFLOPS = 50.0  # assumed sustained fp32/TF32 rate of one data-centre GPU
BYTES_PER_TOKEN = 4.0  # English text with a GPT-NeoX-style BPE
WORKER_COUNTS = (1, 2, 4, 8, 16)
GIB = 2**30


def pythia_params(layers: int, d: int) -> int:
    """GPT-NeoX parameters: untied embed + unembed, per block 12 d^2 + 13 d (QKV, out, 4x MLP, biases, 2 LN),
    and the final LayerNorm."""
    return 2 * PYTHIA_VOCAB * d + layers * (12 * d * d + 13 * d) + 2 * d


def measured_gflops(n: int = 768, repeat: int = 3) -> float:
    """This machine's fp32 matmul rate (numpy's BLAS), best of `repeat`."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    best = math.inf
    for _ in range(repeat):
        t = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def _shape(ref) -> dict | None:
    """n_params, layers, d_model, vocab and download bytes per revision, where they can be known offline."""
    size = ref.meta.get("size")
    if size in PYTHIA_SIZES:
        layers, d = PYTHIA_SIZES[size]
        n = pythia_params(layers, d)
        return {"n_params": n, "layers": layers, "d": d, "vocab": PYTHIA_VOCAB, "download": 2 * n}
    folder = ref.path if ref.kind == "dir" else None
    if folder is None or not (folder / "config.json").is_file():
        return None
    import json

    cfg = json.loads((folder / "config.json").read_text())
    weights = sum(p.stat().st_size for p in folder.glob("model*.safetensors"))
    d, layers, vocab = cfg.get("hidden_size"), cfg.get("num_hidden_layers"), cfg.get("vocab_size")
    if not (weights and d and layers and vocab):
        return None
    width = 2 if cfg.get("torch_dtype") in ("float16", "bfloat16") else 4
    return {"n_params": weights // width, "layers": layers, "d": d, "vocab": vocab, "download": weights}


def dry_run(model, revisions, out, cfg: ImportConfig | None = None, gflops: float | None = None) -> str:
    """The dry-run report (a few header lines and one table row per worker count)."""
    from trajlab.hub.checkpoints import hub_branches, model_ref
    from trajlab.hub.quirks import report
    from trajlab.hub.revisions import expand_revisions

    cfg = cfg or ImportConfig()
    ref = model_ref(model, gguf_file=cfg.gguf_file, cache_dir=cfg.cache_dir)
    branches = (lambda: hub_branches(ref, cfg.offline)) if ref.kind == "hub" else None  # "olmo", ranges
    names = expand_revisions(revisions, pythia=ref.pythia, branches=branches)
    shown = names if len(names) <= 5 else [*names[:4], "...", names[-1]]
    lines = [f"{ref.name}: {len(names)} revision(s): {', '.join(shown)} -> {out}", *report(ref.name, names)]
    shape = _shape(ref)
    if shape is None:
        return "\n".join(
            [*lines, "sizes unknown offline (not a Pythia model or a local folder): no estimate"]
        )
    probe = import_probe(cfg.probe, None)
    n_texts, tokens = len(probe), float(np.sum(probe.n_bytes)) / BYTES_PER_TOKEN
    n, layers, d, vocab, dl = (shape[k] for k in ("n_params", "layers", "d", "vocab", "download"))
    rows = layers + 1 if cfg.layers == "all" else 1
    flops = 2 * n * tokens + (rows - 1) * 2 * d * vocab * tokens  # forward + the lens's extra unembeddings
    gpu = cfg.device is not None and str(cfg.device).startswith("cuda")
    rate = GPU_TFLOPS * 1e3 if gpu else (gflops or measured_gflops())
    per_rev = dl / (BANDWIDTH_MB_S * 1e6) + flops / (rate * 1e9)
    how_fast = "assumed GPU" if gpu else "fp32 matmul measured here"
    width = 2 if cfg.dtype in ("bfloat16", "float16") else 4
    memory = n * width + (cfg.window + 1) * 4 * n if cfg.window else n * width
    store = len(names) * (rows * n_texts * 8 + cfg.sketch_k * 8)
    pre = max(cfg.window, 1)
    lines += [
        f"~{n:,} parameters, {layers} layers -> {rows} LL row(s) x {n_texts} texts (~{tokens:,.0f} tokens) "
        f"per revision; store ~{store / 2**20:,.1f} MiB",
        f"download ~{dl / GIB:.2f} GiB per revision, ~{len(names) * dl / GIB:,.1f} GiB in all; disk without "
        f"--clean-cache ~{len(names) * dl / GIB:,.1f} GiB (the HF cache keeps every revision)",
        f"per revision ~{per_rev:,.0f} s: download at {BANDWIDTH_MB_S:.0f} MB/s (assumed) + "
        f"{flops / 1e12:,.1f} TFLOP at {rate:,.0f} GFLOP/s ({how_fast})",
        "workers | revisions per task (own + preloaded) | disk with --clean-cache | memory per worker | "
        "wall time",
    ]
    for w in sorted({*WORKER_COUNTS, *([cfg.workers] if cfg.workers else [])}):
        if w > len(names):
            break
        own = math.ceil(len(names) / w)
        extra = min(pre, len(names) - own) if w > 1 else 0
        disk = w * dl  # one revision in flight per task
        lines.append(
            f"{w:>7} | {own:>4} + {extra:<3} | {disk / GIB:,.1f} GiB | {memory / GIB:,.1f} GiB | "
            f"{_duration((own + extra) * per_rev)}"
        )
    return "\n".join(lines)


def _duration(s: float) -> str:
    return f"{s / 3600:,.1f} h" if s >= 3600 else f"{s / 60:,.0f} min" if s >= 60 else f"{s:.0f} s"
