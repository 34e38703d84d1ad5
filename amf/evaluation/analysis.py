"""The official metrics, and what we add to them, for all figures pooled and for each domain.

One :class:`Scope` per row of the report: the official numbers come from :mod:`amf.evaluation.metrics`
exactly as the organisers compute them; the intervals and the best threshold sit next to them, so the
official part can be checked in isolation (:meth:`Evaluation.official_aggregates`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from amf.evaluation.bootstrap import Interval, RocBand, balanced_accuracy_ci, roc_band
from amf.evaluation.figures import Figures
from amf.evaluation.metrics import (
    METRIC_NAMES,
    BestThreshold,
    Confusion,
    best_threshold,
    classification_metrics,
    confusion,
)

#: The official order of the pooled keys (it differs from a domain's: roc_auc before accuracy).
OVERALL_ORDER = ("sensitivity", "specificity", "balanced_accuracy", "roc_auc", "accuracy")


@dataclass(frozen=True)
class Scope:
    """Everything we say about one set of figures: all of them (``overall``) or one domain."""

    name: str
    confusion: Confusion
    metrics: dict[str, float]
    balanced_accuracy_ci: Interval | None
    roc: RocBand | None
    best: BestThreshold | None

    @property
    def n_atypical(self) -> int:
        return self.confusion.tp + self.confusion.fn

    @property
    def only_class(self) -> str | None:
        """"normal" or "atypical" when the scope holds one class only, else None."""
        if self.n_atypical == 0:
            return "normal"
        return "atypical" if self.n_atypical == self.confusion.n else None


@dataclass(frozen=True)
class Evaluation:
    figures: Figures
    overall: Scope
    domains: tuple[Scope, ...]
    n_resamples: int
    seed: int
    notes: tuple[str, ...]

    def official_aggregates(self) -> dict[str, object]:
        """``aggregates`` exactly as the official script builds it (NaN where AUC is undefined)."""
        aggregates: dict[str, object] = {f"overall_{k}": self.overall.metrics[k] for k in OVERALL_ORDER}
        for scope in self.domains:
            aggregates[scope.name] = {k: scope.metrics[k] for k in METRIC_NAMES}
        return aggregates


def _scope(name: str, y_true: np.ndarray, y_pred: np.ndarray, score: np.ndarray, n_resamples: int, seed: int) -> Scope:
    return Scope(
        name=name,
        confusion=confusion(y_true, y_pred),
        metrics=classification_metrics(y_true, y_pred, score),
        balanced_accuracy_ci=balanced_accuracy_ci(y_true, y_pred, n_resamples, seed),
        roc=roc_band(y_true, score, n_resamples),
        best=best_threshold(y_true, score),
    )


def _notes(scope: Scope) -> list[str]:
    """Why some numbers of a scope are conventions rather than estimates."""
    if scope.only_class is None:
        return []
    empty = "sensitivity" if scope.only_class == "normal" else "specificity"
    notes = [
        f"{scope.name}: only {scope.only_class} figures, so {empty} is 0.0 by the official convention "
        f"(sklearn's recall_score for an empty class) and ROC AUC is undefined: metrics.json has null where "
        f"the official script writes a bare NaN, which is not valid JSON"
    ]
    if scope.name == "overall":
        notes.append("overall: the official script stops with ZeroDivisionError on a single class; we do not")
    return notes


def evaluate(figures: Figures, n_resamples: int = 1000, seed: int = 0) -> Evaluation:
    """Score ``figures`` pooled and per domain; ``n_resamples`` = 0 skips the bootstrap."""
    overall = _scope("overall", figures.y_true, figures.y_pred, figures.score, n_resamples, seed)
    domains = tuple(
        _scope(f"domain_{d}", *figures.select(figures.domain == d), n_resamples, seed) for d in figures.domains()
    )
    notes = list(figures.notes)
    for scope in (overall, *domains):
        notes += _notes(scope)
    return Evaluation(figures, overall, domains, n_resamples, seed, tuple(notes))
