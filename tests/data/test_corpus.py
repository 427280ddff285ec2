"""Tests for trajlab.data.corpus: bundled corpora, user corpora, chunking and splits."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
import subprocess
import sys
from collections import Counter
from importlib import resources

import numpy as np
import pytest

from trajlab.data import corpus
from trajlab.data.corpus import (
    BUNDLED,
    CorpusSplits,
    chunk_text,
    corpus_fingerprint,
    load_documents,
    load_splits,
    probe_texts,
    split_corpus,
)

DATA = resources.files("trajlab") / "data"


def numbered_docs(n_docs: int = 6, lines: int = 120) -> list[str]:
    """Documents whose every line is unique, so every chunk is unique and text identifies a chunk's position."""
    return [
        "".join(f"doc {d} line {i}: {'lorem ipsum ' * (i % 9)}\n" for i in range(lines))
        for d in range(n_docs)
    ]


def positions(docs: list[str]) -> dict[str, tuple[int, int]]:
    """(document, character offset) of every chunk, keyed by its (unique) text."""
    out = {}
    for d, doc in enumerate(docs):
        offset = 0
        for c in chunk_text(doc):
            assert doc[offset : offset + len(c)] == c
            out[c] = (d, offset)
            offset += len(c)
    return out


# ---- chunk_text -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("char", ["é", "✓", "😀"])
@pytest.mark.parametrize("pad", range(1018, 1025))
def test_chunk_multibyte_at_boundary(char, pad):
    text = "a" * pad + char + "b" * 1500  # no newline or space: every cut is a hard cut
    chunks = chunk_text(text, 1024)
    assert "".join(chunks) == text
    assert all(len(c.encode("utf-8")) <= 1024 for c in chunks)
    width = len(char.encode("utf-8"))
    # The first cut is the last character boundary at or before byte 1024: before the char if it straddles it.
    straddles = pad < 1024 < pad + width
    assert len(chunks[0].encode("utf-8")) == (pad if straddles else 1024)
    assert chunks[0].endswith(char) == (pad + width == 1024)
    assert chunks[1].startswith(char) == (straddles or pad == 1024)


def test_chunk_prefers_newline_then_space():
    line = "x" * 99 + "\n"  # 100 bytes, newlines end at bytes 100, 200, ...
    chunks = chunk_text(line * 25, 1024)
    assert [len(c) for c in chunks] == [1000, 1000, 500]
    words = ("y" * 9 + " ") * 300  # spaces only: cuts just after the last space in the window
    assert [len(c) for c in chunk_text(words, 1024)] == [1020, 1020, 960]
    # A newline only in the first half of the window is skipped in favour of a later space.
    text = "a" * 100 + "\n" + ("b" * 9 + " ") * 150
    assert len(chunk_text(text, 1024)[0]) == 101 + 920
    assert chunk_text("", 1024) == []
    assert chunk_text("short", 1024) == ["short"]


def test_chunk_random_texts_roundtrip():
    rng = random.Random(0)
    alphabet = ["a", "b", " ", "\n", "é", "✓", "😀", "ß", "中"]
    for _ in range(200):
        text = "".join(rng.choices(alphabet, weights=[20, 20, 3, 1, 2, 2, 2, 2, 2], k=rng.randint(0, 3000)))
        max_bytes = rng.choice([4, 5, 7, 64, 255, 1024])
        chunks = chunk_text(text, max_bytes)
        assert "".join(chunks) == text
        for c in chunks:
            assert 0 < len(c.encode("utf-8")) <= max_bytes
            assert c.encode("utf-8").decode("utf-8") == c


def test_chunk_max_bytes_too_small():
    with pytest.raises(ValueError, match="max_bytes must be >= 4"):
        chunk_text("abc", 3)


# ---- split_corpus -----------------------------------------------------------------------------------------------


def test_split_matches_recipe_and_partitions_exactly():
    docs = numbered_docs()
    pos = positions(docs)
    order_all = sorted(pos, key=pos.get)  # chunks in document order
    assert len(order_all) == len(set(order_all))  # chunk text identifies position
    s = split_corpus(docs, seed=3, n_probe=20, val_fraction=0.1)

    # Independent recipe: walk the seeded permutation, take the first 20 chunks > 256 bytes, then 10% of the rest.
    perm = np.random.default_rng(3).permutation(len(order_all))
    probe_idx = [i for i in perm if len(order_all[i].encode()) > 256][:20]
    rest = [i for i in perm if i not in probe_idx]
    n_val = round(0.1 * len(rest))
    expect = {"probe": probe_idx, "val": rest[:n_val], "train": rest[n_val:]}
    for name, idx in expect.items():
        assert getattr(s, name) == [order_all[i] for i in sorted(idx)]

    keys = {name: {pos[c] for c in getattr(s, name)} for name in ("train", "val", "probe")}
    assert (
        not keys["train"] & keys["val"]
        and not keys["train"] & keys["probe"]
        and not keys["val"] & keys["probe"]
    )
    assert keys["train"] | keys["val"] | keys["probe"] == set(pos.values())
    # Reassemble every document from its chunks, wherever each landed.
    by_position = sorted(s.train + s.val + s.probe, key=pos.get)
    for d, doc in enumerate(docs):
        assert "".join(c for c in by_position if pos[c][0] == d) == doc


def test_split_deterministic_and_seeded():
    docs = numbered_docs()
    a, b = split_corpus(docs, seed=1, n_probe=10), split_corpus(docs, seed=1, n_probe=10)
    assert a == b
    assert split_corpus(docs, seed=2, n_probe=10).probe != a.probe
    # A smaller probe set is the first draws of a larger one.
    assert set(split_corpus(docs, seed=1, n_probe=4).probe) <= set(a.probe)


def test_bundled_split_same_in_fresh_process():
    s = load_splits("shakespeare")
    code = (
        "from trajlab.data.corpus import load_splits, corpus_fingerprint as f; s = load_splits('shakespeare'); "
        "print(f(s.train), f(s.val), f(s.probe))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == [corpus_fingerprint(s.train), corpus_fingerprint(s.val), corpus_fingerprint(s.probe)]


def held_out_pool(domain: str) -> list[str]:
    """The domain's held-out pool by the recipe, written out: the first HOLDOUT chunks > 256 bytes of the seed-0
    permutation."""
    chunks = [c for d in load_documents(domain) for c in chunk_text(d, 1024)]
    perm = np.random.default_rng(0).permutation(len(chunks))
    return [chunks[i] for i in perm if len(chunks[i].encode()) > 256][: corpus.HOLDOUT[domain]]


@pytest.mark.parametrize("domain", BUNDLED)
def test_bundled_splits_partition_and_probe_sizes(domain):
    docs = load_documents(domain)
    n_probe = min(256, corpus.HOLDOUT[domain])
    s = load_splits(domain, n_probe=n_probe)
    chunks = [c for d in docs for c in chunk_text(d, 1024)]
    pool = held_out_pool(domain)
    # train + val + the whole held-out pool partition the chunks; the probe is the pool's first n_probe draws.
    assert Counter(s.train) + Counter(s.val) + Counter(pool) == Counter(chunks)
    assert Counter(s.probe) == Counter(pool[:n_probe]) and len(s.probe) == n_probe
    assert len(s.val) == round(0.05 * (len(chunks) - corpus.HOLDOUT[domain]))
    assert all(256 < len(p.encode("utf-8")) <= 1024 for p in s.probe)
    assert not set(s.probe) & set(s.train)
    assert load_splits(domain, seed=1).probe != s.probe


@pytest.mark.parametrize("domain", BUNDLED)
def test_bundled_train_split_does_not_depend_on_the_probe_size(domain):
    """Every run, whatever its probe size or mixture, trains on the same chunks of a bundled domain."""
    small, large = load_splits(domain, n_probe=8), load_splits(domain, n_probe=corpus.HOLDOUT[domain])
    assert small.train == large.train and small.val == large.val
    assert set(small.probe) <= set(large.probe)
    with pytest.raises(ValueError, match=f"exceeds the {corpus.HOLDOUT[domain]} chunks held out"):
        load_splits(domain, n_probe=corpus.HOLDOUT[domain] + 1)


def test_probe_texts_subset_and_cache_copies():
    full = probe_texts("bible")
    assert full == load_splits("bible").probe and len(full) == 256
    few = probe_texts("bible", 16)
    assert len(few) == 16 and set(few) <= set(full)
    assert few == split_corpus(load_documents("bible"), n_probe=16).probe
    load_splits("bible").probe.clear()  # mutating a returned list must not reach the cache
    assert probe_texts("bible") == full
    assert len(probe_texts("docs")) == corpus.HOLDOUT["docs"] == 128
    with pytest.raises(ValueError, match="n must be in 1..512"):
        probe_texts("bible", 600)


# ---- mixtures ---------------------------------------------------------------------------------------------------


def test_mixture_weights_and_counts():
    assert corpus.mixture_weights("bible") == {"bible": 1.0}
    assert corpus.mixture_weights({"shakespeare": 3, "bible": 1, "docs": 0}) == {"shakespeare": 0.75, "bible": 0.25}
    for bad in ({"bible": -1}, {"bible": 0}, {"bible": "x"}, {}):
        with pytest.raises(ValueError, match="weights >= 0"):
            corpus.mixture_weights(bad)
    with pytest.raises(ValueError, match="share a domain name"):
        corpus.mixture_weights({"a/chat.txt": 1, "b/chat.jsonl": 1})
    rng = np.random.default_rng(0)
    for _ in range(200):
        w = rng.dirichlet(np.ones(rng.integers(1, 5)))
        weights = {f"d{i}": float(x) for i, x in enumerate(w)}
        n = int(rng.integers(0, 1000))
        counts = corpus.mixture_counts(weights, n)
        assert sum(counts.values()) == n
        for k, c in counts.items():
            assert abs(c - weights[k] * n) < 1  # floor or ceil of the exact share
    # 0.6/0.3/0.1 of 256 = 153.6, 76.8, 25.6: bible's 0.8 first, then the tie at 0.6 goes to the earlier domain.
    assert corpus.mixture_counts({"s": 0.6, "b": 0.3, "d": 0.1}, 256) == {"s": 154, "b": 77, "d": 25}
    assert corpus.mixture_counts(corpus.mixture_weights({"s": 0.6, "b": 0.3, "d": 0.1}), 256)["s"] == 154


def test_mixture_probe_is_drawn_from_each_domains_pool_in_proportion():
    mix = {"shakespeare": 0.6, "bible": 0.3, "docs": 0.1}
    texts, domains = corpus.mixture_probe(mix, 200)
    assert Counter(domains) == {"shakespeare": 120, "bible": 60, "docs": 20}
    for d in mix:
        mine = [t for t, dd in zip(texts, domains, strict=True) if dd == d]
        pool = held_out_pool(d)
        assert Counter(mine) == Counter(pool[: len(mine)])  # the first draws of the pool
        s = load_splits(d)
        assert not set(mine) & (set(s.train) | set(s.val))
    # Interleaved: every prefix of 20 texts holds each domain within one text of its share.
    for m in range(20, 201, 20):
        c = Counter(domains[:m])
        assert all(abs(c[d] - w * m) <= 1 for d, w in mix.items()), (m, c)


def test_docs_domain_is_pythons_topics():
    """docs.jsonl.gz holds pydoc's topics of the Python version its manifest names, one document per topic, each
    paragraph of 40+ characters exactly once (topics repeat each other's sections)."""
    import platform

    manifest = json.loads((DATA / "corpora.json").read_text(encoding="utf-8"))["docs"]
    docs = load_documents("docs")
    assert len(docs) == manifest["documents"] >= 70
    assert docs[0].startswith('The "assert" statement')
    paragraphs = Counter(p.strip() for d in docs for p in d.split("\n\n") if len(p.strip()) > 40)
    assert paragraphs.most_common(1)[0][1] == 1
    if platform.python_version() != manifest["version"]:
        pytest.skip(f"docs was built from Python {manifest['version']}")
    from pydoc_data.topics import topics

    cleaned = ["\n".join(line.rstrip() for line in t.split("\n")) for t in topics.values()]
    source = {p.strip() for t in cleaned for p in t.split("\n\n") if len(p.strip()) > 40}
    assert set(paragraphs) == source


# ---- bundled files ----------------------------------------------------------------------------------------------


def test_bundled_files_match_manifest():
    manifest = json.loads((DATA / "corpora.json").read_text(encoding="utf-8"))
    assert tuple(manifest) == BUNDLED == (corpus.PRETRAIN_DOMAIN, corpus.FINETUNE_DOMAIN, "docs")
    for domain, entry in manifest.items():
        raw = (DATA / f"{domain}.jsonl.gz").read_bytes()
        assert raw[4:8] == b"\0\0\0\0" and not raw[3] & 0x08  # gzip: mtime 0, no file name
        data = gzip.decompress(raw)
        assert hashlib.sha256(data).hexdigest() == entry["jsonl_sha256"]
        rows = [json.loads(line) for line in data.decode("utf-8").splitlines()]
        assert all(set(r) == {"title", "text"} for r in rows)
        assert len(rows) == entry["documents"]
        texts = [r["text"] for r in rows]
        assert load_documents(domain) == texts
        assert sum(len(t.encode("utf-8")) for t in texts) == entry["raw_bytes"] >= 300_000
        assert all("\r" not in t for t in texts)
        assert len(entry["source_sha256"]) == 64 and entry["licence"]


def test_no_gutenberg_boilerplate():
    markers = re.compile(
        r"gutenberg|\*\*\*|small print|\betexts?\b|\bebooks?\b|end of (the|this) project", re.IGNORECASE
    )
    for domain in ("shakespeare", "bible"):  # docs underlines its headings with "***"
        for doc in load_documents(domain):
            assert not markers.search(doc), (domain, markers.search(doc))
    plays = load_documents("shakespeare")
    assert plays[0].startswith("ALL'S WELL THAT ENDS WELL\n\nby William Shakespeare")
    assert any("To be, or not to be" in p for p in plays)
    bible = load_documents("bible")
    assert len(bible) == 66 and bible[0].startswith("Genesis\n\n1:1 In the beginning God created the heaven")


# ---- user corpora -----------------------------------------------------------------------------------------------


def test_user_txt_and_dir(tmp_path):
    texts = ["First document.\nWith two lines ✓\n", "Second — one line", "third 😀"]
    (tmp_path / "one.txt").write_text(texts[0], encoding="utf-8")
    assert load_documents(tmp_path / "one.txt") == [texts[0]]
    folder = tmp_path / "dir"
    folder.mkdir()
    for name, t in zip(["b.txt", "a.txt", "c.txt"], texts):
        (folder / name).write_text(t, encoding="utf-8")
    (folder / "ignored.md").write_text("not a txt", encoding="utf-8")
    assert load_documents(str(folder)) == [texts[1], texts[0], texts[2]]  # sorted by name


def test_user_jsonl(tmp_path):
    rows = [{"body": f"text {i} é", "id": i} for i in range(5)]
    lines = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n"
    (tmp_path / "c.jsonl").write_text(lines, encoding="utf-8")
    (tmp_path / "c.jsonl.gz").write_bytes(gzip.compress(lines.encode("utf-8")))
    for name in ("c.jsonl", "c.jsonl.gz"):
        assert load_documents(tmp_path / name, text_field="body") == [r["body"] for r in rows]


def test_user_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    texts = [f"row {i}: {'word ' * i}" for i in range(1, 8)]
    ds = datasets.Dataset.from_dict({"content": texts, "n": list(range(7))})
    ds.save_to_disk(str(tmp_path / "ds"))
    assert load_documents(tmp_path / "ds", text_field="content") == texts
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(tmp_path / "dd"))
    assert load_documents(tmp_path / "dd", text_field="content") == texts
    with pytest.raises(ValueError, match=r"no column 'text' \(columns: content, n\)"):
        load_documents(tmp_path / "ds")
    datasets.DatasetDict({"test": ds}).save_to_disk(str(tmp_path / "nt"))
    with pytest.raises(ValueError, match="without a 'train' split"):
        load_documents(tmp_path / "nt", text_field="content")


def test_user_corpus_splits(tmp_path):
    docs = numbered_docs(3)
    for i, d in enumerate(docs):
        (tmp_path / f"{i}.txt").write_text(d, encoding="utf-8")
    assert load_splits(tmp_path, n_probe=5) == split_corpus(docs, n_probe=5)
    assert isinstance(load_splits(tmp_path, n_probe=5), CorpusSplits)
    assert probe_texts(tmp_path, 5) == split_corpus(docs, n_probe=5).probe


def test_fingerprint():
    docs = ["ab", "c é"]
    h = hashlib.sha256()
    for d in docs:
        h.update(len(d.encode()).to_bytes(8, "little") + d.encode())
    assert corpus_fingerprint(docs) == h.hexdigest()
    assert corpus_fingerprint(["a", "bc"]) != corpus_fingerprint(["ab", "c"])
    assert corpus_fingerprint(["a", "b"]) != corpus_fingerprint(["b", "a"])


# ---- bad input --------------------------------------------------------------------------------------------------


def test_unknown_name_or_missing_path(tmp_path):
    for source in ("shakespear", tmp_path / "nope.txt"):
        with pytest.raises(FileNotFoundError, match="bundled corpora: shakespeare, bible"):
            load_documents(source)


def test_empty_sources(tmp_path):
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    (tmp_path / "blank.jsonl").write_text('{"text": "  "}\n\n', encoding="utf-8")
    for name in ("empty.txt", "blank.jsonl"):
        with pytest.raises(ValueError, match="contains no text"):
            load_documents(tmp_path / name)
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match="no .txt files"):
        load_documents(tmp_path / "d")
    (tmp_path / "x.csv").write_text("a,b", encoding="utf-8")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_documents(tmp_path / "x.csv")


def test_bad_jsonl(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": oops}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        load_documents(tmp_path / "bad.jsonl")
    (tmp_path / "field.jsonl").write_text('{"text": "ok"}\n{"body": "x", "id": 1}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 2 has no field 'text' \(fields: body, id\)"):
        load_documents(tmp_path / "field.jsonl")
    (tmp_path / "type.jsonl").write_text('{"text": 3}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="is not a string"):
        load_documents(tmp_path / "type.jsonl")


def test_non_utf8(tmp_path):
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "latin.jsonl").write_bytes('{"text": "caf\xe9"}\n'.encode("latin-1"))
    for name in ("latin.txt", "latin.jsonl"):
        with pytest.raises(ValueError, match=r"not valid UTF-8 \(bad byte at offset"):
            load_documents(tmp_path / name)
