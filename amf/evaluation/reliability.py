"""How far a confidence can be read as a probability, and which calls to look at twice.

``confidence`` is P(atypical), so a reader takes 0.8 to mean "atypical four times in five". The reliability
diagram sets each bin of confidences against how often its figures are atypical, and the expected calibration
error (ECE) is their gap, weighted by the figures in each bin; its interval is a seeded bootstrap over figures.
Apart from that, the spread of the scores a figure's mean was taken over (its members' test-time views, ``view_sd``
in ``amf predict``'s output) says where the model disagrees with itself: :func:`error_by_spread` gives the error
rate in each quarter of the spread, from the calmest quarter to the most unsettled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Equal-width bins of P(atypical) of the reliability diagram and the ECE.
BINS = 10


@dataclass(frozen=True)
class Calibration:
    """Per bin: the mean confidence, the fraction atypical and the count; the ECE and its 95% interval."""

    mean_confidence: np.ndarray
    fraction_atypical: np.ndarray
    counts: np.ndarray
    ece: float
    ece_ci95: tuple[float, float] | None

    def to_dict(self) -> dict:
        nonempty = self.counts > 0
        return {"bins": BINS, "ece": self.ece, "ece_ci95": None if self.ece_ci95 is None else list(self.ece_ci95),
                "mean_confidence": [float(x) for x in self.mean_confidence[nonempty]],
                "fraction_atypical": [float(x) for x in self.fraction_atypical[nonempty]],
                "counts": [int(x) for x in self.counts[nonempty]]}


def _bins(score: np.ndarray) -> np.ndarray:
    return np.minimum((np.asarray(score) * BINS).astype(np.int64), BINS - 1)


def expected_calibration_error(y_true: np.ndarray, score: np.ndarray) -> float:
    """Sum over bins of (figures in the bin / all figures) x |mean confidence - fraction atypical|.

    >>> round(expected_calibration_error(np.array([0, 1, 1, 0]), np.array([0.05, 0.95, 0.95, 0.05])), 12)
    0.05
    """
    b = _bins(score)
    conf = np.bincount(b, weights=score, minlength=BINS)
    pos = np.bincount(b, weights=y_true, minlength=BINS)
    return float(np.abs(conf - pos).sum() / len(score))


def calibration(y_true: np.ndarray, score: np.ndarray, n_resamples: int = 1000, seed: int = 0) -> Calibration:
    """The reliability diagram's bins and the ECE, with a percentile interval over ``n_resamples`` seeded
    resamples of the figures (none for 0)."""
    y_true, score = np.asarray(y_true, dtype=np.float64), np.asarray(score, dtype=np.float64)
    b = _bins(score)
    counts = np.bincount(b, minlength=BINS)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(b, weights=score, minlength=BINS) / counts
        frac = np.bincount(b, weights=y_true, minlength=BINS) / counts
    ci = None
    if n_resamples > 0:
        rng = np.random.default_rng(seed)
        draws = [expected_calibration_error(y_true[idx], score[idx])
                 for idx in (rng.integers(0, len(score), len(score)) for _ in range(n_resamples))]
        low, high = np.percentile(draws, [2.5, 97.5])
        ci = (float(low), float(high))
    return Calibration(mean_conf, frac, counts, expected_calibration_error(y_true, score), ci)


def error_by_spread(y_true: np.ndarray, y_pred: np.ndarray, spread: np.ndarray, groups: int = 4) -> list[dict]:
    """The figures in ``groups`` quantile groups of their score spread, calmest first: the spread range, the count
    and the error rate (submitted class against the truth) of each.

    >>> rows = error_by_spread(np.array([1, 0, 1, 0]), np.array([1, 0, 0, 1]), np.array([0.01, 0.02, 0.2, 0.3]), 2)
    >>> [(r["n"], r["error_rate"]) for r in rows]
    [(2, 0.0), (2, 1.0)]
    """
    order = np.argsort(spread, kind="stable")
    rows = []
    for part in np.array_split(order, groups):
        if not part.size:
            continue
        wrong = y_true[part] != y_pred[part]
        rows.append({"spread_from": float(spread[part].min()), "spread_to": float(spread[part].max()),
                     "n": int(part.size), "errors": int(wrong.sum()), "error_rate": float(wrong.mean())})
    return rows
