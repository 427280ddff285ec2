"""trajlab.report.csv_log: a Lightning CSV log read back column by column."""

from __future__ import annotations

from trajlab.report.csv_log import read_csv_log


def test_read_csv_log(tmp_path):
    p = tmp_path / "metrics.csv"
    p.write_text("epoch,step,train/loss,val/loss\n0,9,5.5,\n0,19,4.25,\n0,19,,4.5\n")
    got = read_csv_log(p, {"train": "train/loss", "val": "val/loss"})
    assert got == {"train": [(9, 5.5), (19, 4.25)], "val": [(19, 4.5)]}
    assert read_csv_log(tmp_path / "missing.csv", {"val": "val/loss"}) == {"val": []}
