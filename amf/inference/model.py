"""The classifier: a timm backbone with one logit for P(atypical), plus its own input preprocessing.

Preprocessing (the centre crop, resizing the patch to the backbone's input size, normalising) is part of
the module, so every caller (training, the fused engine, export) feeds the same thing: RGB in ``[0, 1]`` at
patch size. Weights never come from the network: a backbone starts random, or from a local file.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from amf.errors import WeightsError
from amf.inference.spec import ModelSpec


class Classifier(nn.Module):
    """``(B, 3, 128, 128)`` RGB in ``[0, 1]`` -> ``(B,)`` logits of P(atypical)."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.backbone = timm.create_model(spec.arch, pretrained=False, num_classes=1, **spec.timm_kwargs)
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        side = x.shape[-1]
        if self.spec.crop < side:
            start = (side - self.spec.crop) // 2
            x = x[..., start:start + self.spec.crop, start:start + self.spec.crop]
        if x.shape[-1] != self.spec.input_size or x.shape[-2] != self.spec.input_size:
            x = F.interpolate(x, size=(self.spec.input_size,) * 2, mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        return self.backbone(x).squeeze(-1)


def build_classifier(spec: ModelSpec, init_weights: Path | None = None) -> Classifier:
    """Build a member; ``init_weights`` is a local backbone checkpoint (e.g. ImageNet weights you own).

    The classifier head is skipped when loading, since ours has one output.
    """
    model = Classifier(spec)
    if init_weights is not None:
        load_backbone_weights(model.backbone, Path(init_weights))
    return model


def load_backbone_weights(backbone: nn.Module, path: Path) -> None:
    """Load a ``.safetensors`` or torch checkpoint into ``backbone``, leaving out the classifier head."""
    if not path.is_file():
        raise WeightsError(f"initial weights not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state.get("model", state))
    except Exception as exc:  # any parse failure is a bad file, whatever the library raised
        raise WeightsError(f"cannot read initial weights {path}: {exc}") from exc
    head = head_prefix(backbone)
    state = {k: v for k, v in state.items() if not k.startswith(head)}
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(head)]
    if missing or unexpected:
        raise WeightsError(
            f"initial weights {path} do not fit {type(backbone).__name__}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


def head_prefix(backbone: nn.Module) -> str:
    """The state-dict prefix of timm's classifier layer (e.g. ``head.classifier.4``), which we replace."""
    name = getattr(backbone, "default_cfg", {}).get("classifier", "head")
    return name if isinstance(name, str) else name[0]
