"""Presets: parameter counts by formula, and logits equal to an independent hand-written Pythia forward."""

import math

import pytest
import torch

from trajlab.train.models import PRESETS, build_model, model_config, n_parameters


def neox_param_formula(V: int, d: int, L: int, r: int = 4) -> int:
    block = 2 * (2 * d) + (3 * d * d + 3 * d) + (d * d + d) + (d * r * d + r * d) + (r * d * d + d)
    return V * d + L * block + 2 * d + V * d  # embed, blocks, final LN, untied unembedding


def gpt2_param_formula(V: int, d: int, L: int, ctx: int, r: int = 4) -> int:
    block = 2 * (2 * d) + (3 * d * d + 3 * d) + (d * d + d) + (d * r * d + r * d) + (r * d * d + d)
    return V * d + ctx * d + L * block + 2 * d + V * d


@pytest.mark.parametrize("name", list(PRESETS))
def test_parameter_counts(name):
    p = PRESETS[name]
    model = build_model(name, vocab_size=1000, context_length=64)
    if p.arch == "gpt2":
        assert n_parameters(model) == gpt2_param_formula(1000, p.d_model, p.n_layer, 64)
    else:
        assert n_parameters(model) == neox_param_formula(1000, p.d_model, p.n_layer)


def test_tiny_is_pythia_14m_shape():
    cfg = model_config("tiny", 50304, 2048)
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (6, 128, 4)
    assert cfg.use_parallel_residual and not cfg.tie_word_embeddings
    assert cfg.rope_parameters["partial_rotary_factor"] == 0.25


def _layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def manual_pythia_logits(model, ids: torch.Tensor) -> torch.Tensor:
    """Pythia's forward written out from the paper's description: parallel residual, partial rotary, GELU."""
    cfg, sd = model.config, {k: v.double() for k, v in model.state_dict().items()}
    d, nh = cfg.hidden_size, cfg.num_attention_heads
    hd = d // nh
    rot = int(hd * cfg.rope_parameters["partial_rotary_factor"])
    T = ids.shape[0]
    inv_freq = 1.0 / (cfg.rope_parameters["rope_theta"] ** (torch.arange(0, rot, 2, dtype=torch.float64) / rot))
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None]  # (T, rot/2)
    cos, sin = torch.cat([ang.cos(), ang.cos()], -1), torch.cat([ang.sin(), ang.sin()], -1)  # (T, rot)

    def rope(x):  # (nh, T, hd)
        xr, xp = x[..., :rot], x[..., rot:]
        half = rot // 2
        rotated = torch.cat([-xr[..., half:], xr[..., :half]], -1)
        return torch.cat([xr * cos + rotated * sin, xp], -1)

    x = sd["gpt_neox.embed_in.weight"][ids]  # (T, d)
    mask = torch.full((T, T), -math.inf, dtype=torch.float64).triu(1)
    for i in range(cfg.num_hidden_layers):
        p = f"gpt_neox.layers.{i}."
        h = _layer_norm(x, sd[p + "input_layernorm.weight"], sd[p + "input_layernorm.bias"])
        qkv = h @ sd[p + "attention.query_key_value.weight"].T + sd[p + "attention.query_key_value.bias"]
        qkv = qkv.view(T, nh, 3 * hd).transpose(0, 1)  # (nh, T, 3hd)
        q, k, v = rope(qkv[..., :hd]), rope(qkv[..., hd : 2 * hd]), qkv[..., 2 * hd :]
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + mask, -1) @ v  # (nh, T, hd)
        att = att.transpose(0, 1).reshape(T, d) @ sd[p + "attention.dense.weight"].T + sd[p + "attention.dense.bias"]
        h2 = _layer_norm(x, sd[p + "post_attention_layernorm.weight"], sd[p + "post_attention_layernorm.bias"])
        mlp = torch.nn.functional.gelu(h2 @ sd[p + "mlp.dense_h_to_4h.weight"].T + sd[p + "mlp.dense_h_to_4h.bias"])
        mlp = mlp @ sd[p + "mlp.dense_4h_to_h.weight"].T + sd[p + "mlp.dense_4h_to_h.bias"]
        x = x + att + mlp  # parallel residual
    x = _layer_norm(x, sd["gpt_neox.final_layer_norm.weight"], sd["gpt_neox.final_layer_norm.bias"])
    return x @ model.get_output_embeddings().weight.double().T


@pytest.mark.parametrize("name", ["nano", "tiny"])
def test_neox_preset_logits_match_handwritten_forward(name):
    torch.manual_seed(0)
    model = build_model(name, vocab_size=300, context_length=64).eval()
    with torch.no_grad():  # random init is tiny; make the weights large enough that errors would show
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ids = torch.randint(0, 300, (40,))
    with torch.no_grad():
        ours = model(ids[None]).logits[0].double()
    torch.testing.assert_close(ours, manual_pythia_logits(model, ids), atol=2e-4, rtol=1e-4)


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model preset 'huge'.*nano"):
        build_model("huge", 100)
