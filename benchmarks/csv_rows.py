"""Not a script: the results CSV that the resumable studies (scaling.py, latent_shapes.py,
latent_vs_pixel.py) share. Each finished run is appended as one row, so an interrupted study,
or two parts of one running at once, lose nothing, and a study skips the runs already there."""

from __future__ import annotations

import csv
from pathlib import Path


def read_rows(path: str | Path) -> list[dict]:
    """The rows of the CSV as dicts of strings ([] if there is none yet)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def append_row(path: str | Path, fields: list[str], row: dict) -> None:
    """Add one row, writing the header first if the file is new."""
    path = Path(path)
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        if new:
            writer.writeheader()
        writer.writerow(row)
