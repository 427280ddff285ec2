import pytest

from trajlab.data import corpus
from trajlab.data.tokenizer import load_tokenizer, tokenizer_fingerprint, train_tokenizer


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    import os

    os.environ["TRAJLAB_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    texts = corpus.load_splits("shakespeare").train[:300]
    return texts, train_tokenizer(texts, vocab_size=600)


def test_round_trip_and_special_ids(bpe):
    texts, tok = bpe
    assert len(tok) == 600 and tok.eos_token_id == 0 and tok.pad_token_id == 0
    for t in [texts[0], "ünïcödé ✓ — 𝄞 emoji 🙂\n\ttabs", "  leading spaces\r\n"]:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == t
        assert ids[0] != 0  # no BOS added


def test_cache_hit_is_identical_and_save_load(bpe, tmp_path):
    texts, tok = bpe
    again = train_tokenizer(texts, vocab_size=600)
    assert tokenizer_fingerprint(again) == tokenizer_fingerprint(tok)
    assert tokenizer_fingerprint(train_tokenizer(texts, vocab_size=700)) != tokenizer_fingerprint(tok)
    tok.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded(texts[1], add_special_tokens=False)["input_ids"] == tok(texts[1], add_special_tokens=False)["input_ids"]


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="empty corpus"):
        train_tokenizer([], vocab_size=600)
    with pytest.raises(ValueError, match="too small"):
        train_tokenizer(["abc"], vocab_size=100)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer(tmp_path / "nope")
