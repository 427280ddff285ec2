"""Benchmark of the scoring kernel (trajlab.lens.score_model) on a pythia-14m-shaped GPT-NeoX, fp32 CPU.

Side by side in one run, per case (texts x tokens, all layers):
  (a) score_model through its real path (a word-level tokenizer maps "t123" to id 123, so texts have exact lengths);
  (b) a naive lens: one forward, then per layer full (tokens x V) logits + log_softmax + gather;
  (c) the GEMM-only floor: the unembedding products alone, (L+1) x [tokens x d] @ [d x V], into a preallocated
      output (no allocation, no norm, no softmax);
  (d) peak extra memory of (a) and (b): each run once in a fresh subprocess after set-up and a small warm-up; the
      kernel's peak-RSS mark (VmHWM) is reset just before the call, so the number is the resident growth the
      call causes (torch CPU tensors are malloc'd, which tracemalloc does not see).
A case TEXTSxTOKENS@WINDOW scores texts longer than the window in rolling windows (stride WINDOW // 2; (b) does
the same window by window); (c) still counts each scored token once, so the forward over overlapping windows
(about 2x the tokens) is part of what (a)/(c) measures.
Times are medians over interleaved repeats (the machine is shared and noisy). The load average is printed: on
a busy machine every multi-threaded op waits for a descheduled thread (ms each), which inflates (a), made of many
ops, far more than (b) or (c); there `--threads 1` shows the kernel's own ratios.

With --dtype, instead, lens GEMMs in bf16 vs fp32 (score_model(..., lens_dtype="bfloat16")) on random-init
GPT-NeoX models of pythia-70m's shape (d=512, 6 layers) and pythia-14m's (d=128), V=50304, side by side: score_model
both ways, the fp32 and bf16 GEMM floors, and the kernel's time shares (GEMM, bf16 -> fp32 conversion, exp/sum)
measured step by step over the same tiles. Where the CPU has no native bf16 the case is cut down (printed).

Usage: python scripts/bench_lens.py [--repeats 5] [--cases 8x256,16x1024,8x1024@256] [--threads N]
       python scripts/bench_lens.py --dtype [--dtype-case 16x1024] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import trajlab.lens as lens  # noqa: E402
from trajlab._precision import has_fast_bf16  # noqa: E402

VOCAB, LAYERS, HIDDEN, BATCH = 50304, 6, 128, 8


def pythia14m_shaped(hidden: int = HIDDEN) -> torch.nn.Module:
    """pythia-14m's shape (d=128, 4 heads); hidden=512 gives pythia-70m's (8 heads)."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    cfg = GPTNeoXConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=LAYERS,
                        num_attention_heads=hidden // 32 if hidden > 128 else 4, intermediate_size=4 * hidden,
                        rotary_pct=0.25, max_position_embeddings=2048, tie_word_embeddings=False)
    return GPTNeoXForCausalLM(cfg).eval()


def word_tokenizer():
    """A real fast tokenizer whose word "t{i}" is id i, so random-id texts tokenize to exactly their ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(VOCAB)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0", pad_token="t0")


def random_ids(n_texts: int, n_tokens: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).integers(0, 50277, (n_texts, n_tokens)))  # (N, T)


def texts_of(ids: torch.Tensor) -> list[str]:
    return [" ".join(f"t{i}" for i in row.tolist()) for row in ids]


@torch.inference_mode()
def naive_lens(model, ids: torch.Tensor, window: int | None = None) -> np.ndarray:
    """(L+1, N): per batch one forward, then per layer the full logits, log_softmax and gather. Texts longer
    than `window` go window by window (transformers' perplexity guide, stride window // 2), the windows of a
    batch of texts together (all texts have the same length, so their windows align)."""
    norm, head = model.gpt_neox.final_layer_norm, model.get_output_embeddings()
    t = ids.shape[1]
    window = window or t
    out = []
    for xb in ids.split(BATCH):  # (B, T)
        total, prev_end = 0, 0
        for begin in range(0, t, window // 2):
            end = min(begin + window, t)
            x, lo = xb[:, begin:end], max(1, end - begin - (end - prev_end))  # first scored local position
            res = model(x, output_hidden_states=True)
            rows = []
            for h in res.hidden_states[:-1]:
                logp = torch.log_softmax(head(norm(h[:, lo - 1:-1])), -1)  # (B, scored, V)
                rows.append(logp.gather(-1, x[:, lo:, None]).sum((1, 2)))
            logp = torch.log_softmax(res.logits[:, lo - 1:-1], -1)  # the model's own output
            rows.append(logp.gather(-1, x[:, lo:, None]).sum((1, 2)))
            total = total + torch.stack(rows).double()
            prev_end = end
            if end == t:
                break
        out.append(total)
    return torch.cat(out, 1).numpy()


@torch.inference_mode()
def gemm_floor(model, ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> None:
    """The unembedding matrix products alone: per batch, L+1 times (tokens x d) @ (d x V)."""
    w = model.get_output_embeddings().weight.to(dtype)  # (V, d)
    n = min(BATCH, len(ids)) * (ids.shape[1] - 1)
    x, out = torch.randn(n, w.shape[1], dtype=dtype), torch.empty(n, VOCAB, dtype=dtype)
    for _ in ids.split(BATCH):
        for _ in range(LAYERS + 1):
            torch.matmul(x, w.T, out=out)


def score(model, tok, texts: list[str], window: int | None = None, lens_dtype: str | None = None) -> np.ndarray:
    return lens.score_model(model, tok, texts, layers="all", batch_size=BATCH, max_length=window,
                            lens_dtype=lens_dtype)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def measure_memory(which: str, n_texts: int, n_tokens: int, window: int | None) -> None:
    """Child process: print the peak resident growth (MiB) of one call of (a) or (b)."""
    model, tok, ids = pythia14m_shaped(), word_tokenizer(), random_ids(n_texts, n_tokens)
    texts = texts_of(ids)
    small = random_ids(2, 16)
    score(model, tok, texts_of(small)) if which == "a" else naive_lens(model, small)  # warm-up: library init
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = _status_kib("VmRSS")
    score(model, tok, texts, window) if which == "a" else naive_lens(model, ids, window)
    print(json.dumps({"peak_extra_mib": (_status_kib("VmHWM") - before) / 1024}))


def memory_of(which: str, n_texts: int, n_tokens: int, window: int | None) -> float:
    case = f"{n_texts}x{n_tokens}" + (f"@{window}" if window else "")
    cmd = [sys.executable, __file__, "--memory", which, "--cases", case,
           "--threads", str(torch.get_num_threads())]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])["peak_extra_mib"]


def run_case(model, tok, n_texts: int, n_tokens: int, window: int | None, repeats: int) -> None:
    ids = random_ids(n_texts, n_tokens)
    texts = texts_of(ids)
    a, b = score(model, tok, texts, window), naive_lens(model, ids, window)
    err = np.abs(a - b).max() / (n_tokens - 1)
    fns = {"a": lambda: score(model, tok, texts, window), "b": lambda: naive_lens(model, ids, window),
           "c": lambda: gemm_floor(model, ids)}
    times = {k: [] for k in fns}
    for r in range(repeats):
        for k in list(fns)[r % 3:] + list(fns)[: r % 3]:  # rotate the order
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    ta, tb, tc = (statistics.median(times[k]) for k in "abc")
    ma, mb = memory_of("a", n_texts, n_tokens, window), memory_of("b", n_texts, n_tokens, window)
    n_pos = n_texts * (n_tokens - 1)
    tile_tokens, tile_vocab = lens.TILE_SHAPE["cpu"]
    rolled = f" rolled in windows of {window} (stride {window // 2})" if window else ""
    print(f"\n== {n_texts} texts x {n_tokens} tokens{rolled}, {LAYERS + 1} rows, V={VOCAB}, batch {BATCH}, "
          f"{torch.get_num_threads()} threads, {repeats} repeats (median s), "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs ==")
    print(f"max |a - b| = {err:.2e} nats per token")
    print(f"(a) score_model      {ta:8.3f} s   (min {min(times['a']):.3f})")
    print(f"(b) naive lens       {tb:8.3f} s   (min {min(times['b']):.3f})")
    print(f"(c) GEMM-only floor  {tc:8.3f} s   (min {min(times['c']):.3f})  "
          f"= {(LAYERS + 1) * n_pos * HIDDEN * VOCAB * 2 / tc / 1e9:.0f} GFLOP/s")
    print(f"(d) peak extra RSS   a: {ma:8.1f} MiB   b: {mb:8.1f} MiB   (largest logits tensor alive: "
          f"a {tile_tokens * tile_vocab * 4 / 2**20:.0f} MiB tile of {tile_tokens} x {tile_vocab}, "
          f"b {BATCH * ((window or n_tokens) - 1) * VOCAB * 4 / 2**20:.0f} MiB x2 with its log_softmax)")
    print(f"ratios: (a)/(c) = {ta / tc:.2f} (goal <= 1.5)   (b)/(a) = {tb / ta:.2f} (goal >= 2)   "
          f"mem(a)/mem(b) = {ma / mb:.3f} (goal <= 0.125)")


def timed(fns: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each function, interleaved with a rotating order."""
    times = {k: [] for k in fns}
    for r in range(repeats):
        for k in list(fns)[r % len(fns):] + list(fns)[: r % len(fns)]:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return times


@torch.inference_mode()
def kernel_parts(w: torch.Tensor, n: int, dtype: torch.dtype) -> dict:
    """The lens kernel's steps over n tokens x V, tile by tile (TILE_SHAPE), each step timed alone."""
    c, vt = lens.TILE_SHAPE["cpu"]
    c = min(c, n)
    wg, x = w.to(dtype), torch.randn(c, w.shape[1]).to(dtype)
    tile = torch.empty(c, vt, dtype=dtype)
    tile32, out32 = torch.randn(c, vt) - 8, torch.empty(c, vt)  # logits minus the target logit
    sums = torch.empty(c)
    n_tiles = -(-n // c) * -(-VOCAB // vt)

    def gemm():
        for _ in range(-(-n // c)):
            for v in range(0, VOCAB, vt):
                torch.matmul(x, wg[v:v + vt].T, out=tile[:, : min(vt, VOCAB - v)])

    fns = {"gemm": gemm,
           "exp/sum": lambda: [torch.sum(torch.exp(tile32, out=out32), -1, out=sums) for _ in range(n_tiles)]}
    if dtype != torch.float32:
        fns["to fp32"] = lambda: [tile32.copy_(tile) for _ in range(n_tiles)]
    return {k: statistics.median(v) for k, v in timed(fns, 3).items()}


def run_dtype_case(hidden: int, n_texts: int, n_tokens: int, full: str, repeats: int) -> None:
    """bf16 vs fp32 lens GEMMs: score_model both ways, the GEMM floors, and the kernel's time shares."""
    model, tok, ids = pythia14m_shaped(hidden), word_tokenizer(), random_ids(n_texts, n_tokens)
    texts = texts_of(ids)
    a32, a16 = score(model, tok, texts), score(model, tok, texts, lens_dtype="bfloat16")
    dev = np.abs(a16 - a32) / (n_tokens - 1)
    times = timed({"score fp32": lambda: score(model, tok, texts),
                   "score bf16": lambda: score(model, tok, texts, lens_dtype="bfloat16"),
                   "floor fp32": lambda: gemm_floor(model, ids),
                   "floor bf16": lambda: gemm_floor(model, ids, torch.bfloat16)}, repeats)
    t = {k: statistics.median(v) for k, v in times.items()}
    n_pos = n_texts * (n_tokens - 1)
    w = model.get_output_embeddings().weight
    parts = {name: kernel_parts(w, n_pos, dt) for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    goal = 2.5 if hidden >= 512 else 1.6
    size = f"{n_texts} texts x {n_tokens} tokens" + (f" (the {full} case cut down: see below)" if full else "")
    print(f"\n== lens dtype, d={hidden}, {LAYERS + 1} rows, V={VOCAB}: {size}, {torch.get_num_threads()} threads, "
          f"{repeats} repeats (median s), load average {os.getloadavg()[0]:.1f} ==")
    for k in t:
        print(f"{k:12s} {t[k]:8.3f} s  (min {min(times[k]):.3f})")
    print(f"ratios: score fp32/bf16 = {t['score fp32'] / t['score bf16']:.2f} (goal >= {goal})   "
          f"score bf16 / floor fp32 = {t['score bf16'] / t['floor fp32']:.2f}   "
          f"floor fp32/bf16 = {t['floor fp32'] / t['floor bf16']:.2f}")
    for name, p in parts.items():
        total = sum(p.values())
        print(f"kernel time shares, {name} GEMMs: " + ", ".join(f"{k} {v / total:.0%}" for k, v in p.items())
              + f"  ({total:.2f} s per lens row of {n_pos} tokens)")
    print(f"|LL bf16 - LL fp32| per token (random-init model): max {dev.max():.2e}, mean {dev.mean():.2e} nats")


def parse_case(case: str) -> tuple[int, int, int | None]:
    """"8x1024@256" -> (8, 1024, 256): texts, tokens per text, window (None: the model's context)."""
    size, _, window = case.partition("@")
    n_texts, n_tokens = map(int, size.split("x"))
    return n_texts, n_tokens, int(window) if window else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=None, help="default 5, or 3 with --dtype")
    p.add_argument("--cases", default="8x256,16x1024,8x1024@256",
                   help="comma-separated TEXTSxTOKENS[@WINDOW]: with a window the texts are scored in rolling windows")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    p.add_argument("--dtype", action="store_true",
                   help="instead: bf16 vs fp32 lens GEMMs at d=512 (pythia-70m shape) and d=128")
    p.add_argument("--dtype-case", default=None,
                   help="TEXTSxTOKENS of the --dtype run; default 16x1024, or 1x256 where bf16 is not native")
    p.add_argument("--memory", choices=["a", "b"], help=argparse.SUPPRESS)  # child mode of (d)
    args = p.parse_args()
    args.repeats = args.repeats or (3 if args.dtype else 5)
    torch.set_num_threads(args.threads)
    cases = [parse_case(c) for c in args.cases.split(",")]
    if args.memory:
        measure_memory(args.memory, *cases[0])
        return
    if args.dtype:
        native = has_fast_bf16(torch.device("cpu"))
        n_texts, n_tokens, _ = parse_case(args.dtype_case or ("16x1024" if native else "1x256"))
        full = "" if args.dtype_case or native else "16x1024"
        for hidden in (512, 128):
            run_dtype_case(hidden, n_texts, n_tokens, full, args.repeats)
        if full:
            print(f"\nthis CPU has no native bf16 (no amx_bf16 / avx512_bf16 in /proc/cpuinfo): its bf16 GEMMs "
                  f"convert to fp32 inside, so the {full} case was cut to {n_texts}x{n_tokens} to finish in "
                  "minutes; ratios are per token and do not depend on the count")
        return
    model, tok = pythia14m_shaped(), word_tokenizer()
    for n_texts, n_tokens, window in cases:
        run_case(model, tok, n_texts, n_tokens, window, args.repeats)


if __name__ == "__main__":
    main()
