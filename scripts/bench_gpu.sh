#!/usr/bin/env bash
# GPU benchmark of the scoring kernel (issue 15): pythia-70m-shaped GPT-NeoX (d=512, 6 layers, V=50304, fp32
# weights), 64 texts x 1024 tokens, all 7 lens rows, side by side in one run:
#   score_model with bf16 lens GEMMs, and with fp32 ones (lens_dtype None; TF32 off, as torch's default);
#   the same unembedding GEMMs alone (bf16 and fp32): (L+1) x [tokens x d] @ [d x V] per batch;
#   the naive lens: per batch one forward, per row full logits + log_softmax + gather (fp32);
#   peak GPU memory of each; |LL bf16 - LL fp32| per token; the projected time of 154 revisions x 10,000 texts.
# Needs only torch and transformers (no datasets, wandb, jsonargparse): it imports trajlab.lens from this source
# tree and checks that nothing else of trajlab's heavy dependencies came with it. Under 5 minutes on one GPU.
#
#   bash scripts/bench_gpu.sh                 # on a GPU machine
#   SIZE=tiny bash scripts/bench_gpu.sh       # seconds-long dry run, CPU allowed (a check that the script runs)
#   REPEATS=5 BATCH=16 bash scripts/bench_gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false
exec "${PYTHON:-python}" - <<'EOF'
import os, statistics, sys, time

import numpy as np
import torch

import trajlab.lens as lens

heavy = [m for m in ("datasets", "wandb", "jsonargparse", "lightning", "sklearn", "scipy") if m in sys.modules]
assert not heavy, f"import trajlab.lens pulled {heavy}"

tiny = os.environ.get("SIZE") == "tiny"
dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
if dev.type != "cuda" and not tiny:
    sys.exit("no CUDA device: run SIZE=tiny for a CPU dry run")
V, D, L, N, T = (1024, 64, 6, 4, 64) if tiny else (50304, 512, 6, 64, 1024)
BATCH, REPEATS = int(os.environ.get("BATCH", 16)), int(os.environ.get("REPEATS", 3))
REVISIONS, TEXTS = 154, 10_000

from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402 (transformers' own dependency)
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast  # noqa: E402

torch.manual_seed(0)
cfg = GPTNeoXConfig(vocab_size=V, hidden_size=D, num_hidden_layers=L, num_attention_heads=max(4, D // 64),
                    intermediate_size=4 * D, rotary_pct=0.25, max_position_embeddings=2048, tie_word_embeddings=False)
model = GPTNeoXForCausalLM(cfg).eval().to(dev)
word = Tokenizer(models.WordLevel({f"t{i}": i for i in range(V)}, unk_token="t0"))
word.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
tok = PreTrainedTokenizerFast(tokenizer_object=word, unk_token="t0", pad_token="t0")  # "t123" -> id 123
ids = torch.from_numpy(np.random.default_rng(0).integers(0, V - 27, (N, T)))  # (N, T)
texts = [" ".join(f"t{i}" for i in row.tolist()) for row in ids]
ids = ids.to(dev)


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()


def score(dtype):
    return lens.score_model(model, tok, texts, batch_size=BATCH, lens_dtype=dtype)


@torch.inference_mode()
def floor(dtype):
    w = model.get_output_embeddings().weight.to(dtype)  # (V, d)
    n = min(BATCH, N) * (T - 1)
    x, out = torch.randn(n, D, device=dev, dtype=dtype), torch.empty(n, V, device=dev, dtype=dtype)
    for _ in range(0, N, BATCH):
        for _ in range(L + 1):
            torch.matmul(x, w.T, out=out)


@torch.inference_mode()
def naive():
    norm, head = model.gpt_neox.final_layer_norm, model.get_output_embeddings()
    out = []
    for x in ids.split(BATCH):
        res = model(x, output_hidden_states=True)
        rows = [torch.log_softmax(head(norm(h[:, :-1])), -1).gather(-1, x[:, 1:, None]).sum((1, 2))
                for h in res.hidden_states[:-1]]
        rows.append(torch.log_softmax(res.logits[:, :-1], -1).gather(-1, x[:, 1:, None]).sum((1, 2)))
        out.append(torch.stack(rows).double())
    return torch.cat(out, 1).cpu().numpy()


runs = {"score bf16": lambda: score("bfloat16"), "score fp32": lambda: score(None),
        "GEMMs bf16": lambda: floor(torch.bfloat16), "GEMMs fp32": lambda: floor(torch.float32), "naive lens": naive}
t_start = time.perf_counter()
ll16, ll32, ll_naive = score("bfloat16"), score(None), naive()  # also the warm-up
times, peak = {k: [] for k in runs}, {}
for r in range(REPEATS):
    for k in list(runs)[r % len(runs):] + list(runs)[: r % len(runs)]:
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        sync()
        t0 = time.perf_counter()
        runs[k]()
        sync()
        times[k].append(time.perf_counter() - t0)
        if dev.type == "cuda":
            peak[k] = (torch.cuda.max_memory_allocated() - base) / 2**30
t = {k: statistics.median(v) for k, v in times.items()}
name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU (dry run)"
print(f"== {name}, torch {torch.__version__}: d={D}, {L + 1} rows, V={V}, {N} texts x {T} tokens, batch {BATCH}, "
      f"{REPEATS} repeats (median s); lens_dtype='auto' resolves to "
      f"{lens.score_model(model, tok, texts[:1], layers='last', lens_dtype='auto', return_info=True)[1].lens_dtype} ==")
for k in runs:
    mem = f"   peak {peak[k]:6.2f} GiB" if k in peak else ""
    print(f"{k:11s} {t[k]:8.3f} s  (min {min(times[k]):.3f}){mem}")
print(f"ratios: score fp32/bf16 = {t['score fp32'] / t['score bf16']:.2f}   score bf16 / GEMMs bf16 = "
      f"{t['score bf16'] / t['GEMMs bf16']:.2f}   score fp32 / GEMMs fp32 = {t['score fp32'] / t['GEMMs fp32']:.2f}   "
      f"naive / score bf16 = {t['naive lens'] / t['score bf16']:.2f}")
per_tok = np.abs(ll16 - ll32) / (T - 1)
print(f"|LL bf16 - LL fp32| per token (random-init model): max {per_tok.max():.2e}, mean {per_tok.mean():.2e}; "
      f"|score fp32 - naive| max {np.abs(ll32 - ll_naive).max() / (T - 1):.2e} nats/token")
per_text = t["score bf16"] / N
print(f"projection, bf16 at {T} tokens/text: {REVISIONS} revisions x {TEXTS} texts = "
      f"{per_text * REVISIONS * TEXTS / 3600:.2f} h scoring ({per_text * TEXTS:.1f} s per revision); at ~250 tokens "
      f"per ~1 KB text (the paper's probe, GPT-NeoX tokenizer) about {per_text * 250 / T * REVISIONS * TEXTS / 3600:.2f} h "
      "(loading each revision not included)")
print(f"total wall time {time.perf_counter() - t_start:.0f} s")
EOF
