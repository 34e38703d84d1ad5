"""Labelled patch sets made on the fly, for training tests that must not depend on ../shared/data."""

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def amibr_style_dataset(root: Path, n: int = 24) -> Path:
    """``n`` 128 px patches in AMi-Br format: 3 scanners, 12 slides; every third is atypical (a darker blob)."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        y = int(i % 3 == 0)
        img = rng.integers(150, 230, (128, 128, 3)).astype(np.uint8)
        img[48:80, 48:80] = (60, 30, 90) if y else (120, 60, 140)
        p = root / "patches" / f"{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(p)
        rows.append([f"{i % 12:03d}.tiff", f"patches/{i}.png", str(bool(y)), f"scanner{i % 3}"])
    path = root / "labels.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["slide", "patch", "majority_atypical", "scanner"])
        w.writerows(rows)
    return path


def midog25_style_dataset(root: Path, n: int = 12) -> Path:
    """``n`` 128 px patches in MIDOG 2025 format (``image_id``, ``majority`` AMF/NMF, ``Tumor``, ``filename``)."""
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n):
        y = int(i % 3 == 0)
        img = rng.integers(150, 230, (128, 128, 3)).astype(np.uint8)
        img[40:88, 40:88] = (70, 40, 100) if y else (130, 70, 150)
        p = root / "images" / f"{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(p)
        rows.append([f"images/{i}.png", f"{i % 4}.tiff", "AMF" if y else "NMF", f"tumour{i % 2}"])
    path = root / "midog25.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_id", "filename", "majority", "Tumor"])
        w.writerows(rows)
    return path
