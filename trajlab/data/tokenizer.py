"""Byte-level BPE tokenizers for the toy models, trained with `tokenizers` and cached by content hash.

Like Pythia's GPT-NeoX tokenizer, id 0 is ``<|endoftext|>`` (bos = eos = pad) and no special token is added when
encoding, so scoring follows the paper's convention without special cases.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

EOS = "<|endoftext|>"


def cache_root() -> Path:
    """``$TRAJLAB_CACHE`` or ``$XDG_CACHE_HOME/trajlab`` (default ``~/.cache/trajlab``)."""
    if env := os.environ.get("TRAJLAB_CACHE"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "trajlab"


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of the tokenizer's full JSON definition (vocab, merges, normalisation), as 16 hex digits."""
    spec = tokenizer.backend_tokenizer.to_str() if hasattr(tokenizer, "backend_tokenizer") else repr(tokenizer)
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def _wrap(tok):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=EOS)


def train_tokenizer(texts: Sequence[str], vocab_size: int = 4096, *, cache: bool = True):
    """Train (or load from the cache) a byte-level BPE on ``texts``.

    Args:
        texts: training texts; the cache key is the sha256 of their contents and ``vocab_size``.
        vocab_size: target vocabulary size including ``<|endoftext|>`` (id 0).
        cache: reuse and store the result under ``cache_root()/tokenizers/<key>``.

    Returns:
        A transformers ``PreTrainedTokenizerFast``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 257:
        raise ValueError(f"vocab_size={vocab_size} is too small: a byte-level BPE needs at least 257 ids")
    if not texts or not any(texts):
        raise ValueError("cannot train a tokenizer on an empty corpus: pass at least one non-empty text")
    h = hashlib.sha256(f"bpe-v1|{vocab_size}|{len(texts)}".encode())
    for t in texts:
        h.update(t.encode())
        h.update(b"\x00")
    target = cache_root() / "tokenizers" / h.hexdigest()[:24] / "tokenizer.json"
    if cache and target.exists():
        return _wrap(Tokenizer.from_file(str(target)))

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    if cache:
        # Write into a temporary folder beside the target, then rename: concurrent ranks never see half a file.
        target.parent.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent.parent))
        tok.save(str(tmp / "tokenizer.json"))
        try:
            os.replace(tmp, target.parent)
        except OSError:  # another process won the race; its file is identical
            shutil.rmtree(tmp, ignore_errors=True)
    return _wrap(tok)


def load_tokenizer(path: str | Path):
    """Load a tokenizer saved with ``save_pretrained`` (a trajlab or any HF model directory)."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"tokenizer directory {path} does not exist: pass a save_pretrained folder")
    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def tokenizer_meta(tokenizer) -> dict:
    """What identifies a tokenizer in a store's metadata."""
    return {
        "class": type(tokenizer).__name__,
        "name_or_path": getattr(tokenizer, "name_or_path", ""),
        "vocab_size": len(tokenizer),
        "fingerprint": tokenizer_fingerprint(tokenizer),
    }


__all__ = ["EOS", "cache_root", "train_tokenizer", "load_tokenizer", "tokenizer_fingerprint", "tokenizer_meta"]
