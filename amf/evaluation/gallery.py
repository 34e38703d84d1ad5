"""The error gallery: the figures a model got wrong, shown, because pathologists would rather look than read.

For each domain, two sections of tiles: the misclassified figures, most confident errors first (farthest
from the threshold), and the correctly classified figures nearest the threshold (the calls that could have
gone either way). Each tile holds the patch at its true size (128 px) and enlarged 2x, its P(atypical), the
threshold, the label and the call. Bounded on thousands of figures: at most ``errors`` and ``near`` tiles per
domain (12 and 6: a sheet of about 1.3 MB, lossless so the stain's colours stay true), one PNG sheet per
domain, and ``gallery.md`` linking the sheets with a table of every figure shown. Only the figures shown are
read from disk.

Drawn with Pillow at fixed pixel sizes (no plot scaling): what the sheet shows is what the patch holds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PATCH = 128
ZOOM = 2
GAP = 8
CAPTION = 66
COLUMNS = 3
#: Tile borders: an error (red) and a correct call near the threshold (grey).
ERROR_COLOUR, NEAR_COLOUR = (200, 30, 30), (150, 150, 150)


def select(labels: np.ndarray, calls: np.ndarray, scores: np.ndarray, thresholds: np.ndarray,
           errors: int, near: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the errors, most confident first, and of the correct calls nearest the threshold."""
    distance = np.abs(scores - thresholds)
    wrong = np.flatnonzero(labels != calls)
    right = np.flatnonzero(labels == calls)
    return (wrong[np.argsort(-distance[wrong], kind="stable")][:errors],
            right[np.argsort(distance[right], kind="stable")][:near])


def infer_threshold(scores: np.ndarray, calls: np.ndarray, known: tuple[float, ...] = ()) -> float | None:
    """The cut the calls follow: the first of the ``known`` cuts (the weights' threshold) that explains them, else
    the lowest score called atypical; None when no single cut explains them.

    >>> infer_threshold(np.array([0.2, 0.41, 0.6]), np.array([0, 1, 1]), known=(0.4025,))
    0.4025
    >>> infer_threshold(np.array([0.2, 0.41, 0.6]), np.array([0, 1, 1]))
    0.41
    """
    atypical, normal = scores[calls == 1], scores[calls == 0]
    if not atypical.size:
        return None
    if normal.size and normal.max() >= atypical.min():
        return None
    low = normal.max() if normal.size else -np.inf
    return next((float(c) for c in known if low < c <= atypical.min()), float(atypical.min()))


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _tile(patch: np.ndarray | None, lines: list[str], colour: tuple[int, int, int]):
    from PIL import Image, ImageDraw

    width, height = PATCH + GAP + PATCH * ZOOM + 2 * GAP, PATCH * ZOOM + CAPTION + 2 * GAP
    tile = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(tile)
    draw.rectangle([0, 0, width - 1, height - 1], outline=colour, width=3)
    if patch is None:
        draw.text((GAP, GAP), "image not readable here", fill="black", font=_font(14))
    else:
        image = Image.fromarray(np.ascontiguousarray(patch, dtype=np.uint8))
        tile.paste(image, (GAP, GAP + (PATCH * ZOOM - PATCH) // 2))
        tile.paste(image.resize((PATCH * ZOOM, PATCH * ZOOM), Image.Resampling.NEAREST), (GAP + PATCH + GAP, GAP))
    for k, line in enumerate(lines):
        draw.text((GAP, GAP + PATCH * ZOOM + 6 + 19 * k), line, fill="black", font=_font(15))
    return tile


def _sheet(title: str, sections: list[tuple[str, list]]):
    from PIL import Image, ImageDraw

    tiles = [t for _, ts in sections for t in ts]
    tw, th = (tiles[0].size if tiles else (PATCH * 3, PATCH))
    header = 40
    rows = sum(max(1, math.ceil(len(ts) / COLUMNS)) for _, ts in sections)
    sheet = Image.new("RGB", (COLUMNS * (tw + GAP) + GAP, header + len(sections) * header + rows * (th + GAP)),
                      "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((GAP, 8), title, fill="black", font=_font(22))
    y = header
    for name, ts in sections:
        draw.text((GAP, y + 10), name, fill="black", font=_font(18))
        y += header
        if not ts:
            draw.text((GAP, y + 10), "none", fill="black", font=_font(15))
        for k, t in enumerate(ts):
            sheet.paste(t, (GAP + (k % COLUMNS) * (tw + GAP), y + (k // COLUMNS) * (th + GAP)))
        y += max(1, math.ceil(len(ts) / COLUMNS)) * (th + GAP)
    return sheet


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "domain"


def _caption(name: str, label: int, call: int, score: float, threshold: float | None) -> list[str]:
    cls = ("normal", "atypical")
    cut = "n/a" if threshold is None or math.isnan(threshold) else f"{threshold:.3f}"
    short = name if len(name) <= 44 else "..." + name[-41:]
    return [f"P(atypical) {score:.3f}   threshold {cut}", f"label {cls[label]}, called {cls[call]}", short]


@dataclass(frozen=True)
class Calls:
    """The figures a gallery picks from, one entry each: ``names`` (what to call it: its image path, and page),
    true ``labels`` and ``calls`` (0 normal, 1 atypical), ``scores`` (P(atypical)), ``domains``, and the
    ``thresholds`` each was classified at (NaN where unknown)."""

    names: list[str]
    labels: np.ndarray
    calls: np.ndarray
    scores: np.ndarray
    domains: np.ndarray
    thresholds: np.ndarray


def write_gallery(folder: Path, figures: Calls, load: Callable[[int], np.ndarray | None], errors: int = 12,
                  near: int = 6, title: str = "Error gallery") -> Path:
    """One sheet per domain and ``gallery.md`` into ``folder``; returns gallery.md. ``load(i)``: figure ``i``'s
    patch as ``(128, 128, 3)`` uint8, or None; only the figures shown are read."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = figures.names
    labels, calls = np.asarray(figures.labels, dtype=np.int64), np.asarray(figures.calls, dtype=np.int64)
    scores = np.asarray(figures.scores, dtype=np.float64)
    thresholds = np.asarray(figures.thresholds, dtype=np.float64)
    domains = np.asarray(figures.domains).astype(str)
    cuts = np.where(np.isnan(thresholds), 0.5, thresholds)
    lines = [f"# {title}", "",
             f"Per domain: the misclassified figures, most confident errors first (at most {errors}), and the correct "
             f"calls nearest the threshold (at most {near}). Each tile shows the patch at its true size "
             f"({PATCH} px) and enlarged {ZOOM}x. Red: an error; grey: a correct call near the threshold.", ""]
    for domain in sorted(set(domains.tolist())):
        idx = np.flatnonzero(domains == domain)
        wrong, close = select(labels[idx], calls[idx], scores[idx], cuts[idx], errors, near)
        wrong, close = idx[wrong], idx[close]
        n_wrong = int(np.sum(labels[idx] != calls[idx]))

        def tiles(chosen: np.ndarray, colour) -> list:
            return [_tile(load(int(i)), _caption(names[i], labels[i], calls[i], scores[i], thresholds[i]), colour)
                    for i in chosen]

        sheet = _sheet(f"{domain}: {n_wrong} of {idx.size} figures misclassified", [
            (f"errors, most confident first ({len(wrong)} of {n_wrong})", tiles(wrong, ERROR_COLOUR)),
            (f"correct calls nearest the threshold ({len(close)})", tiles(close, NEAR_COLOUR))])
        file = f"gallery_{_slug(domain)}.png"
        sheet.save(folder / file, optimize=True)
        lines += [f"## {domain}", "", f"{n_wrong} of {idx.size} figures misclassified.", "", f"![{domain}]({file})", "",
                  "| shown | figure | label | called | P(atypical) | threshold |", "|---|---|---|---|---|---|"]
        for kind, chosen in (("error", wrong), ("near the threshold", close)):
            for i in chosen:
                cut = "n/a" if np.isnan(thresholds[i]) else f"{thresholds[i]:.4f}"
                lines.append(f"| {kind} | {names[i]} | {('normal', 'atypical')[labels[i]]} "
                             f"| {('normal', 'atypical')[calls[i]]} | {scores[i]:.4f} | {cut} |")
        lines.append("")
    path = folder / "gallery.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
