"""The weights' contract as a type: :class:`Manifest`, the one place that knows the keys of ``manifest.json``.

A weights folder's manifest says how to use its members (model, members, threshold, test-time views) and where
they came from (the training run, the data, the export, the out-of-fold scores). Every wing reads it through
:meth:`Manifest.from_dict`, which checks what would give wrong answers and raises :class:`~amf.errors.WeightsError`
naming the file; export writes it through :meth:`Manifest.to_dict`, which gives the keys in the order export has
always written them, so the shipped ``weights/manifest.json`` reads and writes back byte for byte.

Torch-free on purpose, like :mod:`amf.inference.spec`: a manifest is checked in about a second, before torch
loads. The provenance records are typed down to the fields some code reads; below that, the records another
module owns (a training config, an environment, a git state, a metrics row) stay the dicts that module reads.
``amf/inference/manifest.schema.json`` describes the same keys for readers without this code; a test holds the
two together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from amf.errors import WeightsError
from amf.files import json_text, read_json
from amf.inference.io import PATCH_SIZE
from amf.inference.spec import ModelSpec, TTAConfig, check_geometry

MANIFEST = "manifest.json"
#: Bump when the manifest changes in a way older code cannot read.
FORMAT_VERSION = 1
#: The JSON schema of the same keys, beside this module.
SCHEMA = Path(__file__).with_name("manifest.schema.json")


@dataclass(frozen=True)
class Threshold:
    """The decision threshold on P(atypical), and how it was chosen (e.g. ``oof_balanced_accuracy``)."""

    value: float
    method: str

    def to_dict(self) -> dict:
        return {"value": self.value, "method": self.method}


@dataclass(frozen=True)
class MemberFile:
    """One member's safetensors file in the weights folder, and its sha256."""

    file: str
    sha256: str


# --- provenance records: every field optional, since older exports and tampered files lack some ---------------


def _key(f) -> str:
    return f.metadata.get("key", f.name)


class _Record:
    """A provenance record read leniently: absent keys are None, unknown keys are not kept."""

    @classmethod
    def from_dict(cls, d: object, where: str) -> Any:
        if d is None:
            return None
        if not isinstance(d, dict):
            raise WeightsError(f"{where} is not an object")
        return cls(**{f.name: d.get(_key(f)) for f in fields(cls)})

    def to_dict(self) -> dict:
        return {_key(f): getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class TrainingJob(_Record):
    """One training command that made members (an event of the run's log)."""

    time: str | None = None
    job: int | None = None
    event: str | None = None
    arguments: list[str] | None = None
    command: list[str] | None = None
    folds: list[str] | None = None
    git: dict | None = None
    environment: dict | None = None
    epochs: int | None = None


@dataclass(frozen=True)
class TrainingRecord(_Record):
    """The run the members came from: its config (as :mod:`amf.training.config` records it), the commands, commits
    and environments of its jobs, and its pretrained start and teacher."""

    config: dict | None = None
    config_file: dict | None = None  # {"path", "sha256", "text"}
    command: list[str] | None = None
    arguments: list[str] | None = None
    jobs: tuple[TrainingJob, ...] = ()
    git_commit: str | None = None
    git: dict | None = None
    environment: dict | None = None
    created: str | None = None
    run: str | None = None
    torch: str | None = None
    init_weights_sha256: str | None = None
    init: dict | None = None
    teacher_scores_sha256: str | None = None

    @classmethod
    def from_dict(cls, d: object, where: str) -> TrainingRecord | None:
        record = super().from_dict(d, where)
        if record is None:
            return None
        jobs = record.jobs or ()
        if not isinstance(jobs, (list, tuple)):
            raise WeightsError(f"{where}.jobs is not a list")
        return replace(record, jobs=tuple(TrainingJob.from_dict(j, f"{where}.jobs[{i}]") for i, j in enumerate(jobs)))

    def to_dict(self) -> dict:
        return {**super().to_dict(), "jobs": [job.to_dict() for job in self.jobs]}


@dataclass(frozen=True)
class DataRecord(_Record):
    """The training data: its labels files and their hashes, its size, and the patches whose labels reached the
    weights (``patch_sha256``, the pixels' sha256)."""

    labels_file: str | list[str] | None = None
    labels_sha256: str | None = None
    labels_sha256_each: list[str] | None = None
    files_sha256: str | None = None
    n: int | None = None
    n_atypical: int | None = None
    format: str | None = None
    columns: dict | None = None
    limit: int | None = None
    patch_sha256: list[str] | None = None
    patch_sha256_note: str | None = None

    @property
    def trained_patches(self) -> frozenset[str]:
        return frozenset(self.patch_sha256 or ())


@dataclass(frozen=True)
class ExportRecord(_Record):
    """Who exported the folder: the commit and tree, the environment, the command, the time."""

    git_commit: str | None = None
    git: dict | None = field(default=None, metadata={"key": "export_git"})
    allow_dirty: bool | None = field(default=None, metadata={"key": "export_allow_dirty"})
    environment: dict | None = field(default=None, metadata={"key": "export_environment"})
    command: list[str] | None = field(default=None, metadata={"key": "export_command"})
    arguments: list[str] | None = field(default=None, metadata={"key": "export_arguments"})
    exported: str | None = None


@dataclass(frozen=True)
class Candidate(_Record):
    """A threshold rule's cut on the out-of-fold scores, and the balanced accuracy it gives there."""

    value: float | None = None
    oof_balanced_accuracy: float | None = None


@dataclass(frozen=True)
class OOFSummary(_Record):
    """The pooled out-of-fold scores of the members as shipped, summarised."""

    n: int | None = None
    n_atypical: int | None = None
    auc: float | None = None
    balanced_accuracy: float | None = None
    note: str | None = None


@dataclass(frozen=True)
class MemberInfo(_Record):
    """A member's fold, its best epoch, and its validation metrics there."""

    fold: str | None = None
    best_epoch: int | None = None
    val: dict | None = None


@dataclass(frozen=True)
class RecordedFile(_Record):
    """A file beside the members (``oof.csv``, ``membership.csv``) and its sha256; ``columns`` maps membership's
    member columns to the folds that trained them."""

    file: str | None = None
    sha256: str | None = None
    columns: dict[str, str] | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in super().to_dict().items() if k != "columns" or v is not None}


# --- the manifest ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Provenance:
    """Where the members came from: the training run and its data, the export, the out-of-fold scores and the
    threshold rule, and the files recorded beside the members. Empty for weights made outside ``amf export`` (a
    test's, a benchmark's stand-in)."""

    training: TrainingRecord | None = None
    data: DataRecord | None = None
    export: ExportRecord | None = None
    threshold_rule: str | None = None
    threshold_candidates: dict[str, Candidate] = field(default_factory=dict)
    oof: OOFSummary | None = None
    lodo_mean: dict | None = None
    threshold_transfer: dict | None = None
    member_info: tuple[MemberInfo, ...] = ()
    note: str | None = None
    files: dict[str, RecordedFile] = field(default_factory=dict)

    @property
    def member_folds(self) -> dict[str, str]:
        """``membership.csv``'s member columns and the folds that trained them (empty when not recorded)."""
        membership = self.files.get("membership")
        return dict(membership.columns or {}) if membership else {}

    @property
    def jobs(self) -> tuple[TrainingJob, ...]:
        return self.training.jobs if self.training else ()

    @property
    def trained_patches(self) -> frozenset[str]:
        """The pixels' sha256 of every patch whose label reached the weights (empty when not recorded)."""
        return self.data.trained_patches if self.data else frozenset()

    @classmethod
    def from_dict(cls, d: dict, where: str | Path) -> Provenance:
        return cls(
            training=TrainingRecord.from_dict(d.get("training"), f"{where}: training"),
            data=DataRecord.from_dict(d.get("data"), f"{where}: data"),
            export=ExportRecord.from_dict(d, str(where)),
            threshold_rule=d.get("threshold_rule"),
            threshold_candidates=_named(Candidate, d.get("threshold_candidates"), f"{where}: threshold_candidates"),
            oof=OOFSummary.from_dict(d.get("oof"), f"{where}: oof"),
            lodo_mean=d.get("lodo_mean"), threshold_transfer=d.get("threshold_transfer"),
            member_info=tuple(MemberInfo.from_dict(m, f"{where}: member_info") for m in d.get("member_info") or ()),
            note=d.get("note"),
            files=_named(RecordedFile, d.get("files"), f"{where}: files"),
        )

    def to_dict(self) -> dict:
        """The manifest's provenance keys, in export's order."""
        return {
            "training": self.training.to_dict() if self.training else None,
            "data": self.data.to_dict() if self.data else None,
            **(self.export or ExportRecord()).to_dict(),
            "threshold_rule": self.threshold_rule,
            "threshold_candidates": {k: c.to_dict() for k, c in self.threshold_candidates.items()},
            "oof": self.oof.to_dict() if self.oof else None,
            "lodo_mean": self.lodo_mean,
            "threshold_transfer": self.threshold_transfer,
            "member_info": [m.to_dict() for m in self.member_info],
            "note": self.note,
            "files": {k: f.to_dict() for k, f in self.files.items()},
        }


@dataclass(frozen=True)
class Manifest:
    """What a weights folder's ``manifest.json`` says, typed: how to use the members, and where they came from."""

    model: ModelSpec
    members: tuple[MemberFile, ...]
    threshold: Threshold
    tta: TTAConfig
    provenance: Provenance = field(default_factory=Provenance)
    storage_dtype: str = "float16"
    format_version: int = FORMAT_VERSION

    @classmethod
    def from_dict(cls, d: object, where: str | Path = MANIFEST) -> Manifest:
        """A manifest's JSON object, checked: the format version, the keys inference needs, the member entries,
        and every value that would give wrong answers (architecture, geometry, threshold, views). Each problem is a
        :class:`~amf.errors.WeightsError` naming ``where``."""
        if not isinstance(d, dict):
            raise WeightsError(f"{where} is not a JSON object")
        version = d.get("format_version")
        if type(version) is not int or version > FORMAT_VERSION or version < 1:
            raise WeightsError(f"{where} has format_version {version!r}; this code reads versions 1 to "
                               f"{FORMAT_VERSION}: update amf or re-export the weights")
        for key in ("model", "members", "threshold", "tta"):
            if key not in d:
                raise WeightsError(f"{where} lacks the key {key!r}")
        return cls(model=_model(d["model"], where), members=_members(d["members"], where),
                   threshold=_threshold(d["threshold"], where), tta=_tta(d["tta"], where),
                   provenance=Provenance.from_dict(d, where), storage_dtype=str(d.get("storage_dtype", "float16")),
                   format_version=version)

    @classmethod
    def read(cls, path: Path) -> Manifest:
        """Parse and check ``path`` (the member files are not opened: :func:`amf.inference.weights.read_manifest`
        does that)."""
        return cls.from_dict(read_json(path, WeightsError), path)

    def to_dict(self) -> dict:
        """The JSON object export writes, keys in export's order."""
        return {
            "format_version": self.format_version,
            "model": self.model.to_dict(),
            "storage_dtype": self.storage_dtype,
            "members": [{"file": m.file, "sha256": m.sha256} for m in self.members],
            "threshold": self.threshold.to_dict(),
            "tta": self.tta.to_dict(),
            **self.provenance.to_dict(),
        }

    def text(self) -> str:
        """The file's text as export writes it."""
        return json_text(self.to_dict())


def _model(d: object, where: str | Path) -> ModelSpec:
    if not (isinstance(d, dict) and isinstance(d.get("arch"), str) and d["arch"]):
        raise WeightsError(f"{where}: model entry lacks an architecture name")
    try:
        check_geometry(d.get("input_size"), d.get("crop", PATCH_SIZE))
        return ModelSpec.from_dict(d)
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"{where}: model {exc}") from exc


def _members(entries: object, where: str | Path) -> tuple[MemberFile, ...]:
    if not isinstance(entries, list) or not entries:
        raise WeightsError(f"{where} lists no members")
    members = []
    for i, entry in enumerate(entries):
        if not (isinstance(entry, dict) and all(isinstance(entry.get(k), str) for k in ("file", "sha256"))):
            raise WeightsError(f"{where}: member {i} is not a {{'file': ..., 'sha256': ...}} entry")
        name = entry["file"]
        if not name or Path(name).name != name or name in (".", ".."):
            raise WeightsError(f"{where}: member {i} file {name!r} is not a plain file name in the weights folder")
        members.append(MemberFile(name, entry["sha256"]))
    return tuple(members)


def _threshold(d: object, where: str | Path) -> Threshold:
    if not isinstance(d, dict) or "value" not in d or "method" not in d:
        raise WeightsError(f"{where}: threshold must be {{'value': ..., 'method': ...}}")
    value = d["value"]
    if type(value) not in (int, float) or not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise WeightsError(f"{where}: threshold {value!r} is not a probability in [0, 1]")
    return Threshold(float(value), str(d["method"]))


def _tta(d: object, where: str | Path) -> TTAConfig:
    try:
        return TTAConfig.from_dict(d)
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"{where}: {exc}") from exc


def _named(cls: type[_Record], d: object, where: str) -> dict:
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise WeightsError(f"{where} is not an object")
    return {name: cls.from_dict(value, f"{where}.{name}") for name, value in d.items()}

