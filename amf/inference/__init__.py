"""Inference: from a stack or image to P(atypical) and a class, the only wing the container needs.

- ``io``: reading stacks and images into 128x128 RGB patches;
- ``stain``, ``tta``: H&E stain deconvolution and the deterministic test-time views;
- ``spec``: what a member and its views are (:class:`~amf.inference.spec.ModelSpec`, presets, TTA), torch-free;
- ``model``: the member, a timm backbone with its own preprocessing;
- ``weights``: the weights folder (safetensors members and a manifest), verified before use;
- ``prepare``, ``engine``, ``loading``: the ensemble and its views fused into one batched forward pass;
- ``pipeline``: the one path from input files to thresholded predictions, shared by ``process.py`` and
  ``amf predict``;
- ``challenge``: the Grand-Challenge container's input and output layout; ``predict_cli``: ``amf predict``.

Nothing here imports training, evaluation, bench or audit code (tests/test_layout.py holds that).
"""
