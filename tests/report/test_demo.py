"""The demo's whole-text check: the longest probe text in tokens against the context, and texts scored short."""

from __future__ import annotations

import pytest

from trajlab.data.probe import ProbeSet
from trajlab.data.tokenizer import tokenizer_meta, train_tokenizer
from trajlab.report.demo import whole_text_check
from trajlab.store import TrajectoryStore
from trajlab.train.models import build_model

TEXTS = ["the cat sat on the mat " * 3, "a dog ran far away from home " * 6, "short text here"]


def run_dir(tmp_path, context: int, n_tokens: list[int] | None = None):
    """A run folder as the CLI leaves it: hf/ (model + tokenizer) and trajectory/ (a store on TEXTS)."""
    tok = train_tokenizer(TEXTS * 20, vocab_size=300, cache=False)
    build_model("nano", len(tok), context).save_pretrained(tmp_path / "hf")
    tok.save_pretrained(tmp_path / "hf")
    meta = {"run": "t", "model": {}, "tokenizer": tokenizer_meta(tok), "config": {}}
    if n_tokens is not None:
        meta["scoring"] = {"long_texts": "rolling", "stride": None, "window": context, "n_tokens": n_tokens,
                           "lens_dtype": "float32"}
    TrajectoryStore.create(tmp_path / "trajectory", probe=ProbeSet(TEXTS), meta=meta, n_layers=2).close()
    lengths = [len(ids) for ids in tok(TEXTS, add_special_tokens=False)["input_ids"]]
    return tmp_path, lengths


def test_prints_the_longest_text_beside_the_context(tmp_path, capsys):
    run, lengths = run_dir(tmp_path, context=128)
    assert whole_text_check(run) == {"longest_tokens": max(lengths), "context": 128, "not_whole": 0}
    assert f"the longest {max(lengths)} tokens; model context 128 tokens" in capsys.readouterr().out


def test_refuses_a_text_longer_than_the_context(tmp_path):
    run, lengths = run_dir(tmp_path, context=8)
    assert max(lengths) > 8
    with pytest.raises(ValueError, match=f"a probe text of {max(lengths)} tokens exceeds the context 8"):
        whole_text_check(run)


def test_refuses_texts_scored_short(tmp_path):
    _, lengths = run_dir(tmp_path / "probe", context=128)
    scored = [t - 1 for t in lengths]
    scored[1] -= 5  # the store says text 1 lost five tokens
    run, _ = run_dir(tmp_path / "run", context=128, n_tokens=scored)
    with pytest.raises(ValueError, match="1 probe texts were not scored whole"):
        whole_text_check(run)
