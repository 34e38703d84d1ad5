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
* ``otsu``: label-free, Otsu's cut on the scores (:func:`amf.inference.otsu.otsu_cut`, scikit-image's
  ``threshold_otsu`` in numpy; what arXiv 2509.02589 used on the test scores). A single challenge stack holds
  only 16 patches, too few for Otsu at test time, so we compute it once on the OOF scores instead and ship the
  resulting number.

The exported threshold is one number. By default it is chosen on the all-domains OOF predictions; but the
OOF patches come from the training domains, and on a domain the models never saw the scores shift. So
:func:`transfer_threshold` chooses the cut that maximises the *mean* balanced accuracy over the held-out
domains of a leave-one-domain-out run (each domain scored by models that never saw it), and
:func:`nested_transfer_thresholds` measures honestly how well such a cut transfers: each domain is
classified at the cut chosen on the other domains alone.
"""

from __future__ import annotations

import numpy as np

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


def mean_class_recall(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """Balanced accuracy at ``score >= threshold`` as scikit-learn defines it: the mean recall over the classes
    present (with one class missing, that class's recall alone).

    Not the official metric when a class is missing: :func:`amf.evaluation.metrics.classification_metrics`
    counts a missing class's recall as 0, as the challenge's evaluation does. With both classes present
    (every threshold choice here) the two are equal.
    """
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
    ba = _ba_curve(s, y, cuts)
    best = np.flatnonzero(ba >= ba.max() - 1e-12)
    return float(cuts[best[np.argmin(np.abs(cuts[best] - 0.5))]])


def _ba_curve(s: np.ndarray, y: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Balanced accuracy at every cut (``score >= cut``), vectorised with sorted cumulative counts."""
    recalls = []
    if np.any(y == 1):
        recalls.append(1 - np.searchsorted(np.sort(s[y == 1]), cuts, side="left") / np.sum(y == 1))
    if np.any(y == 0):
        recalls.append(np.searchsorted(np.sort(s[y == 0]), cuts, side="left") / np.sum(y == 0))
    return np.mean(recalls, axis=0)


def transfer_threshold(domains: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """The cut maximising the mean over ``(scores, labels)`` domains of each domain's balanced accuracy.

    Every domain counts the same, whatever its size, as in the leave-one-domain-out headline. Cuts lie
    half-way between distinct pooled scores; among equally good cuts the one nearest 0.5 wins.

    >>> a = (np.array([0.1, 0.3, 0.6, 0.8]), np.array([0, 0, 1, 1]))
    >>> b = (np.array([0.2, 0.5, 0.7, 0.9]), np.array([0, 0, 1, 1]))
    >>> transfer_threshold([a, b])
    0.55
    """
    checked = [_check(s, y) for s, y in domains]
    cuts = _cuts(np.concatenate([s for s, _ in checked]))
    mean_ba = np.mean([_ba_curve(s, y, cuts) for s, y in checked], axis=0)
    best = np.flatnonzero(mean_ba >= mean_ba.max() - 1e-12)
    return float(cuts[best[np.argmin(np.abs(cuts[best] - 0.5))]])


def nested_transfer_thresholds(domains: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """For each domain, :func:`transfer_threshold` of the *other* domains: a cut that never saw its labels."""
    if len(domains) < 2:
        raise ValueError("a nested transfer threshold needs at least two domains")
    return [transfer_threshold(domains[:i] + domains[i + 1:]) for i in range(len(domains))]


def transfer_thresholds(domains: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, list[float | None]]:
    """:func:`transfer_threshold` of all domains, and for each domain its nested one (``None`` for a lone
    domain, which has no other domain to choose on)."""
    nested = nested_transfer_thresholds(domains) if len(domains) > 1 else [None] * len(domains)
    return transfer_threshold(domains), nested


def youden_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import roc_curve  # here, not at the top: TrainConfig imports this module (2 s of sklearn)

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
    from amf.inference.otsu import otsu_cut

    s, _ = _check(scores)
    return otsu_cut(s)


def domain_otsu_threshold(scores: np.ndarray, domains: np.ndarray, how: str) -> float:
    """The ``mean`` or ``median`` of Otsu's cuts on each domain's scores alone: label-free like Otsu's on the pooled
    scores, but each lab's valley counts once, whatever its size (:mod:`amf.training.cut_rules` measures which
    transfers).

    >>> s = np.array([0.1, 0.2, 0.8, 0.9, 0.3, 0.4, 0.6, 0.7])  # a's cut sits just above 0.2, b's above 0.4
    >>> round(domain_otsu_threshold(s, np.array(["a"] * 4 + ["b"] * 4), "mean"), 2)
    0.3
    """
    if how not in ("mean", "median"):
        raise ValueError(f"how must be 'mean' or 'median', not {how!r}")
    s, _ = _check(scores)
    d = np.asarray(domains).ravel()
    if d.shape != s.shape:
        raise ValueError(f"{s.size} scores but {d.size} domains")
    cuts = [otsu_threshold(s[d == name]) for name in np.unique(d)]
    return float(np.mean(cuts) if how == "mean" else np.median(cuts))


def choose_threshold(scores: np.ndarray, labels: np.ndarray | None, method: str) -> float:
    """The cut on P(atypical) by ``method`` (one of :data:`METHODS`); Otsu's ignores the labels.

    Examples:
        >>> scores, labels = np.array([0.1, 0.3, 0.6, 0.8]), np.array([0, 0, 1, 1])
        >>> round(choose_threshold(scores, labels, "balanced_accuracy"), 6)  # half-way between the classes
        0.45
        >>> round(choose_threshold(scores, labels, "otsu"), 3)  # the scores' own valley, labels unused
        0.301
    """
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
        out[m] = {"value": t, "oof_balanced_accuracy": mean_class_recall(s, y, t)}
    return out


def safe_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """ROC AUC, or ``None`` when only one class is present (undefined)."""
    from sklearn.metrics import roc_auc_score

    s, y = _check(scores, labels)
    if y.min() == y.max():
        return None
    return float(roc_auc_score(y, s))
