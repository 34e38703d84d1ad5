"""The stain op against scikit-image, and its identity and batching properties."""

from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.color import hed2rgb, rgb2hed

from amf.inference.io import read_patches
from amf.inference.stain import SKIMAGE_OD_SCALE, hed_jitter, random_hed_jitter, sample_stain_params

AMIBR = Path(__file__).resolve().parents[2] / "shared" / "data" / "ami-br-midog21"


def synthetic_he(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """H&E-like float RGB images built from non-negative stain concentrations (inside skimage's gamut)."""
    rng = np.random.default_rng(seed)
    conc = rng.uniform(0.0, 0.08, size=(n, size, size, 3)) * np.array([1.0, 1.0, 0.2])
    return hed2rgb(conc)


def real_patches(n: int) -> np.ndarray:
    if not AMIBR.is_dir():
        pytest.skip(f"real patches not found at {AMIBR}: the AMi-Br data in ../shared/data is missing")
    files = sorted((AMIBR / "patches").rglob("*.png"))[:n]
    return np.concatenate([read_patches(f) for f in files]).astype(np.float64) / 255.0


def as_torch(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float()


def skimage_reference(images: np.ndarray, alpha: np.ndarray, beta_natural: np.ndarray) -> np.ndarray:
    """``hed2rgb(rgb2hed(x) * alpha + beta)`` image by image, with beta converted to skimage's units."""
    return np.stack(
        [hed2rgb(rgb2hed(img) * a + b / SKIMAGE_OD_SCALE) for img, a, b in zip(images, alpha, beta_natural)]
    )


def test_identity_on_real_patches():
    images = real_patches(8)
    x = as_torch(images)
    ones, zeros = torch.ones(len(x), 3), torch.zeros(len(x), 3)
    out = hed_jitter(x, ones, zeros)
    # Pixels at 0 come back as the 1e-6 floor of the log; everything else unchanged.
    assert torch.allclose(out, x, atol=2e-6)


def test_identity_on_random_rgb():
    x = torch.rand(4, 3, 16, 16)
    out = hed_jitter(x, torch.ones(4, 3), torch.zeros(4, 3))
    assert torch.allclose(out, x, atol=2e-6)


@pytest.mark.parametrize("sigma,delta", [(0.0, 0.0), (0.05, 0.05), (0.3, 0.5)])
def test_matches_skimage_in_gamut(sigma, delta):
    images = synthetic_he(6, seed=int(sigma * 100))
    alpha, beta = sample_stain_params(len(images), sigma, delta, torch.Generator().manual_seed(1))
    ours = hed_jitter(as_torch(images), alpha, beta).permute(0, 2, 3, 1).numpy()
    ref = skimage_reference(images, alpha.numpy().astype(np.float64), beta.numpy().astype(np.float64))
    assert np.abs(ours - ref).max() < 1e-5


def test_clamp_matches_skimage_on_real_patches():
    images = real_patches(6)
    alpha, beta = sample_stain_params(len(images), 0.2, 0.3, torch.Generator().manual_seed(2))
    ours = hed_jitter(as_torch(images), alpha, beta, clamp=True).permute(0, 2, 3, 1).numpy()
    ref = skimage_reference(images, alpha.numpy().astype(np.float64), beta.numpy().astype(np.float64))
    assert np.abs(ours - ref).max() < 1e-5


def test_batched_equals_one_by_one():
    x = as_torch(synthetic_he(5, seed=3))
    alpha, beta = sample_stain_params(5, 0.1, 0.1, torch.Generator().manual_seed(3))
    batched = hed_jitter(x, alpha, beta)
    single = torch.cat([hed_jitter(x[i : i + 1], alpha[i : i + 1], beta[i : i + 1]) for i in range(5)])
    assert torch.allclose(batched, single, atol=1e-7)


def test_params_in_range_and_seeded():
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    a1, b1 = sample_stain_params(1000, 0.1, 0.2, g1)
    a2, b2 = sample_stain_params(1000, 0.1, 0.2, g2)
    assert torch.equal(a1, a2) and torch.equal(b1, b2)
    assert a1.min() >= 0.9 and a1.max() <= 1.1 and b1.abs().max() <= 0.2
    assert a1.std() > 0.05 and b1.std() > 0.1  # spread over the interval, not stuck at a point


def test_random_jitter_changes_colour_not_range():
    x = as_torch(synthetic_he(4, seed=4))
    out = random_hed_jitter(x, 0.2, 0.2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert (out - x).abs().mean() > 1e-3
    assert random_hed_jitter(x, 0.0, 0.0) is x
