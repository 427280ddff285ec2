"""score_model and Unembed against transformers' own forward and an independent full-logits lens."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import SAMPLE_TEXTS, tiny_gpt2, tiny_llama, tiny_neox

from trajlab import lens
from trajlab.data.probe import ProbeSet
from trajlab.lens import LensAdapter, ScoreInfo, Unembed, score_model

MODELS = {"neox": tiny_neox, "gpt2": tiny_gpt2, "llama": tiny_llama}
TEXTS = SAMPLE_TEXTS[:4]


def final_norm(model):
    """The final norm, located per architecture independently of Unembed."""
    return {"GPTNeoXForCausalLM": lambda m: m.gpt_neox.final_layer_norm,
            "GPT2LMHeadModel": lambda m: m.transformer.ln_f,
            "LlamaForCausalLM": lambda m: m.model.norm}[type(model).__name__](model)


def ids_of(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def own_ll(model, ids: list[int]) -> float:
    """The model's own summed log-likelihood of tokens 2..T, from model(input_ids).logits."""
    x = torch.tensor([ids])
    logp = torch.log_softmax(model(x).logits[0, :-1].double(), -1)
    return logp.gather(1, x[0, 1:, None]).sum().item()


@torch.no_grad()
def naive_lens_ll(model, ids: list[int]) -> np.ndarray:
    """(L+1,) straightforward lens: final norm + get_output_embeddings() on each hidden state, full log_softmax."""
    x = torch.tensor([ids])
    hs = model(x, output_hidden_states=True).hidden_states
    head, norm = model.get_output_embeddings(), final_norm(model)
    out = []
    for l, h in enumerate(hs):
        z = head(h[0, :-1] if l == len(hs) - 1 else norm(h[0, :-1]))  # the last state is already normed
        out.append(torch.log_softmax(z.double(), -1).gather(1, x[0, 1:, None]).sum().item())
    return np.array(out)


class PreNormAdapter:
    """A LensAdapter over a Llama model: the last state is taken BEFORE the final norm (a pre-hook on it)."""

    def __init__(self, model):
        self.model = model

    def hidden_states(self, input_ids, attention_mask):
        captured = []
        hook = self.model.model.norm.register_forward_pre_hook(lambda m, args: captured.append(args[0]))
        try:
            hs = self.model(input_ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states
        finally:
            hook.remove()
        return [*hs[:-1], captured[0]]

    def unembed(self, h):
        return self.model.lm_head(self.model.model.norm(h))


@pytest.mark.parametrize("arch", MODELS)
@pytest.mark.parametrize("tile", [None, (16, 50)])
def test_rows_match_model_output_and_naive_lens(arch, tile, tokenizer, monkeypatch):
    if tile:  # 16 tokens x 50 vocab: many tile boundaries, a partial last tile (320 = 6 * 50 + 20)
        monkeypatch.setitem(lens.TILE_SHAPE, "cpu", tile)
    model = MODELS[arch](layers=3)
    ll, info = score_model(model, tokenizer, TEXTS, batch_size=3, return_info=True)
    assert ll.shape == (4, len(TEXTS)) and ll.dtype == np.float64
    ids = [ids_of(tokenizer, t) for t in TEXTS]
    n_tok = np.array([len(x) - 1 for x in ids])
    np.testing.assert_array_equal(info.n_tokens, n_tok)
    assert np.all(np.abs(ll[-1] - [own_ll(model, x) for x in ids]) <= 1e-5 * n_tok)
    ref = np.stack([naive_lens_ll(model, x) for x in ids], axis=1)  # (L+1, N)
    assert np.all(np.abs(ll - ref) <= 1e-5 * n_tok)


def test_unembedding_bias_is_included(tokenizer, monkeypatch):
    monkeypatch.setitem(lens.TILE_SHAPE, "cpu", (16, 50))
    model = tiny_neox()
    head = torch.nn.Linear(32, 320, bias=True)
    with torch.no_grad():
        head.weight.copy_(model.get_output_embeddings().weight)
        head.bias.normal_(0, 2.0)
    model.set_output_embeddings(head)
    ll, info = score_model(model, tokenizer, TEXTS, return_info=True)
    ids = [ids_of(tokenizer, t) for t in TEXTS]
    assert np.all(np.abs(ll[-1] - [own_ll(model, x) for x in ids]) <= 1e-5 * info.n_tokens)
    ref = np.stack([naive_lens_ll(model, x) for x in ids], axis=1)
    assert np.all(np.abs(ll - ref) <= 1e-5 * info.n_tokens)


def test_layer_selection(tokenizer):
    model = tiny_neox(layers=3)
    full = score_model(model, tokenizer, TEXTS)
    np.testing.assert_allclose(score_model(model, tokenizer, TEXTS, layers=[2, 0, 3]), full[[2, 0, 3]], atol=1e-9)
    last, info = score_model(model, tokenizer, TEXTS, layers="last", return_info=True)
    assert last.shape == (1, len(TEXTS)) and info.rows == (3,) and info.n_layers == 3
    np.testing.assert_allclose(last[0], full[-1], atol=1e-9)


def test_last_only_computes_no_lens(tokenizer):
    """With layers='last' the final norm runs only inside the model's own forward (once per batch)."""
    model = tiny_llama()
    calls = []
    model.model.norm.register_forward_hook(lambda *a: calls.append(1))
    score_model(model, tokenizer, TEXTS, layers="last", batch_size=2)
    assert len(calls) == 2
    calls.clear()
    score_model(model, tokenizer, TEXTS, layers="all", batch_size=2)
    assert len(calls) > 2


def test_batch_invariance(tokenizer):
    model = tiny_gpt2()
    target = SAMPLE_TEXTS[1]
    alone = score_model(model, tokenizer, [target], batch_size=1)
    mixed = [" ".join(SAMPLE_TEXTS), target, "In the beginning God", " ".join(SAMPLE_TEXTS[2:4])]
    batched = score_model(model, tokenizer, mixed, batch_size=4)
    np.testing.assert_allclose(batched[:, 1], alone[:, 0], atol=1e-4)


def test_deterministic(tokenizer):
    model = tiny_neox()
    a = score_model(model, tokenizer, TEXTS, batch_size=2)
    b = score_model(model, tokenizer, TEXTS, batch_size=2, device="cpu", progress=True)
    np.testing.assert_array_equal(a, b)


def test_truncation_counted_and_scored_on_the_prefix(tokenizer):
    model = tiny_neox(ctx=128)
    long = " ".join(SAMPLE_TEXTS) * 2
    texts = [long, SAMPLE_TEXTS[0], long + "!"]
    with pytest.warns(UserWarning, match="2 of 3 texts exceed the context length 128"):
        ll, info = score_model(model, tokenizer, texts, layers="last", long_texts="truncate", return_info=True)
    assert info.n_truncated == 2 and info.context_length == 128
    assert info.n_tokens.tolist() == [127, len(ids_of(tokenizer, SAMPLE_TEXTS[0])) - 1, 127]
    assert ll[0, 0] == pytest.approx(own_ll(model, ids_of(tokenizer, long)[:128]), abs=1e-5 * 127)

    with pytest.warns(UserWarning, match="3 of 3 texts exceed the context length 16"):
        ll, info = score_model(model, tokenizer, texts, layers="last", max_length=16, long_texts="truncate",
                               return_info=True)
    assert info.n_tokens.tolist() == [15, 15, 15]
    assert ll[0, 1] == pytest.approx(own_ll(model, ids_of(tokenizer, SAMPLE_TEXTS[0])[:16]), abs=1e-5 * 15)
    with pytest.raises(ValueError, match="max_length must be in 2..128"):
        score_model(model, tokenizer, texts, max_length=129)


def test_prefix_bos_scores_one_more_token(tokenizer):
    model = tiny_llama()
    plain, info0 = score_model(model, tokenizer, TEXTS, layers="last", return_info=True)
    bos, info1 = score_model(model, tokenizer, TEXTS, layers="last", prefix_bos=True, return_info=True)
    np.testing.assert_array_equal(info1.n_tokens, info0.n_tokens + 1)
    for i, text in enumerate(TEXTS):
        ids = [tokenizer.bos_token_id, *ids_of(tokenizer, text)]
        assert bos[0, i] == pytest.approx(own_ll(model, ids), abs=1e-5 * len(ids))
    assert not np.allclose(plain, bos)


def test_train_mode_restored_and_dropout_off(tokenizer):
    model = tiny_gpt2()  # dropout 0.1: scores in train mode would be random
    ref = score_model(model, tokenizer, TEXTS)
    model.train()
    np.testing.assert_array_equal(score_model(model, tokenizer, TEXTS), ref)
    assert model.training


@pytest.mark.parametrize("via_adapter", [False, True])
def test_overflowing_logits_fall_back_to_exact_log_softmax(via_adapter, tokenizer):
    model = tiny_llama()
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(3000.0)  # logit gaps far beyond exp's fp32 range
        x = torch.tensor([ids_of(tokenizer, TEXTS[0])])
        z = model(x).logits[0, :-1]
        assert (z.max(-1).values - z.gather(1, x[0, 1:, None]).squeeze(1)).max() > 100
    ll = score_model(PreNormAdapter(model) if via_adapter else model, tokenizer, TEXTS, layers="last")
    ref = [own_ll(model, ids_of(tokenizer, t)) for t in TEXTS]
    np.testing.assert_allclose(ll[0], ref, rtol=1e-5)


def test_bf16_model_runs_in_its_dtype(tokenizer):
    model = tiny_llama().to(torch.bfloat16)
    ll = score_model(model, tokenizer, TEXTS)
    assert ll.dtype == np.float64 and np.isfinite(ll).all()
    ids = [ids_of(tokenizer, t) for t in TEXTS]
    n_tok = np.array([len(x) - 1 for x in ids])
    assert np.all(np.abs(ll[-1] - [own_ll(model, x) for x in ids]) <= 0.02 * n_tok)  # bf16 rounding of logits


@pytest.mark.parametrize("chunk_elements", [lens.CHUNK_ELEMENTS, 320 * 5])
def test_adapter_matches_model_output_and_naive_lens(chunk_elements, tokenizer, monkeypatch):
    monkeypatch.setattr(lens, "CHUNK_ELEMENTS", chunk_elements)  # 320 * 5: 5-token chunks after the first
    model = tiny_llama(layers=3)
    adapter = PreNormAdapter(model)
    assert isinstance(adapter, LensAdapter) and not isinstance(model, LensAdapter)
    ll, info = score_model(adapter, tokenizer, TEXTS, batch_size=3, return_info=True)
    assert ll.shape == (4, len(TEXTS)) and info.n_layers == 3 and info.context_length is None
    ids = [ids_of(tokenizer, t) for t in TEXTS]
    n_tok = np.array([len(x) - 1 for x in ids])
    ref = np.stack([naive_lens_ll(model, x) for x in ids], axis=1)
    assert np.all(np.abs(ll - ref) <= 1e-5 * n_tok)
    adapter.context_length, adapter.num_embeddings = 8, 320
    with pytest.warns(UserWarning, match="4 of 4 texts"):
        info = score_model(adapter, tokenizer, TEXTS, long_texts="truncate", return_info=True)[1]
    assert info.n_tokens.tolist() == [7] * 4


def test_unembed_locates_norm_and_head():
    for make in MODELS.values():
        model = make()
        un = Unembed(model)
        assert un.norm is final_norm(model) and un.weight is model.get_output_embeddings().weight
        h = torch.randn(5, 32)
        with torch.no_grad():
            torch.testing.assert_close(un(h), model.get_output_embeddings()(final_norm(model)(h)))


def test_unembed_fingerprint_tracks_weights():
    a, b = Unembed(tiny_neox(seed=0)), Unembed(tiny_neox(seed=0))
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 16
    assert Unembed(tiny_neox(seed=1)).fingerprint != a.fingerprint
    m = tiny_neox(seed=0)
    with torch.no_grad():
        m.get_output_embeddings().weight[3, 0] += 1e-3
    assert Unembed(m).fingerprint != a.fingerprint


def test_unknown_architecture_is_named():
    with pytest.raises(ValueError, match="cannot find the final norm of Linear.*gpt_neox.final_layer_norm"):
        Unembed(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="transformers causal LM or a LensAdapter"):
        score_model(torch.nn.Linear(2, 2), None, TEXTS)


def test_bad_inputs(tokenizer):
    model = tiny_neox(layers=2)
    with pytest.raises(ValueError, match="probe is empty"):
        score_model(model, tokenizer, [])
    with pytest.raises(ValueError, match="text 1 tokenizes to 1 token"):
        score_model(model, tokenizer, [TEXTS[0], "a"])
    with pytest.raises(ValueError, match=r"text 0 has token id \d+ >= the model's 100 embedding rows"):
        score_model(tiny_neox(vocab_size=100), tokenizer, TEXTS)
    for bad in (-1, 3):
        with pytest.raises(ValueError, match=f"layer row {bad} is out of range"):
            score_model(model, tokenizer, TEXTS, layers=[0, bad])
    with pytest.raises(ValueError, match="layers must be"):
        score_model(model, tokenizer, TEXTS, layers="first")
    with pytest.raises(ValueError, match="probe must be"):
        score_model(model, tokenizer, TEXTS[0])
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        score_model(model, tokenizer, TEXTS, batch_size=0)
    with pytest.raises(ValueError, match="the model is on cpu, not cuda"):
        score_model(model, tokenizer, TEXTS, device="cuda")


def test_non_finite_names_the_text(tokenizer):
    model = tiny_neox()
    only_in_2 = set(ids_of(tokenizer, TEXTS[2])) - {i for t in TEXTS[:2] for i in ids_of(tokenizer, t)}
    with torch.no_grad():
        model.get_input_embeddings().weight[min(only_in_2)] = float("nan")
    with pytest.raises(ValueError, match="non-finite log-likelihood for text 2"):
        score_model(model, tokenizer, TEXTS[:3], batch_size=1)


def test_probe_set_input_and_info(tokenizer):
    model = tiny_neox()
    probe = ProbeSet.from_texts(TEXTS, name="t")
    ll, info = score_model(model, tokenizer, probe, return_info=True)
    np.testing.assert_array_equal(ll, score_model(model, tokenizer, TEXTS))
    assert isinstance(info, ScoreInfo) and info.n_truncated == 0 and info.rows == (0, 1, 2)
