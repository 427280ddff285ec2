"""Corpora: the bundled text domains, user corpora, weighted mixtures of them, and their train / val / probe splits.

Probe texts follow the recipe of Oyama et al. in miniature: documents are cut into UTF-8-safe chunks of at most
1024 bytes, and a seeded sample of the chunks longer than 256 bytes is held out. The remaining chunks are split
into validation and training sets, so no probe text is ever trained on. A bundled domain always holds out the same
pool (`HOLDOUT` chunks, whatever probe size or mixture a run asks for), so the probe of one model family is absent
from the training data of every other family too. A mixture ({domain: weight}) draws its probe from the domains'
pools in the mixture's proportions and records each text's domain.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

BUNDLED: tuple[str, ...] = ("shakespeare", "bible", "docs")  # pretraining domain first
PRETRAIN_DOMAIN = "shakespeare"
FINETUNE_DOMAIN = "bible"
# Chunks of each bundled domain held out from training whatever the run (~10% of shakespeare and bible, ~25% of
# the 492 probe-length chunks of docs); a probe takes its texts from these pools.
HOLDOUT = {"shakespeare": 512, "bible": 512, "docs": 128}

_DEFAULT_N_PROBE = 256


@dataclass(frozen=True)
class CorpusSplits:
    """Disjoint chunk lists of one corpus; each list keeps the original document order."""

    train: list[str]
    val: list[str]
    probe: list[str]


def _source_error(source: str | Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"no bundled corpus or path named {str(source)!r}; bundled corpora: {', '.join(BUNDLED)}; "
        "or give a .txt / .jsonl / .jsonl.gz file, a directory of .txt files, or a saved `datasets` dataset"
    )


def _decoded(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path} is not valid UTF-8 (bad byte at offset {e.start}); re-encode it as UTF-8"
        ) from e


def _jsonl_documents(path: Path, text_field: str) -> list[str]:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    docs = []
    for number, line in enumerate(_decoded(data, path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} line {number} is not valid JSON ({e.msg})") from e
        if not isinstance(row, dict) or text_field not in row:
            fields = ", ".join(row) if isinstance(row, dict) else f"none (a JSON {type(row).__name__})"
            raise ValueError(
                f"{path} line {number} has no field {text_field!r} (fields: {fields}); pass text_field=..."
            )
        if not isinstance(row[text_field], str):
            raise ValueError(f"{path} line {number}: field {text_field!r} is not a string")
        docs.append(row[text_field])
    return docs


def _dataset_documents(path: Path, text_field: str) -> list[str]:
    import datasets  # lazy: heavy import, needed only for saved datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise ValueError(f"{path} is a DatasetDict without a 'train' split (splits: {', '.join(ds)})")
        ds = ds["train"]
    if text_field not in ds.column_names:
        raise ValueError(
            f"{path} has no column {text_field!r} (columns: {', '.join(ds.column_names)}); pass text_field=..."
        )
    docs = list(ds[text_field])
    if not all(isinstance(d, str) for d in docs):
        raise ValueError(f"{path}: column {text_field!r} is not a string column")
    return docs


@functools.cache
def _bundled_documents(name: str, text_field: str) -> tuple[str, ...]:
    with resources.as_file(resources.files("trajlab") / "data" / f"{name}.jsonl.gz") as path:
        return tuple(_jsonl_documents(path, text_field))


def load_documents(source: str | Path, text_field: str = "text") -> list[str]:
    """Load the documents of a corpus.

    Args:
        source: a bundled corpus name (see `BUNDLED`; takes precedence over a path of that name), a .txt file
            (one document), a directory of .txt files (one document each, in sorted name order), a .jsonl or
            .jsonl.gz file (one JSON object per line), or a `datasets` Dataset / DatasetDict saved with
            `save_to_disk` (a DatasetDict's "train" split is used).
        text_field: the JSON field or dataset column that holds the text.

    Returns:
        The non-blank documents, in file order.

    Raises:
        FileNotFoundError: source is neither a bundled name nor an existing path.
        ValueError: the source is empty, not UTF-8, malformed JSONL, or lacks text_field.
    """
    if isinstance(source, str) and source in BUNDLED:
        docs = list(_bundled_documents(source, text_field))
    else:
        path = Path(source)
        if not path.exists():
            raise _source_error(source)
        if path.is_dir():
            if (path / "state.json").exists() or (path / "dataset_dict.json").exists():
                docs = _dataset_documents(path, text_field)
            else:
                files = sorted(p for p in path.iterdir() if p.suffix == ".txt" and p.is_file())
                if not files:
                    raise ValueError(f"{path} has no .txt files and is not a dataset saved with save_to_disk")
                docs = [_decoded(f.read_bytes(), f) for f in files]
        elif path.suffix == ".txt":
            docs = [_decoded(path.read_bytes(), path)]
        elif path.name.endswith((".jsonl", ".jsonl.gz")):
            docs = _jsonl_documents(path, text_field)
        else:
            raise ValueError(f"{path}: unsupported file type; use .txt, .jsonl or .jsonl.gz")
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise ValueError(f"corpus {str(source)!r} contains no text")
    return docs


def chunk_text(text: str, max_bytes: int = 1024) -> list[str]:
    """Cut text into UTF-8-safe chunks of at most max_bytes bytes that concatenate back to text exactly.

    Each cut falls just after the last newline in the second half of the byte window, else after the last space
    there, else at the last character boundary in the window; so for max_bytes >= 8 every chunk but a
    document's last is longer than max_bytes / 2 bytes.

    Args:
        text: the text to cut.
        max_bytes: the largest chunk, in UTF-8 bytes (>= 4, the longest UTF-8 character).

    Returns:
        The chunks, in order; [] for an empty text.
    """
    if max_bytes < 4:
        raise ValueError(f"max_bytes must be >= 4 (one UTF-8 character can take 4 bytes), got {max_bytes}")
    data = text.encode("utf-8")
    chunks, start = [], 0
    while len(data) - start > max_bytes:
        end, half = start + max_bytes, start + max_bytes // 2
        cut = data.rfind(b"\n", half, end) + 1 or data.rfind(b" ", half, end) + 1
        if not cut:
            cut = end
            while data[cut] & 0xC0 == 0x80:  # continuation byte: cut would split a character
                cut -= 1
        chunks.append(data[start:cut].decode("utf-8"))
        start = cut
    if start < len(data):
        chunks.append(data[start:].decode("utf-8"))
    return chunks


def split_corpus(
    docs: list[str],
    *,
    seed: int = 0,
    val_fraction: float = 0.05,
    n_probe: int = _DEFAULT_N_PROBE,
    n_holdout: int | None = None,
    max_bytes: int = 1024,
    min_probe_bytes: int = 256,
) -> CorpusSplits:
    """Split documents into disjoint train / val / probe chunk lists, deterministically.

    Every document is cut with `chunk_text`. A permutation of the chunk indices from
    `numpy.random.default_rng(seed)` is walked in order: the first n_holdout chunks longer than min_probe_bytes
    bytes are held out, and the first n_probe of them form the probe set; of the chunks left, the first
    round(val_fraction * count) in permutation order form the validation set; the rest are the training set. So
    the probe set for n_probe = k is the first k probe chunks drawn for any larger n_probe, and with one n_holdout
    the train and val sets do not depend on n_probe.

    Args:
        docs: the documents.
        seed: seed of the permutation.
        val_fraction: share of the non-held-out chunks kept for validation, in [0, 1).
        n_probe: number of probe chunks.
        n_holdout: chunks held out from train and val (>= n_probe); None: n_probe.
        max_bytes: the largest chunk, in UTF-8 bytes.
        min_probe_bytes: probe chunks are strictly longer than this many bytes.

    Returns:
        The splits; each list is in original document and position order.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_holdout = n_probe if n_holdout is None else n_holdout
    if n_probe < 0 or n_holdout < n_probe:
        raise ValueError(f"need 0 <= n_probe <= n_holdout, got n_probe={n_probe}, n_holdout={n_holdout}")
    chunks = [c for d in docs for c in chunk_text(d, max_bytes)]
    if not chunks:
        raise ValueError("the corpus contains no text")
    eligible = np.array([len(c.encode("utf-8")) > min_probe_bytes for c in chunks])
    if n_holdout > eligible.sum():
        raise ValueError(
            f"n_probe={n_holdout} exceeds the {eligible.sum()} chunks longer than {min_probe_bytes} bytes "
            f"(of {len(chunks)} chunks); lower n_probe or add text"
        )
    order = np.random.default_rng(seed).permutation(len(chunks))  # (n_chunks,)
    held = order[eligible[order]][:n_holdout]
    probe = held[:n_probe]
    rest = order[~np.isin(order, held)]  # permutation order kept
    n_val = round(val_fraction * len(rest))
    val, train = rest[:n_val], rest[n_val:]
    return CorpusSplits(*([chunks[i] for i in np.sort(idx)] for idx in (train, val, probe)))


@functools.lru_cache(maxsize=64)
def _bundled_splits(name: str, seed: int, n_probe: int, val_fraction: float, text_field: str) -> CorpusSplits:
    docs = load_documents(name, text_field)
    return split_corpus(docs, seed=seed, n_probe=n_probe, n_holdout=HOLDOUT[name], val_fraction=val_fraction)


def _pool_size(source: str | Path) -> int | None:
    return HOLDOUT.get(source) if isinstance(source, str) else None


def load_splits(
    source: str | Path,
    *,
    seed: int = 0,
    n_probe: int | None = None,
    val_fraction: float = 0.05,
    text_field: str = "text",
) -> CorpusSplits:
    """`load_documents` + `split_corpus` (1024-byte chunks, probe chunks > 256 bytes); bundled results are cached.

    A bundled corpus holds out its `HOLDOUT` pool whatever n_probe (<= the pool) is asked for, so its train and
    val sets are the same for every run; a user corpus holds out exactly its n_probe probe chunks. n_probe None:
    256 (a bundled pool's size when smaller).
    """
    if n_probe is None:
        n_probe = min(_DEFAULT_N_PROBE, _pool_size(source) or _DEFAULT_N_PROBE)
    if isinstance(source, str) and source in BUNDLED:
        if n_probe > HOLDOUT[source]:
            raise ValueError(
                f"n_probe={n_probe} exceeds the {HOLDOUT[source]} chunks held out from the bundled corpus "
                f"{source!r}: ask for at most {HOLDOUT[source]} (or mix domains: a mixture draws from each pool)"
            )
        cached = _bundled_splits(source, seed, n_probe, val_fraction, text_field)
        return CorpusSplits(list(cached.train), list(cached.val), list(cached.probe))  # callers may mutate
    docs = load_documents(source, text_field)
    return split_corpus(docs, seed=seed, n_probe=n_probe, val_fraction=val_fraction)


def probe_texts(domain: str | Path, n: int | None = None, seed: int = 0) -> list[str]:
    """The held-out probe chunks of a bundled (or user) corpus.

    Args:
        domain: a bundled corpus name or a user corpus accepted by `load_documents`.
        n: how many; None for 256 (128 for docs, whose pool is smaller). n takes the first n chunks drawn (a seeded
            sample, returned in document order) of the domain's held-out pool (`HOLDOUT`), so it is disjoint from
            `load_splits(domain).train` too.
        seed: split seed.

    Returns:
        Probe texts, each > 256 and <= 1024 UTF-8 bytes.
    """
    limit = _pool_size(domain) or _DEFAULT_N_PROBE
    if n is not None and not 0 < n <= limit:
        raise ValueError(
            f"n must be in 1..{limit}, got {n}; for a larger probe set of a user corpus use "
            "load_splits(domain, n_probe=...).probe with the train split of that same call"
        )
    return load_splits(domain, seed=seed, n_probe=n).probe


def domain_name(source: str | Path) -> str:
    """The label of a corpus in a mixture and in a probe's `domains`: a bundled name, else the file or folder
    name without its suffixes (``data/chat.jsonl.gz`` -> ``chat``)."""
    if isinstance(source, str) and source in BUNDLED:
        return source
    return Path(source).name.split(".")[0] or str(source)


def mixture_weights(mixture: str | Path | Mapping[str, float]) -> dict[str, float]:
    """{corpus source: weight} normalised to sum 1 (one corpus: weight 1); zero weights dropped.

    Raises:
        ValueError: a negative or non-numeric weight, no positive weight, or two sources with one domain name.
    """
    if not isinstance(mixture, Mapping):
        return {str(mixture): 1.0}
    bad = {k: w for k, w in mixture.items() if isinstance(w, bool) or not isinstance(w, int | float) or w < 0}
    if bad or not any(w > 0 for w in mixture.values()):
        raise ValueError(
            f"a corpus mixture maps corpora to weights >= 0 with at least one > 0, got {dict(mixture)}; "
            "e.g. {shakespeare: 0.6, bible: 0.3, docs: 0.1}"
        )
    names = [domain_name(k) for k in mixture]
    if len(set(names)) < len(names):
        raise ValueError(f"two corpora of the mixture {list(mixture)} share a domain name; rename a file")
    total = float(sum(mixture.values()))
    return {str(k): w / total for k, w in mixture.items() if w > 0}


def mixture_counts(weights: Mapping[str, float], n: int) -> dict[str, int]:
    """Split n items in the proportions of `weights` (summing to 1) by largest remainder: the counts sum to n and
    each is floor(w n) or that + 1; ties go to the earlier domain."""
    exact = {k: round(w * n, 9) for k, w in weights.items()}  # rounded: 0.6 vs 0.6 / 1.0000000000000002 tie
    counts = {k: int(np.floor(x)) for k, x in exact.items()}
    by_remainder = sorted(weights, key=lambda k: round(counts[k] - exact[k], 9))  # stable: earlier first on ties
    for k in by_remainder[: n - sum(counts.values())]:
        counts[k] += 1
    return counts


def mixture_probe(
    mixture: str | Path | Mapping[str, float], n: int, *, seed: int = 0, text_field: str = "text"
) -> tuple[list[str], list[str]]:
    """The probe of a mixture: n held-out chunks in the mixture's proportions (`mixture_counts`), and their domains.

    Each domain contributes the first k chunks of its held-out pool (`load_splits(source, n_probe=k).probe`), so
    the probe is disjoint from every split's train and val sets; the domains are interleaved evenly (the j-th text
    of a domain with k texts sits at fraction (j + 1/2) / k), so any prefix keeps the proportions approximately.

    Returns:
        (texts, domains): two lists of n entries; domains are `domain_name`s.
    """
    weights = mixture_weights(mixture)
    keyed = []
    for source, k in mixture_counts(weights, n).items():
        if k:
            texts = load_splits(source, seed=seed, n_probe=k, text_field=text_field).probe
            keyed += [((j + 0.5) / k, domain_name(source), t) for j, t in enumerate(texts)]
    keyed.sort(key=lambda x: x[0])  # stable: domains in mixture order at equal fractions
    return [t for _, _, t in keyed], [d for _, d, _ in keyed]


def corpus_fingerprint(docs: list[str]) -> str:
    """sha256 hex digest of the documents in order: per document, its UTF-8 byte length (8 bytes, little
    endian) then its UTF-8 bytes; so document boundaries and order both count."""
    h = hashlib.sha256()
    for d in docs:
        data = d.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()
