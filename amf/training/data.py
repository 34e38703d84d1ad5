"""Training datasets: a labels CSV plus an image folder, validated whole before anything trains.

Two CSV formats are recognised from their columns (any column can be overridden by name):

- ``amibr`` (AMi-Br, ``../shared/data/ami-br-midog21/labels.csv``): image ``patch``, label
  ``majority_atypical``, domain ``scanner``, group ``slide``.
- ``midog25`` (MIDOG 2025 atypical training set): image ``image_id``, label ``majority`` (AMF/NMF),
  domain ``Tumor``, group ``filename``.

Image paths are relative to the image folder (default: the CSV's folder). Labels may be written
True/False, AMF/NMF, atypical/normal or 1/0 (any case); 1 means atypical.

Several labels files train together (:func:`read_datasets`): each is read with its own image folder and
its own detected format, so AMi-Br's ``scanner`` and MIDOG 2025's ``Tumor`` stay the domain of their own
rows. The combined table addresses images relative to the folder the image folders share, and keeps each
file's groups apart (a slide named alike in two data sets is still two slides).

Validation is all-or-nothing: :func:`read_labels` checks every row (empty or missing image, unknown
label, empty domain or group) and raises one :class:`~amf.errors.DatasetError` that counts every kind of
problem and names the first few lines of each, so a broken dataset is fixed in one go and never half
loaded. :func:`load_images` then decodes every patch through :func:`amf.inference.io.read_patches` (the same path
inference uses) into one uint8 tensor, again reporting all unreadable files together.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from amf.errors import AmfError, DatasetError, InputError
from amf.files import sha256_file
from amf.inference.io import PATCH_SIZE, read_patches

#: How many offenders an error message names per kind of problem.
SHOW = 5

POSITIVE = frozenset({"true", "amf", "atypical", "1", "1.0"})
NEGATIVE = frozenset({"false", "nmf", "normal", "0", "0.0"})


@dataclass(frozen=True)
class Columns:
    """Which CSV column holds the image path, the label, the domain and the group (slide / source image)."""

    image: str
    label: str
    domain: str
    group: str

    def to_dict(self) -> dict:
        return {"image": self.image, "label": self.label, "domain": self.domain, "group": self.group}


#: The recognised formats, tried in this order.
FORMATS: dict[str, Columns] = {
    "amibr": Columns(image="patch", label="majority_atypical", domain="scanner", group="slide"),
    "midog25": Columns(image="image_id", label="majority", domain="Tumor", group="filename"),
}


@dataclass
class LabelTable:
    """A validated dataset: one entry per patch, in CSV order (after ``limit``)."""

    labels_file: Path
    image_dir: Path
    format: str
    columns: Columns
    paths: list[str]  # relative to image_dir, as written in the CSV
    labels: np.ndarray  # int64, 1 = atypical
    domains: list[str]
    groups: list[str]
    rows: np.ndarray  # CSV line numbers (header = line 1), for messages and OOF files
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, idx: np.ndarray) -> LabelTable:
        idx = np.asarray(idx, dtype=np.int64)
        return LabelTable(
            self.labels_file,
            self.image_dir,
            self.format,
            self.columns,
            [self.paths[i] for i in idx],
            self.labels[idx],
            [self.domains[i] for i in idx],
            [self.groups[i] for i in idx],
            self.rows[idx],
            dict(self.meta),
        )

    def summary(self) -> dict:
        """Counts per domain and class, for logs and the run summary."""
        out: dict[str, dict[str, int]] = {}
        for d, y in zip(self.domains, self.labels.tolist(), strict=True):
            c = out.setdefault(d, {"atypical": 0, "normal": 0})
            c["atypical" if y else "normal"] += 1
        return dict(sorted(out.items()))


def parse_label(value: str) -> int | None:
    """``1`` for atypical, ``0`` for normal, ``None`` for anything else."""
    v = value.strip().lower()
    if v in POSITIVE:
        return 1
    if v in NEGATIVE:
        return 0
    return None


def detect_format(header: list[str]) -> str | None:
    for name, cols in FORMATS.items():
        if all(c in header for c in (cols.image, cols.label, cols.domain, cols.group)):
            return name
    return None


def resolve_columns(header: list[str], overrides: dict[str, str | None] | None = None) -> tuple[str, Columns]:
    """Pick the format from ``header`` and apply per-column ``overrides`` (keys image/label/domain/group)."""
    overrides = {k: v for k, v in (overrides or {}).items() if v}
    unknown = set(overrides) - {"image", "label", "domain", "group"}
    if unknown:
        raise AmfError(f"unknown column role(s) {sorted(unknown)}: use image, label, domain, group")
    fmt = detect_format(header)
    if fmt is None:
        # Partial match: the format sharing most columns supplies defaults for what was not overridden.
        fmt = max(FORMATS, key=lambda f: sum(c in header for c in FORMATS[f].to_dict().values()))
        base = FORMATS[fmt]
        fmt = "custom"
    else:
        base = FORMATS[fmt]
        fmt = fmt if not overrides else f"{fmt}+overrides"
    cols = Columns(**{**base.to_dict(), **overrides})
    missing = [f"{role} column {name!r}" for role, name in cols.to_dict().items() if name not in header]
    if missing:
        known = "; ".join(f"{n}: {', '.join(c.to_dict().values())}" for n, c in FORMATS.items())
        raise DatasetError(
            f"labels file lacks {len(missing)} column(s): {', '.join(missing)}. "
            f"It has: {', '.join(header) or '(no header)'}. Known formats ({known}); "
            "override with --image-column/--label-column/--domain-column/--group-column"
        )
    return fmt, cols


def _problem_text(kind: str, items: list[str]) -> str:
    shown = ", ".join(items[:SHOW])
    more = f", ... ({len(items) - SHOW} more)" if len(items) > SHOW else ""
    return f"{len(items)} {kind} ({shown}{more})"


def read_labels(
    labels_file: Path,
    image_dir: Path | None = None,
    columns: dict[str, str | None] | None = None,
    check_files: bool = True,
) -> LabelTable:
    """Read and validate every row of ``labels_file``; raise one :class:`DatasetError` listing all problems."""
    labels_file = Path(labels_file)
    if not labels_file.is_file():
        raise DatasetError(f"labels file not found: {labels_file}")
    image_dir = Path(image_dir) if image_dir is not None else labels_file.parent
    if check_files and not image_dir.is_dir():
        raise DatasetError(f"image folder not found: {image_dir}")
    try:
        with open(labels_file, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            records = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{labels_file} is not a readable CSV: {exc}") from exc
    fmt, cols = resolve_columns(header, columns)
    if not records:
        raise DatasetError(f"{labels_file} has a header but no rows")

    problems: dict[str, list[str]] = {}
    paths, labels, domains, groups = [], [], [], []
    for i, rec in enumerate(records, start=1):
        where = f"line {i + 1}"
        image = (rec.get(cols.image) or "").strip()
        raw_label = (rec.get(cols.label) or "").strip()
        domain = (rec.get(cols.domain) or "").strip()
        group = (rec.get(cols.group) or "").strip()
        if not image:
            problems.setdefault(f"empty '{cols.image}' values", []).append(where)
        elif check_files and not (image_dir / image).is_file():
            problems.setdefault("missing images", []).append(f"{where}: {image}")
        label = parse_label(raw_label)
        if label is None:
            problems.setdefault(f"unknown '{cols.label}' labels", []).append(f"{where}: {raw_label!r}")
        if not domain:
            problems.setdefault(f"empty '{cols.domain}' (domain) values", []).append(where)
        if not group:
            problems.setdefault(f"empty '{cols.group}' (group) values", []).append(where)
        paths.append(image)
        labels.append(-1 if label is None else label)
        domains.append(domain)
        groups.append(group)
    seen: dict[str, int] = {}
    for i, p in enumerate(paths, start=1):
        if p and p in seen:
            problems.setdefault("duplicate images", []).append(f"line {i + 1}: {p} (also line {seen[p] + 1})")
        seen.setdefault(p, i)
    if problems:
        total = sum(len(v) for v in problems.values())
        detail = "; ".join(_problem_text(k, v) for k, v in problems.items())
        raise DatasetError(f"{labels_file}: {total} problem(s) in {len(records)} rows, nothing loaded: {detail}")
    return LabelTable(
        labels_file=labels_file,
        image_dir=image_dir,
        format=fmt,
        columns=cols,
        paths=paths,
        labels=np.asarray(labels, dtype=np.int64),
        domains=domains,
        groups=groups,
        rows=np.arange(2, len(records) + 2, dtype=np.int64),
    )


def read_datasets(
    sources: list[tuple[Path, Path | None]],
    columns: dict[str, str | None] | None = None,
    check_files: bool = True,
) -> LabelTable:
    """Read several ``(labels file, image folder or None)`` pairs into one table, validating all of them.

    One source gives exactly :func:`read_labels`'s table. Several are concatenated in the order given:
    image paths become relative to the deepest folder holding every image folder, groups are prefixed with
    the labels file's folder name, and every file's problems are reported together before any is loaded.
    ``columns`` overrides apply to every file (each file's format is detected on its own).
    """
    if not sources:
        raise DatasetError("no labels file given")
    if len(sources) == 1:
        return read_labels(sources[0][0], sources[0][1], columns, check_files)
    tables, errors = [], []
    for labels_file, image_dir in sources:
        try:
            tables.append(read_labels(labels_file, image_dir, columns, check_files))
        except DatasetError as exc:
            errors.append(str(exc))
    if errors:
        raise DatasetError(" | ".join(errors))
    dirs = [t.image_dir.resolve() for t in tables]
    root = Path(os.path.commonpath(dirs))
    names = _source_names(tables)
    paths, groups, files = [], [], []
    for t, d, name in zip(tables, dirs, names, strict=True):
        prefix = d.relative_to(root).as_posix()
        paths += [p if prefix == "." else f"{prefix}/{p}" for p in t.paths]
        groups += [f"{name}/{g}" for g in t.groups]
        files.append(str(t.labels_file))
    dup = sorted(p for p, n in Counter(paths).items() if n > 1)
    if dup:
        raise DatasetError(f"{len(dup)} image(s) listed by more than one labels file ({', '.join(dup[:SHOW])})")
    return LabelTable(
        labels_file=tables[0].labels_file,
        image_dir=root,
        format="+".join(t.format for t in tables),
        columns=tables[0].columns,
        paths=paths,
        labels=np.concatenate([t.labels for t in tables]),
        domains=[d for t in tables for d in t.domains],
        groups=groups,
        rows=np.concatenate([t.rows for t in tables]),
        meta={"labels_files": files, "columns": [t.columns.to_dict() for t in tables]},
    )


def _source_names(tables: list[LabelTable]) -> list[str]:
    """A short, unique name per labels file (its folder's name, else its stem), to keep groups apart."""
    names = [t.labels_file.resolve().parent.name or t.labels_file.stem for t in tables]
    if len(set(names)) < len(names):
        names = [f"{i}-{n}" for i, n in enumerate(names)]
    return names


def limit_table(table: LabelTable, n: int, seed: int = 0) -> LabelTable:
    """A deterministic subset of ``n`` rows for tiny runs, spread over every (domain, class) stratum.

    Rows are shuffled with ``seed`` inside each stratum, then drawn round-robin across strata, so even 32
    rows still hold every domain and both classes (classes end up roughly balanced, not at the full set's
    ratio). The subset keeps CSV order.
    """
    if n <= 0 or n >= len(table):
        return table
    rng = np.random.default_rng(seed)
    strata: dict[tuple[str, int], list[int]] = {}
    for i, key in enumerate(zip(table.domains, table.labels.tolist(), strict=True)):
        strata.setdefault(key, []).append(i)
    queues = [list(rng.permutation(v)) for _, v in sorted(strata.items())]
    chosen: list[int] = []
    while len(chosen) < n:
        for q in queues:
            if q and len(chosen) < n:
                chosen.append(int(q.pop()))
    out = table.subset(np.sort(np.asarray(chosen)))
    out.meta["limit"] = n
    return out


def load_images(table: LabelTable, progress: bool = False) -> torch.Tensor:
    """Decode every patch into one ``(N, 3, 128, 128)`` uint8 tensor (first page of each file).

    Goes through :func:`amf.inference.io.read_patches`, so training sees patches exactly as inference prepares them
    (pad/crop to 128 px, never rescale). All unreadable files are reported together.
    """

    out = torch.empty((len(table), 3, PATCH_SIZE, PATCH_SIZE), dtype=torch.uint8)
    bad: list[str] = []
    it = range(len(table))
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="loading patches", unit="img", leave=False)
    for i in it:
        try:
            patch = read_patches(table.image_dir / table.paths[i])[0]
        except InputError as exc:
            bad.append(f"line {table.rows[i]}: {exc}")
            continue
        out[i] = torch.from_numpy(patch).permute(2, 0, 1)
    if bad:
        raise DatasetError(f"{_problem_text('unreadable images', bad)}; nothing loaded")
    return out


def fingerprint(table: LabelTable) -> dict:
    """What identifies the training data: labels-file sha256, sha256 of the sorted file list, counts."""

    listing = "\n".join(sorted(table.paths)).encode()
    files = table.meta.get("labels_files")
    if files:  # several labels files: the sha256 of their sha256s (hex, one per line, no final newline), in order
        each = [sha256_file(Path(f)) for f in files]
        labels_sha = hashlib.sha256("\n".join(each).encode()).hexdigest()
    else:
        each = [sha256_file(table.labels_file)]
        labels_sha = each[0]
    return {
        "labels_file": files or str(table.labels_file),
        "labels_sha256": labels_sha,
        "labels_sha256_each": each,
        "files_sha256": hashlib.sha256(listing).hexdigest(),
        "n": len(table),
        "n_atypical": int(table.labels.sum()),
        "format": table.format,
        "columns": table.columns.to_dict(),
        "limit": table.meta.get("limit"),
    }
