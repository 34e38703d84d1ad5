"""The few lines ``amf evaluate`` prints: headline numbers, intervals and the threshold's cost.

Kept apart from :mod:`amf.evaluation.report` so that a plain evaluation (the container's entrypoint)
never imports matplotlib.
"""

from __future__ import annotations

import math

from amf.evaluation.analysis import Evaluation
from amf.evaluation.bootstrap import Interval


def num_text(value: float | None) -> str:
    """Four decimals, or "n/a" for an undefined value."""
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def ci_text(ci: Interval | None) -> str:
    return "n/a" if ci is None else f"{ci.low:.4f}-{ci.high:.4f}"


def summary(evaluation: Evaluation) -> str:
    """A few lines for stdout: the headline numbers with intervals and the threshold's cost."""
    figs = evaluation.figures
    n_atypical = evaluation.overall.n_atypical
    lines = [f"{len(figs)} figures ({n_atypical} atypical, {len(figs) - n_atypical} normal) from {figs.source}"]
    width = max(len(s.name) for s in (evaluation.overall, *evaluation.domains))
    for scope in (evaluation.overall, *evaluation.domains):
        m = scope.metrics
        line = (
            f"{scope.name:<{width}}  n={scope.confusion.n:<5} BA {num_text(m['balanced_accuracy'])} "
            f"[{ci_text(scope.balanced_accuracy_ci)}]  AUC {num_text(m['roc_auc'])} "
            f"[{ci_text(scope.roc.auc if scope.roc else None)}]  "
            f"sens {num_text(m['sensitivity'])}  spec {num_text(m['specificity'])}  acc {num_text(m['accuracy'])}"
        )
        if scope.best:
            line += f"  | best-threshold BA {num_text(scope.best.balanced_accuracy)} at {scope.best.threshold:.4g}"
        lines.append(line)
    if any(scope.best for scope in (evaluation.overall, *evaluation.domains)):
        lines.append("best-threshold BA: at the cut chosen on these very figures with their labels, so optimistic: "
                     "it shows what the submitted threshold costs, not what another cut would score on new data")
    lines += [f"note: {note}" for note in evaluation.notes if not note.startswith(WARNING)]
    return "\n".join(lines)


#: Notes that start with this are warnings: ``amf evaluate`` prints them once, on stderr.
WARNING = "warning: "
