"""What every audit check shares: a :class:`Finding` (one line of the report), the three statuses, and the
:class:`Context` that names the weights folder, the data folders and the results folder being audited.

Its own module so that the checks (:mod:`amf.audit.checks`, :mod:`amf.audit.results`) and the runner
(:mod:`amf.audit.runner`) depend on it and not on one another.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from amf.errors import AmfError
from amf.files import read_json
from amf.inference.manifest import Manifest
from amf.provenance import ROOT

PASS, FAIL, CANNOT = "pass", "fail", "cannot check"
#: The data folder the recorded paths (``../shared/data/...``) point to, from the repository root.
DEFAULT_DATA = ROOT.parent / "shared" / "data"


@dataclass(frozen=True)
class Finding:
    check: str
    status: str
    detail: str

    def line(self) -> str:
        return f"{self.status.upper():<12} {self.check}: {self.detail}"

    def to_dict(self) -> dict:
        return {"check": self.check, "status": self.status, "detail": self.detail}


Check = Callable[["Context"], Iterator[Finding]]


class Context:
    """What the checks share: the weights folder, its manifest, the data folders, the results folder."""

    def __init__(self, weights: Path, data: list[Path], results: Path, root: Path = ROOT):
        self.root = root
        self.weights = Path(weights)
        self.data = [Path(d) for d in data]
        self.results = Path(results)
        self._manifest: Manifest | None = None
        self._table = None

    @property
    def manifest(self) -> Manifest:
        """The weights' manifest, read and typed once (its member files are the ``weights.members`` check's)."""
        if self._manifest is None:
            from amf.inference.weights import read_manifest

            self._manifest = read_manifest(self.weights, verify_files=False)
        return self._manifest

    def locate(self, recorded: str) -> Path | None:
        """A recorded data path (e.g. ``../shared/data/ami-br-tupac16/labels.csv``) in the data folders given:
        its folder and file name (or a longer tail) under one of them."""
        parts = Path(recorded).parts
        first = 1 if Path(recorded).is_absolute() else 0  # never the recorded absolute path itself
        for d in self.data:
            for i in range(len(parts) - min(2, len(parts)), first - 1, -1):
                candidate = d.joinpath(*parts[i:])
                if candidate.is_file():
                    return candidate
        return None

    def labels_files(self) -> list[Path] | str:
        """The training labels files found in the data folders, or why they cannot be."""
        data = self.manifest.provenance.data
        recorded = data.labels_file if data else None
        recorded = recorded if isinstance(recorded, list) else [recorded] if recorded else []
        if not recorded:
            return "the manifest records no labels file"
        found = [self.locate(r) for r in recorded]
        missing = [r for r, f in zip(recorded, found, strict=True) if f is None]
        if missing:
            where = ", ".join(str(d) for d in self.data)
            return f"{', '.join(missing)} not found under {where} (give the data folder with --data)"
        return found

    def table(self):
        """The training data as :func:`amf.training.data.read_datasets` reads it from the data folders (cached)."""
        if self._table is None:
            from amf.training.data import read_datasets

            files = self.labels_files()
            if isinstance(files, str):
                raise AmfError(files)
            self._table = read_datasets([(f, None) for f in files])
        return self._table


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def lodo_rows(ctx: Context) -> dict[str, dict]:
    path = ctx.results / "crossval.json"
    return read_json(path, AmfError) if path.is_file() else {}
