"""amf: atypical vs normal mitotic figure classification for MIDOG 2025 Track 2.

The method follows arXiv 2509.02589: a timm EfficientViT backbone, H&E stain-deconvolution augmentation,
focal loss with class-balanced sampling, leave-one-domain-out x k-fold ensembles and a data-driven
threshold. The package is split so that inference (``io``, ``stain``, ``tta``, ``model``, ``weights``,
``engine``, ``challenge``, ``predict``) never imports training code (``train`` and its helpers).
"""

__version__ = "0.1.0"
