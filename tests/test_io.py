"""trajlab._io: the one atomic write and the one CSV-log reader."""

from __future__ import annotations

import hashlib

import pytest

from trajlab._io import read_csv_log, write_atomic


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


def test_read_csv_log(tmp_path):
    p = tmp_path / "metrics.csv"
    p.write_text("epoch,step,train/loss,val/loss\n0,9,5.5,\n0,19,4.25,\n0,19,,4.5\n")
    got = read_csv_log(p, {"train": "train/loss", "val": "val/loss"})
    assert got == {"train": [(9, 5.5), (19, 4.25)], "val": [(19, 4.5)]}
    assert read_csv_log(tmp_path / "missing.csv", {"val": "val/loss"}) == {"val": []}
