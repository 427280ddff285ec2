"""The store's KL estimate Var_x[l_base - l_quant]/2 against the exact quantity it approximates, on a trained model.

Exact: the per-token KL(base || quant) over the full vocabulary, summed over a text's scored tokens, averaged
over texts (`exact_sequence_kl`), checked here against torch.distributions' own categorical KL.
The theory (Var/2 ~ KL) holds for texts drawn from the base model; on real text it need not. Measured with
this model (trained_lm, 64 Shakespeare probe texts; docs/quantization.md): Var/2 / exact = 1.04 for Q8_0
(text-bootstrap 90% range 0.75-1.32) and 2.07 for Q4_0 (1.45-2.68). The band asserted is 0.5-3.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.distributions import Categorical, kl_divergence
from trained_lm import load, one_thread

from trajlab.data import corpus
from trajlab.hub.quantize import exact_sequence_kl, quantized_copy
from trajlab.lens import score_model

N_TEXTS = 64


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def setting():
    model, tok = load()
    texts = corpus.probe_texts("shakespeare", N_TEXTS)
    return model, tok, texts, score_model(model, tok, texts, "last")[0]


def test_exact_kl_is_the_summed_categorical_kl(setting):
    model, tok, texts, _ = setting
    quant, _ = quantized_copy(model, "q4_0")
    kl, n_tok = exact_sequence_kl(model, quant, tok, texts[:3], return_n_tokens=True)
    for i, text in enumerate(texts[:3]):
        ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            p, q = model(input_ids=ids).logits[0, :-1].double(), quant(input_ids=ids).logits[0, :-1].double()
        assert n_tok[i] == ids.shape[1] - 1
        assert kl[i] == pytest.approx(kl_divergence(Categorical(logits=p), Categorical(logits=q)).sum().item(),
                                      rel=1e-9)
    assert np.all(exact_sequence_kl(model, model, tok, texts[:2]) == 0)
    with pytest.raises(ValueError, match="text 0 has 1 tokens"):
        exact_sequence_kl(model, quant, tok, ["a"])


def test_var2_tracks_exact_kl_on_q8_0_and_q4_0(setting):
    model, tok, texts, base = setting
    n_bytes = np.array([len(t.encode()) for t in texts])
    unit = 1 / (n_bytes.mean() * np.log(2))  # nats per text -> bits per byte
    var2, exact = {}, {}
    for fmt in ("q8_0", "q4_0"):
        quant, _ = quantized_copy(model, fmt)
        d = base - score_model(quant, tok, texts, "last")[0]
        var2[fmt] = d.var() / 2 * unit
        exact[fmt] = exact_sequence_kl(model, quant, tok, texts).mean() * unit
        assert 0.5 < var2[fmt] / exact[fmt] < 3.0, (fmt, var2[fmt], exact[fmt])
    assert 0 < exact["q8_0"] < exact["q4_0"] / 10 and var2["q8_0"] < var2["q4_0"] / 10
