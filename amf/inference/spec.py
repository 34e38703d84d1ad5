"""What a member and its test-time views are, as plain data: :class:`ModelSpec`, the named :data:`PRESETS` and
:class:`TTAConfig`, with the rules that make them valid, written once.

Torch-free on purpose: a weights manifest is checked against these rules in about a second, before torch loads
(:func:`amf.inference.weights.read_manifest`), and training settings (:mod:`amf.training.config`) are checked
against the same rules.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from amf.inference.io import PATCH_SIZE


def check_geometry(input_size: object, crop: object) -> None:
    """What the backbone sees: a positive input side, and a centre square inside the patch (``ValueError``; the
    caller names the file or setting)."""
    if type(input_size) is not int or input_size < 1:
        raise ValueError(f"input_size {input_size!r} must be a positive integer")
    if type(crop) is not int or not 1 <= crop <= PATCH_SIZE:
        raise ValueError(f"crop {crop!r} must be an integer in [1, {PATCH_SIZE}] (patch pixels)")


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



@dataclass(frozen=True)
class TTAConfig:
    """How many test-time views, and how strong their stain jitter (natural OD units, see ``amf.inference.stain``)."""

    views: int = 8
    sigma: float = 0.05
    delta: float = 0.05
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TTAConfig:
        """A manifest's ``tta`` entry, checked: unknown keys, a view count below 1, a negative or non-finite
        jitter and a non-integer seed are each a ``ValueError`` (the caller names the file)."""
        if not isinstance(d, dict):
            raise ValueError("tta is not an object")
        names = [f.name for f in fields(cls)]
        unknown = set(d) - set(names)
        if unknown:
            raise ValueError(f"tta has unknown keys {sorted(unknown)} (written by a newer amf?)")
        views = d.get("views", 1)
        if type(views) is not int or views < 1:
            raise ValueError(f"tta views {views!r} must be a positive integer")
        for key in ("sigma", "delta"):
            v = d.get(key, 0.0)
            if type(v) not in (int, float) or not (math.isfinite(v) and v >= 0):
                raise ValueError(f"tta {key} {v!r} must be finite and >= 0")
        if type(d.get("seed", 0)) is not int:
            raise ValueError(f"tta seed {d.get('seed')!r} must be an integer")
        return cls(**d)
