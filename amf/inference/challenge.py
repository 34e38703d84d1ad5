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

Order of work, so that every foreseeable failure costs as little as possible and leaves nothing behind:

1. the weights are verified (manifest format and values, member files, sha256, safetensors headers),
   before any input is read, without importing torch (so this takes about a second);
2. ``inputs.json`` and the stack folder are checked;
3. the output folder is checked to be writable;
4. every stack's structure is checked (:func:`amf.inference.io.count_pages`), before any model work;
5. the models are built (architecture, tensor shapes, no NaN), then every stack is classified; the number
   of results must equal the number of pages counted, and a NaN or inf result is an error;
6. only when all stacks succeeded are the results written: each to a temporary file beside its target,
   then all renamed into place.

So a run either writes every result, or fails with a one-line error (:class:`~amf.errors.AmfError`) and
leaves the output folder exactly as it found it: no partial file, no temporary file, no result for some
stacks but not others, and files already there untouched.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from amf.errors import AmfError, InputError, OutputError
from amf.files import read_json
from amf.inference import api, pipeline
from amf.inference.io import STACK_SUFFIXES, count_pages
from amf.inference.weights import default_weights

INTERFACE = "stacked-histopathology-roi-cropouts"
OUTPUT_NAME = "multiple-mitotic-figure-classification.json"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    stack: Path
    output: Path


def _read_inputs_json(input_dir: Path) -> list:
    inputs_json = input_dir / "inputs.json"
    inputs = read_json(inputs_json, InputError, " (the platform writes it beside images/; is --input right?)")
    if not isinstance(inputs, list):
        raise InputError(f"{inputs_json} is not a list of interface values")
    return inputs


def _interface(item: object) -> dict:
    interface = item.get("interface") if isinstance(item, dict) else None
    return interface if isinstance(interface, dict) else {}


def find_jobs(input_dir: Path, output_dir: Path) -> list[Job]:
    """Check ``inputs.json`` and the stack folder; one job per stack, in name order."""
    input_dir = Path(input_dir)
    if not input_dir.exists():
        raise InputError(f"input folder {input_dir} does not exist")
    if not input_dir.is_dir():
        raise InputError(f"input {input_dir} is not a folder")
    inputs_json = input_dir / "inputs.json"
    inputs = _read_inputs_json(input_dir)
    ours = [item for item in inputs if _interface(item).get("slug") == INTERFACE]
    if not ours:
        slugs = [_interface(item).get("slug") for item in inputs]
        raise InputError(f"{inputs_json} names interfaces {slugs}, not {INTERFACE!r}, the one this algorithm serves")
    folder = input_dir / "images" / INTERFACE
    relative = _interface(ours[0]).get("relative_path")
    if isinstance(relative, str) and relative and not Path(relative).is_absolute() and ".." not in Path(relative).parts:
        if (input_dir / relative).is_dir():
            folder = input_dir / relative
    if not folder.is_dir():
        raise InputError(f"stack folder {folder} does not exist")
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise InputError(f"cannot list stack folder {folder}: {exc.strerror or exc}") from exc
    stacks = [p for p in entries if p.suffix.lower() in STACK_SUFFIXES]
    if not stacks:
        held = ", ".join(p.name for p in entries[:5]) + (", ..." if len(entries) > 5 else "")
        what = f"it holds {held}" if entries else "it is empty"
        raise InputError(f"no .tif, .tiff or .mha stack in {folder} ({what})")
    for p in stacks:
        if not p.is_file():
            raise InputError(f"{p} is not a readable file" + (" (a broken link)" if p.is_symlink() else ""))
    for item in ours:
        # Only a note: the platform may store a file under another name than the one it was uploaded
        # with, and refusing a stack that is there over a name would cost a submission for nothing.
        image = item.get("image") if isinstance(item.get("image"), dict) else {}
        name = image.get("name")
        if isinstance(name, str) and name and name not in {p.name for p in stacks}:
            held = ", ".join(p.name for p in stacks[:3]) + (", ..." if len(stacks) > 3 else "")
            logger.warning(f"note: {inputs_json} names the stack {name!r}; {folder} holds {held}: processing those")
    output_dir = Path(output_dir)
    if len(stacks) == 1:
        return [Job(stacks[0], output_dir / OUTPUT_NAME)]
    stems: dict[str, Path] = {}
    for s in stacks:
        if s.stem in stems:
            raise InputError(f"{stems[s.stem].name} and {s.name} in {folder} would both be written to "
                             f"{output_dir / s.stem}: rename one")
        stems[s.stem] = s
    return [Job(s, output_dir / s.stem / OUTPUT_NAME) for s in stacks]


def records_of(scored: api.Predictions) -> list[dict]:
    """The challenge's records: the class at the weights' threshold, confidence = P(atypical) as a Python float."""
    return [{"class": c, "confidence": float(p)} for p, c in zip(scored.p_atypical.tolist(), scored.classes,
                                                                   strict=True)]


def encode_records(records: list[dict]) -> bytes:
    """``allow_nan=False`` guarantees valid JSON; floats stay floats (``0.0``, not ``0``); a final newline, as
    every text file has."""
    try:
        return (json.dumps(records, indent=2, allow_nan=False) + "\n").encode()
    except ValueError as exc:
        raise OutputError(f"refusing to write a non-finite confidence: {exc}") from exc


def run(
    input_dir: Path,
    output_dir: Path,
    weights_dir: Path | None = None,
    *,
    device: str | None = None,
    say: Callable[[str], None] = print,
) -> list[Job]:
    """The whole container job (see the module docstring for the order of checks); returns the jobs done.
    ``say`` gets the progress lines (one per stack, then the total)."""
    started = time.perf_counter()
    weights_dir = default_weights() if weights_dir is None else weights_dir
    manifest = pipeline.open_weights(weights_dir)
    jobs = find_jobs(input_dir, output_dir)
    pipeline.check_output_dir(output_dir)
    counts = []
    for k, job in enumerate(jobs):
        with _context(job, k, len(jobs)):
            counts.append(count_pages(job.stack))
    model = api.open_classifier(weights_dir, manifest, device or "auto", say=lambda note: say(f"process.py: {note}"),
                                warn=lambda note: print(f"process.py: warning: {note}", file=sys.stderr))
    results: list[tuple[Path, list[dict]]] = []
    for k, (job, n) in enumerate(zip(jobs, counts)):
        with _context(job, k, len(jobs)):
            scored = model.predict_files([job.stack], n)
        results.append((job.output, records_of(scored)))
    pipeline.write_files([(path, encode_records(records)) for path, records in results])
    for job, (_, records) in zip(jobs, results):
        n_atypical = sum(r["class"] == "atypical" for r in records)
        say(f"{job.stack.name}: {len(records)} figures, {n_atypical} atypical -> {job.output}")
    say(f"{len(jobs)} stack(s) done in {time.perf_counter() - started:.1f} s")
    return jobs


class _context:
    """Re-raise an :class:`AmfError` from one stack with the stack named, and which of several it was."""

    def __init__(self, job: Job, k: int, n: int):
        self.job, self.k, self.n = job, k, n

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None or not isinstance(exc, AmfError):
            return False
        message = str(exc)
        if str(self.job.stack) not in message:
            message = f"{self.job.stack}: {message}"
        if self.n > 1:
            message = f"stack {self.k + 1} of {self.n}: {message} (no stack's result was written)"
        raise type(exc)(message) from exc
