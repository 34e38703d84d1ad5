"""The small labels and predictions CSVs the flat-mode evaluation tests write (test_evaluation_flat, test_newcomer)."""

from __future__ import annotations

import csv
from pathlib import Path


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def amibr_labels(folder: Path) -> Path:
    return write_csv(
        folder / "labels.csv",
        ["slide", "majority_atypical", "scanner", "patch"],
        [
            ["001.tiff", "True", "Hamamatsu XR", "patches/atypical/a1.png"],
            ["001.tiff", "False", "Hamamatsu XR", "patches/normal/n1.png"],
            ["101.tiff", "False", "Aperio CS2", "patches/normal/n2.png"],
            ["101.tiff", "True", "Aperio CS2", "patches/atypical/a2.png"],
        ],
    )


PREDICTED = {
    "a1.png": (0.8, "atypical"),
    "n1.png": (0.3, "normal"),
    "n2.png": (0.6, "atypical"),
    "a2.png": (0.4, "normal"),
}


def predictions(path: Path, paths: list[str], **overrides) -> Path:
    rows = []
    for p in paths:
        score, cls = overrides[Path(p).name] if Path(p).name in overrides else PREDICTED[Path(p).name]
        rows.append([p, 0, score, cls])
    return write_csv(path, ["path", "page", "p_atypical", "class"], rows)
