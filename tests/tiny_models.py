"""Tiny real models and a tiny real BPE tokenizer for the tests (random weights; built in milliseconds).

Imported by test modules (`from tiny_models import tiny_neox`) and by tests/conftest.py for its fixtures.
"""

from __future__ import annotations

SAMPLE_TEXTS = [
    "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer",
    "In the beginning God created the heaven and the earth.",
    "The slings and arrows of outrageous fortune, or to take arms against a sea of troubles.",
    "And the earth was without form, and void; and darkness was upon the face of the deep.",
    "Now is the winter of our discontent made glorious summer by this sun of York.",
    "All the world's a stage, and all the men and women merely players; ünïcödé ✓",
]


def make_tokenizer(texts=SAMPLE_TEXTS, vocab_size: int = 320):
    """A real byte-level BPE (tokenizers) wrapped as a transformers fast tokenizer; trains in milliseconds."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts) * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )


def tiny_neox(vocab_size: int = 320, layers: int = 2, hidden: int = 32, heads: int = 4, ctx: int = 128, seed: int = 0):
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=4 * hidden, max_position_embeddings=ctx, rotary_pct=0.25, use_parallel_residual=True,
        tie_word_embeddings=False, bos_token_id=0, eos_token_id=0,
    )
    return GPTNeoXForCausalLM(cfg).eval()


def tiny_gpt2(vocab_size: int = 320, layers: int = 2, hidden: int = 32, heads: int = 4, ctx: int = 128, seed: int = 0):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab_size, n_embd=hidden, n_layer=layers, n_head=heads, n_positions=ctx,
                     bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


def tiny_llama(vocab_size: int = 320, layers: int = 2, hidden: int = 32, heads: int = 4, ctx: int = 128, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=heads // 2, intermediate_size=2 * hidden, max_position_embeddings=ctx,
                      tie_word_embeddings=False, bos_token_id=0, eos_token_id=0)
    return LlamaForCausalLM(cfg).eval()
