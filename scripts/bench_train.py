"""Training throughput: trajlab's LightningModule vs a bare PyTorch loop on the same model, batches and precision.

Both sides run the same number of optimizer steps over the same packed batches with AdamW, the same warm-up +
cosine schedule and gradient clipping; the first steps are warm-up and not timed. Runs alternate (L, T, L, T, ...)
so machine noise hits both; prints tokens/s medians and their ratio (goal >= 0.9).

With --compare-precision, instead: tokens/s of the bare loop (the module's own model, optimizer and schedule;
Lightning's overhead is the same either way) under bf16 CPU autocast (what precision "bf16-mixed" does) vs
fp32, per preset, runs alternating, and their ratio. Whether a recipe switches precision is decided from
these numbers together with its final validation loss (not measured here).

    python scripts/bench_train.py [--preset tiny] [--steps 40] [--repeats 3] [--precision 32]
    python scripts/bench_train.py --compare-precision [--presets tiny,small] [--steps 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import lightning as L  # noqa: E402
import torch  # noqa: E402

from trajlab.train.lit import LitLM, LMDataModule  # noqa: E402


class _Timer(L.Callback):
    def __init__(self, warmup: int):
        self.warmup, self.t0, self.t1 = warmup, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup:
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.t1 = time.perf_counter()


def lightning_run(dm: LMDataModule, args) -> float:
    L.seed_everything(0, verbose=False)
    module = LitLM(preset=args.preset, context_length=dm.hparams.seq_len, warmup_steps=10)
    module.tokenizer = dm.tokenizer
    timer = _Timer(args.warmup)
    trainer = L.Trainer(
        max_steps=args.warmup + args.steps, accelerator="cpu", devices=1, precision=args.precision,
        gradient_clip_val=1.0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, callbacks=[timer],
    )
    trainer.fit(module, datamodule=dm)
    return args.steps * dm.hparams.batch_size * dm.hparams.seq_len / (timer.t1 - timer.t0)


def torch_run(dm: LMDataModule, args) -> float:
    L.seed_everything(0, verbose=False)
    module = LitLM(preset=args.preset, context_length=dm.hparams.seq_len, warmup_steps=10)
    module.tokenizer = dm.tokenizer
    module.configure_model()
    model = module.model.train()
    # The same optimizer groups and schedule as the module; estimated steps given directly.
    trainer_stub = type("T", (), {"estimated_stepping_batches": args.warmup + args.steps})()
    module._trainer = trainer_stub  # configure_optimizers reads trainer.estimated_stepping_batches
    cfg = module.configure_optimizers()
    opt, sched = cfg["optimizer"], cfg["lr_scheduler"]["scheduler"]
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed")
    loader = dm.train_dataloader()
    t0 = None
    for step, batch in enumerate(loader):
        if step == args.warmup:
            t0 = time.perf_counter()
        if step == args.warmup + args.steps:
            break
        ids = batch["input_ids"]
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    return args.steps * dm.hparams.batch_size * dm.hparams.seq_len / (time.perf_counter() - t0)


def compare_precision(dm: LMDataModule, args) -> None:
    """tokens/s of the bare loop (the module's model, optimizer and schedule) under bf16 autocast vs fp32."""
    print(f"bf16-mixed vs 32, bare loop on the module's model, batch {dm.hparams.batch_size} x {dm.hparams.seq_len}, "
          f"{args.steps} timed steps x{args.repeats}, torch_threads={torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    for preset in args.presets.split(","):
        runs = {"32": [], "bf16-mixed": []}
        for r in range(args.repeats):
            for precision in list(runs)[r % 2:] + list(runs)[: r % 2]:
                run_args = argparse.Namespace(**{**vars(args), "preset": preset, "precision": precision})
                runs[precision].append(torch_run(dm, run_args))
                print(f"  {preset} {precision}: {runs[precision][-1]:,.0f} tokens/s", flush=True)
        med = {k: statistics.median(v) for k, v in runs.items()}
        print(f"preset={preset}: tokens/s 32 {med['32']:,.0f}  bf16-mixed {med['bf16-mixed']:,.0f}  "
              f"ratio bf16-mixed/32 = {med['bf16-mixed'] / med['32']:.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--precision", default="32", choices=["32", "bf16-mixed"])
    ap.add_argument("--compare-precision", action="store_true", help="bf16-mixed vs 32 tokens/s per preset")
    ap.add_argument("--presets", default="tiny,small", help="with --compare-precision")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dm = LMDataModule(corpus="shakespeare", vocab_size=4096, seq_len=128, batch_size=16)
    dm.setup("fit")
    if args.compare_precision:
        compare_precision(dm, args)
        return
    lit, bare = [], []
    for _ in range(args.repeats):
        lit.append(lightning_run(dm, args))
        bare.append(torch_run(dm, args))
    ratio = statistics.median(lit) / statistics.median(bare)
    print(f"preset={args.preset} precision={args.precision} steps={args.steps} x{args.repeats} "
          f"torch_threads={torch.get_num_threads()}")
    print(f"lightning tokens/s: {statistics.median(lit):,.0f}  (runs: {', '.join(f'{x:,.0f}' for x in lit)})")
    print(f"bare torch tokens/s: {statistics.median(bare):,.0f}  (runs: {', '.join(f'{x:,.0f}' for x in bare)})")
    print(f"ratio train lightning/bare = {ratio:.3f}  (goal >= 0.9)")


if __name__ == "__main__":
    main()
