"""lens_dtype: bf16 unembedding GEMMs on an fp32 model, against fp32 and a rounding bound computed independently."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_lens import PreNormAdapter, final_norm, ids_of
from tiny_models import SAMPLE_TEXTS, tiny_gpt2, tiny_llama, tiny_neox

import trajlab._precision as precision
from trajlab import lens
from trajlab.lens import score_model

MODELS = {"neox": tiny_neox, "gpt2": tiny_gpt2, "llama": tiny_llama}
TEXTS = SAMPLE_TEXTS[:4]
U = 2.0**-8  # bf16 unit roundoff (2^-9) with a factor 2 of slack


@torch.no_grad()
def bf16_bound(model, ids: list[int]) -> np.ndarray:
    """(L+1,) bound on |LL_bf16 - LL_fp32| of one text: per token, |logsumexp(z') - logsumexp(z)| <= max_v
    |z'_v - z_v| (the target logit stays fp32), and a bf16 product of rounded inputs with a rounded output is
    off by at most U * (2 * (|x| @ |W|^T)_v + |z_v|) (+ fp32 accumulation, far smaller)."""
    x = torch.tensor([ids])
    hs = model(x, output_hidden_states=True).hidden_states
    w = model.get_output_embeddings().weight.double()  # (V, d)
    out = []
    for layer, h in enumerate(hs):
        hn = (h[0, :-1] if layer == len(hs) - 1 else final_norm(model)(h[0, :-1])).double()  # (T-1, d)
        err = U * (2 * hn.abs() @ w.abs().T + (hn @ w.T).abs())  # (T-1, V)
        out.append(err.max(-1).values.sum().item() * 1.01)
    return np.array(out)


@pytest.mark.parametrize("arch", MODELS)
def test_float32_is_bitwise_the_default_on_an_fp32_model(arch, tokenizer, monkeypatch):
    monkeypatch.setitem(lens.TILE_SHAPE, "cpu", (16, 50))
    model = MODELS[arch](layers=2)
    default, info0 = score_model(model, tokenizer, TEXTS, batch_size=3, return_info=True)
    fp32, info1 = score_model(model, tokenizer, TEXTS, batch_size=3, lens_dtype="float32", return_info=True)
    np.testing.assert_array_equal(fp32, default)
    assert info0.lens_dtype == info1.lens_dtype == "float32"


@pytest.mark.parametrize("arch", MODELS)
def test_bf16_lens_is_within_the_rounding_bound(arch, tokenizer, monkeypatch):
    monkeypatch.setitem(lens.TILE_SHAPE, "cpu", (16, 50))  # partial tiles, as in the fp32 tests
    model = MODELS[arch](layers=2)
    with torch.no_grad():  # logits of a few nats, as a trained model has (random init gives ~0.1)
        model.get_output_embeddings().weight.mul_(30.0)
    fp32 = score_model(model, tokenizer, TEXTS, batch_size=3)
    bf16, info = score_model(model, tokenizer, TEXTS, batch_size=3, lens_dtype="bfloat16", return_info=True)
    assert info.lens_dtype == "bfloat16"
    dev = np.abs(bf16 - fp32)  # (L+1, N)
    bound = np.stack([bf16_bound(model, ids_of(tokenizer, t)) for t in TEXTS], axis=1)
    assert np.all(dev <= bound)
    assert dev.max() > 1e-4  # bf16 was used: fp32 alone agrees to ~1e-6
    per_token = dev / info.n_tokens
    assert per_token.max() < 0.05  # measured 3e-3 (neox, llama) .. 1.3e-2 (gpt2) at -11..-18 nats per token


def test_bf16_lens_leaves_the_forward_in_fp32(tokenizer):
    """Only the GEMMs change: the hidden states the lens reads are the fp32 model's (hook on the final norm)."""
    model = tiny_llama(layers=2)
    seen = []
    model.model.norm.register_forward_hook(lambda m, args, out: seen.append(args[0].dtype))
    score_model(model, tokenizer, TEXTS, layers="last", lens_dtype="bfloat16")
    assert seen and set(seen) == {torch.float32}
    assert next(model.parameters()).dtype == torch.float32


def test_bf16_model_with_float32_lens(tokenizer):
    model = tiny_llama(layers=2).to(torch.bfloat16)
    own, info0 = score_model(model, tokenizer, TEXTS, return_info=True)
    up, info1 = score_model(model, tokenizer, TEXTS, lens_dtype="float32", return_info=True)
    assert (info0.lens_dtype, info1.lens_dtype) == ("bfloat16", "float32")
    ids = [ids_of(tokenizer, t) for t in TEXTS]
    with torch.no_grad():  # the last row in fp32: the bf16 last hidden state times the upcast head
        ref = []
        for x in ids:
            h = model.model(torch.tensor([x])).last_hidden_state[0, :-1].double()
            z = h @ model.lm_head.weight.double().T
            ref.append(torch.log_softmax(z, -1).gather(1, torch.tensor(x[1:])[:, None]).sum().item())
    n = np.array([len(x) - 1 for x in ids])
    assert np.all(np.abs(up[-1] - ref) <= 1e-5 * n)
    assert np.abs(own[-1] - ref).max() > np.abs(up[-1] - ref).max()


def test_auto_resolution(tokenizer, monkeypatch):
    model = tiny_neox(layers=2)
    cpu = torch.device("cpu")
    for flags, expected in [({"avx2", "amx_bf16"}, "bfloat16"), ({"avx512f", "avx512_bf16"}, "bfloat16"),
                            ({"avx2", "avx512f"}, "float32")]:
        monkeypatch.setattr(precision, "_cpu_flags", lambda flags=flags: flags)
        assert precision.has_fast_bf16(cpu) == (expected == "bfloat16")
        info = score_model(model, tokenizer, TEXTS[:1], layers="last", lens_dtype="auto", return_info=True)[1]
        assert info.lens_dtype == expected and info.scoring()["lens_dtype"] == expected
    monkeypatch.setattr(precision, "_cpu_flags", set)  # no /proc/cpuinfo: torch's own probes decide
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert precision.has_fast_bf16(cpu)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert not precision.has_fast_bf16(cpu) and not precision.has_fast_bf16(torch.device("meta"))


def test_auto_on_this_machine_follows_its_cpu_flags(tokenizer):
    with open("/proc/cpuinfo") as f:
        flags = next(line for line in f if line.startswith("flags")).split()
    fast = "amx_bf16" in flags or "avx512_bf16" in flags
    info = score_model(tiny_neox(layers=2), tokenizer, TEXTS[:1], lens_dtype="auto", return_info=True)[1]
    assert info.lens_dtype == ("bfloat16" if fast else "float32")


def test_bad_lens_dtype_gets_one_line(tokenizer):
    model = tiny_neox(layers=2)
    for bad in ("fp16", "bf16", torch.bfloat16, "float16"):
        with pytest.raises(ValueError, match=r"lens_dtype must be None or one of 'float32', 'bfloat16', 'auto'"):
            score_model(model, tokenizer, TEXTS, lens_dtype=bad)
    adapter = PreNormAdapter(tiny_llama(layers=2))
    with pytest.raises(ValueError, match=r"lens_dtype='bfloat16' needs a transformers model .* lens_dtype=None$"):
        score_model(adapter, tokenizer, TEXTS, lens_dtype="bfloat16")
    info = score_model(adapter, tokenizer, TEXTS, lens_dtype="auto", return_info=True)[1]
    assert info.lens_dtype == "float32"  # an adapter keeps its own dtype
