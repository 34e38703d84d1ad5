"""Geometric (D4) transforms and the deterministic test-time views.

Mitotic figures have no preferred orientation, so the eight symmetries of the square (four rotations,
each with or without a flip) are free augmentation at training time and free views at test time.

Test-time views are defined by their index only: view ``v`` uses D4 element ``v % 8`` and, for ``v > 0``,
a stain jitter whose ``alpha``/``beta`` come from a generator seeded with ``(seed, v)``. Every patch gets
the same views whatever else is in its batch, so a prediction depends on the patch alone: the same input
gives the same output run after run and at any batch size.
"""

from __future__ import annotations

import torch

from amf.inference.spec import TTAConfig
from amf.inference.stain import hed_jitter, random_hed_jitter, sample_stain_params

D4_SIZE = 8


def d4(images: torch.Tensor, k: int) -> torch.Tensor:
    """Apply D4 element ``k`` (0-7) to ``(..., H, W)``: ``k % 4`` quarter turns, flipped if ``k >= 4``.

    Examples:
        >>> x = torch.arange(4.0).view(1, 1, 2, 2)  # [[0, 1], [2, 3]]
        >>> d4(x, 1).flatten().tolist()  # a quarter turn, counter-clockwise
        [1.0, 3.0, 0.0, 2.0]
        >>> d4(x, 4).flatten().tolist()  # a mirror image
        [1.0, 0.0, 3.0, 2.0]
        >>> torch.equal(d4(d4(x, 1), 3), x)  # four quarter turns: the patch itself
        True
    """
    out = torch.rot90(images, k % 4, dims=(-2, -1))
    return torch.flip(out, dims=(-1,)) if k >= 4 else out


def random_d4(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Training-time augmentation: an independent random D4 element for each image of ``(B, C, H, W)``."""
    ks = torch.randint(0, D4_SIZE, (images.shape[0],), generator=generator)
    out = torch.empty_like(images)
    for k in ks.unique().tolist():
        idx = (ks == k).nonzero().flatten().to(images.device)
        out[idx] = d4(images[idx], k)
    return out


def train_augment(images: torch.Tensor, generator: torch.Generator, d4: bool = True, sigma: float = 0.1,
                  delta: float = 0.05) -> torch.Tensor:
    """Training-time augmentation of ``(B, 3, H, W)`` in ``[0, 1]``, beside the test-time views below: a random
    D4 element and a random H&E stain jitter per image (``sigma``/``delta`` in natural OD units,
    :mod:`amf.inference.stain`; 0 and 0 turn it off), drawn from ``generator`` in that order."""
    if d4:
        images = random_d4(images, generator)
    return random_hed_jitter(images, sigma, delta, generator)


def view_params(config: TTAConfig, v: int) -> tuple[int, torch.Tensor, torch.Tensor] | None:
    """View ``v``'s ``(d4 element, alpha (3,), beta (3,))``; view 0 is the untouched image (``None``)."""
    if v == 0:
        return None
    g = torch.Generator().manual_seed(config.seed * 1_000_003 + v)
    alpha, beta = sample_stain_params(1, config.sigma, config.delta, g)
    return v % D4_SIZE, alpha[0], beta[0]


def make_view(images: torch.Tensor, config: TTAConfig, v: int) -> torch.Tensor:
    """Test-time view ``v`` of ``(B, 3, H, W)`` images in ``[0, 1]``.

    Examples:
        >>> images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
        >>> torch.equal(make_view(images, TTAConfig(), 0), images)  # view 0 is the patch as it is
        True
        >>> make_view(images, TTAConfig(), 5).shape  # the others: a D4 element of a stain-jittered copy
        torch.Size([2, 3, 8, 8])
    """
    params = view_params(config, v)
    if params is None:
        return images
    k, alpha, beta = params
    n = images.shape[0]
    jittered = hed_jitter(images, alpha.expand(n, 3).to(images.device), beta.expand(n, 3).to(images.device))
    return d4(jittered, k)


def make_views(images: torch.Tensor, config: TTAConfig) -> torch.Tensor:
    """All views of ``(B, 3, H, W)`` images stacked into ``(V * B, 3, H, W)``, view-major."""
    return torch.cat([make_view(images, config, v) for v in range(config.views)], dim=0)
