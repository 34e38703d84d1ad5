"""Pure metric functions that reproduce the official Track 2 arithmetic bit for bit.

The official ``evaluate.py`` counts TP/FP/FN/TN from the submitted ``class`` (atypical is positive),
computes sensitivity and specificity from them, and takes ``(sensitivity + specificity) / 2`` as the
balanced accuracy; per domain it calls ``sklearn.metrics.recall_score``, whose default for an empty class
is 0.0 (a domain of normals only has sensitivity 0.0 and balanced accuracy 0.5). ROC AUC is
``roc_auc_score`` on ``confidence`` = P(atypical), NaN when only one class is present. Each quotient here is
the same single IEEE division of integers, so the results are identical, not merely close.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

#: The per-scope metric names, in the order the official script writes a domain's entry.
METRIC_NAMES: tuple[str, ...] = ("sensitivity", "specificity", "balanced_accuracy", "accuracy", "roc_auc")


@dataclass(frozen=True)
class Confusion:
    """Counts with atypical as the positive class."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn


@dataclass(frozen=True)
class BestThreshold:
    """The confidence threshold (predict atypical when ``confidence >= threshold``) that maximises
    balanced accuracy on the evaluated figures themselves, so an optimistic bound, not a held-out score."""

    threshold: float
    balanced_accuracy: float
    sensitivity: float
    specificity: float


def confusion(y_true: np.ndarray, y_pred: np.ndarray) -> Confusion:
    """TP/FP/FN/TN of the submitted classes (1 = atypical)."""
    t = np.asarray(y_true) == 1
    p = np.asarray(y_pred) == 1
    return Confusion(
        tp=int(np.sum(p & t)), fp=int(np.sum(p & ~t)), fn=int(np.sum(~p & t)), tn=int(np.sum(~p & ~t))
    )


def _rate(hits: int, total: int) -> float:
    """``hits / total``, or 0.0 for an empty class: ``recall_score``'s default, which the official uses."""
    return hits / total if total else 0.0


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of P(atypical); NaN when one class is absent (undefined, as in the official output)."""
    if len(np.unique(y_true)) < 2:
        return math.nan
    return float(roc_auc_score(y_true, score))


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """The five official metrics of one scope (all figures, or one domain), keyed as in ``METRIC_NAMES``."""
    c = confusion(y_true, y_pred)
    sensitivity = _rate(c.tp, c.tp + c.fn)
    specificity = _rate(c.tn, c.tn + c.fp)
    return {
        "sensitivity": sensitivity,
        "specificity": specificity,
        "balanced_accuracy": (sensitivity + specificity) / 2,
        "accuracy": (c.tp + c.tn) / c.n,
        "roc_auc": roc_auc(y_true, score),
    }


def best_threshold(y_true: np.ndarray, score: np.ndarray) -> BestThreshold | None:
    """The threshold on P(atypical) with the highest balanced accuracy; None with one class only.

    Balanced accuracy is ``(tpr + 1 - fpr) / 2``, so this is the ROC point of maximal Youden index. The
    "nothing is atypical" point (threshold +inf) is skipped: it ties with "everything is atypical"
    (both score 0.5), which is still a candidate, and a finite threshold is what a team can use.
    Among ties the highest threshold wins.
    """
    if len(np.unique(y_true)) < 2:
        return None
    fpr, tpr, thresholds = roc_curve(y_true, score, drop_intermediate=False)
    threshold = float(thresholds[int(np.argmax(tpr[1:] - fpr[1:])) + 1])
    # Re-count at the chosen threshold so the numbers are computed exactly like the submitted ones.
    m = classification_metrics(y_true, (np.asarray(score) >= threshold).astype(np.int64), score)
    return BestThreshold(threshold, m["balanced_accuracy"], m["sensitivity"], m["specificity"])
