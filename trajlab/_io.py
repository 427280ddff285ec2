"""The one atomic file write every stage shares (stores, probes, figures, tables, HF exports).

Standard library only (no numpy, no torch), so the torch-free analysis package may use it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (POSIX: fsync the directory)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike, data: str | bytes | Callable[[str], None], *, durable: bool = False,
                 sha256: bool = False) -> str | None:
    """Write `path` all or nothing: a unique temporary file in the same folder, then one rename.

    Args:
        path: the file to write; its folder must exist.
        data: text (UTF-8), bytes, or a function that writes the temporary file given its path.
        durable: fsync the file and the folder (crash-safe stores), not only atomic.
        sha256: return the hex sha256 of the bytes written.

    Returns:
        The sha256 when asked, else None. On any error the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if callable(data):
            os.close(fd)
            data(tmp)
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
        digest = None
        if durable or sha256:
            with open(tmp, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest() if sha256 else None
                if durable:
                    os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)
    return digest
