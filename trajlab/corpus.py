"""Corpora: the bundled text domains, user corpora, and their train / val / probe splits.

Probe texts follow the recipe of Oyama et al. in miniature: documents are cut into UTF-8-safe chunks of at most
1024 bytes, and a seeded sample of the chunks longer than 256 bytes is held out as the probe set. The remaining
chunks are split into validation and training sets, so no probe text is ever trained on.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

BUNDLED: tuple[str, ...] = ("shakespeare", "bible")  # pretraining domain first
PRETRAIN_DOMAIN = "shakespeare"
FINETUNE_DOMAIN = "bible"

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
    max_bytes: int = 1024,
    min_probe_bytes: int = 256,
) -> CorpusSplits:
    """Split documents into disjoint train / val / probe chunk lists, deterministically.

    Every document is cut with `chunk_text`. A permutation of the chunk indices from
    `numpy.random.default_rng(seed)` is walked in order: the first n_probe chunks longer than min_probe_bytes
    bytes form the probe set; of the chunks left, the first round(val_fraction * count) in permutation order form
    the validation set; the rest are the training set. So the probe set for n_probe = k is the first k probe
    chunks drawn for any larger n_probe.

    Args:
        docs: the documents.
        seed: seed of the permutation.
        val_fraction: share of the non-probe chunks held out for validation, in [0, 1).
        n_probe: number of probe chunks.
        max_bytes: the largest chunk, in UTF-8 bytes.
        min_probe_bytes: probe chunks are strictly longer than this many bytes.

    Returns:
        The splits; each list is in original document and position order.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if n_probe < 0:
        raise ValueError(f"n_probe must be >= 0, got {n_probe}")
    chunks = [c for d in docs for c in chunk_text(d, max_bytes)]
    if not chunks:
        raise ValueError("the corpus contains no text")
    eligible = np.array([len(c.encode("utf-8")) > min_probe_bytes for c in chunks])
    if n_probe > eligible.sum():
        raise ValueError(
            f"n_probe={n_probe} exceeds the {eligible.sum()} chunks longer than {min_probe_bytes} bytes "
            f"(of {len(chunks)} chunks); lower n_probe or add text"
        )
    order = np.random.default_rng(seed).permutation(len(chunks))  # (n_chunks,)
    probe = order[eligible[order]][:n_probe]
    rest = order[~np.isin(order, probe)]  # permutation order kept
    n_val = round(val_fraction * len(rest))
    val, train = rest[:n_val], rest[n_val:]
    return CorpusSplits(*([chunks[i] for i in np.sort(idx)] for idx in (train, val, probe)))


@functools.lru_cache(maxsize=64)
def _bundled_splits(name: str, seed: int, n_probe: int, val_fraction: float, text_field: str) -> CorpusSplits:
    docs = load_documents(name, text_field)
    return split_corpus(docs, seed=seed, n_probe=n_probe, val_fraction=val_fraction)


def load_splits(
    source: str | Path,
    *,
    seed: int = 0,
    n_probe: int = _DEFAULT_N_PROBE,
    val_fraction: float = 0.05,
    text_field: str = "text",
) -> CorpusSplits:
    """`load_documents` + `split_corpus` (1024-byte chunks, probe chunks > 256 bytes); bundled results are cached."""
    if isinstance(source, str) and source in BUNDLED:
        cached = _bundled_splits(source, seed, n_probe, val_fraction, text_field)
        return CorpusSplits(list(cached.train), list(cached.val), list(cached.probe))  # callers may mutate
    docs = load_documents(source, text_field)
    return split_corpus(docs, seed=seed, n_probe=n_probe, val_fraction=val_fraction)


def probe_texts(domain: str | Path, n: int | None = None, seed: int = 0) -> list[str]:
    """The held-out probe chunks of a bundled (or user) corpus.

    Args:
        domain: a bundled corpus name or a user corpus accepted by `load_documents`.
        n: how many; None for all 256. A smaller n takes the first n chunks drawn (a seeded sample, returned in
            document order), a subset of the 256, so it is disjoint from `load_splits(domain).train` too.
        seed: split seed.

    Returns:
        Probe texts, each > 256 and <= 1024 UTF-8 bytes.
    """
    if n is not None and not 0 < n <= _DEFAULT_N_PROBE:
        raise ValueError(
            f"n must be in 1..{_DEFAULT_N_PROBE}, got {n}; for a larger probe set use "
            "load_splits(domain, n_probe=...).probe with the train split of that same call"
        )
    return load_splits(domain, seed=seed, n_probe=_DEFAULT_N_PROBE if n is None else n).probe


def corpus_fingerprint(docs: list[str]) -> str:
    """sha256 hex digest of the documents in order: per document, its UTF-8 byte length (8 bytes, little
    endian) then its UTF-8 bytes; so document boundaries and order both count."""
    h = hashlib.sha256()
    for d in docs:
        data = d.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()
