"""``python -m amf predict PATH... --output preds.csv``: score images and stacks outside the container.

Accepts PNG, JPEG, TIFF (multi-page stacks too) and .mha files, and folders searched recursively. Writes
one row per patch: ``path, page, p_atypical, class``, with the same ensemble, views and threshold as the
container, so its numbers are the container's numbers.

Same guarantees as the container (docs/failure-modes.md): weights verified first (before any input is
read), then the output folder, then every file decoded once, all before any model work, so a bad file
fails the run in seconds, not at the end. One file that fails fails the run with a one-line error naming
the file and page, and then no CSV is written (an existing one is left as it was). With ``--skip-bad``
the bad files are listed instead in ``<output stem>.bad.tsv`` (path, reason) and the rest is predicted.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import sys
from pathlib import Path

from tqdm import tqdm

from amf.challenge import DEFAULT_WEIGHTS, check_output_dir
from amf.devices import CHOICES, device_arg
from amf.errors import InputError, OutputError
from amf.io import IMAGE_SUFFIXES, find_images, iter_patches, patch_digest
from amf.files import atomic_write_bytes
from amf.progress import Progress, interactive
from amf.weights import read_manifest

COLUMNS = ("path", "page", "p_atypical", "class")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, help="image files, stacks or folders")
    parser.add_argument("--output", type=Path, required=True, help="CSV to write")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS,
                        help=f"exported weights folder (default: $AMF_WEIGHTS, else the checkout's weights/: "
                             f"{DEFAULT_WEIGHTS})")
    parser.add_argument("--views", type=_positive_int, default=None, help="test-time views (default: the manifest's)")
    parser.add_argument("--device", type=device_arg, default="auto",
                        help=f"{CHOICES} (default auto: CUDA when it starts, else the CPU)")
    parser.add_argument("--chunk-size", type=_positive_int, default=64, help="patches per forward pass")
    parser.add_argument("--skip-bad", action="store_true",
                        help="predict the readable files and list the unreadable ones in <output stem>.bad.tsv")


def run(args: argparse.Namespace) -> int:
    manifest = read_manifest(args.weights)  # weights first, without torch: fails in about a second
    output = Path(args.output)
    if output.is_dir():
        raise OutputError(f"--output {output} is a folder; name the CSV file to write")
    check_output_dir(output.parent)
    files = find_images(args.paths)
    if not files:
        raise InputError(f"no image files in {', '.join(map(str, args.paths))} (accepted: "
                         f"{', '.join(IMAGE_SUFFIXES)}, any case)")
    files, counts, bad = check_files(files, skip_bad=getattr(args, "skip_bad", False))
    if bad:
        output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(bad_list(output), "".join(f"{p}\t{why}\n" for p, why in bad).encode())
    if not files:
        raise InputError(f"none of the {len(bad)} input file(s) could be read; see {bad_list(output)}"
                         if bad else "no readable image files")
    # torch and the engine load only now, once every input file has decoded: a bad file fails in a second
    import torch

    from amf.engine import start_device
    from amf.loading import load_engine
    from amf.tta import TTAConfig

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {args.device}: no CUDA device is available here")
    device, note = start_device(None if args.device == "auto" else args.device)
    if note is not None:  # information, not an error: the run goes on, on the CPU
        print(f"amf predict: {note}", file=sys.stderr)
    tta = None if args.views is None else dataclasses.replace(TTAConfig(**manifest["tta"]), views=args.views)
    loaded = load_engine(args.weights, device=device, manifest=manifest, chunk_size=args.chunk_size, tta=tta)
    engine = loaded.engine
    print(f"amf predict: {len(files)} file(s), {sum(counts)} patch(es); {engine.n_members} member(s) x "
          f"{engine.tta.views} view(s) on {device} ({engine.strategy})", file=sys.stderr)
    keys: list[tuple[Path, int]] = []
    trained_on = set(manifest.get("data", {}).get("patch_sha256") or ())
    seen_in_training: list[bool] = []

    progress = Progress(sum(counts), "amf predict", "patch")

    def patches():
        """All pages of all files as one stream, so small files still fill large batches; the engine pulls
        them a chunk at a time, so the count follows the model's work."""
        for path in files:
            for page, patch in enumerate(iter_patches(path)):
                keys.append((path, page))
                seen_in_training.append(patch_digest(patch) in trained_on)
                progress.update()
                yield patch

    try:
        probs = engine.predict_proba(patches())
    finally:
        progress.close()
    if len(keys) != sum(counts) or probs.shape != (len(keys),):
        raise InputError(f"{len(keys)} pages decoded but {sum(counts)} counted: refusing a partial result")
    threshold = loaded.threshold
    if sum(seen_in_training):
        print(f"amf predict: warning: {sum(seen_in_training)} of {len(keys)} patches are among the weights' training "
              "patches (same pixels): scores on them are in-sample, not an estimate for new data", file=sys.stderr)
    elif not trained_on:
        print("amf predict: note: these weights do not list their training patches; in-sample patches cannot be "
              "recognised", file=sys.stderr)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for (path, page), p in zip(keys, probs.tolist(), strict=True):
        writer.writerow((str(path), page, repr(p), "atypical" if p >= threshold else "normal"))
    made = [d for d in reversed([output.parent, *output.parent.parents]) if not d.exists()]
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(output, buf.getvalue().encode())
    except OSError as exc:
        for d in reversed(made):
            try:
                d.rmdir()
            except OSError:
                pass
        raise OutputError(f"cannot write {output}: {exc.strerror or exc}") from exc
    print(f"{len(keys)} patch{'es' if len(keys) != 1 else ''} from {len(files)} file{'s' if len(files) != 1 else ''}"
          f" -> {output}")
    if bad:
        print(f"amf predict: {len(bad)} unreadable file(s) skipped, listed in {bad_list(output)}", file=sys.stderr)
    return 0


def check_files(files: list[Path], skip_bad: bool = False) -> tuple[list[Path], list[int], list[tuple[Path, str]]]:
    """Decode every file once before any model work: ``(readable files, their page counts, bad files)``.

    Structure alone (:func:`amf.io.count_pages`) misses a PNG whose pixel data is cut short; decoding
    every page (the same reader checks the structure on the way) costs little next to the model. The pages
    are decoded again when they are predicted, so memory stays bounded however many files there are.
    Without ``skip_bad`` the first bad file raises its one-line :class:`InputError`.
    """
    good, counts, bad = [], [], []
    for path in tqdm(files, desc="checking inputs", unit="file", leave=False, disable=not interactive()):
        try:
            n = sum(1 for _ in iter_patches(path))
        except InputError as exc:
            if not skip_bad:
                raise
            bad.append((path, " ".join(str(exc).split())))
            continue
        good.append(path)
        counts.append(n)
    return good, counts, bad


def bad_list(output: Path) -> Path:
    """Where ``--skip-bad`` lists the files it skipped: beside the CSV, ``<stem>.bad.tsv``."""
    return output.with_name(output.stem + ".bad.tsv")
