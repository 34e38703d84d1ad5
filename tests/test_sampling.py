"""Class-balanced weighted sampling."""

import numpy as np
import torch

from amf.training.sampling import balanced_indices, class_balanced_weights, epoch_indices


def test_weights_are_inverse_class_counts():
    w = class_balanced_weights(np.array([0, 0, 0, 1]))
    assert w.tolist() == [1 / 3, 1 / 3, 1 / 3, 1.0]


def test_classes_come_out_balanced():
    labels = np.array([1] * 50 + [0] * 950)  # 5 % atypical
    g = torch.Generator().manual_seed(0)
    draws = torch.cat([balanced_indices(labels, g) for _ in range(20)])  # 20 epochs of 1,000
    assert draws.numel() == 20_000
    frac = labels[draws.numpy()].mean()
    assert abs(frac - 0.5) < 0.02, frac
    # every atypical figure gets drawn, at about 10x its share
    assert len(np.unique(draws.numpy()[labels[draws.numpy()] == 1])) == 50


def test_epoch_length_and_seeded_reproducibility():
    labels = np.array([0, 1, 1, 0, 0, 0, 0])
    a = epoch_indices(labels, torch.Generator().manual_seed(5))
    b = epoch_indices(labels, torch.Generator().manual_seed(5))
    c = epoch_indices(labels, torch.Generator().manual_seed(6))
    assert len(a) == len(labels) and torch.equal(a, b) and not torch.equal(a, c)
    perm = epoch_indices(labels, torch.Generator().manual_seed(5), balanced=False)
    assert sorted(perm.tolist()) == list(range(len(labels)))
