"""Bootstrap 95% confidence intervals, resampling figures with replacement.

Balanced accuracy: a seeded numpy bootstrap, vectorised over resamples. Resamples that miss a class are
drawn again rather than scored, because balanced accuracy is then a convention (0.5 give or take), not
an estimate; grand-challenge-metrics treats AUC resamples the same way, so both intervals describe the
same kind of resample. The interval is the percentile interval.

ROC band and AUC interval: ``grand_challenge_metrics.roc.get_bootstrapped_roc_ci_curves``, the
organisers' platform library, used as published. Two of its properties show in our numbers and are said
in the report: it seeds itself (``RandomState(40)``), so our ``seed`` does not reach it, and it draws
indices with ``randint(0, n - 1)``, which excludes the last figure. The latter also means it loops
forever unless both classes occur among the first ``n - 1`` figures, so we only call it then.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from grand_challenge_metrics.roc import get_bootstrapped_roc_ci_curves

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True)
class RocBand:
    """Bootstrapped TPR band at fixed FPR (0, 0.01, ..., 1) and the AUC interval."""

    fpr: np.ndarray
    mean_tpr: np.ndarray
    low_tpr: np.ndarray
    high_tpr: np.ndarray
    auc: Interval


def balanced_accuracy_ci(
    y_true: np.ndarray, y_pred: np.ndarray, n_resamples: int, seed: int, chunk: int = 256
) -> Interval | None:
    """Percentile interval of balanced accuracy over ``n_resamples`` resamples with both classes.

    None when the figures hold a single class (no resample can hold both) or ``n_resamples`` is 0.
    """
    y_true = np.asarray(y_true) == 1
    y_pred = np.asarray(y_pred) == 1
    n = len(y_true)
    if n_resamples <= 0 or y_true.all() or not y_true.any():
        return None
    rng = np.random.default_rng(seed)
    values: list[np.ndarray] = []
    kept = 0
    while kept < n_resamples:
        idx = rng.integers(0, n, size=(chunk, n))
        t, p = y_true[idx], y_pred[idx]
        positives = t.sum(axis=1)
        negatives = n - positives
        ok = (positives > 0) & (negatives > 0)
        sensitivity = (t & p).sum(axis=1)[ok] / positives[ok]
        specificity = (~t & ~p).sum(axis=1)[ok] / negatives[ok]
        values.append((sensitivity + specificity) / 2)
        kept += int(ok.sum())
    scores = np.concatenate(values)[:n_resamples]
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(scores, [tail, 100 - tail])
    return Interval(float(low), float(high))


def roc_band(y_true: np.ndarray, score: np.ndarray, n_resamples: int) -> RocBand | None:
    """The ROC curve's CI band and the AUC interval from grand-challenge-metrics, or None when it
    cannot run (fewer than two classes among all figures but the last, or ``n_resamples`` is 0)."""
    y_true = np.asarray(y_true)
    if n_resamples <= 0 or len(np.unique(y_true[:-1])) < 2:
        return None
    curves = get_bootstrapped_roc_ci_curves(
        np.asarray(score, dtype=np.float64), y_true, num_bootstraps=n_resamples, ci_to_use=LEVEL
    )
    return RocBand(
        fpr=curves.fpr_vals,
        mean_tpr=curves.mean_tpr_vals,
        low_tpr=curves.low_tpr_vals,
        high_tpr=curves.high_tpr_vals,
        auc=Interval(float(curves.low_az_val), float(curves.high_az_val)),
    )
