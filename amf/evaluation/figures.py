"""The scored figures, pooled, as aligned arrays: the form both input modes reduce to.

The official script pools every figure of every job before it computes anything, and so do we; keeping
one flat set of arrays means the metrics, the bootstrap and the report cannot tell (or care) whether the
figures came from the platform layout or from CSV files.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from amf.errors import EvaluationError

#: The challenge's two classes, with atypical as the positive class, as in the official script.
CLASS_IDS: dict[str, int] = {"normal": 0, "atypical": 1}


@dataclass(frozen=True)
class Figures:
    """Every evaluated figure: truth, submitted class, P(atypical) and domain, index-aligned.

    ``source`` is one line saying where the figures came from and ``notes`` carries what the reader
    noticed but did not refuse (for example ground-truth stacks no job covered), for the report.
    ``where`` names each figure's image and page (a file path, or a stack name), for the error gallery.
    ``spread`` is each figure's spread of member and view scores, where the predictions carry it (``amf predict``'s
    ``view_sd``), for the report's "which calls to look at twice".
    """

    y_true: np.ndarray
    y_pred: np.ndarray
    score: np.ndarray
    domain: np.ndarray
    source: str
    notes: tuple[str, ...] = field(default=())
    where: tuple[tuple[str, int], ...] = field(default=())
    spread: np.ndarray | None = None

    def __post_init__(self) -> None:
        sizes = {len(self.y_true), len(self.y_pred), len(self.score), len(self.domain)}
        if len(sizes) != 1:
            raise ValueError(f"per-figure arrays differ in length: {sorted(sizes)}")
        if not len(self.y_true):
            raise EvaluationError(f"{self.source}: no figures to evaluate")
        if self.where and len(self.where) != len(self.y_true):
            raise ValueError(f"{len(self.where)} figure locations for {len(self.y_true)} figures")

    @classmethod
    def from_lists(
        cls,
        labels: list[str],
        classes: list[str],
        scores: list[float],
        domains: list[int] | list[str],
        source: str,
        notes: tuple[str, ...] = (),
        where: list[tuple[str, int]] | None = None,
        spread: list[float] | None = None,
    ) -> Figures:
        """Build from validated class names ("normal"/"atypical"), scores and domains."""
        return cls(
            y_true=np.array([CLASS_IDS[c] for c in labels], dtype=np.int64),
            y_pred=np.array([CLASS_IDS[c] for c in classes], dtype=np.int64),
            score=np.array(scores, dtype=np.float64),
            domain=np.array(domains),
            source=source,
            notes=notes,
            where=tuple(where or ()),
            spread=None if spread is None else np.array(spread, dtype=np.float64),
        )

    def __len__(self) -> int:
        return len(self.y_true)

    def select(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(y_true, y_pred, score)`` of the figures where ``mask`` is true."""
        return self.y_true[mask], self.y_pred[mask], self.score[mask]

    def domains(self) -> list[int | str]:
        """The distinct domains, sorted as ``np.unique`` sorts them (the official key order)."""
        return [d.item() for d in np.unique(self.domain)]
