"""Evaluating a dataset without the platform layout: a predictions CSV plus a labels CSV.

``amf predict`` writes one row per figure: ``path,page,p_atypical,class``. ``p_atypical`` plays the part
of the platform's ``confidence`` and ``class`` the submitted class; a single-image file has page 0.

The labels CSV format is recognised by its columns:

- AMi-Br (``ami-br-midog21/labels.csv``): image ``patch``, label ``majority_atypical`` (True/False),
  domain ``scanner``;
- MIDOG 2025 atypical training set: image ``image_id``, label ``majority`` (AMF/NMF), domain ``Tumor``.

Labels describe single images, so each one is matched to the prediction row of page 0 of its image:

1. by resolved absolute path: the label's image path is taken relative to the labels CSV's folder, a
   relative prediction path relative to the current directory;
2. failing that, by path suffix: the label's path as written (``patches/normal/MIDOG21_6.png``) equals
   the last components of the prediction's path;
3. failing that, by file name, when exactly one label has that name.

By default every prediction needs a label, and every label exactly one prediction; anything else is
refused with examples, because scoring a silently different set of figures is worse than not scoring.
Scoring a subset is common, though: with ``allow_missing`` (``--allow-missing``) the labels without a
prediction are left out, with ``allow_unlabelled`` (``--allow-unlabelled``) the predictions without a label
(a whole folder predicted, labels for part of it); how many is said in the output and in ``metrics.json``.
Column names can be given (``--image-column``, ``--label-column``, ``--domain-column``), as for ``train``;
labels may then be spelled True/False, AMF/NMF, atypical/normal or 1/0.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path, PurePath

from amf.errors import AmfError, EvaluationError
from amf.evaluation.figures import CLASS_IDS, Figures
from amf.evaluation.summary import WARNING
from amf.inference.io import patch_digest, read_patches

PREDICTION_COLUMNS = ("path", "page", "p_atypical", "class")


@dataclass(frozen=True)
class LabelFormat:
    """Which columns of a labels CSV hold the image, the label and the domain, and how labels read."""

    name: str
    image: str
    label: str
    domain: str | None  # None: the file has no domain column, and every figure is one domain
    classes: dict[str, str]  # label value (lower case) -> "normal" / "atypical"


LABEL_FORMATS = (
    LabelFormat("AMi-Br", "patch", "majority_atypical", "scanner", {"true": "atypical", "false": "normal"}),
    LabelFormat("MIDOG25", "image_id", "majority", "Tumor", {"amf": "atypical", "nmf": "normal"}),
)


#: The domain of every figure of a labels CSV without a domain column.
ONE_DOMAIN = "all"


@dataclass(frozen=True)
class Label:
    row: int  # CSV line number, for messages
    written: str  # the image path as written in the CSV
    resolved: Path
    cls: str
    domain: str


@dataclass(frozen=True)
class Prediction:
    row: int
    path: str
    page: int
    cls: str
    score: float
    spread: float | None = None  # view_sd, where the CSV has it


def _read_csv(path: Path, what: str) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            return list(reader.fieldnames or []), rows
    except FileNotFoundError:
        raise EvaluationError(f"{what} {path} is missing") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EvaluationError(f"{what} {path}: cannot read it as CSV: {exc}") from None


#: Every spelling of a label that ``amf train`` accepts (amf.training.data), for labels CSVs with named columns.
ANY_SPELLING = {**{v: "atypical" for v in ("true", "amf", "atypical", "1", "1.0")},
                **{v: "normal" for v in ("false", "nmf", "normal", "0", "0.0")}}


def read_labels(path: Path, image: str | None = None, label: str | None = None,
                domain: str | None = None) -> list[Label]:
    """Labels in file order, with their format recognised from the header, or from the columns named. Without a
    domain column (none named, none of the known ones there) every figure is one domain, :data:`ONE_DOMAIN`."""
    columns, rows = _read_csv(path, "labels CSV")
    if image or label or domain:
        base = max(LABEL_FORMATS, key=lambda f: sum(c in columns for c in (f.image, f.label, f.domain)))
        fmt = LabelFormat("named columns", image or base.image, label or base.label,
                          domain or (base.domain if base.domain in columns else None), ANY_SPELLING)
        absent = [c for c in (fmt.image, fmt.label, fmt.domain) if c is not None and c not in columns]
        if absent:
            raise EvaluationError(f"labels CSV {path}: no column(s) {absent}; its columns are {columns}")
    else:
        fmt = next((f for f in LABEL_FORMATS if {f.image, f.label, f.domain} <= set(columns)), None)
        fmt = fmt or next((replace(f, domain=None) for f in LABEL_FORMATS if {f.image, f.label} <= set(columns)),
                          None)
    if fmt is None:
        expected = "; ".join(f"{f.name}: {f.image}, {f.label}, {f.domain}" for f in LABEL_FORMATS)
        raise EvaluationError(f"labels CSV {path}: unknown format, its columns are {columns}; expected {expected}, "
                              "or name them with --image-column, --label-column and --domain-column")
    folder = Path(path).resolve().parent
    labels = []
    for line, row in enumerate(rows, start=2):
        written, value = row[fmt.image], row[fmt.label]
        domain = row[fmt.domain] if fmt.domain is not None else ONE_DOMAIN
        if not written or value is None or domain is None:
            raise EvaluationError(f"labels CSV {path}, line {line}: empty image, label or domain")
        if value.strip().lower() not in fmt.classes:
            raise EvaluationError(
                f"labels CSV {path}, line {line} ({written}): {fmt.label} must be one of "
                f"{sorted(fmt.classes)} (any case), got {value!r}"
            )
        labels.append(Label(line, written, (folder / written).resolve(), fmt.classes[value.strip().lower()], domain))
    duplicated = [p for p, n in Counter(label.resolved for label in labels).items() if n > 1]
    if duplicated:
        raise EvaluationError(f"labels CSV {path}: image {duplicated[0]} is labelled more than once")
    if not labels:
        raise EvaluationError(f"labels CSV {path}: no rows")
    return labels


def read_predictions(path: Path) -> list[Prediction]:
    """Prediction rows, validated like the platform's entries (class name, finite score)."""
    columns, rows = _read_csv(path, "predictions CSV")
    missing = [c for c in PREDICTION_COLUMNS if c not in columns]
    if missing:
        raise EvaluationError(
            f"predictions CSV {path}: missing column(s) {missing}; expected {list(PREDICTION_COLUMNS)}"
        )
    predictions = []
    for line, row in enumerate(rows, start=2):
        at = f"predictions CSV {path}, line {line} ({row['path']}, page {row['page']})"
        try:
            page = int(row["page"])
            score = float(row["p_atypical"])
        except (TypeError, ValueError):
            raise EvaluationError(f"{at}: page must be an integer and p_atypical a number") from None
        if not math.isfinite(score):
            raise EvaluationError(f"{at}: p_atypical must be finite, got {row['p_atypical']!r}")
        if row["class"] not in CLASS_IDS:
            raise EvaluationError(f"{at}: class must be 'normal' or 'atypical', got {row['class']!r}")
        try:
            spread = float(row["view_sd"]) if row.get("view_sd") not in (None, "") else None
        except ValueError:
            raise EvaluationError(f"{at}: view_sd must be a number, got {row['view_sd']!r}") from None
        predictions.append(Prediction(line, row["path"], page, row["class"], score, spread))
    keys = Counter((Path(p.path).resolve(), p.page) for p in predictions)
    duplicated = [k for k, n in keys.items() if n > 1]
    if duplicated:
        file, page = duplicated[0]
        raise EvaluationError(f"predictions CSV {path}: {file} page {page} appears more than once")
    return predictions


def match(labels: list[Label], predictions: list[Prediction], allow_missing: bool = False,
          allow_unlabelled: bool = False) -> tuple[list[Prediction | None], int]:
    """The prediction of each label, in label order, by path, then path suffix, then unique file name;
    ``None`` for a label without one, which only ``allow_missing`` accepts. Also how many predictions match
    no label, which only ``allow_unlabelled`` accepts (they are left out)."""
    by_resolved = {label.resolved: i for i, label in enumerate(labels)}
    by_suffix = {PurePath(label.written).parts: i for i, label in enumerate(labels)}
    names = [PurePath(label.written).name for label in labels]
    counts = Counter(names)
    by_name = {name: i for i, name in enumerate(names) if counts[name] == 1}

    def find(prediction: Prediction) -> int | None:
        if prediction.page != 0:
            return None  # labels are single images, which only have page 0
        if (i := by_resolved.get(Path(prediction.path).resolve())) is not None:
            return i
        parts = PurePath(prediction.path).parts
        for k in range(len(parts), 0, -1):  # longest suffix first
            if (i := by_suffix.get(parts[-k:])) is not None:
                return i
        return by_name.get(PurePath(prediction.path).name)

    matched: dict[int, Prediction] = {}
    unmatched: list[Prediction] = []
    for prediction in predictions:
        i = find(prediction)
        if i is None:
            unmatched.append(prediction)
        elif i in matched:
            raise EvaluationError(
                f"label {labels[i].written} (line {labels[i].row}) matches two predictions: "
                f"line {matched[i].row} ({matched[i].path}) and line {prediction.row} ({prediction.path})"
            )
        else:
            matched[i] = prediction
    if unmatched and not allow_unlabelled:
        shown = ", ".join(f"line {p.row} ({p.path}, page {p.page})" for p in unmatched[:3])
        raise EvaluationError(f"{len(unmatched)} prediction(s) match no label, e.g. {shown}; to score only the "
                              "predictions that have a label, pass --allow-unlabelled")
    missing = [label for i, label in enumerate(labels) if i not in matched]
    if missing and not allow_missing:
        shown = ", ".join(f"line {label.row} ({label.written})" for label in missing[:3])
        raise EvaluationError(f"{len(missing)} label(s) have no prediction, e.g. {shown}; to score only the "
                              "labelled figures that have one, pass --allow-missing")
    if not matched:
        raise EvaluationError("no prediction matches any label: nothing to score (are the paths right?)")
    return [matched.get(i) for i in range(len(labels))], len(unmatched)


@dataclass(frozen=True)
class TrainingPatches:
    """The weights folder that made a prediction set, and the pixels' sha256 of the patches it trained on (its
    manifest's ``trained_patches``; empty when it lists none)."""

    folder: Path
    digests: frozenset[str]


def in_training(paths: list[str], trained: frozenset[str]) -> tuple[int, int] | None:
    """``(scored images among the weights' training patches, scored images read)``, by the pixels' sha256
    (:func:`amf.inference.io.patch_digest`), or None when the weights do not list their training patches."""
    if not trained:
        return None
    hits = read = 0
    for path in paths:
        try:
            patch = read_patches(Path(path))[0]
        except (AmfError, OSError):
            continue  # an image no longer on disk cannot be checked; it is not counted
        read += 1
        hits += patch_digest(patch) in trained
    return hits, read


def read_flat(predictions_csv: Path, labels_csv: Path, allow_missing: bool = False,
              columns: dict[str, str | None] | None = None, weights: TrainingPatches | None = None,
              allow_unlabelled: bool = False) -> Figures:
    """The labelled figures with their predictions, in the labels CSV's order (labels without a prediction
    left out with ``allow_missing``, predictions without a label with ``allow_unlabelled``; both counted in
    the figures' notes). With ``weights``, a note says how many scored images are among their training patches."""
    labels = read_labels(labels_csv, **(columns or {}))
    one = {label.domain for label in labels} == {ONE_DOMAIN} and not (columns or {}).get("domain")
    predictions, unlabelled = match(labels, read_predictions(predictions_csv), allow_missing, allow_unlabelled)
    kept = [(label, p) for label, p in zip(labels, predictions, strict=True) if p is not None]
    left_out = len(labels) - len(kept)
    notes = (f"{left_out} of {len(labels)} labelled figures had no prediction and were left out "
             f"(--allow-missing): scored {len(kept)}",) if left_out else ()
    if one:
        notes += (f"{labels_csv} has no domain column: every figure is scored as one domain, {ONE_DOMAIN!r} "
                  "(--domain-column names one)",)
    if unlabelled:
        notes += (f"{unlabelled} prediction(s) match no label and were left out (--allow-unlabelled): scored "
                  f"{len(kept)}",)
    overlap = in_training([p.path for _, p in kept], weights.digests) if weights is not None else None
    if overlap is not None and overlap[0]:
        notes += (f"{WARNING}{overlap[0]} of the {overlap[1]} scored images readable here are among the training "
                  f"patches of {weights.folder}: their scores are in-sample, not an estimate for new data",)
    elif overlap is not None:
        notes += (f"none of the {overlap[1]} scored images readable here is among the training patches of "
                  f"{weights.folder}",)
    return Figures.from_lists(
        [label.cls for label, _ in kept],
        [p.cls for _, p in kept],
        [p.score for _, p in kept],
        [label.domain for label, _ in kept],
        source=f"predictions {predictions_csv}, labels {labels_csv}",
        notes=notes,
        where=[(p.path, p.page) for _, p in kept],
        spread=[p.spread for _, p in kept] if all(p.spread is not None for _, p in kept) else None,
    )
