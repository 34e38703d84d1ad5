"""``python -m amf predict PATH... --output preds.csv``: score images and stacks outside the container.

Accepts PNG, JPEG, TIFF (multi-page stacks too) and .mha files, and folders searched recursively. Writes
one row per patch: ``path, page, p_atypical, class`` (:mod:`amf.inference.predict`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from amf.devices import CHOICES, device_arg
from amf.inference.weights import default_weights


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def _threshold(text: str) -> float | str:
    if text == "otsu":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither 'otsu' nor a number") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not a cut between 0 and 1")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "examples:\n"
        "  amf predict patches/ --output preds.csv            # every image under patches/, one row per patch\n"
        "  amf predict stack.tiff a.png --output preds.jsonl  # JSON lines; .json for one JSON list\n"
        "  amf predict patches/ --output - | head             # CSV on stdout\n"
        "  amf predict lab/ --output p.csv --threshold otsu   # the cut chosen on this lab's own scores\n"
        "  amf predict lab/ --output p.csv --threads 1        # one thread (faster on a busy machine)\n"
    )
    parser.add_argument("paths", nargs="+", type=Path, help="image files, stacks or folders")
    parser.add_argument("--output", type=Path, required=True, help="CSV to write")
    parser.add_argument("--weights", type=Path, default=default_weights(),
                        help=f"exported weights folder (default: $AMF_WEIGHTS, else the checkout's weights/: "
                             f"{default_weights()})")
    parser.add_argument("--views", type=_positive_int, default=None, help="test-time views (default: the manifest's)")
    parser.add_argument("--device", type=device_arg, default="auto",
                        help=f"{CHOICES} (default auto: CUDA when it starts, else the CPU)")
    parser.add_argument("--chunk-size", type=_positive_int, default=64, help="patches per forward pass")
    parser.add_argument("--bf16", action="store_true",
                        help="bf16 autocast: faster on CPUs with bf16 units, scores move by up to about 2e-2; its "
                             "measured speed and effect on accuracy are in docs/benchmark.md (default fp32, as the "
                             "container)")
    parser.add_argument("--threshold", type=_threshold, default=None, metavar="otsu|CUT",
                        help="the cut of the class column (default: the weights' own): a number, or 'otsu', "
                             "Otsu's cut on these patches' own scores, for many figures of one lab (it warns below "
                             "64; docs/results.md, \"The threshold that transfers\")")
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help="CPU threads for the model (default: torch's, one per core)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="predict the readable files and list the unreadable ones in <output stem>.bad.tsv")


def run(args: argparse.Namespace) -> int:
    from amf.inference.api import RunSettings
    from amf.inference.predict import predict_files

    settings = RunSettings(views=args.views, threads=args.threads, bf16=args.bf16, chunk_size=args.chunk_size)
    predict_files(args.paths, args.output, args.weights, device=args.device, settings=settings,
                  skip_bad=args.skip_bad, threshold=args.threshold)
    return 0
