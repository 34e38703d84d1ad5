"""Otsu's cut on a set of scores, in numpy alone: the rule of the weights' ``oof_otsu`` threshold, of
``amf predict --threshold otsu`` and of the audit's re-derivation, in one place, so that the evidence measured with
one applies to the others. It is scikit-image's ``threshold_otsu(scores, nbins=256)``, step for step (a test holds
them equal on the committed out-of-fold scores), without scikit-image, which only training installs.
"""

from __future__ import annotations

import numpy as np

NBINS = 256


def otsu_cut(scores: np.ndarray) -> float:
    """The cut that maximises the between-class variance of a 256-bin histogram of ``scores`` (the bins' centres
    are the candidates); the one value when all scores are equal.

    >>> otsu_cut(np.array([0.1, 0.12, 0.11, 0.8, 0.82, 0.81]))
    0.12109375
    >>> otsu_cut(np.array([0.3, 0.3]))
    0.3
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.min() == scores.max():
        return float(scores[0])
    counts, edges = np.histogram(scores, bins=NBINS)
    centers = (edges[:-1] + edges[1:]) / 2.0
    counts = counts.astype(np.float32)  # as scikit-image keeps them: the sums below then round as there
    weight1 = np.cumsum(counts)
    weight2 = np.cumsum(counts[::-1])[::-1]
    mean1 = np.cumsum(counts * centers) / weight1
    mean2 = (np.cumsum((counts * centers)[::-1]) / weight2[::-1])[::-1]
    between = weight1[:-1] * weight2[1:] * (mean1[:-1] - mean2[1:]) ** 2
    return float(centers[np.argmax(between)])
