"""Score image files and stacks into a CSV outside the container (``amf predict``, :mod:`amf.inference.predict_cli`).

One row per patch: ``path, page, p_atypical, class``, from the same pipeline as the container
(:mod:`amf.inference.pipeline`): the same ensemble, views, threshold and class rule, so its numbers are the
container's numbers.

Same guarantees as the container (docs/failure-modes.md): weights verified first (before any input is
read), then the output folder, then every file decoded once, all before any model work, so a bad file
fails the run in seconds, not at the end. One file that fails fails the run with a one-line error naming
the file and page, and then no CSV is written (an existing one is left as it was). With ``skip_bad``
the bad files are listed instead in ``<output stem>.bad.tsv`` (path, reason) and the rest is predicted.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from amf.devices import BF16_UNITS, cpu_model_and_flags
from amf.errors import InputError, OutputError
from amf.files import atomic_write_bytes
from amf.inference import api, pipeline
from amf.inference.io import IMAGE_SUFFIXES, find_images, iter_fitted, patch_digest
from amf.inference.otsu import otsu_cut
from amf.progress import Progress, interactive

COLUMNS = ("path", "page", "p_atypical", "class", "view_sd")
#: ``--output`` formats by suffix; ``-`` writes CSV to stdout.
FORMATS = {".csv": "CSV", ".jsonl": "JSON lines, one object per patch", ".json": "one JSON list of objects"}
#: ``--threshold otsu`` warns below this many patches (docs/results.md, "The threshold that transfers", the
#: measurement of how many figures of one lab Otsu's cut needs).
OWN_CUT_MIN_PATCHES = 64


def output_format(output: Path) -> str:
    """The format ``--output`` asks for, by its suffix (``-``: CSV on stdout); any other suffix is refused with the
    choices, before any work."""
    if str(output) == "-":
        return ".csv"
    suffix = Path(output).suffix.lower()
    if suffix not in FORMATS:
        choices = "; ".join(f"{k} ({v})" for k, v in FORMATS.items())
        raise OutputError(f"--output {output}: unknown format {suffix or '(no suffix)'!r}; name a file ending in "
                          f"{choices}, or - for CSV on stdout")
    return suffix


def encode(rows: list[dict], fmt: str) -> bytes:
    """The rows in ``fmt``: floats as Python writes them (``repr``: the exact double)."""
    if fmt == ".csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows([r["path"], r["page"], repr(r["p_atypical"]), r["class"], repr(r["view_sd"])] for r in rows)
        return buf.getvalue().encode()
    records = [{k: r[k] for k in COLUMNS} for r in rows]
    if fmt == ".jsonl":
        return "".join(json.dumps(r) + "\n" for r in records).encode()
    return (json.dumps(records, indent=1) + "\n").encode()


def predict_files(paths: list[Path], output: Path, weights: Path, *, device: str = "auto",
                  settings: api.RunSettings = api.RunSettings(), skip_bad: bool = False,
                  threshold: float | str | None = None) -> int:
    """Score every patch of ``paths`` (files, stacks, folders searched recursively) into ``output`` (CSV, JSON lines
    or JSON by its suffix; ``-``: CSV on stdout); returns the number of rows. Progress and notes go to stderr, the
    closing line to stdout (to stderr when the rows go to stdout).

    ``threshold``: the cut of the ``class`` column: the weights' own (``None``), a number, or ``"otsu"``, Otsu's
    cut on the scores of these patches themselves (:func:`amf.inference.otsu.otsu_cut`: for many figures of
    one lab)."""
    manifest = pipeline.open_weights(weights)  # weights first, without torch: fails in about a second
    output = Path(output)
    to_stdout = str(output) == "-"
    if not to_stdout and output.is_dir():
        raise OutputError(f"--output {output} is a folder; name the file to write")
    fmt = output_format(output)
    if not to_stdout:
        pipeline.check_output_dir(output.parent)
    inputs = read_inputs(paths, output, skip_bad)
    # torch and the engine load only now, once every input file has decoded: a bad file fails in a second
    model = api.open_classifier(weights, manifest, device, settings,
                                say=lambda note: print(f"amf predict: {note}", file=sys.stderr),
                                warn=lambda note: print(f"amf predict: warning: {note}", file=sys.stderr))
    engine = model.model.engine
    if engine.bf16 and engine.device.type == "cpu":
        _, flags = cpu_model_and_flags()
        if flags and not flags & set(BF16_UNITS):
            print(f"amf predict: warning: this CPU lists none of {', '.join(BF16_UNITS)}: bf16 runs emulated, "
                  f"slower than the fp32 default (docs/benchmark.md)", file=sys.stderr)
    print(f"amf predict: {len(inputs.files)} file(s), {sum(inputs.counts)} patch(es); {engine.n_members} member(s) x "
          f"{engine.tta.views} view(s) on {engine.device} ({engine.strategy}{', bf16' if engine.bf16 else ''})",
          file=sys.stderr)
    scored = score_with_progress(model, inputs, manifest.provenance.trained_patches)
    cut = cut_for(threshold, scored.p_atypical, model.threshold)
    data = encode([{**r, "class": pipeline.class_of(r["p_atypical"], cut)} for r in scored.rows()], fmt)
    if to_stdout:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        pipeline.write_files([(output, data)])
    say_done(len(scored), inputs, output)
    return len(scored)


@dataclass(frozen=True)
class Inputs:
    """The image files to score, their page counts, and what was left out: files that are not images (``others``)
    and unreadable ones with the reason (``bad``)."""

    files: list[Path]
    counts: list[int]
    others: list[Path]
    bad: list[tuple[Path, str]]


def read_inputs(paths: list[Path], output: Path, skip_bad: bool) -> Inputs:
    """Find and decode every input before any model work; with ``skip_bad`` the unreadable ones are listed beside
    ``output`` (or on stderr when the rows go to stdout) instead of stopping the run."""
    to_stdout = str(output) == "-"
    others: list[Path] = []
    files = find_images(paths, others)
    if not files:
        raise InputError(f"no image files in {', '.join(map(str, paths))} (accepted: "
                         f"{', '.join(IMAGE_SUFFIXES)}, any case)")
    files, counts, bad = check_files(files, skip_bad=skip_bad)
    if bad and not to_stdout:
        output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(bad_list(output), "".join(f"{p}\t{why}\n" for p, why in bad).encode())
    elif bad:
        for p, why in bad:
            print(f"amf predict: skipped {p}: {why}", file=sys.stderr)
    if not files:
        raise InputError(f"none of the {len(bad)} input file(s) could be read"
                         + (f"; see {bad_list(output)}" if bad and not to_stdout else ""))
    return Inputs(files, counts, others, bad)


def score_with_progress(model: api.Classifier, inputs: Inputs, trained_on: frozenset[str]) -> api.Predictions:
    """Every page of the inputs, with a progress count, and a warning when some are among the weights' training
    patches (same pixels)."""
    seen_in_training: list[bool] = []
    progress = Progress(sum(inputs.counts), "amf predict", "patch")

    def seen(path: Path, page: int, patch) -> None:
        """The engine pulls patches a chunk at a time, so the count follows the model's work."""
        seen_in_training.append(patch_digest(patch) in trained_on)
        progress.update()

    try:
        scored = model.predict_files(inputs.files, sum(inputs.counts), on_patch=seen)
    finally:
        progress.close()
    if sum(seen_in_training):
        print(f"amf predict: warning: {sum(seen_in_training)} of {len(scored)} patches are among the weights' "
              "training patches (same pixels): scores on them are in-sample, not an estimate for new data",
              file=sys.stderr)
    elif not trained_on:
        print("amf predict: note: these weights do not list their training patches; in-sample patches cannot be "
              "recognised", file=sys.stderr)
    return scored


def say_done(n: int, inputs: Inputs, output: Path) -> None:
    """The closing line (on stderr when the rows went to stdout), and where the unreadable files are listed."""
    to_stdout = str(output) == "-"
    files = len(inputs.files)
    summary = (f"{n} patch{'es' if n != 1 else ''} from {files} file{'s' if files != 1 else ''}"
               f" -> {'stdout' if to_stdout else output}")
    if inputs.others:
        names = ", ".join(p.name for p in inputs.others[:3]) + (", ..." if len(inputs.others) > 3 else "")
        one = len(inputs.others) == 1
        summary += (f"; skipped {len(inputs.others)} file{'' if one else 's'} that {'is' if one else 'are'} not an "
                    f"image: {names}")
    print(summary, file=sys.stderr if to_stdout else sys.stdout)
    if inputs.bad and not to_stdout:
        print(f"amf predict: {len(inputs.bad)} unreadable file(s) skipped, listed in {bad_list(output)}",
              file=sys.stderr)


def cut_for(threshold: float | str | None, probs: np.ndarray, shipped: float) -> float:
    """The cut of the ``class`` column, said on stderr when it is not the weights' own."""
    if threshold is None:
        return shipped
    if threshold == "otsu":
        cut = otsu_cut(probs)
        print(f"amf predict: cut {cut:.4f}, chosen by Otsu on the scores of these {probs.size} patches (the weights' "
              f"cut: {shipped:.4f}); meant for many figures of one lab", file=sys.stderr)
        if probs.size < OWN_CUT_MIN_PATCHES:
            print(f"amf predict: warning: Otsu's cut on fewer than {OWN_CUT_MIN_PATCHES} patches is noisy "
                  "(docs/results.md, \"The threshold that transfers\")", file=sys.stderr)
        return cut
    print(f"amf predict: cut {float(threshold):.4f}, as given (the weights' cut: {shipped:.4f})", file=sys.stderr)
    return float(threshold)


def check_files(files: list[Path], skip_bad: bool = False) -> tuple[list[Path], list[int], list[tuple[Path, str]]]:
    """Decode every file once before any model work: ``(readable files, their page counts, bad files)``; pages that
    are not 128 x 128 RGB are counted in one warning on stderr, by what was done to them.

    Structure alone (:func:`amf.inference.io.count_pages`) misses a PNG whose pixel data is cut short; decoding
    every page (the same reader checks the structure on the way) costs little next to the model. The pages
    are decoded again when they are predicted, so memory stays bounded however many files there are.
    Without ``skip_bad`` the first bad file raises its one-line :class:`InputError`.
    """
    good, counts, bad = [], [], []
    changed: Counter[str] = Counter()
    for path in tqdm(files, desc="checking inputs", unit="file", leave=False, disable=not interactive()):
        try:
            changes = [change for _, change in iter_fitted(path)]
            n = len(changes)
        except InputError as exc:
            if not skip_bad:
                raise
            bad.append((path, " ".join(str(exc).split())))
            continue
        good.append(path)
        counts.append(n)
        changed.update(c for page in changes for c in page)
        changed["any"] += sum(bool(page) for page in changes)
    if changed["any"]:
        said = {"cropped": "cropped to their centre (larger)", "padded": "padded with black (smaller)",
                "converted": "converted to RGB"}
        print(f"amf predict: warning: {changed['any']} of {sum(counts)} patches are not 128 x 128 RGB: "
              + ", ".join(f"{changed[k]} {v}" for k, v in said.items() if changed[k])
              + "; nothing is rescaled, and the model saw 128 px crops at about 0.25 µm/px (40x): scores of "
                "patches at another size or scale are not what its evaluation measured", file=sys.stderr)
    return good, counts, bad


def bad_list(output: Path) -> Path:
    """Where ``--skip-bad`` lists the files it skipped: beside the CSV, ``<stem>.bad.tsv``."""
    return output.with_name(output.stem + ".bad.tsv")
