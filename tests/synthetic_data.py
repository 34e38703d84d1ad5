"""Labelled patch sets made on the fly, for training tests that must not depend on ../shared/data."""

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def _patches(root: Path, folder: str, n: int, seed: int) -> list[tuple[str, int]]:
    """``n`` 128 px patches under ``root/folder``: every third is atypical (a darker blob). ``(path, label)``."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        y = int(i % 3 == 0)
        img = rng.integers(150, 230, (128, 128, 3)).astype(np.uint8)
        img[48:80, 48:80] = (60, 30, 90) if y else (120, 60, 140)
        p = root / folder / f"{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(p)
        out.append((f"{folder}/{i}.png", y))
    return out


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def amibr_style_dataset(root: Path, n: int = 24) -> Path:
    """``n`` patches in AMi-Br format: 3 scanners, 12 slides."""
    rows = [[f"{i % 12:03d}.tiff", path, str(bool(y)), f"scanner{i % 3}"]
            for i, (path, y) in enumerate(_patches(root, "patches", n, seed=0))]
    return write_csv(root / "labels.csv", ["slide", "patch", "majority_atypical", "scanner"], rows)


def midog25_style_dataset(root: Path, n: int = 12) -> Path:
    """``n`` patches in MIDOG 2025 format (``image_id``, ``majority`` AMF/NMF, ``Tumor``, ``filename``): 2 tumour
    types, 4 source images."""
    rows = [[path, f"{i % 4}.tiff", "AMF" if y else "NMF", f"tumour{i % 2}"]
            for i, (path, y) in enumerate(_patches(root, "images", n, seed=1))]
    return write_csv(root / "midog25.csv", ["image_id", "filename", "majority", "Tumor"], rows)
