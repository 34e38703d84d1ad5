"""``python -m amf predict PATH... --output preds.csv``: score images and stacks outside the container.

Accepts PNG, JPEG, TIFF (multi-page stacks too) and .mha files, and folders searched recursively. Writes
one row per patch: ``path, page, p_atypical, class``, with the same ensemble, views and threshold as the
container, so its numbers are the container's numbers.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import sys
from pathlib import Path

from tqdm import tqdm

from amf.challenge import DEFAULT_WEIGHTS
from amf.engine import Engine
from amf.errors import InputError
from amf.io import find_images, iter_pages, to_patch
from amf.weights import atomic_write_bytes, load_ensemble

COLUMNS = ("path", "page", "p_atypical", "class")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, help="image files, stacks or folders")
    parser.add_argument("--output", type=Path, required=True, help="CSV to write")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="exported weights folder")
    parser.add_argument("--views", type=int, default=None, help="test-time views (default: the manifest's)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--chunk-size", type=int, default=64, help="patches per forward pass")


def run(args: argparse.Namespace) -> int:
    ensemble = load_ensemble(args.weights)
    tta = ensemble.tta if args.views is None else dataclasses.replace(ensemble.tta, views=args.views)
    engine = Engine(ensemble.members, tta, device=args.device, chunk_size=args.chunk_size)
    files = find_images(args.paths)
    if not files:
        raise InputError(f"no image files in {', '.join(map(str, args.paths))}")
    keys: list[tuple[Path, int]] = []

    def patches():
        """All pages of all files as one stream, so small files still fill large batches."""
        for path in tqdm(files, desc="predict", unit="file", disable=not sys.stderr.isatty()):
            for page, raw in enumerate(iter_pages(path)):
                keys.append((path, page))
                yield to_patch(raw)

    probs = engine.predict_proba(patches())
    threshold = ensemble.threshold.value
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for (path, page), p in zip(keys, probs.tolist(), strict=True):
        writer.writerow((str(path), page, repr(p), "atypical" if p >= threshold else "normal"))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.output, buf.getvalue().encode())
    print(f"{len(keys)} patches from {len(files)} files -> {args.output}")
    return 0
