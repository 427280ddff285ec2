"""Texts longer than the window: rolling scores them whole, against a window-by-window transformers reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_lens import PreNormAdapter, final_norm, ids_of
from tiny_models import SAMPLE_TEXTS, tiny_gpt2, tiny_llama, tiny_neox

from trajlab import _windows
from trajlab.data.probe import ProbeSet
from trajlab.lens import score_model

MODELS = {"neox": tiny_neox, "gpt2": tiny_gpt2, "llama": tiny_llama}
CTX = 32
LONG = " ".join(SAMPLE_TEXTS)  # 256 tokens: 8x the window
MEDIUM = " ".join(SAMPLE_TEXTS[:3])  # 118 tokens: 3.7x
TEXTS = [LONG, SAMPLE_TEXTS[1], MEDIUM]  # the middle one (26 tokens) fits


@torch.no_grad()
def window_reference(model, ids: list[int], window: int, stride: int) -> np.ndarray:
    """(L+1, T-1) log p of tokens 2..T per lens row, transformers' perplexity-guide loop: one forward per window,
    log_softmax of (final norm +) output embeddings of each hidden state, the window's last trg_len targets."""
    head, norm = model.get_output_embeddings(), final_norm(model)
    out, prev_end = [], 0
    for begin in range(0, len(ids), stride):
        end = min(begin + window, len(ids))
        trg_len = end - prev_end
        x = torch.tensor([ids[begin:end]])
        hs = model(x, output_hidden_states=True).hidden_states
        lo = max(1, x.shape[1] - trg_len)  # first local position whose token this window scores
        rows = []
        for layer, h in enumerate(hs):
            z = head(h[0] if layer == len(hs) - 1 else norm(h[0]))  # the last state is already normed
            rows.append(torch.log_softmax(z.double(), -1)[lo - 1:-1].gather(1, x[0, lo:, None])[:, 0])
        out.append(torch.stack(rows))
        prev_end = end
        if end == len(ids):
            break
    return torch.cat(out, 1).numpy()


@pytest.mark.parametrize("arch,stride", [("neox", None), ("gpt2", None), ("llama", None), ("neox", 7),
                                         ("llama", 31), ("gpt2", 1)])
def test_rolled_texts_match_window_by_window_reference(arch, stride, tokenizer):
    model = MODELS[arch](layers=3, ctx=CTX)
    ll, info = score_model(model, tokenizer, TEXTS, batch_size=3, stride=stride, return_info=True)
    s = CTX // 2 if stride is None else stride
    ids = [ids_of(tokenizer, t) for t in TEXTS]
    assert [len(x) / CTX for x in ids] == pytest.approx([8.0, 26 / 32, 118 / 32])
    np.testing.assert_array_equal(info.n_tokens, [len(x) - 1 for x in ids])
    assert (info.long_texts, info.stride, info.window, info.n_truncated) == ("rolling", s, CTX, 0)
    ref = np.stack([window_reference(model, x, CTX, s).sum(1) for x in ids], axis=1)  # (L+1, N)
    assert ll.shape == ref.shape == (4, 3)
    assert np.all(np.abs(ll - ref) <= 1e-5 * info.n_tokens)


def test_max_length_window_and_adapter_roll_the_same(tokenizer):
    model = tiny_llama(layers=2, ctx=128)
    ll = score_model(model, tokenizer, TEXTS, max_length=CTX, batch_size=2)
    ref = np.stack([window_reference(model, ids_of(tokenizer, t), CTX, CTX // 2).sum(1) for t in TEXTS], axis=1)
    n = np.array([len(ids_of(tokenizer, t)) - 1 for t in TEXTS])
    assert np.all(np.abs(ll - ref) <= 1e-5 * n)
    adapter = PreNormAdapter(model)
    adapter.context_length = CTX
    np.testing.assert_allclose(score_model(adapter, tokenizer, TEXTS, batch_size=2), ll, rtol=0, atol=1e-5 * n.max())


def test_prefix_bos_is_only_in_the_first_window(tokenizer):
    model = tiny_neox(layers=2, ctx=CTX)
    ll, info = score_model(model, tokenizer, [LONG], prefix_bos=True, return_info=True)
    ids = [tokenizer.bos_token_id, *ids_of(tokenizer, LONG)]
    assert info.n_tokens.tolist() == [len(ids) - 1]  # every text token scored
    ref = window_reference(model, ids, CTX, CTX // 2).sum(1)
    assert np.all(np.abs(ll[:, 0] - ref) <= 1e-5 * len(ids))


def test_fitting_texts_are_bitwise_the_truncate_path(tokenizer):
    for make in MODELS.values():
        model = make(layers=2, ctx=128)  # every sample text fits
        for bs in (1, 4):
            rolled, info = score_model(model, tokenizer, SAMPLE_TEXTS, batch_size=bs, return_info=True)
            cut = score_model(model, tokenizer, SAMPLE_TEXTS, batch_size=bs, long_texts="truncate")
            np.testing.assert_array_equal(rolled, cut)
            np.testing.assert_array_equal(score_model(model, tokenizer, SAMPLE_TEXTS, batch_size=bs, stride=5), cut)
            assert info.stride == 64 and info.n_truncated == 0


@pytest.mark.parametrize("t,window,stride", [(2, 2, 1), (33, 32, 16), (256, 32, 16), (256, 32, 1), (100, 32, 31),
                                             (97, 10, 3), (64, 32, 16), (65, 32, 16), (5, 32, 16)])
def test_every_token_scored_once_with_context(t, window, stride):
    wins = _windows.windows_of([list(range(t))], window, stride)
    scored = np.concatenate([w.ids[w.first:] for w in wins])  # the global positions each window scores
    np.testing.assert_array_equal(scored, np.arange(1, t))  # tokens 2..T once each, in order
    assert all(len(w.ids) <= window and w.first >= 1 for w in wins)
    assert wins[-1].ids[-1] == t - 1 and len({w.ids[0] for w in wins}) == len(wins)
    assert all(w.first >= window - stride for w in wins[1:])  # each later target sees >= C - S tokens


def test_bits_per_byte_of_a_rolled_text_is_the_hand_computation(tokenizer):
    model = tiny_gpt2(layers=2, ctx=CTX)
    probe = ProbeSet.from_texts([LONG, MEDIUM], name="t")
    ll = score_model(model, tokenizer, probe, layers="last")[0]
    bpb = -ll / (probe.n_bytes * math.log(2))
    for i, text in enumerate(probe.texts):
        ids = ids_of(tokenizer, text)
        assert tokenizer.decode(ids).encode() == text.encode()  # the tokens cover every byte
        lp = window_reference(model, ids, CTX, CTX // 2)[-1]  # (T-1,) nats per scored token
        assert lp.shape == (len(ids) - 1,)
        bits = -lp.sum() / math.log(2)
        assert bpb[i] == pytest.approx(bits / len(text.encode("utf-8")), rel=1e-6)


def test_truncate_and_error_modes(tokenizer):
    model = tiny_neox(layers=2, ctx=CTX)
    with pytest.warns(UserWarning, match="2 of 3 texts exceed the context length 32"):
        ll, info = score_model(model, tokenizer, TEXTS, long_texts="truncate", return_info=True)
    assert info.n_tokens.tolist() == [31, 25, 31] and info.n_truncated == 2 and info.stride is None
    assert info.scoring() == {"long_texts": "truncate", "stride": None, "window": 32, "n_tokens": [31, 25, 31],
                              "lens_dtype": "float32"}
    with pytest.raises(ValueError, match=r"^text 0 has 256 tokens, more than the window of 32 \(2 such texts\)"):
        score_model(model, tokenizer, TEXTS, long_texts="error")
    fit = score_model(model, tokenizer, TEXTS[1:2], long_texts="error")
    np.testing.assert_array_equal(fit, ll[:, 1:2])


def test_scoring_block(tokenizer):
    info = score_model(tiny_neox(ctx=CTX), tokenizer, TEXTS, stride=8, return_info=True)[1]
    assert info.scoring() == {"long_texts": "rolling", "stride": 8, "window": 32, "n_tokens": [255, 25, 117],
                              "lens_dtype": "float32"}
    assert all(type(n) is int for n in info.scoring()["n_tokens"])


def test_bad_long_texts_and_stride_get_one_line(tokenizer):
    model = tiny_neox(ctx=CTX)
    cases = [
        (dict(long_texts="roll"), r"long_texts must be one of 'rolling', 'truncate', 'error', got 'roll'"),
        (dict(stride=0), r"stride must be >= 1 token, got 0"),
        (dict(stride=32), r"stride must be in 1..31 \(the window 32 minus 1\), got 32"),
        (dict(stride=8, max_length=8), r"stride must be in 1..7 \(the window 8 minus 1\), got 8"),
        (dict(stride=2.5), r"stride must be an int"),
        (dict(stride=4, long_texts="truncate"), r"stride=4 applies only to long_texts='rolling'"),
    ]
    for kwargs, msg in cases:
        with pytest.raises(ValueError, match=msg) as e:
            score_model(model, tokenizer, TEXTS, **kwargs)
        assert "\n" not in str(e.value)
