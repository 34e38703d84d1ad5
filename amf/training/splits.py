"""Cross-validation folds: grouped + stratified k-fold, inside leave-one-domain-out (LODO).

* :func:`grouped_kfold` wraps scikit-learn's ``StratifiedGroupKFold`` (shuffled, seeded): every group
  (slide / source image) lies in exactly one validation fold, so no slide is ever on both sides, while
  each fold keeps roughly the class ratio.
* :func:`make_folds` builds the whole plan: for every domain ``d``, a k-fold over the *other* domains,
  with all of ``d`` held out (``lodo/<d>/fold<k>``), and a k-fold over all domains (``all/fold<k>``), the
  ensemble that gets shipped. A group that appears in two domains would leak across the LODO boundary,
  so it is refused.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from amf.errors import DatasetError


@dataclass(frozen=True)
class Fold:
    """One training job: indices into the dataset for training, validation and (LODO) the held-out domain."""

    name: str  # "lodo/<domain-slug>/fold<k>" or "all/fold<k>", also the run sub-folder
    heldout_domain: str | None
    fold: int
    train: np.ndarray
    val: np.ndarray
    heldout: np.ndarray

    @property
    def kind(self) -> str:
        return "all" if self.heldout_domain is None else "lodo"


def slug(text: str) -> str:
    """A folder-safe name: ``"Hamamatsu XR"`` -> ``"Hamamatsu_XR"``."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip()).strip("_.")
    return s or "domain"


def domain_slugs(domains: list[str]) -> dict[str, str]:
    """Unique folder names for each domain (suffix ``-2``, ``-3`` on collisions)."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for d in sorted(set(domains)):
        s = base = slug(d)
        n = 2
        while s.lower() in used:
            s, n = f"{base}-{n}", n + 1
        used.add(s.lower())
        out[d] = s
    return out


def grouped_kfold(
    labels: np.ndarray, groups: list[str] | np.ndarray, k: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` (train, val) index pairs; groups never split, classes stratified as far as groups allow."""
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    n_groups = len(np.unique(groups))
    if k < 2:
        raise DatasetError(f"need at least 2 folds, got {k}")
    if n_groups < k:
        raise DatasetError(f"cannot make {k} grouped folds from {n_groups} group(s) (slides / source images)")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # "The least populated class has only N members": fine for tiny runs, folds stay valid.
        warnings.simplefilter("ignore", UserWarning)
        out = [(np.sort(tr), np.sort(va)) for tr, va in splitter.split(np.zeros(len(labels)), labels, groups)]
    for tr, va in out:
        if len(va) == 0 or len(tr) == 0:
            raise DatasetError(f"grouped {k}-fold produced an empty fold; use fewer folds")
    return out


def make_folds(
    labels: np.ndarray,
    domains: list[str],
    groups: list[str],
    k: int,
    seed: int,
    lodo: bool = True,
) -> list[Fold]:
    """All folds of a run: LODO x k-fold (if ``lodo`` and there are at least 2 domains), then all-domains k-fold.

    Examples:
        >>> labels = np.array([0, 1] * 6)
        >>> domains = ["A"] * 6 + ["B"] * 6
        >>> slides = [f"s{i // 2}" for i in range(12)]  # two figures per slide; a slide never splits
        >>> folds = make_folds(labels, domains, slides, k=2, seed=0)
        >>> [f.name for f in folds]
        ['lodo/A/fold0', 'lodo/A/fold1', 'lodo/B/fold0', 'lodo/B/fold1', 'all/fold0', 'all/fold1']
        >>> f = folds[0]  # A held out: trained and validated on B's slides only
        >>> f.heldout_domain, len(f.train) + len(f.val), len(f.heldout)
        ('A', 6, 6)
    """
    labels = np.asarray(labels)
    dom = np.asarray(domains)
    grp = np.asarray(groups)
    # A group in two domains would put one slide on both sides of a LODO split.
    seen: dict[str, str] = {}
    shared = set()
    for g, d in zip(grp.tolist(), dom.tolist(), strict=True):
        if seen.setdefault(g, d) != d:
            shared.add(g)
    if shared:
        names = sorted(shared)
        raise DatasetError(f"{len(names)} group(s) appear in more than one domain, e.g. {names[:5]}")
    folds: list[Fold] = []
    slugs = domain_slugs([str(x) for x in dom])
    all_idx = np.arange(len(labels))
    if lodo and len(slugs) >= 2:
        for d, s in slugs.items():
            held = all_idx[dom == d]
            rest = all_idx[dom != d]
            for f, (tr, va) in enumerate(grouped_kfold(labels[rest], grp[rest], k, seed)):
                folds.append(Fold(f"lodo/{s}/fold{f}", d, f, rest[tr], rest[va], held))
    for f, (tr, va) in enumerate(grouped_kfold(labels, grp, k, seed)):
        folds.append(Fold(f"all/fold{f}", None, f, tr, va, np.zeros(0, dtype=np.int64)))
    return folds
