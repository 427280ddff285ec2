"""Small GPT presets built from transformers' own classes.

GPT-NeoX presets are the Pythia architecture (parallel residual, rotary on 25% of head dims, untied unembedding,
GELU, LayerNorm eps 1e-5); ``tiny`` has pythia-14m's shape. ``gpt2-*`` presets use ``GPT2Config`` for
cross-architecture comparisons. Using transformers classes means the scoring and import code that serves public
checkpoints serves our toy models unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Preset:
    arch: str  # "gpt_neox" | "gpt2"
    n_layer: int
    d_model: int
    n_head: int
    d_mlp_ratio: int = 4


PRESETS: dict[str, Preset] = {
    "nano": Preset("gpt_neox", n_layer=2, d_model=64, n_head=4),
    "micro": Preset("gpt_neox", n_layer=4, d_model=96, n_head=4),
    "tiny": Preset("gpt_neox", n_layer=6, d_model=128, n_head=4),  # pythia-14m shape
    "small": Preset("gpt_neox", n_layer=6, d_model=256, n_head=8),  # pythia-31m shape
    "gpt2-nano": Preset("gpt2", n_layer=2, d_model=64, n_head=4),
    "gpt2-tiny": Preset("gpt2", n_layer=6, d_model=128, n_head=4),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def model_config(preset: str, vocab_size: int, context_length: int = 256):
    """The transformers config of a named preset."""
    from transformers import GPT2Config, GPTNeoXConfig

    p = get_preset(preset)
    if vocab_size < 2 or context_length < 2:
        raise ValueError(f"vocab_size ({vocab_size}) and context_length ({context_length}) must both be >= 2")
    if p.arch == "gpt2":
        return GPT2Config(
            vocab_size=vocab_size, n_positions=context_length, n_embd=p.d_model, n_layer=p.n_layer,
            n_head=p.n_head, n_inner=p.d_mlp_ratio * p.d_model, bos_token_id=0, eos_token_id=0,
            tie_word_embeddings=False,
        )
    return GPTNeoXConfig(
        vocab_size=vocab_size, max_position_embeddings=context_length, hidden_size=p.d_model,
        num_hidden_layers=p.n_layer, num_attention_heads=p.n_head, intermediate_size=p.d_mlp_ratio * p.d_model,
        rotary_pct=0.25, use_parallel_residual=True, tie_word_embeddings=False, hidden_act="gelu",
        layer_norm_eps=1e-5, bos_token_id=0, eos_token_id=0,
    )


def build_model(preset: str, vocab_size: int, context_length: int = 256):
    """A randomly initialised causal LM for ``preset`` (seed torch beforehand for reproducibility)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(model_config(preset, vocab_size, context_length))


def n_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def preset_meta(preset: str) -> dict:
    return {"preset": preset, **asdict(get_preset(preset))}
