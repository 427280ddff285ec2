"""trajlab._io: the one atomic write."""

from __future__ import annotations

import hashlib

import pytest

from trajlab._io import write_atomic


def test_write_atomic_text_bytes_and_writer(tmp_path):
    p = tmp_path / "a.txt"
    assert write_atomic(p, "héllo\n") is None
    assert p.read_bytes() == "héllo\n".encode()
    digest = write_atomic(p, b"\x00\x01", durable=True, sha256=True)
    assert p.read_bytes() == b"\x00\x01" and digest == hashlib.sha256(b"\x00\x01").hexdigest()
    write_atomic(p, lambda tmp: open(tmp, "w").write("from a writer"))
    assert p.read_text() == "from a writer"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.txt"]  # no temporary file left


def test_write_atomic_failure_keeps_the_old_file(tmp_path):
    p = tmp_path / "keep.json"
    p.write_text("old")

    def broken(tmp: str) -> None:
        open(tmp, "w").write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(p, broken)
    assert p.read_text() == "old" and [x.name for x in tmp_path.iterdir()] == ["keep.json"]

