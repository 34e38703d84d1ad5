"""The ``metrics.json`` document: the official shape, valid JSON, written all at once or not at all.

``results`` and ``aggregates`` are exactly the official ones, except that an undefined ROC AUC is
``null`` instead of the official script's bare ``NaN`` token, which JSON parsers may reject. What we add
lives under ``extra`` so that the official keys compare equal. The file is written to a temporary file
in the same folder and moved into place with ``os.replace``, so a failed run never leaves a partial
``metrics.json`` for the platform (or a team's script) to pick up.
"""

from __future__ import annotations

import json
from pathlib import Path

from amf.errors import OutputError
from amf.evaluation.analysis import Evaluation, Scope
from amf.evaluation.bootstrap import Interval
from amf.files import atomic_write_bytes, json_safe


def _interval(ci: Interval | None) -> list[float] | None:
    return None if ci is None else [ci.low, ci.high]


def _extra(scope: Scope) -> dict[str, object]:
    c = scope.confusion
    best = scope.best
    return {
        "n_figures": c.n,
        "n_atypical": scope.n_atypical,
        "confusion": {"tp": c.tp, "fp": c.fp, "fn": c.fn, "tn": c.tn},
        "balanced_accuracy_ci95": _interval(scope.balanced_accuracy_ci),
        "roc_auc_ci95": _interval(scope.roc.auc if scope.roc else None),
        "best_threshold": None
        if best is None
        else {
            "threshold": best.threshold,
            "balanced_accuracy": best.balanced_accuracy,
            "sensitivity": best.sensitivity,
            "specificity": best.specificity,
            "submitted_balanced_accuracy": scope.metrics["balanced_accuracy"],
        },
    }


def metrics_document(evaluation: Evaluation) -> dict[str, object]:
    """The full document: official ``results``/``aggregates`` plus our ``extra``."""
    return json_safe(
        {
            "results": {},
            "aggregates": evaluation.official_aggregates(),
            "extra": {
                "source": evaluation.figures.source,
                "bootstrap": {
                    "resamples": evaluation.n_resamples,
                    "balanced_accuracy_seed": evaluation.seed,
                    "roc_auc_method": "grand_challenge_metrics.roc.get_bootstrapped_roc_ci_curves (fixed seed 40)",
                },
                "overall": _extra(evaluation.overall),
                **{scope.name: _extra(scope) for scope in evaluation.domains},
                "notes": list(evaluation.notes),
            },
        }
    )


def write_json_atomic(path: Path, document: object) -> None:
    """Write strict JSON (no NaN tokens) to ``path`` all at once (:func:`amf.files.atomic_write_bytes`)."""
    path = Path(path)
    text = json.dumps(document, indent=4, allow_nan=False) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, text.encode("utf-8"))
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc}") from None
