"""Shared test set-up: offline hub, no wandb network, tiny random models and a tiny real BPE tokenizer."""

from __future__ import annotations

import os

# Must be set before huggingface_hub / transformers are imported anywhere.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
from tiny_models import SAMPLE_TEXTS, make_tokenizer, tiny_gpt2, tiny_llama, tiny_neox  # noqa: F401


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()
