"""The training run folder: its layout, and the reading and writing of its files.

``amf train`` writes a run folder, ``amf crossval`` and ``amf export`` read it; all three go through this
module (:class:`RunFolder`), so no other module builds a run folder's paths or imports another command's code to
read a file. The layout (see :mod:`amf.training.train` for how a
run fills it)::

    runs/NAME/
      config.json          # TrainConfig, data fingerprint, command, git commit (RunFolder.config)
      log.jsonl            # RunLog: run start/resume, every epoch of every fold, fold end
      summary.json         # per held-out domain and OOF metrics, threshold candidates (written last)
      lodo/<domain>/fold<k>/ and all/fold<k>/
        checkpoint.pt      # resumable training state (amf.training.train)
        best.safetensors   # best epoch's weights (save_best_safetensors, load_fold_model)
        oof.csv, heldout.csv   # predictions (write_predictions, read_predictions)
        membership.csv     # every patch the fold touched and its role (train, val, heldout), by pixel sha256
        result.json        # fold metrics; written last, so it marks the fold finished (finished)

It also keeps the command lines of a run or an export (:func:`args_to_argv`, :func:`portable_command`,
:func:`job_commands`); the code and machine state is :mod:`amf.provenance`'s.
"""

from __future__ import annotations

import copy
import csv
import datetime as _dt
import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from amf.errors import AmfError, WeightsError
from amf.files import atomic_write_bytes, json_text, write_json
from amf.provenance import ROOT

if TYPE_CHECKING:  # torch, timm and the config's registries load only where a model or config is read
    from amf.inference.model import Classifier
    from amf.inference.spec import ModelSpec
    from amf.training.config import TrainConfig
    from amf.training.data import LabelTable

CONFIG = "config.json"
LOG = "log.jsonl"
SUMMARY = "summary.json"
CHECKPOINT = "checkpoint.pt"
BEST = "best.safetensors"
RESULT = "result.json"
OOF = "oof.csv"
HELDOUT = "heldout.csv"
MEMBERSHIP = "membership.csv"
PRED_COLUMNS = ("line", "image", "domain", "group", "label", "logit", "prob")
MEMBERSHIP_COLUMNS = ("image", "sha256", "domain", "group", "label", "role")
#: The roles a patch can have in a fold: trained on, validated on (its out-of-fold score), held out (LODO).
ROLES = ("train", "val", "heldout")


class RunLog:
    """Append-only JSON-lines log; ``path=None`` writes nothing (the non-main processes of a torchrun job).

    Every line carries the ``job`` that wrote it (start time and process id), so the epochs of jobs that
    ran side by side into one run folder can be told apart: :func:`job_commands` says what each trained."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path is not None else None
        self.job = f"{_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}/{os.getpid()}"

    def write(self, **record) -> None:
        if self.path is None:
            return
        record = {"time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "job": self.job, **record}
        with open(self.path, "a") as f:
            f.write(json_text(record, indent=None))
            f.flush()


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def write_predictions(path: Path, table: LabelTable, idx: np.ndarray, logits: np.ndarray) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(PRED_COLUMNS)
    for i, z in zip(idx.tolist(), logits.tolist(), strict=True):
        w.writerow([int(table.rows[i]), table.paths[i], table.domains[i], table.groups[i], int(table.labels[i]),
                    repr(float(z)), repr(float(sigmoid(z)))])
    atomic_write_bytes(Path(path), buf.getvalue().encode())


def write_membership(path: Path, table: LabelTable, roles: dict[str, np.ndarray], digests: list[str]) -> None:
    """Which patches a fold trained on, validated on and held out, recorded by training itself: one row per
    patch with its image, pixel sha256 (:func:`amf.inference.io.patch_digest`), domain, group, label and role.

    ``amf audit`` checks leakage from these rows (not from the split plan): no held-out patch, pixel
    duplicate or group (slide) among a model's training rows."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(MEMBERSHIP_COLUMNS)
    for role in ROLES:
        for i in roles.get(role, np.zeros(0, dtype=np.int64)).tolist():
            w.writerow([table.paths[i], digests[i], table.domains[i], table.groups[i], int(table.labels[i]), role])
    atomic_write_bytes(Path(path), buf.getvalue().encode())


def read_membership(path: Path) -> list[dict[str, str]]:
    """The rows of a ``membership.csv`` (columns :data:`MEMBERSHIP_COLUMNS`)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_membership_table(path: Path, columns: list[str], memberships: list[list[dict[str, str]]]) -> None:
    """The wide form of several models' ``membership.csv``: one row per patch (image, sha256, domain, group,
    label) and, per model (one column each, named by ``columns``), its role as training recorded it, or empty.
    The weights' ``membership.csv`` and crossval's ``membership_<row>.csv`` are this table."""
    rows = [{r["image"]: r for r in m} for m in memberships]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "sha256", "domain", "group", "label", *columns])
    for image in sorted(set().union(*rows)):
        first = next(r[image] for r in rows if image in r)
        w.writerow([image, first["sha256"], first["domain"], first["group"], first["label"],
                    *(r[image]["role"] if image in r else "" for r in rows)])
    atomic_write_bytes(Path(path), buf.getvalue().encode())


def job_commands(run_dir: Path) -> list[dict]:
    """Every job that trained into ``run_dir``, in order, from its ``log.jsonl``: the canonical arguments,
    the exact command line, the folds it was asked for, the code and machine state it ran with, and
    ``epochs``: how many epochs it trained.

    Lines carry their job's id; in logs written before they did, an epoch is counted for every job without
    an id that started before it (a job that trained nothing is then certain to have trained nothing)."""
    path = Path(run_dir) / LOG
    if not path.is_file():
        return []
    jobs: list[dict] = []
    for line in path.read_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # a kill can cut the last line short
        if event.get("event") in ("start", "resume"):
            jobs.append({**{k: event.get(k) for k in ("time", "job", "event", "arguments", "command", "folds", "git",
                                                      "environment")}, "epochs": 0})
        elif event.get("event") == "epoch":
            for job in jobs:
                if job["job"] == event.get("job") or (job["job"] is None and event.get("job") is None):
                    job["epochs"] += 1
    return jobs


def read_predictions(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {
        "line": np.array([int(r["line"]) for r in rows], dtype=np.int64),
        "image": np.array([r["image"] for r in rows], dtype=object),
        "label": np.array([int(r["label"]) for r in rows], dtype=np.int64),
        "logit": np.array([float(r["logit"]) for r in rows], dtype=np.float64),
        "prob": np.array([float(r["prob"]) for r in rows], dtype=np.float64),
        "domain": np.array([r["domain"] for r in rows], dtype=object),
    }


def save_best_safetensors(path: Path, state: dict, meta: dict) -> None:
    from safetensors.torch import save

    # One metadata entry: safetensors writes several in a per-process random order, and then the same
    # weights give different bytes (seen when a fold was retrained to check reproducibility).
    data = save({k: v.contiguous() for k, v in state.items()}, metadata={"amf": json.dumps(meta, sort_keys=True)})
    atomic_write_bytes(Path(path), data)


def load_best_state(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def args_to_argv(command: str, args: object, positional: tuple[str, ...] = (),
                 negatable: frozenset[str] = frozenset()) -> list[str]:
    """Rebuild a canonical ``python -m amf`` argument list from a parsed ``argparse.Namespace``.

    ``sys.argv`` is the exact process command line, but it is not this command's when ``amf.cli.main``
    is called from Python (tests, notebooks); this form always is. ``negatable``: the destinations of
    ``--X/--no-X`` flags (default None), whose False was given as ``--no-X`` and must be written so; for a
    plain ``store_true`` flag False means "not given".
    """
    values = {k: v for k, v in vars(args).items() if k != "command"}
    out = [command, *(str(values.pop(p)) for p in positional)]
    for k, v in values.items():
        flag = "--" + k.replace("_", "-")
        if v is False and k in negatable:
            out.append("--no-" + k.replace("_", "-"))
        elif v is True:
            out.append(flag)
        elif isinstance(v, (list, tuple)):
            for item in v:
                out += [flag, str(item)]
        elif v is not None and v is not False:
            out += [flag, str(v)]
    return out


def portable_command(arguments: list[str], cwd: str | Path | None = None) -> list[str]:
    """``python -m amf ...`` as a user would type it again in the repository root, on any machine.

    Every argument that names an existing file or folder (relative to ``cwd``, the run's working folder) is
    written relative to the repository root, so no path of the machine that ran it is left in the record.
    """
    out = ["python", "-m", "amf"]
    for arg in arguments:
        path = Path(cwd or ".") / arg if not Path(arg).is_absolute() else Path(arg)
        if not arg.startswith("-") and "=" not in arg and path.exists():
            arg = os.path.relpath(path.resolve(), ROOT)
        out.append(arg)
    return out


def collect_oof(run_dir: Path, fold_names: list[str]) -> dict[str, np.ndarray]:
    """The out-of-fold predictions of ``fold_names``, pooled (columns as :func:`read_predictions`)."""
    parts = [read_predictions(Path(run_dir) / n / OOF) for n in fold_names]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


class RunFolder:
    """One training run folder, the only code that knows its layout (module docstring): the run's record and
    config, its log, its summary, and its folds (``lodo/<domain>/fold<k>``, ``all/fold<k>``) and their results."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    # --- the run ---------------------------------------------------------------------------------------------

    def is_run(self) -> bool:
        return (self.path / CONFIG).is_file()

    def check_is_run(self, what: str = "", hint: str = "train one with amf train") -> None:
        """A one-line error unless this is a training run (before any slow import)."""
        if not self.is_run():
            raise AmfError(f"{what}{self.path} is not a training run (no {CONFIG}); {hint}")

    def record(self) -> dict:
        """The whole ``config.json`` record: config, data fingerprint, command, code state."""
        self.check_is_run()
        return json.loads((self.path / CONFIG).read_text())

    def config(self) -> tuple[TrainConfig, dict]:
        """The run's :class:`TrainConfig` and its whole record."""
        from amf.training.config import TrainConfig

        record = self.record()
        return TrainConfig.from_dict(copy.deepcopy(record["config"])), record

    def write_record(self, record: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.path / CONFIG, record)

    def inputs(self, n_labels: int) -> tuple[dict[str, str], list[Path | None] | None]:
        """The column overrides and image folders the run was started with (a resumed run reuses them); runs
        from before ``image_dirs`` recorded one ``images_dir``."""
        record = self.record()
        dirs = record.get("image_dirs")
        if dirs:
            images = [Path(d) if d else None for d in dirs]
        elif record.get("images_dir") and n_labels == 1:
            images = [Path(record["images_dir"])]
        else:
            images = None
        return dict(record.get("column_overrides", {})), images

    def log(self, main: bool = True) -> RunLog:
        """The run's log; the non-main processes of a torchrun job write nothing."""
        return RunLog(self.path / LOG if main else None)

    def jobs(self) -> list[dict]:
        return job_commands(self.path)

    def summary(self) -> dict | None:
        path = self.path / SUMMARY
        return json.loads(path.read_text()) if path.is_file() else None

    def write_summary(self, summary: dict) -> None:
        write_json(self.path / SUMMARY, summary)

    # --- its folds -------------------------------------------------------------------------------------------

    def fold(self, name: str) -> Path:
        """The folder of fold ``name`` (e.g. ``lodo/TUPAC16/fold0``, ``all/fold3``)."""
        return self.path / name

    def fold_name(self, fold_dir: Path) -> str:
        return Path(fold_dir).relative_to(self.path).as_posix()

    def ensemble_folds(self, k: int) -> list[Path]:
        """The ``k`` all-domains folds, whose best epochs are the shipped members."""
        return [self.path / "all" / f"fold{i}" for i in range(k)]

    def result(self, fold_dir: Path) -> dict:
        return json.loads((Path(fold_dir) / RESULT).read_text())

    def lodo_folds(self) -> dict[str, list[Path]]:
        """Finished LODO fold folders of the run, by held-out domain name."""
        out: dict[str, list[Path]] = {}
        for result in sorted(self.path.glob("lodo/*/fold*/" + RESULT)):
            if finished(result.parent):
                out.setdefault(self.result(result.parent)["heldout_domain"], []).append(result.parent)
        if not out:
            raise AmfError(f"{self.path} has no finished leave-one-domain-out folds (lodo/*/fold*/{RESULT})")
        return out


def finished(fold_dir: Path) -> bool:
    """A fold is finished when its result (written last) and its best weights are there."""
    return (fold_dir / RESULT).is_file() and (fold_dir / BEST).is_file()


def load_fold_model(spec: ModelSpec, fold_dir: Path) -> Classifier:
    """A fold's best epoch as an eval-mode :class:`amf.inference.model.Classifier`."""
    from amf.inference.model import build_classifier

    model = build_classifier(spec)
    try:
        model.load_state_dict(load_best_state(fold_dir / BEST))
    except Exception as exc:  # noqa: BLE001 - safetensors and torch raise several types
        raise WeightsError(f"cannot load {fold_dir / BEST} into {spec.arch}: {str(exc).splitlines()[0]}") from exc
    return model.eval()
