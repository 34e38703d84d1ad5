"""Class-balanced sampling: each epoch draws indices with probability ``1 / count(class)``.

Atypical figures are 15-25 % of the data; drawing with replacement at these weights shows the model
both classes equally often. The draw uses an explicit ``torch.Generator`` (seeded from the run seed,
fold and epoch by the trainer), so an epoch's order is reproducible and a resumed run repeats it.
"""

from __future__ import annotations

import numpy as np
import torch


def class_balanced_weights(labels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Per-sample weights ``1 / count(label)`` (float64); each present class gets equal total weight."""
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if y.numel() == 0:
        raise ValueError("cannot sample from an empty set")
    counts = torch.bincount(y)
    return 1.0 / counts[y].to(torch.float64)


def balanced_indices(
    labels: np.ndarray | torch.Tensor,
    generator: torch.Generator,
    num_samples: int | None = None,
) -> torch.Tensor:
    """``num_samples`` (default ``len(labels)``) indices drawn with replacement at class-balanced weights."""
    weights = class_balanced_weights(labels)
    n = len(weights) if num_samples is None else int(num_samples)
    return torch.multinomial(weights, n, replacement=True, generator=generator)


def epoch_indices(
    labels: np.ndarray, generator: torch.Generator, balanced: bool = True, num_samples: int | None = None
) -> torch.Tensor:
    """One epoch's order: balanced draw, or (``balanced=False``) a plain permutation."""
    if balanced:
        return balanced_indices(labels, generator, num_samples)
    return torch.randperm(len(labels), generator=generator)
