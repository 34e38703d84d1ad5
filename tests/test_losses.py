"""Focal loss against hand-computed values."""

import math

import pytest
import torch
import torch.nn.functional as F

from amf.training.losses import FocalLoss, focal_loss


def test_hand_value_positive_at_zero_logit():
    # p = 0.5, p_t = 0.5, -log p_t = ln 2, (1 - p_t)^2 = 0.25, alpha_t = 0.25
    got = focal_loss(torch.tensor([0.0]), torch.tensor([1.0]), alpha=0.25, gamma=2.0)
    assert got.item() == pytest.approx(0.25 * 0.25 * math.log(2), rel=1e-6)


def test_hand_value_negative_and_mean():
    # logit 2 for a normal figure: p = sigmoid(2), p_t = 1 - p, alpha_t = 1 - 0.25
    p = 1 / (1 + math.exp(-2.0))
    neg = 0.75 * p**2 * -math.log(1 - p)
    # logit -1 for an atypical figure: p_t = sigmoid(-1), alpha_t = 0.25
    q = 1 / (1 + math.exp(1.0))
    pos = 0.25 * (1 - q) ** 2 * -math.log(q)
    logits, targets = torch.tensor([2.0, -1.0]), torch.tensor([0.0, 1.0])
    assert focal_loss(logits, targets, 0.25, 2.0, "none").tolist() == pytest.approx([neg, pos], rel=1e-6)
    assert focal_loss(logits, targets, 0.25, 2.0).item() == pytest.approx((neg + pos) / 2, rel=1e-6)
    assert focal_loss(logits, targets, 0.25, 2.0, "sum").item() == pytest.approx(neg + pos, rel=1e-6)


def test_gamma_zero_no_alpha_is_bce_and_extremes_are_finite():
    logits = torch.tensor([-50.0, -3.0, 0.0, 4.0, 80.0], requires_grad=True)
    targets = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    assert torch.allclose(focal_loss(logits, targets, alpha=None, gamma=0.0),
                          F.binary_cross_entropy_with_logits(logits, targets))
    loss = FocalLoss(alpha=0.5, gamma=2.0)(logits, targets)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_focal_down_weights_easy_examples():
    easy = focal_loss(torch.tensor([5.0]), torch.tensor([1.0]), alpha=None, gamma=2.0)
    easy_bce = F.binary_cross_entropy_with_logits(torch.tensor([5.0]), torch.tensor([1.0]))
    assert easy < easy_bce * 0.01


def test_bad_parameters():
    with pytest.raises(ValueError):
        FocalLoss(alpha=1.5)
    with pytest.raises(ValueError):
        FocalLoss(gamma=-1)
