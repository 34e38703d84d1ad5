"""The classifier: a timm backbone with one logit for P(atypical), plus its own input preprocessing.

Preprocessing (the centre crop, resizing the patch to the backbone's input size, normalising) is part of
the module, so every caller (training, the fused engine, export) feeds the same thing: RGB in ``[0, 1]`` at
patch size. Weights never come from the network: a backbone starts random, or from a local file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from amf.errors import WeightsError
from amf.inference.io import PATCH_SIZE



@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a member: stored in the manifest of every export."""

    arch: str
    input_size: int = PATCH_SIZE
    #: The centre square of the patch (px) that the backbone sees, resized to ``input_size``. The figure sits in
    #: the centre of every crop-out, so a smaller crop zooms in on it at the same compute (80 of 128 px: 1.6x).
    crop: int = PATCH_SIZE
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    timm_kwargs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "arch": self.arch,
            "input_size": self.input_size,
            "crop": self.crop,
            "mean": list(self.mean),
            "std": list(self.std),
            "timm_kwargs": dict(self.timm_kwargs),
        }

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        return cls(
            arch=d["arch"],
            input_size=int(d["input_size"]),
            crop=int(d.get("crop", PATCH_SIZE)),  # manifests from before the key: the whole patch
            mean=tuple(d.get("mean", cls.mean)),
            std=tuple(d.get("std", cls.std)),
            timm_kwargs=dict(d.get("timm_kwargs", {})),
        )


#: Named configurations. ``paper`` is arXiv 2509.02589's; ``cpu`` trains in minutes on two cores.
PRESETS: dict[str, ModelSpec] = {
    "paper": ModelSpec("efficientvit_l2", input_size=256),
    "cpu": ModelSpec("efficientvit_b0", input_size=PATCH_SIZE),
}


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
