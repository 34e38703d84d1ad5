"""Distillation: a student learns from a teacher's scores of its training patches as well as from their labels.

With ``distill_weight = w`` a student's training target for a patch is ``(1 - w) * label + w * p_teacher``, in the
same focal loss (:func:`amf.training.losses.focal_loss` takes soft targets: its ``p_t`` and class weight
interpolate). The point is cost: a teacher of 5 members x 8 views spends 40 forward passes on a figure, a student
one, and the teacher's averaged views and members are what the student is asked to reproduce.

The teacher's scores are a CSV with ``image`` (the path as the run's labels give it) and ``p_atypical``, and for a
leave-one-domain-out student ``heldout_domain``: a student fold that leaves domain D out learns only from rows
whose ``heldout_domain`` is D, i.e. from teachers that never saw D either, so the held-out estimate stays clean.
``amf crossval`` writes such files (``oof_<row>_<mode>.csv``: each training-domain patch scored, with the row's
views, by the one model of that held-out domain that did not train on it: out-of-sample soft targets). A
five-member export's ``weights/oof.csv`` (no ``heldout_domain``) serves the all-domains folds: the shipped student
learned from ``docs/results/teachers/lite0-crop80-ens5_oof.csv``, the one of the ensemble shipped before it.
Every training patch of every fold must have a score; a missing one stops the run before any training, naming it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from amf.errors import AmfError
from amf.training.data import LabelTable
from amf.training.splits import Fold

#: ``heldout_domain`` -> image -> P(atypical); the key ``None`` holds the rows without a held-out domain.
TeacherScores = dict[str | None, dict[str, float]]


def read_teacher(path: Path) -> TeacherScores:
    """The teacher's scores, by held-out domain and image (duplicates and values outside [0, 1] refused)."""
    path = Path(path)
    if not path.is_file():
        raise AmfError(f"teacher scores not found: {path}")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"image", "p_atypical"} - set(reader.fieldnames or [])
        if missing:
            raise AmfError(f"{path}: teacher scores need the columns image and p_atypical (missing "
                           f"{', '.join(sorted(missing))})")
        scores: TeacherScores = {}
        for line, row in enumerate(reader, start=2):
            domain = row.get("heldout_domain") or None
            try:
                p = float(row["p_atypical"])
            except ValueError:
                raise AmfError(f"{path}:{line}: p_atypical {row['p_atypical']!r} is not a number") from None
            if not 0.0 <= p <= 1.0:
                raise AmfError(f"{path}:{line}: p_atypical {p} is not in [0, 1]")
            by_image = scores.setdefault(domain, {})
            if row["image"] in by_image:
                raise AmfError(f"{path}:{line}: {row['image']} scored twice"
                               + (f" for held-out domain {domain}" if domain else ""))
            by_image[row["image"]] = p
    return scores


def fold_targets(teacher: TeacherScores, table: LabelTable, fold: Fold) -> np.ndarray:
    """P_teacher of each of ``fold``'s training patches, at its index in ``table`` (NaN elsewhere)."""
    rows = teacher.get(fold.heldout_domain)
    if rows is None:
        have = ", ".join(sorted(str(d) for d in teacher)) or "none"
        want = f"held-out domain {fold.heldout_domain!r}" if fold.heldout_domain else "no held-out domain"
        raise AmfError(f"{fold.name}: the teacher scores have no rows for {want} (they have: {have})")
    targets = np.full(len(table), np.nan, dtype=np.float32)
    absent = []
    for i in fold.train:
        p = rows.get(table.paths[i])
        if p is None:
            absent.append(table.paths[i])
        else:
            targets[i] = p
    if absent:
        raise AmfError(f"{fold.name}: the teacher scores lack {len(absent)} of its {len(fold.train)} training patches "
                       f"(first: {', '.join(absent[:3])})")
    return targets


def soft_labels(labels: np.ndarray, targets: np.ndarray, weight: float) -> np.ndarray:
    """``(1 - weight) * labels + weight * targets``: what the student learns; ``weight = 0`` gives the labels."""
    return ((1.0 - weight) * labels + weight * targets).astype(np.float32)
