"""``python -m amf evaluate``: the official MIDOG 2025 Track 2 metrics, plus a report.

Two input modes:

- platform layout (default): ``--input DIR`` holds ``predictions.json`` and
  ``<pk>/output/multiple-mitotic-figure-classification.json`` per job, ``--ground-truth FILE`` the
  ``[{"image", "labels", "tumordomains"}]`` list. The defaults are the paths Grand Challenge mounts,
  so the bare command is an evaluation container's entrypoint.
- flat CSVs: ``--predictions CSV`` (as written by ``amf predict``) with ``--labels CSV`` (AMi-Br or
  MIDOG25 style, see :mod:`amf.evaluation.flat`), to evaluate a dataset without the platform layout.
  The two modes exclude each other.

``--output`` receives ``metrics.json`` (official keys, plus ``extra``) only when everything succeeded;
``--report DIR`` adds plots, a per-domain table and ``report.md``. A short summary goes to stdout.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from amf.errors import EvaluationError
from amf.evaluation.analysis import evaluate
from amf.evaluation.flat import TrainingPatches, read_flat
from amf.evaluation.output import metrics_document, write_json_atomic
from amf.evaluation.platform import DEFAULT_GROUND_TRUTH, DEFAULT_INPUT, read_platform
from amf.evaluation.summary import WARNING, summary
from amf.inference.manifest import MANIFEST
from amf.inference.weights import default_weights, read_manifest

DEFAULT_OUTPUT = Path("/output/metrics.json")


def figure_loader(figures, flat_mode: bool, stacks: Path | None):
    """Figure index -> its patch, for the error gallery: flat mode reads the predicted file's page; the
    platform layout reads the stack from ``--stacks``. None when the images are not at hand."""
    if not figures.where or (not flat_mode and stacks is None):
        return None
    from amf.errors import AmfError
    from amf.inference.io import read_patches

    def load(i: int):
        path, page = figures.where[i]
        try:
            return read_patches(Path(path) if flat_mode else Path(stacks) / path)[page]
        except (AmfError, OSError, IndexError):
            return None

    return load


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "The official MIDOG 2025 Track 2 metrics, exactly as the organisers' evaluate.py\n"
        "computes them, plus bootstrap 95% CIs, the balanced accuracy at the best threshold\n"
        "and an optional report.\n\n"
        "Reads either the Grand-Challenge evaluation layout (--input, --ground-truth; their\n"
        "defaults make this command an evaluation container's entrypoint) or, instead, a\n"
        "flat predictions CSV from 'amf predict' with a labels CSV (--predictions, --labels).\n"
        "metrics.json is written only when everything succeeded."
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "examples:\n"
        "  python -m amf evaluate                      # in an evaluation container\n"
        "  python -m amf evaluate --input eval-input --ground-truth ground_truth.json \\\n"
        "      --output out/metrics.json --report out/report\n"
        "  python -m amf evaluate --predictions preds.csv --labels labels.csv --output m.json\n"
    )
    platform = parser.add_argument_group("platform layout (default mode)")
    platform.add_argument("--input", type=Path, metavar="DIR",
                          help=f"predictions.json and <pk>/output/... per job (default: {DEFAULT_INPUT})")
    platform.add_argument("--ground-truth", type=Path, metavar="FILE",
                          help=f"ground_truth.json (default: {DEFAULT_GROUND_TRUTH})")
    flat = parser.add_argument_group("flat CSVs (instead of the platform layout)")
    flat.add_argument("--predictions", type=Path, metavar="CSV",
                      help="predictions CSV from amf predict: path,page,p_atypical,class")
    flat.add_argument("--labels", type=Path, metavar="CSV",
                      help="labels CSV, AMi-Br (patch, majority_atypical, scanner) or MIDOG25 (image_id, "
                           "majority, Tumor) style; each label is matched to page 0 of its image by resolved "
                           "path (relative to the CSV's folder), else by path suffix, else by unique file name")
    flat.add_argument("--allow-missing", action="store_true",
                      help="score only the labelled figures that have a prediction, and say how many were left out")
    flat.add_argument("--allow-unlabelled", action="store_true",
                      help="score only the predictions that have a label (e.g. a whole folder predicted, labels "
                           "for part of it), and say how many were left out")
    flat.add_argument("--weights", type=Path, metavar="DIR",
                      help="weights folder that made the predictions (default: weights/ beside the amf package, "
                           "if there): count the scored images it was trained on")
    for role in ("image", "label", "domain"):
        flat.add_argument(f"--{role}-column", metavar="NAME", help=f"name of the labels CSV's {role} column "
                          "(default: recognised from the header)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, metavar="FILE",
                        help=f"metrics.json to write, atomically (default: {DEFAULT_OUTPUT})")
    parser.add_argument("--report", type=Path, metavar="DIR",
                        help="also write roc.png, confusion_*.png, domains.csv and report.md here")
    parser.add_argument("--stacks", type=Path, metavar="DIR",
                        help="platform layout: the folder holding the input stacks named in the ground truth, so "
                             "--report can show the figures (flat mode reads the predicted files themselves)")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                        help="bootstrap resamples for the confidence intervals; 0 skips them (default: 1000)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the balanced-accuracy bootstrap (default: 0)")


def run(args: argparse.Namespace) -> int:
    if args.bootstrap < 0:
        raise EvaluationError(f"--bootstrap must be 0 or more, got {args.bootstrap}")
    if Path(args.output).is_dir():  # before any computing
        raise EvaluationError(f"--output {args.output} is a folder; name the metrics JSON file to write, "
                              f"e.g. {Path(args.output) / 'metrics.json'}")
    if args.report is not None and Path(args.report).exists() and not Path(args.report).is_dir():
        raise EvaluationError(f"--report {args.report} is a file; name a folder for the report")
    flat_mode = args.predictions is not None or args.labels is not None
    manifest = None
    if flat_mode:
        if args.predictions is None or args.labels is None:
            raise EvaluationError("--predictions and --labels go together")
        if args.input is not None or args.ground_truth is not None:
            raise EvaluationError("use either --predictions/--labels or --input/--ground-truth, not both")
        columns = {role: getattr(args, f"{role}_column", None) for role in ("image", "label", "domain")}
        weights = getattr(args, "weights", None) or default_weights()
        manifest = read_manifest(weights, verify_files=False) if (Path(weights) / MANIFEST).is_file() else None
        if manifest is None:
            print(f"amf evaluate: note: no weights at {weights}: whether the scored patches are among the weights' "
                  "training patches is not checked (--weights names the folder)", file=sys.stderr)
        figures = read_flat(args.predictions, args.labels, getattr(args, "allow_missing", False), columns,
                            TrainingPatches(Path(weights), manifest.provenance.trained_patches) if manifest else None,
                            allow_unlabelled=getattr(args, "allow_unlabelled", False))
        for note in figures.notes:
            if note.startswith(WARNING):
                print(f"amf evaluate: {note}", file=sys.stderr)
    else:
        if args.input is None and args.ground_truth is None and not Path(DEFAULT_INPUT).exists():
            raise EvaluationError(f"nothing to evaluate: give --input DIR --ground-truth FILE (the platform's layout; "
                                  f"the defaults {DEFAULT_INPUT} and {DEFAULT_GROUND_TRUTH} are the evaluation "
                                  "container's), or --predictions CSV --labels CSV; amf evaluate --help says more")
        figures = read_platform(args.input or DEFAULT_INPUT, args.ground_truth or DEFAULT_GROUND_TRUTH)
    evaluation = evaluate(figures, n_resamples=args.bootstrap, seed=args.seed)
    print(summary(evaluation))
    if args.report is not None:
        from amf.evaluation.report import write_report  # matplotlib only when a report is asked for

        hint = "No error gallery: give --stacks DIR, the folder of the input stacks, to see the figures."
        known = ()
        if flat_mode and manifest is not None:  # amf predict's class column: the weights' cut
            known = (manifest.threshold.value,)
        report = write_report(evaluation, args.report, figure_loader(figures, flat_mode, args.stacks), hint, known)
        print(f"wrote {report}")
    # Last, so that metrics.json exists only when every step, the report included, has succeeded.
    write_json_atomic(args.output, metrics_document(evaluation))
    print(f"wrote {args.output}")
    return 0
