"""H&E stain-deconvolution colour augmentation as a batched torch op (CPU or GPU).

Why: scanners and labs differ mostly in how much haematoxylin and eosin ends up on the slide and how the
scanner renders it. Perturbing the stain concentrations (Tellez et al. 2018, used by arXiv 2509.02589)
simulates exactly that, while leaving the morphology that separates atypical from normal mitoses alone.

Optical-density convention
--------------------------
We work in *natural* optical density, ``OD = -ln(I)`` with ``I`` the RGB intensity in ``[1e-6, 1]``.
Stain concentrations are ``C = OD @ hed_from_rgb`` (scikit-image's Ruifrok & Johnston matrix), so a
concentration of 1 means one natural-log unit of absorbance. scikit-image's ``rgb2hed`` instead divides
by ``ln(1e-6)`` (about -13.8), i.e. ``C_skimage = C / 13.8``: a shift of 0.05 in skimage units is 0.69
here, a strong colour cast. All ``beta`` values in this package are in natural OD units.

The perturbation is, per image and per stain channel (H, E, DAB), ``C' = alpha * C + beta`` with
``alpha ~ U[1 - sigma, 1 + sigma]`` and ``beta ~ U[-delta, delta]``, followed by
``I' = exp(-C' @ rgb_from_hed)`` clipped to ``[0, 1]``.

scikit-image clamps negative concentrations to 0 in ``rgb2hed``. That makes its round trip lossy for
pixels outside the H&E gamut, so by default we keep negative concentrations: then ``alpha = 1, beta = 0``
is the identity. ``clamp=True`` reproduces skimage's ``hed2rgb(rgb2hed(x) * alpha + beta)`` exactly.
"""

from __future__ import annotations

import numpy as np
import torch

#: Smallest intensity before the log, as in scikit-image.
EPS = 1e-6
#: ``-ln(EPS)``: the factor between natural OD and scikit-image's normalised OD.
SKIMAGE_OD_SCALE = float(-np.log(EPS))

#: scikit-image's Ruifrok & Johnston matrices (``skimage.color.rgb_from_hed`` and its inverse
#: ``hed_from_rgb``), written out because importing ``skimage.color`` costs a third of a second of every
#: container start; ``tests/test_engine.py`` checks they equal skimage's to the last bit.
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
HED_FROM_RGB = np.array([
    [1.8779827368521356, -1.0076786862855642, -0.5561158181996246],
    [-0.06590806222356334, 1.1347303724996625, -0.13552179862837116],
    [-0.6019073634392891, -0.4804141884970579, 1.5735880719641926],
])

_HED_FROM_RGB = torch.from_numpy(np.ascontiguousarray(HED_FROM_RGB, dtype=np.float32))
_RGB_FROM_HED = torch.from_numpy(np.ascontiguousarray(RGB_FROM_HED, dtype=np.float32))


def sample_stain_params(
    n: int,
    sigma: float,
    delta: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw per-image, per-stain ``alpha ~ U[1-sigma, 1+sigma]`` and ``beta ~ U[-delta, delta]``.

    The draw happens on the CPU generator, then moves to ``device``, so a given seed gives the same
    parameters on every device.
    """
    u = torch.rand((2, n, 3), generator=generator, dtype=torch.float32)
    alpha = 1.0 + sigma * (2.0 * u[0] - 1.0)
    beta = delta * (2.0 * u[1] - 1.0)
    return alpha.to(device), beta.to(device)


def hed_jitter(
    images: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor,
    clamp: bool = False,
) -> torch.Tensor:
    """Scale and shift the H, E and DAB concentrations of a batch of RGB images.

    Args:
        images: ``(B, 3, H, W)`` float RGB in ``[0, 1]``.
        alpha: ``(B, 3)`` multiplicative factors for H, E, DAB.
        beta: ``(B, 3)`` additive shifts in natural OD units (see the module docstring).
        clamp: clamp negative concentrations to 0 first, as ``skimage.color.rgb2hed`` does.

    Examples:
        >>> images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
        >>> same = hed_jitter(images, torch.ones(2, 3), torch.zeros(2, 3))  # x1, +0: no change
        >>> torch.allclose(same, images, atol=1e-5)
        True
        >>> more_stain = hed_jitter(images, torch.full((2, 3), 1.2), torch.zeros(2, 3))
        >>> bool((more_stain <= images + 1e-6).all())  # more of every stain: never lighter
        True

    Returns:
        ``(B, 3, H, W)`` float RGB in ``[0, 1]``, same dtype and device as ``images``.
    """
    dtype = images.dtype
    x = images.float().clamp_min(EPS)
    m_in = _HED_FROM_RGB.to(x.device)
    m_out = _RGB_FROM_HED.to(x.device)
    od = -torch.log(x)  # (B, 3, H, W), natural OD
    conc = torch.einsum("bchw,cs->bshw", od, m_in)
    if clamp:
        conc = conc.clamp_min(0.0)
    conc = conc * alpha.float()[:, :, None, None] + beta.float()[:, :, None, None]
    rgb = torch.exp(-torch.einsum("bshw,sc->bchw", conc, m_out))
    return rgb.clamp(0.0, 1.0).to(dtype)


def random_hed_jitter(
    images: torch.Tensor, sigma: float, delta: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Training-time augmentation: fresh ``alpha`` and ``beta`` for every image of the batch."""
    if sigma == 0 and delta == 0:
        return images
    alpha, beta = sample_stain_params(images.shape[0], sigma, delta, generator, images.device)
    return hed_jitter(images, alpha, beta)
