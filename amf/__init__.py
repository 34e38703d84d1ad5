"""amf: atypical vs normal mitotic figure classification for MIDOG 2025 Track 2.

The method follows arXiv 2509.02589: a timm EfficientViT backbone, H&E stain-deconvolution augmentation,
focal loss with class-balanced sampling, leave-one-domain-out x k-fold ensembles and a data-driven
threshold. The package is split so that inference (``io``, ``stain``, ``tta``, ``model``, ``weights``,
``engine``, ``challenge``, ``predict``) never imports training code (``train`` and its helpers).
"""

import os

__version__ = "0.1.0"

# Environment defaults, here because every entry point (process.py, ``python -m amf``, a notebook) imports
# this package before torch or timm load, and both read them only once, when they load:
# - never the network: timm would otherwise try the Hugging Face hub for pretrained weights;
# - idle OpenMP threads sleep instead of spinning: on shared or oversubscribed cores spinning made stacks and
#   training several times slower (docs/benchmark.md); on idle cores it costs little.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def load(*args, **kwargs):
    """The shipped (or named) weights, verified and loaded for scoring: :func:`amf.inference.api.load`. Imported
    here on first call, so ``import amf`` stays free of torch."""
    from amf.inference.api import load as _load

    return _load(*args, **kwargs)
