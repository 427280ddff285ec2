"""Probe files in the paper's released format and `trajlab probe build`: the recipe checked against an
independent enumeration (every chunk cut character by character, every key hashed directly), parquet and jsonl
of the same rows giving the same probe, and every bad input refused in one line with nothing written."""

from __future__ import annotations

import hashlib
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trajlab.cli import main as trajlab_main
from trajlab.data.probe import ProbeSet
from trajlab.data.probe_build import ProbeRecipe, build_probe, byte_chunks
from trajlab.hub.config import import_probe
from trajlab.record.probes import resolve_probe

WORDS = ["alpha", "beta", "γάμμα", "δέλτα", "ünï", "✓✓", "日本語", "text", "\n", "🙂"]


def documents(n: int = 60, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 700))) for _ in range(n)]


def expected_probe(docs: list[str], n: int, seed: int, max_bytes: int, min_bytes: int,
                   pool: int | None = None) -> list[str]:
    """The recipe enumerated directly: chunks grown character by character, every kept chunk keyed, sorted."""
    keyed, seen = [], 0
    for i, doc in enumerate(docs):
        chunks, cur = [], ""
        for ch in doc:
            if len((cur + ch).encode()) > max_bytes:
                chunks.append(cur)
                cur = ""
            cur += ch
        chunks += [cur] if cur else []
        for j, c in enumerate(chunks):
            if len(c.encode()) > min_bytes and (pool is None or seen < pool):
                keyed.append((hashlib.blake2b(f"{seed}:{i}:{j}".encode(), digest_size=16).digest(), c))
                seen += 1
    return [c for _, c in sorted(keyed)[:n]]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root, docs = tmp_path_factory.mktemp("corpus"), documents()
    with open(root / "docs.jsonl", "w") as f:
        f.writelines(json.dumps({"id": i, "text": d}, ensure_ascii=False) + "\n" for i, d in enumerate(docs))
    pq.write_table(pa.table({"id": list(range(len(docs))), "text": docs}), root / "docs.parquet")
    (root / "empty.jsonl").write_text("")
    pq.write_table(pa.table({"text": list(range(5))}), root / "ints.parquet")
    return root, docs


def test_byte_chunks_never_split_a_character_and_rejoin_exactly():
    text = "".join(documents(3, seed=1))
    for max_bytes in (4, 5, 7, 64, 1024):
        chunks = byte_chunks(text, max_bytes)
        assert b"".join(chunks).decode() == text and all(len(c) <= max_bytes for c in chunks)
        assert all(c.decode("utf-8") for c in chunks)  # every chunk decodes: no character was cut
        # each cut is as late as possible: the next character would not have fitted
        for a, b in zip(chunks, chunks[1:]):
            first = b.decode()[0].encode()
            assert len(a) + len(first) > max_bytes


def test_parquet_and_jsonl_of_the_same_rows_give_the_recipes_sample(corpus, tmp_path):
    root, docs = corpus
    kw = dict(n=40, seed=3, max_bytes=300, min_bytes=100)
    a = build_probe(dataset=str(root / "docs.jsonl"), cache_dir=str(tmp_path), **kw)
    b = build_probe(dataset=str(root / "docs.parquet"), cache_dir=str(tmp_path), **kw)
    again = build_probe(dataset=str(root / "docs.parquet"), cache_dir=str(tmp_path), **kw)
    assert a.texts == expected_probe(docs, **kw)
    assert a.fingerprint == b.fingerprint == again.fingerprint and b.texts == a.texts
    assert all(100 < n <= 300 for n in a.n_bytes)
    assert {k: a.recipe[k] for k in ("n", "seed", "max_bytes", "min_bytes", "split", "text_field")} == {
        "n": 40, "seed": 3, "max_bytes": 300, "min_bytes": 100, "split": "train", "text_field": "text"}
    assert a.recipe["documents_read"] == len(docs)
    # streaming reads only the first `pool` kept chunks and samples among them
    s = build_probe(dataset=str(root / "docs.parquet"), streaming=True, pool=60, **kw)
    assert s.texts == expected_probe(docs, pool=60, **kw) and s.recipe["chunks_seen"] == 60
    assert s.recipe["documents_read"] < len(docs)


def test_json_files_in_the_papers_format_and_ours(tmp_path):
    texts = ["first text ✓", "second\ntext", "third"]
    (tmp_path / "texts.json").write_text(json.dumps(texts))  # the paper's data/texts.json form
    paper = ProbeSet.from_json(tmp_path / "texts.json")
    assert paper.texts == texts and paper.name == "texts" and paper.domains is None and paper.recipe is None
    assert json.loads(paper.to_json(tmp_path / "again.json").read_text()) == texts  # written back the same
    with_domains = ProbeSet(texts, domains=["a", "b", "a"])
    objects = json.loads(with_domains.to_json(tmp_path / "objects.json").read_text())
    assert objects == [{"text": t, "domain": d} for t, d in zip(texts, "aba")]
    assert ProbeSet.from_json(tmp_path / "objects.json").domains == ("a", "b", "a")
    built = ProbeSet(texts, name="built", recipe={"recipe": "x", "seed": 0})
    back = ProbeSet.from_json(built.to_json(tmp_path / "built.json"))
    assert (back.texts, back.name, back.recipe, back.fingerprint) == (texts, "built", built.recipe,
                                                                      built.fingerprint)
    assert back.subset([2, 0]).recipe["subset_of"] == built.fingerprint
    # every entry point that takes a probe path reads the paper's list
    assert import_probe(str(tmp_path / "texts.json"), None).fingerprint == paper.fingerprint
    assert resolve_probe(str(tmp_path / "texts.json"))[0].fingerprint == paper.fingerprint
    assert ProbeSet.load(tmp_path / "texts.json").texts == texts
    bad = {"ints.json": ["a", 3], "nested.json": [{"text": 5}], "half.json": [{"text": "a", "domain": "x"},
           {"text": "b"}], "empty.json": []}
    for name, data in bad.items():
        (tmp_path / name).write_text(json.dumps(data))
    for name, msg in [("ints.json", "item 1 is a number, expected a string"),
                      ("nested.json", "item 0 is an object whose 'text' is number"),
                      ("half.json", "item 1 has no domain"), ("empty.json", "holds no texts")]:
        with pytest.raises(ValueError, match=msg) as e:
            ProbeSet.from_json(tmp_path / name)
        assert "\n" not in str(e.value)


def test_cli_builds_and_refuses_bad_input_in_one_line_writing_nothing(corpus, tmp_path, capsys):
    root, docs = corpus
    out = tmp_path / "probe.json"
    common = ["--cache-dir", str(tmp_path / "cache"), "--out", str(out)]
    assert trajlab_main(["probe", "build", "--dataset", str(root / "docs.parquet"), "--n", "25",
                         "--max-bytes", "500", "--min-bytes", "200", *common]) == 0
    probe = ProbeSet.from_json(out)
    assert probe.texts == expected_probe(docs, 25, 0, 500, 200) and probe.recipe["n"] == 25
    assert capsys.readouterr().out.startswith(f"{out}: 25 texts")
    out.unlink()
    cases = [
        (["--dataset", str(root / "docs.parquet"), "--text-field", "body"], "has no field 'body'"),
        (["--dataset", str(root / "empty.jsonl")], "has no rows"),
        (["--dataset", str(root / "docs.parquet"), "--n", "100000"], "fewer than n=100000; lower --n"),
        (["--dataset", str(root / "ints.parquet")], "row 0: field 'text' holds int, not a string"),
        (["--dataset", str(tmp_path / "nothing.jsonl")], "no dataset"),
        (["--dataset", str(root / "docs.parquet"), "--min-bytes", "2000"], "min_bytes < max_bytes"),
    ]
    for flags, msg in cases:
        assert trajlab_main(["probe", "build", *flags, *common]) == 2
        last = capsys.readouterr().err.splitlines()[-1]  # after the datasets progress bars
        assert last.startswith("error: ") and msg in last, last
        assert not out.exists()
    assert ProbeRecipe(dataset="x", streaming=True).pool_size == 100000
