"""Binary focal loss on logits (Lin et al. 2017), the loss of arXiv 2509.02589.

``FL = -alpha_t * (1 - p_t) ** gamma * log(p_t)`` with ``p_t = p`` for atypical (label 1) and ``1 - p``
for normal, and ``alpha_t = alpha`` for atypical, ``1 - alpha`` for normal. ``alpha = None`` drops the
class weight; ``gamma = 0`` with ``alpha = None`` is plain binary cross-entropy. ``log(p_t)`` comes from
``binary_cross_entropy_with_logits``, so large logits do not overflow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float | None = 0.5,
    gamma: float = 2.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Focal loss of ``(N,)`` logits against ``(N,)`` 0/1 targets (``alpha`` weights the atypical class)."""
    logits = logits.float()
    targets = targets.to(logits.dtype)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")  # -log(p_t)
    p = torch.sigmoid(logits)
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t).clamp_min(0) ** gamma if gamma else ce
    if alpha is not None:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"unknown reduction {reduction!r}")


class FocalLoss(nn.Module):
    def __init__(self, alpha: float | None = 0.5, gamma: float = 2.0, reduction: str = "mean"):
        super().__init__()
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ValueError(f"focal alpha must be in [0, 1], got {alpha}")
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        self.alpha, self.gamma, self.reduction = alpha, gamma, reduction

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return focal_loss(logits, targets, self.alpha, self.gamma, self.reduction)
