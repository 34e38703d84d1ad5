"""Choosing the decision threshold on P(atypical) from out-of-fold (OOF) predictions.

Rule everywhere: a figure is called atypical when ``score >= threshold``.

Three candidates are computed and all are recorded in the exported manifest:

* ``balanced_accuracy`` (default): the cut that maximises balanced accuracy on the labelled OOF scores.
  Cuts are placed half-way between consecutive distinct scores, so the value never sits on a training
  score; among equally good cuts the one nearest 0.5 wins.
* ``youden``: the cut maximising Youden's J = TPR - FPR on the ROC curve (``sklearn.metrics.roc_curve``).
  Note J = 2 * BA - 1, so it optimises the *same* objective as ``balanced_accuracy``; it differs only in
  tie-breaking (the first maximum along the ROC curve, i.e. the highest such cut) and is kept because it
  is the name clinicians know. Also placed half-way to the next lower distinct score.
* ``otsu``: label-free, ``skimage.filters.threshold_otsu`` on the scores (what arXiv 2509.02589 used on
  the test scores). A single challenge stack holds only 16 patches, too few for Otsu at test time, so we
  compute it once on the OOF scores instead and ship the resulting number.

The exported threshold is one number, chosen on the all-domains OOF predictions.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

METHODS = ("balanced_accuracy", "youden", "otsu")


def _check(scores: np.ndarray, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size == 0:
        raise ValueError("no scores")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf")
    if labels is None:
        return s, None
    y = np.asarray(labels).astype(np.int64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    return s, y


def balanced_accuracy(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """Mean of sensitivity and specificity at ``score >= threshold`` (recall of the only class if one is missing)."""
    s, y = _check(scores, labels)
    pred = s >= threshold
    recalls = [np.mean(pred[y == c] == bool(c)) for c in (0, 1) if np.any(y == c)]
    return float(np.mean(recalls))


def _cuts(s: np.ndarray) -> np.ndarray:
    """Candidate cuts: below the minimum, mid-points between distinct scores, above the maximum."""
    u = np.unique(s)
    mids = (u[:-1] + u[1:]) / 2 if u.size > 1 else np.zeros(0)
    return np.concatenate([[u[0] - 1e-6], mids, [u[-1] + 1e-6]])


def max_balanced_accuracy_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    s, y = _check(scores, labels)
    if y.min() == y.max():
        return 0.5  # one class only: no information, keep the neutral cut
    cuts = _cuts(s)
    # Vectorised: sensitivity and specificity for every cut via sorted cumulative counts.
    pos = np.sort(s[y == 1])
    neg = np.sort(s[y == 0])
    tpr = 1 - np.searchsorted(pos, cuts, side="left") / pos.size
    tnr = np.searchsorted(neg, cuts, side="left") / neg.size
    ba = (tpr + tnr) / 2
    best = np.flatnonzero(ba >= ba.max() - 1e-12)
    return float(cuts[best[np.argmin(np.abs(cuts[best] - 0.5))]])


def youden_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    s, y = _check(scores, labels)
    if y.min() == y.max():
        return 0.5
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    i = int(np.argmax(tpr - fpr))
    if not np.isfinite(thr[i]):  # the "nothing is positive" point
        return float(s.max() + 1e-6)
    lower = s[s < thr[i]]
    return float((thr[i] + lower.max()) / 2) if lower.size else float(thr[i] - 1e-6)


def otsu_threshold(scores: np.ndarray) -> float:
    from skimage.filters import threshold_otsu

    s, _ = _check(scores)
    if s.min() == s.max():
        return float(s[0])
    return float(threshold_otsu(s, nbins=256))


def choose_threshold(scores: np.ndarray, labels: np.ndarray | None, method: str) -> float:
    if method == "balanced_accuracy":
        return max_balanced_accuracy_threshold(scores, labels)
    if method == "youden":
        return youden_threshold(scores, labels)
    if method == "otsu":
        return otsu_threshold(scores)
    raise ValueError(f"unknown threshold method {method!r}; use one of {', '.join(METHODS)}")


def threshold_candidates(scores: np.ndarray, labels: np.ndarray) -> dict:
    """All three thresholds and the balanced accuracy each gives on these OOF scores."""
    s, y = _check(scores, labels)
    out = {}
    for m in METHODS:
        t = choose_threshold(s, y, m)
        out[m] = {"value": t, "oof_balanced_accuracy": balanced_accuracy(s, y, t)}
    return out


def safe_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """ROC AUC, or ``None`` when only one class is present (undefined)."""
    s, y = _check(scores, labels)
    if y.min() == y.max():
        return None
    return float(roc_auc_score(y, s))
