"""Reading the Grand-Challenge evaluation layout, refusing what the official script refuses.

Layout (as the platform mounts it in an evaluation container)::

    <input>/predictions.json                      list of algorithm jobs: pk, inputs, outputs
    <input>/<pk>/output/<relative_path>           the job's multiple-mitotic-figure-classification.json
    <ground truth>                                [{"image", "labels", "tumordomains"}, ...]

Each job is matched to its ground truth through the name of its input image (the stack). Jobs are
pooled in the order predictions.json lists them. Every refusal raises :class:`EvaluationError` with a
message naming the job pk, the stack and, for a bad entry, its index, so a team can find the culprit in
one look. Beyond the official checks we also refuse NaN/infinite confidences (they make ROC AUC
meaningless), duplicated ground-truth images (the official script silently keeps the last one) and two
jobs for the same stack (its figures would be counted twice). Ground-truth stacks that no job covers
are not refused, as in the official script, but are reported in the notes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from amf.errors import EvaluationError
from amf.evaluation.figures import CLASS_IDS, Figures
from amf.inference.challenge import INTERFACE

DEFAULT_INPUT = Path("/input")
DEFAULT_GROUND_TRUTH = Path("/opt/ml/input/data/ground_truth/ground_truth.json")
OUTPUT_SLUG = "multiple-mitotic-figure-classification"


@dataclass(frozen=True)
class StackTruth:
    """The reference labels of one stack, page by page."""

    labels: list[str]
    domains: list[int] | list[str]


def load_json(path: Path, what: str) -> object:
    """Parse a JSON file, turning a missing or malformed file into a refusal that names ``what``."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvaluationError(f"{what}: file {path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvaluationError(f"{what}: cannot read {path} as JSON: {exc}") from None


def load_ground_truth(path: Path) -> dict[str, StackTruth]:
    """Ground truth by image name, validated entry by entry."""
    data = load_json(path, "ground truth")
    if not isinstance(data, list):
        raise EvaluationError(f"ground truth {path}: expected a list of {{image, labels, tumordomains}} objects")
    truth: dict[str, StackTruth] = {}
    first_seen: dict[str, int] = {}
    domain_types: set[type] = set()
    for i, entry in enumerate(data):
        where = f"ground truth {path}, entry {i}"
        if not isinstance(entry, dict) or not {"image", "labels", "tumordomains"} <= entry.keys():
            raise EvaluationError(f"{where}: expected an object with image, labels and tumordomains")
        image, labels, domains = entry["image"], entry["labels"], entry["tumordomains"]
        if not isinstance(image, str):
            raise EvaluationError(f"{where}: image must be a file name, got {image!r}")
        where += f" ({image})"
        if image in first_seen:
            raise EvaluationError(f"{where}: image {image} is duplicated (first at entry {first_seen[image]})")
        if not isinstance(labels, list) or any(label not in CLASS_IDS for label in labels):
            raise EvaluationError(f"{where}: labels must be a list of 'normal' or 'atypical'")
        if not isinstance(domains, list) or len(domains) != len(labels):
            raise EvaluationError(f"{where}: tumordomains must be a list as long as labels ({len(labels)})")
        if any(isinstance(d, bool) or not isinstance(d, (int, str)) for d in domains):
            raise EvaluationError(f"{where}: each tumour domain must be an integer or a string")
        domain_types.update(type(d) for d in domains)
        if len(domain_types) > 1:
            raise EvaluationError(f"{where}: tumour domains mix integers and strings")
        first_seen[image] = i
        truth[image] = StackTruth(labels=labels, domains=domains)
    return truth


def _job_stack_and_location(job: object, index: int, input_dir: Path) -> tuple[str, str, Path]:
    """(pk, stack name, result file) of one predictions.json entry, as the official helpers find them."""
    if not isinstance(job, dict) or not isinstance(job.get("pk"), str) or not job["pk"]:
        raise EvaluationError(f"predictions.json, job {index}: expected an object with a pk")
    pk = job["pk"]
    if "/" in pk or "\\" in pk or pk in (".", ".."):
        raise EvaluationError(f"predictions.json, job {index}: pk {pk!r} is not a folder name")
    try:
        slugs = tuple(sorted(value["interface"]["slug"] for value in job["inputs"]))
        if slugs != (INTERFACE,):
            raise EvaluationError(f"job {pk}: its inputs {list(slugs)} are not the Track 2 interface ({INTERFACE})")
        stack = next(v["image"]["name"] for v in job["inputs"] if v["interface"]["slug"] == INTERFACE)
        relative = next(
            (v["interface"]["relative_path"] for v in job["outputs"] if v["interface"]["slug"] == OUTPUT_SLUG), None
        )
    except (KeyError, TypeError) as exc:
        raise EvaluationError(f"job {pk}: malformed inputs/outputs in predictions.json ({exc!r})") from None
    if not isinstance(stack, str):
        raise EvaluationError(f"job {pk}: input image name {stack!r} is not a string")
    if not isinstance(relative, str):
        raise EvaluationError(f"job {pk}, stack {stack}: no {OUTPUT_SLUG} output in predictions.json")
    return pk, stack, input_dir / pk / "output" / relative


def _read_result(location: Path, pk: str, stack: str, n_expected: int) -> tuple[list[str], list[float]]:
    """The submitted classes and confidences of one job, validated entry by entry."""
    where = f"job {pk}, stack {stack}"
    if not location.is_file():
        raise EvaluationError(f"{where}: result file {location} is missing")
    result = load_json(location, where)
    if not isinstance(result, list):
        raise EvaluationError(f"{where}: result must be a list of {{class, confidence}} objects")
    if len(result) != n_expected:
        raise EvaluationError(f"{where}: result has {len(result)} entries, the ground truth {n_expected}")
    classes: list[str] = []
    scores: list[float] = []
    for i, entry in enumerate(result):
        at = f"{where}, entry {i}"
        if not isinstance(entry, dict):
            raise EvaluationError(f"{at}: expected a {{class, confidence}} object, got {type(entry).__name__}")
        if "class" not in entry or "confidence" not in entry:
            raise EvaluationError(f"{at}: needs both 'class' and 'confidence'")
        if entry["class"] not in CLASS_IDS:
            raise EvaluationError(f"{at}: class must be 'normal' or 'atypical', got {entry['class']!r}")
        confidence = entry["confidence"]
        if not isinstance(confidence, float):  # the official check: 1 and true are refused, 1.0 is not
            raise EvaluationError(f"{at}: confidence must be a float, got {type(confidence).__name__} {confidence!r}")
        if not math.isfinite(confidence):
            raise EvaluationError(f"{at}: confidence must be finite, got {confidence!r}")
        classes.append(entry["class"])
        scores.append(confidence)
    return classes, scores


def read_platform(input_dir: Path, ground_truth: Path) -> Figures:
    """All figures of all jobs in ``input_dir``, with their ground truth, pooled in job order."""
    input_dir = Path(input_dir)
    truth = load_ground_truth(ground_truth)
    jobs = load_json(input_dir / "predictions.json", "predictions.json")
    if not isinstance(jobs, list) or not jobs:
        raise EvaluationError(f"{input_dir / 'predictions.json'}: expected a non-empty list of jobs")
    labels: list[str] = []
    classes: list[str] = []
    scores: list[float] = []
    domains: list = []
    where: list[tuple[str, int]] = []
    stack_to_pk: dict[str, str] = {}
    for index, job in enumerate(jobs):
        pk, stack, location = _job_stack_and_location(job, index, input_dir)
        if stack not in truth:
            raise EvaluationError(f"job {pk}, stack {stack}: no ground truth for this stack in {ground_truth}")
        if stack in stack_to_pk:
            raise EvaluationError(f"job {pk}, stack {stack}: stack already evaluated by job {stack_to_pk[stack]}")
        stack_to_pk[stack] = pk
        job_classes, job_scores = _read_result(location, pk, stack, len(truth[stack].labels))
        labels += truth[stack].labels
        classes += job_classes
        scores += job_scores
        domains += truth[stack].domains
        where += [(stack, page) for page in range(len(job_classes))]
    unscored = [image for image in truth if image not in stack_to_pk]
    notes = ()
    if unscored:
        shown = ", ".join(unscored[:5]) + (f" and {len(unscored) - 5} more" if len(unscored) > 5 else "")
        notes = (
            f"{len(unscored)} ground-truth stack(s) had no job and were not scored, as in the official script: {shown}",
        )
    return Figures.from_lists(
        labels,
        classes,
        scores,
        domains,
        source=f"{len(jobs)} job(s) in {input_dir}, ground truth {ground_truth}",
        notes=notes,
        where=where,
    )
