"""The Grand-Challenge contract of MIDOG 2025 Track 2: where the stack is, and what to write.

Input::

    <input>/inputs.json
    <input>/images/stacked-histopathology-roi-cropouts/<stack>.tif|.tiff|.mha

Output::

    <output>/multiple-mitotic-figure-classification.json
        [{"class": "normal" | "atypical", "confidence": P(atypical) as a JSON float}, ...]  # page order

The platform runs one container per stack. If a folder holds several stacks (a local batch), each is
processed as its own job and written to ``<output>/<stack stem>/multiple-mitotic-figure-classification.json``,
the layout the platform gives each job; a single stack is written to ``<output>/`` directly.

The weights are verified before any input is read, and every output is written atomically.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from amf.engine import Engine
from amf.errors import InputError, OutputError
from amf.io import STACK_SUFFIXES, iter_pages, to_patch
from amf.weights import atomic_write_bytes, load_ensemble

INTERFACE = "stacked-histopathology-roi-cropouts"
OUTPUT_NAME = "multiple-mitotic-figure-classification.json"
DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


@dataclass(frozen=True)
class Job:
    stack: Path
    output: Path


def find_jobs(input_dir: Path, output_dir: Path) -> list[Job]:
    """Check ``inputs.json`` and the stack folder; one job per stack, in name order."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise InputError(f"input folder {input_dir} does not exist")
    inputs_json = input_dir / "inputs.json"
    if not inputs_json.is_file():
        raise InputError(f"{inputs_json} is missing")
    try:
        inputs = json.loads(inputs_json.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{inputs_json} is not valid JSON: {exc}") from exc
    if not isinstance(inputs, list):
        raise InputError(f"{inputs_json} is not a list of interface values")
    slugs = [item.get("interface", {}).get("slug") for item in inputs if isinstance(item, dict)]
    if INTERFACE not in slugs:
        raise InputError(f"{inputs_json} names interfaces {slugs}, not {INTERFACE!r}, the one this algorithm serves")
    folder = input_dir / "images" / INTERFACE
    if not folder.is_dir():
        raise InputError(f"stack folder {folder} does not exist")
    stacks = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in STACK_SUFFIXES)
    if not stacks:
        raise InputError(f"no .tif, .tiff or .mha stack in {folder}")
    output_dir = Path(output_dir)
    if len(stacks) == 1:
        return [Job(stacks[0], output_dir / OUTPUT_NAME)]
    return [Job(s, output_dir / s.stem / OUTPUT_NAME) for s in stacks]


def classify(probs: np.ndarray, threshold: float) -> list[dict]:
    """The challenge's records: class by threshold, confidence = P(atypical) as a Python float."""
    return [
        {"class": "atypical" if p >= threshold else "normal", "confidence": float(p)}
        for p in probs.tolist()
    ]


def write_result(records: list[dict], path: Path) -> None:
    """Write atomically; ``allow_nan=False`` guarantees valid JSON, floats stay floats (``0.0``, not ``0``)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(records, indent=2, allow_nan=False).encode())
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc


def run(input_dir: Path, output_dir: Path, weights_dir: Path = DEFAULT_WEIGHTS) -> list[Job]:
    """The whole container job: verify weights, find stacks, predict each, write each result."""
    started = time.perf_counter()
    ensemble = load_ensemble(weights_dir)
    engine = Engine(ensemble.members, ensemble.tta)
    jobs = find_jobs(input_dir, output_dir)
    for job in jobs:
        probs = engine.predict_proba(to_patch(page) for page in iter_pages(job.stack))
        if probs.size == 0:
            raise InputError(f"{job.stack}: no pages")
        records = classify(probs, ensemble.threshold.value)
        write_result(records, job.output)
        n_atypical = sum(r["class"] == "atypical" for r in records)
        print(f"{job.stack.name}: {len(records)} figures, {n_atypical} atypical -> {job.output} "
              f"({time.perf_counter() - started:.1f} s)")
    return jobs
