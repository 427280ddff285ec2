"""The input side of `trajlab.lens.score_model`: the rows asked for, token ids per text, the windows that score them.

A text of T tokens that fits the window C is one window: tokens 2..T scored with all earlier tokens as context.
A longer one is, with long_texts="rolling", scored by the sliding window of transformers' guide "Perplexity of
fixed-length models" (lm-evaluation-harness's loglikelihood_rolling does the same): windows start at 0, S, 2S, ...,
each spans [begin, min(begin + C, T)) and scores only the tokens no earlier window scored, so every token 2..T is
scored exactly once and each with at least C - S tokens of context; the last window is the one that reaches T.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch


@dataclass(frozen=True)
class Window:
    """One forward's worth of a text: its ids and the first local position whose token it scores (>= 1)."""

    text: int
    ids: list[int]
    first: int


def resolved_rows(layers: Literal["all", "last"] | Sequence[int], n_layers: int) -> list[int]:
    """Row indices 0..n_layers of "all", "last" or a list (checked)."""
    if isinstance(layers, str):
        if layers not in ("all", "last"):
            raise ValueError(f"layers must be 'all', 'last' or a list of row indices, got {layers!r}")
        return list(range(n_layers + 1)) if layers == "all" else [n_layers]
    rows = list(layers)
    if not rows:
        raise ValueError("layers is an empty list; pass 'all', 'last' or row indices 0..n_layers")
    for r in rows:
        if isinstance(r, bool) or not isinstance(r, int | np.integer) or not 0 <= r <= n_layers:
            raise ValueError(f"layer row {r!r} is out of range: rows are 0 (embedding) .. {n_layers} (model output)")
    return [int(r) for r in rows]


def checked_texts(texts) -> list[str]:
    """The probe's texts as a list, after refusing a non-str text or an empty probe."""
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise ValueError("probe must be a ProbeSet or a list of str")
    if not (texts := list(texts)):
        raise ValueError("the probe is empty: nothing to score")
    return texts


def encoded_texts(tokenizer, texts: list[str], prefix_bos: bool) -> list[list[int]]:
    """Token ids per text (add_special_tokens=False), BOS-prefixed if asked."""
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    if prefix_bos:
        bos = getattr(tokenizer, "bos_token_id", None)
        if bos is None:
            raise ValueError("prefix_bos=True but the tokenizer has no bos_token_id")
        encoded = [[bos, *ids] for ids in encoded]
    return encoded


def check_ids(encoded: list[list[int]], num_embeddings: int | None) -> None:
    """Refuse a text with nothing to score or with ids beyond the model's embedding, naming it."""
    for i, ids in enumerate(encoded):
        if len(ids) < 2:
            raise ValueError(f"text {i} tokenizes to {len(ids)} token(s); at least 2 are needed to score one "
                             "(the first is not scored); drop it or use prefix_bos=True")
        if num_embeddings is not None and max(ids) >= num_embeddings:
            raise ValueError(f"text {i} has token id {max(ids)} >= the model's {num_embeddings} embedding rows: "
                             "the tokenizer does not match the model")


def fitted(encoded: list[list[int]], long_texts: str, window: int | None,
           stacklevel: int) -> tuple[list[list[int]], int]:
    """Ids as scored (cut at the window for "truncate") and how many texts were truncated; "error" refuses."""
    if window is None:
        return encoded, 0
    long = [i for i, ids in enumerate(encoded) if len(ids) > window]
    if not long:
        return encoded, 0
    if long_texts == "error":
        i = long[0]
        raise ValueError(f"text {i} has {len(encoded[i])} tokens, more than the window of {window} "
                         f"({len(long)} such texts); use long_texts='rolling' to score it whole or 'truncate'")
    if long_texts == "truncate":
        warnings.warn(f"score_model: {len(long)} of {len(encoded)} texts exceed the context length {window} and "
                      "were truncated", stacklevel=stacklevel + 1)
        return [ids[:window] for ids in encoded], len(long)
    return encoded, 0


def windows_of(encoded: list[list[int]], window: int | None, stride: int | None) -> list[Window]:
    """Every text's windows, in text order (a text that fits is one window scoring tokens 2..T)."""
    out = []
    for i, ids in enumerate(encoded):
        t = len(ids)
        if window is None or t <= window:
            out.append(Window(i, ids, 1))
            continue
        done = 1  # tokens [0, done) are scored or never scored
        for begin in range(0, t, stride):
            end = min(begin + window, t)
            out.append(Window(i, ids[begin:end], done - begin))
            done = end
            if end == t:
                break
    return out


def batches_of(windows: list[Window], batch_size: int) -> list[list[Window]]:
    """Windows sorted longest first (stable: padding is small, OOM shows up at once), batch_size per batch."""
    order = sorted(range(len(windows)), key=lambda k: -len(windows[k].ids))
    return [[windows[k] for k in order[s:s + batch_size]] for s in range(0, len(order), batch_size)]


def padded(batch: list[Window]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, mask) (B, T) right-padded, scored (B, T-1) bool (position t predicts token t+1), owner (B,) text."""
    ids = torch.zeros(len(batch), max(len(w.ids) for w in batch), dtype=torch.long)
    mask = torch.zeros_like(ids)
    first = torch.empty(len(batch), 1, dtype=torch.long)
    for b, w in enumerate(batch):
        ids[b, : len(w.ids)] = torch.tensor(w.ids)
        mask[b, : len(w.ids)] = 1
        first[b] = w.first
    scored = mask[:, 1:].bool() & (torch.arange(1, ids.shape[1]) >= first)
    return ids, mask, scored, torch.tensor([w.text for w in batch])
