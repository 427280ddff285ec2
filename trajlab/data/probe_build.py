"""`trajlab probe build`: a probe set from any `datasets` corpus with the paper's recipe.

The recipe (Oyama et al. 2025; Kishino et al. 2025, whose 10,000 Pile chunks are released as data/texts.json):
every document is cut into consecutive chunks of at most ``max_bytes`` UTF-8 bytes, each cut moved back to a
character boundary so that no multi-byte character is split (cuts fall mid-word, as in the released file); only
chunks longer than ``min_bytes`` bytes are kept; ``n`` of them are sampled with ``seed``.

The seeded sample: chunk j of document i gets the key blake2b("seed:i:j") and the n chunks with the smallest
keys are kept, in key order. A key depends only on (seed, i, j), so the sample is a uniform draw without
replacement that needs memory for n chunks only, the same rows in parquet or jsonl give the same probe, and
building twice gives the same texts (the same fingerprint). ``--streaming`` (or ``pool``) reads documents only
until ``pool`` kept chunks have been seen (default 10 n with streaming, every chunk without) and samples the n
among those first ``pool`` chunks: with a seed and a pool fixed, the probe is fixed; a larger pool draws from
further into the corpus.

Sources (`datasets.load_dataset`): a local .json / .jsonl / .parquet / .csv / .txt file (a .txt file is one
document) or a folder of such files, a folder written by ``save_to_disk`` (`datasets.load_from_disk`), or a hub
dataset name (online, or from the local `datasets` cache when HF_DATASETS_OFFLINE=1).
"""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import asdict, dataclass
from pathlib import Path

from trajlab.data.probe import ProbeSet

RECIPE = "kishino2025-byte-chunks"
_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text"}


@dataclass
class ProbeRecipe:
    """How `trajlab probe build` makes a probe: the source and the paper's chunk-and-sample settings."""

    dataset: str
    """A hub dataset name, or a local data file / folder / ``save_to_disk`` folder."""
    name: str | None = None
    """The dataset's configuration (``load_dataset(path, name)``), if it has several."""
    split: str = "train"
    """The split to read."""
    text_field: str = "text"
    """The column that holds each document's text."""
    n: int = 10000
    """Chunks to sample."""
    seed: int = 0
    """Sampling seed (see the module docstring)."""
    max_bytes: int = 1024
    """Largest chunk, in UTF-8 bytes."""
    min_bytes: int = 256
    """Keep only chunks longer than this many bytes."""
    streaming: bool = False
    """Stream the dataset and stop after `pool` kept chunks, instead of reading all of it."""
    pool: int | None = None
    """Sample among the first `pool` kept chunks; None: 10 n with streaming, all without."""

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_bytes < 4 or not 0 <= self.min_bytes < self.max_bytes:
            raise ValueError(
                f"need n >= 1, max_bytes >= 4 and 0 <= min_bytes < max_bytes; got n={self.n}, "
                f"max_bytes={self.max_bytes}, min_bytes={self.min_bytes}"
            )
        if self.pool is not None and self.pool < self.n:
            raise ValueError(f"pool={self.pool} is smaller than n={self.n}: sample among at least n chunks")

    @property
    def pool_size(self) -> int | None:
        """Kept chunks to read before sampling (None: all)."""
        return self.pool if self.pool is not None else 10 * self.n if self.streaming else None


def byte_chunks(text: str, max_bytes: int) -> list[bytes]:
    """Consecutive UTF-8 chunks of at most `max_bytes` bytes that concatenate back to `text`; each cut is
    moved back to the start of a character, so every chunk decodes."""
    data = text.encode("utf-8")
    out, start = [], 0
    while start < len(data):
        end = min(start + max_bytes, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # a continuation byte: the cut would split
            end -= 1
        out.append(data[start:end])
        start = end
    return out


def _key(seed: int, doc: int, chunk: int) -> bytes:
    return hashlib.blake2b(f"{seed}:{doc}:{chunk}".encode(), digest_size=16).digest()


def sample_chunks(documents, recipe: ProbeRecipe) -> tuple[list[str], dict]:
    """The recipe's n chunks of `documents` (an iterable of str), in key order, and counts of what was read.

    Raises:
        ValueError: fewer than n chunks longer than min_bytes (one line: how many there were).
    """
    heap: list[tuple[bytes, bytes]] = []  # (negated key, chunk): the n smallest keys so far
    seen, docs, limit = 0, 0, recipe.pool_size
    for i, text in enumerate(documents):
        docs += 1
        for j, chunk in enumerate(byte_chunks(text, recipe.max_bytes)):
            if len(chunk) <= recipe.min_bytes:
                continue
            neg = bytes(255 - b for b in _key(recipe.seed, i, j))
            if len(heap) < recipe.n:
                heapq.heappush(heap, (neg, chunk))
            elif neg > heap[0][0]:
                heapq.heapreplace(heap, (neg, chunk))
            seen += 1
            if limit is not None and seen >= limit:
                break
        if limit is not None and seen >= limit:
            break
    if docs == 0:
        raise ValueError(f"{recipe.dataset} ({recipe.split}) has no rows; pass a dataset with documents")
    if seen < recipe.n:
        raise ValueError(
            f"{recipe.dataset} ({recipe.split}) gives {seen} chunk(s) longer than {recipe.min_bytes} bytes "
            f"in {docs} document(s), fewer than n={recipe.n}; lower --n or --min-bytes, or use a larger split"
        )
    texts = [c.decode("utf-8") for _, c in sorted(heap, reverse=True)]
    return texts, {"documents_read": docs, "chunks_seen": seen}


def _documents(recipe: ProbeRecipe, cache_dir: str | None):
    """The text of each row of the recipe's split, checked (a missing field or a non-string: one line)."""
    rows = _load(recipe, cache_dir)
    for i, row in enumerate(rows):
        if recipe.text_field not in row:
            raise ValueError(
                f"{recipe.dataset} has no field {recipe.text_field!r} (fields: {', '.join(row)}); pass "
                "--text-field"
            )
        text = row[recipe.text_field]
        if not isinstance(text, str):
            raise ValueError(
                f"{recipe.dataset} row {i}: field {recipe.text_field!r} holds {type(text).__name__}, not a "
                "string; pick a text column with --text-field"
            )
        yield text


def _load(recipe: ProbeRecipe, cache_dir: str | None):
    """The split as `datasets` rows (streamed with recipe.streaming)."""
    import datasets

    path = Path(recipe.dataset).expanduser()
    kw = {"split": recipe.split, "streaming": recipe.streaming, "cache_dir": cache_dir}
    try:
        if path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if recipe.split not in ds:
                    raise ValueError(
                        f"{path} has no split {recipe.split!r} (splits: {', '.join(ds)}); pass --split"
                    )
                ds = ds[recipe.split]
            return ds.to_iterable_dataset() if recipe.streaming else ds
        if path.is_file():
            suffix = path.suffix if path.suffix != ".gz" else Path(path.stem).suffix
            if suffix not in _BUILDERS:
                raise ValueError(
                    f"{path}: unsupported file type; use {', '.join(_BUILDERS)} (or .gz of them)"
                )
            extra = {"sample_by": "document"} if suffix == ".txt" else {}
            kw["split"] = "train"  # a single file is one split named train
            return datasets.load_dataset(_BUILDERS[suffix], data_files=str(path), **kw, **extra)
        if path.is_dir():
            return datasets.load_dataset(str(path), **kw)
        return datasets.load_dataset(recipe.dataset, recipe.name, **kw)
    except StopIteration:  # datasets' json reader on an empty file
        raise ValueError(f"{recipe.dataset} has no rows; pass a dataset with documents") from None
    except datasets.exceptions.DatasetGenerationError as e:  # e.g. an empty parquet file
        cause = " ".join(str(e.__cause__ or e).split())[:200]
        raise ValueError(
            f"cannot read {recipe.dataset} ({cause}); check that it holds rows of text"
        ) from None
    except (FileNotFoundError, ConnectionError, datasets.exceptions.DatasetNotFoundError) as e:
        raise FileNotFoundError(
            f"no dataset {recipe.dataset!r}: not a local file or folder, and the hub cannot provide it "
            f"({' '.join(str(e).split())[:200]})"
        ) from None


def build_probe(recipe: ProbeRecipe | None = None, *, cache_dir: str | None = None, **fields) -> ProbeSet:
    """A ProbeSet made with the paper's recipe (module docstring), the recipe and its source recorded.

    Args:
        recipe: the settings; or give its fields as keywords (``build_probe(dataset="pile.jsonl", n=100)``).
        cache_dir: the `datasets` cache (default its own).

    Raises:
        FileNotFoundError: no such dataset.
        ValueError: no such field or split, an empty dataset, fewer than n chunks, texts that are not strings.
    """
    recipe = recipe or ProbeRecipe(**fields)
    texts, counts = sample_chunks(_documents(recipe, cache_dir), recipe)
    source = Path(recipe.dataset).expanduser()
    record = {
        "recipe": RECIPE,
        **asdict(recipe),
        "pool": recipe.pool_size,
        **counts,
        "local": source.exists(),
        "sampler": "n smallest blake2b('seed:doc:chunk') keys, in key order",
    }
    label = source.stem if source.exists() else recipe.dataset.replace("/", "-")
    return ProbeSet(texts, name=f"{label}-{recipe.split}-n{recipe.n}-seed{recipe.seed}", recipe=record)


def probe_parser():
    """The jsonargparse parser of `trajlab probe build`: each ProbeRecipe field a flag; --out, --cache-dir."""
    from trajlab._args import tool_parser

    p = tool_parser(
        "trajlab probe build",
        "Build a probe set from a `datasets` corpus with the paper's recipe.",
        "Example: trajlab probe build --dataset pile_val.jsonl --n 10000 --out probe.json",
    )
    p.add_class_arguments(ProbeRecipe, nested_key=None, as_group=False)
    p.add_argument("--out", type=str, required=True, help="the probe file to write (JSON, atomically)")
    p.add_argument(
        "--cache_dir", type=str | None, default=None, help="the `datasets` cache (default its own)"
    )
    return p


def probe_main(argv: list[str]) -> int:
    """`trajlab probe build ...`: returns 0; bad input raises ValueError (trajlab.cli prints it in one line)."""
    from trajlab._args import parse_tool_args

    if not argv or argv[0] != "build":
        raise ValueError(
            "usage: trajlab probe build --dataset NAME_OR_PATH --out probe.json [options] (--help: all)"
        )
    args = parse_tool_args(probe_parser(), argv[1:])
    fields = {k: args[k] for k in ProbeRecipe.__dataclass_fields__}
    probe = build_probe(ProbeRecipe(**fields), cache_dir=args.cache_dir)
    out = probe.to_json(args.out)
    rec = probe.recipe
    print(
        f"{out}: {len(probe)} texts ({rec['chunks_seen']} chunks > {rec['min_bytes']} bytes in "
        f"{rec['documents_read']} documents; mean {probe.n_bytes.mean():.1f} bytes), fingerprint "
        f"{probe.fingerprint[:12]}"
    )
    return 0
