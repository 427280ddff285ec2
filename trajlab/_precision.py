"""Which dtype the lens's unembedding GEMMs run in (`score_model(..., lens_dtype=...)`).

bf16 GEMMs pay where the hardware multiplies bf16 natively (GPUs, CPUs with AMX or AVX512-BF16: 2-6x the fp32
rate); elsewhere bf16 is converted to fp32 inside the GEMM and runs slower than fp32, so "auto" picks fp32 there.

The model runs in its own dtype, the lens GEMMs too unless ``lens_dtype`` says otherwise (e.g. bf16 GEMMs on an
fp32 model); each tile of logits is upcast to fp32 before the exp and sum, and the target logit is computed in
fp32. bf16 logits carry bf16 rounding (~0.4% of a logit), as a bf16 model's own logits do; use fp32 for
reference numbers.
"""

from __future__ import annotations

import torch


def _cpu_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return set(next((line.split(":", 1)[1] for line in f if line.startswith("flags")), "").split())
    except OSError:
        return set()


def has_fast_bf16(device: torch.device) -> bool:
    """Whether `device` multiplies bf16 matrices natively: CUDA with bf16, or a CPU with AMX or AVX512-BF16."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        flags = _cpu_flags()
        if flags:
            return bool(flags & {"amx_bf16", "avx512_bf16"})
        probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # no /proc/cpuinfo: ask torch
        return any(getattr(torch.cpu, p, lambda: False)() for p in probes)
    return False


def resolved_lens_dtype(lens_dtype: str | None, own: torch.dtype, device: torch.device, hf: bool) -> torch.dtype:
    """The lens GEMM dtype: None = the model's own, "auto" = bf16 where the device has fast bf16, else fp32."""
    if lens_dtype is None:
        return own
    if not hf:
        if lens_dtype == "auto":
            return own
        raise ValueError(f"lens_dtype={lens_dtype!r} needs a transformers model (the tiled Unembed path); a "
                         "LensAdapter's unembed runs in its own dtype: pass lens_dtype=None")
    if lens_dtype == "auto":
        return torch.bfloat16 if has_fast_bf16(device) else torch.float32
    return getattr(torch, lens_dtype)
