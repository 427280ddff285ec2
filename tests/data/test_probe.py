"""ProbeSet: bytes, fingerprint, subsets, JSON round trip and the bundled default."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from tiny_models import SAMPLE_TEXTS

from trajlab.data.probe import ProbeSet


def sha256_of(texts: list[str]) -> str:
    """The documented fingerprint, written out: 8-byte little-endian byte length, then the bytes, per text."""
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little") + b)
    return h.hexdigest()


def test_texts_bytes_and_fingerprint():
    probe = ProbeSet.from_texts(SAMPLE_TEXTS, name="sample")
    assert probe.texts == SAMPLE_TEXTS and len(probe) == 6 and probe.name == "sample"
    assert probe.n_bytes.dtype == np.int64
    np.testing.assert_array_equal(probe.n_bytes, [len(t.encode()) for t in SAMPLE_TEXTS])
    assert probe.n_bytes[-1] > len(SAMPLE_TEXTS[-1])  # multi-byte characters count as bytes
    assert probe.fingerprint == sha256_of(SAMPLE_TEXTS)


def test_fingerprint_is_order_sensitive_and_unambiguous():
    a = ProbeSet.from_texts(["ab", "c"]).fingerprint
    assert ProbeSet.from_texts(["c", "ab"]).fingerprint != a
    assert ProbeSet.from_texts(["a", "bc"]).fingerprint != a  # same concatenation
    assert ProbeSet.from_texts(["ab", "c"], name="other").fingerprint == a  # the name is not hashed


def test_save_load_round_trip(tmp_path):
    probe = ProbeSet.from_texts(SAMPLE_TEXTS, name="sample")
    path = probe.save(tmp_path / "sub" / "probe.json")
    assert [p.name for p in path.parent.iterdir()] == ["probe.json"]  # no temp file left behind
    back = ProbeSet.load(path)
    assert back.texts == probe.texts and back.name == "sample" and back.fingerprint == probe.fingerprint


def test_load_rejects_corrupt_files(tmp_path):
    path = ProbeSet.from_texts(SAMPLE_TEXTS).save(tmp_path / "p.json")
    d = json.loads(path.read_text())
    d["texts"][2] = d["texts"][2] + " "
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="recorded fingerprint"):
        ProbeSet.load(path)
    path.write_text('{"name": "x", "texts": ["a"')
    with pytest.raises(ValueError, match="not a valid probe file"):
        ProbeSet.load(path)
    path.write_text('{"name": "x", "texts": ["a"]}')
    with pytest.raises(ValueError, match=r"lacks field\(s\) \['fingerprint'\]"):
        ProbeSet.load(path)
    with pytest.raises(FileNotFoundError, match="no probe file"):
        ProbeSet.load(tmp_path / "missing.json")


def test_dict_round_trip():
    probe = ProbeSet.from_texts(SAMPLE_TEXTS, name="sample")
    d = json.loads(json.dumps(probe.to_dict()))
    assert d["n_texts"] == 6 and d["fingerprint"] == probe.fingerprint
    assert ProbeSet.from_dict(d).texts == SAMPLE_TEXTS


def test_subset():
    probe = ProbeSet.from_texts(SAMPLE_TEXTS, name="sample")
    sub = probe.subset([4, 0, 2])
    assert sub.texts == [SAMPLE_TEXTS[4], SAMPLE_TEXTS[0], SAMPLE_TEXTS[2]]
    assert sub.name.startswith("sample/subset-3-") and sub.name != probe.subset([0, 2, 4]).name
    np.testing.assert_array_equal(sub.n_bytes, probe.n_bytes[[4, 0, 2]])
    mask = np.array([True, False, True, False, False, True])
    assert probe.subset(mask).texts == [SAMPLE_TEXTS[i] for i in (0, 2, 5)]
    with pytest.raises(ValueError, match="subset index 6 is out of range"):
        probe.subset([1, 6])
    with pytest.raises(ValueError, match="at least one text"):
        probe.subset([])


def test_bad_texts():
    with pytest.raises(ValueError, match="at least one text"):
        ProbeSet.from_texts([])
    with pytest.raises(ValueError, match="probe text 1 is a bytes"):
        ProbeSet.from_texts(["a", b"b"])
    with pytest.raises(ValueError, match="single str"):
        ProbeSet.from_texts("abc")


def test_default_is_the_bundled_probe_chunks_pretraining_first():
    from trajlab.data import corpus

    probe = ProbeSet.default(n_per_domain=3)
    expected = [t for d in corpus.BUNDLED for t in corpus.probe_texts(d, n=3, seed=0)]
    assert probe.texts == expected and len(probe) == 3 * len(corpus.BUNDLED)
    assert probe.texts[:3] == corpus.probe_texts(corpus.BUNDLED[0], n=3, seed=0)
    assert (probe.n_bytes > 256).all() and (probe.n_bytes <= 1024).all()
    assert ProbeSet.default(n_per_domain=3).fingerprint == probe.fingerprint  # reproducible
    full = ProbeSet.default()
    assert full.texts == [t for d in corpus.BUNDLED for t in corpus.probe_texts(d, seed=0)]


def test_domains_kept_through_subset_dict_save_load(tmp_path):
    domains = ["a", "b", "a", "c", "b", "a"]
    probe = ProbeSet.from_texts(SAMPLE_TEXTS, name="sample", domains=domains)
    assert probe.domains == tuple(domains)
    assert probe.fingerprint == ProbeSet.from_texts(SAMPLE_TEXTS).fingerprint == sha256_of(SAMPLE_TEXTS)
    sub = probe.subset([5, 1, 3])
    assert sub.domains == ("a", "b", "c") and sub.texts == [SAMPLE_TEXTS[i] for i in (5, 1, 3)]
    assert probe.subset(np.array(domains) == "b").domains == ("b", "b")
    d = probe.to_dict()
    assert d["domains"] == domains and d["fingerprint"] == sha256_of(SAMPLE_TEXTS)
    assert ProbeSet.from_dict(json.loads(json.dumps(d))).domains == tuple(domains)
    loaded = ProbeSet.load(probe.save(tmp_path / "p.json"))
    assert loaded.domains == tuple(domains) and loaded.texts == SAMPLE_TEXTS
    # Without domains nothing changes: no key written, None read back, old files load.
    plain = ProbeSet.from_texts(SAMPLE_TEXTS)
    assert "domains" not in plain.to_dict() and plain.subset([0]).domains is None
    assert ProbeSet.load(plain.save(tmp_path / "q.json")).domains is None


def test_bad_domains():
    with pytest.raises(ValueError, match="6 non-empty str, one per text; got 2"):
        ProbeSet.from_texts(SAMPLE_TEXTS, domains=["a", "b"])
    with pytest.raises(ValueError, match="single str"):
        ProbeSet.from_texts(SAMPLE_TEXTS, domains="abcdef")
    with pytest.raises(ValueError, match="non-empty str"):
        ProbeSet.from_texts(SAMPLE_TEXTS, domains=["a", "", "a", "a", "a", 1])


def test_default_and_mixture_record_each_texts_domain():
    from collections import Counter

    from trajlab.data import corpus

    probe = ProbeSet.default(n_per_domain=5)
    assert probe.domains == tuple(d for d in corpus.BUNDLED for _ in range(5))
    mix = ProbeSet.mixture({"shakespeare": 6, "bible": 3, "docs": 1}, 100)
    assert Counter(mix.domains) == {"shakespeare": 60, "bible": 30, "docs": 10}
    for text, domain in zip(mix.texts, mix.domains, strict=True):
        assert text in corpus.probe_texts(domain, n=corpus.HOLDOUT[domain])  # from that domain's held-out pool
    assert mix.name == "mix-shakespeare0.6+bible0.3+docs0.1-n100"
    assert ProbeSet.mixture({"shakespeare": 6, "bible": 3, "docs": 1}, 100).fingerprint == mix.fingerprint
