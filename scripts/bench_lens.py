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

Usage: python scripts/bench_lens.py [--repeats 5] [--cases 8x256,16x1024,8x1024@256] [--threads N]
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

VOCAB, LAYERS, HIDDEN, BATCH = 50304, 6, 128, 8


def pythia14m_shaped() -> torch.nn.Module:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    cfg = GPTNeoXConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=4,
                        intermediate_size=512, rotary_pct=0.25, max_position_embeddings=2048,
                        tie_word_embeddings=False)
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
def gemm_floor(model, ids: torch.Tensor) -> None:
    """The unembedding matrix products alone: per batch, L+1 times (tokens x d) @ (d x V)."""
    w = model.get_output_embeddings().weight  # (V, d)
    n = BATCH * (ids.shape[1] - 1)
    x, out = torch.randn(n, HIDDEN), torch.empty(n, VOCAB)
    for _ in ids.split(BATCH):
        for _ in range(LAYERS + 1):
            torch.matmul(x, w.T, out=out)


def score(model, tok, texts: list[str], window: int | None = None) -> np.ndarray:
    return lens.score_model(model, tok, texts, layers="all", batch_size=BATCH, max_length=window)


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


def parse_case(case: str) -> tuple[int, int, int | None]:
    """"8x1024@256" -> (8, 1024, 256): texts, tokens per text, window (None: the model's context)."""
    size, _, window = case.partition("@")
    n_texts, n_tokens = map(int, size.split("x"))
    return n_texts, n_tokens, int(window) if window else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--cases", default="8x256,16x1024,8x1024@256",
                   help="comma-separated TEXTSxTOKENS[@WINDOW]: with a window the texts are scored in rolling windows")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    p.add_argument("--memory", choices=["a", "b"], help=argparse.SUPPRESS)  # child mode of (d)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cases = [parse_case(c) for c in args.cases.split(",")]
    if args.memory:
        measure_memory(args.memory, *cases[0])
        return
    model, tok = pythia14m_shaped(), word_tokenizer()
    for n_texts, n_tokens, window in cases:
        run_case(model, tok, n_texts, n_tokens, window, args.repeats)


if __name__ == "__main__":
    main()
