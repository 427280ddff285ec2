"""Reading a run's Lightning CSV log (metrics.csv): training curves for the report and the demo's summary."""

from __future__ import annotations

import csv
import os
from pathlib import Path


def read_csv_log(path: str | os.PathLike, columns: dict[str, str]) -> dict[str, list[tuple[int, float]]]:
    """{key: [(step, value), ...]} for each `columns` {key: CSV column} from a Lightning CSV log (metrics.csv).

    Rows where a column is empty are skipped for that column; a missing file gives empty lists.
    """
    out: dict[str, list[tuple[int, float]]] = {key: [] for key in columns}
    path = Path(path)
    if not path.exists():
        return out
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for key, col in columns.items():
                if row.get(col):
                    out[key].append((int(row["step"]), float(row[col])))
    return out
