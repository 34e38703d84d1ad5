"""The settings of a training run (:class:`TrainConfig`): what ``configs/*.toml`` hold and ``config.json`` records.

Its own module because three commands read it: ``train`` runs it, ``crossval`` and ``export`` read it back
from a run folder (:func:`amf.training.run_folder.load_run_config`) without importing the training loop.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from amf.errors import AmfError
from amf.inference.io import PATCH_SIZE
from amf.inference.model import PRESETS, ModelSpec
from amf.training.pretrained import source
from amf.training.threshold import METHODS

#: Training precisions (``dtype``): torch dtype names.
DTYPES = ("float32", "float64")


@dataclass
class TrainConfig:
    """Every setting of a run; loadable from TOML (flat keys with these names, or a ``[train]`` table)."""

    preset: str | None = None  # "paper" | "cpu": fills arch and input_size unless those are given
    arch: str = "efficientvit_b0"  # any timm model name
    input_size: int = 128  # the backbone's input side; patches (128 px) are resized inside the model
    crop: int = PATCH_SIZE  # the centre square (px) of the patch the model sees: zooms in on the figure, same cost
    timm_kwargs: dict = field(default_factory=dict)
    init_weights: str | None = None  # "imagenet:efficientnet_lite0" (amf.training.pretrained) or a local file; never network
    head_init: str = "timm"  # "zero": the new one-logit head starts at logit 0 (pretrained backbones)
    epochs: int = 10
    batch_size: int = 32
    eval_batch_size: int = 128
    lr: float = 1e-3
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    grad_clip: float = 0.0  # max gradient norm; 0 disables
    focal_alpha: float | None = 0.5  # weight of the atypical class; sampling already balances classes
    focal_gamma: float = 2.0
    weighted_sampling: bool = True
    d4: bool = True
    stain_sigma: float = 0.1  # H&E jitter, natural OD units (amf.inference.stain); 0 and 0 disable it
    stain_delta: float = 0.05
    mixup_alpha: float = 0.0  # mixup (Zhang et al. 2018): Beta(a, a) blend of image pairs and their losses; 0 = off
    ema_decay: float = 0.0  # weight averaging: validate and keep an EMA of the weights, decay rising to this; 0 = off
    folds: int = 5
    lodo: bool = True  # train the leave-one-domain-out x k-fold models (the cross-domain estimate)
    ensemble: bool = True  # train the all-domains k-fold (the ensemble that gets shipped)
    fold_limit: int = 0  # train only folds 0..N-1 of each k-fold (cheap ablations); 0 = all k
    seed: int = 0
    threads: int = 2  # torch CPU threads; 0 leaves torch's default
    deterministic: bool = True
    amp: str = "auto"  # CUDA only: auto (= bf16 if supported, else fp16) | bf16 | fp16 | off
    dtype: str = "float32"  # float64: several times slower; for numerical checks (1 vs N processes)
    threshold_method: str = "balanced_accuracy"  # balanced_accuracy | youden | otsu
    limit: int = 0  # use only this many patches (tiny runs); 0 = all
    keep_checkpoints: bool = True  # keep checkpoint.pt after a fold finishes
    note: str = ""  # free text carried into the export's provenance

    def __post_init__(self) -> None:
        if self.preset is not None and self.preset not in PRESETS:
            raise AmfError(f"unknown preset {self.preset!r}; use one of {', '.join(PRESETS)}")
        if self.threshold_method not in METHODS:
            raise AmfError(f"unknown threshold_method {self.threshold_method!r}; use one of {', '.join(METHODS)}")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise AmfError(f"amp must be auto, bf16, fp16 or off, not {self.amp!r}")
        if self.dtype not in DTYPES:
            raise AmfError(f"dtype must be {' or '.join(DTYPES)}, not {self.dtype!r}")
        for name in ("epochs", "batch_size", "eval_batch_size", "input_size"):
            if getattr(self, name) < 1:
                raise AmfError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.crop <= PATCH_SIZE:
            raise AmfError(f"crop must be in [1, {PATCH_SIZE}] (patch pixels), got {self.crop}")
        if self.folds < 2:
            raise AmfError(f"folds must be >= 2, got {self.folds}")
        if not 0 <= self.fold_limit <= self.folds:
            raise AmfError(f"fold_limit must be in [0, folds={self.folds}], got {self.fold_limit}")
        if not (self.lodo or self.ensemble):
            raise AmfError("nothing to train: lodo and ensemble are both off")
        if self.head_init not in ("timm", "zero"):
            raise AmfError(f"head_init must be timm or zero, not {self.head_init!r}")
        if not 0 <= self.ema_decay < 1:
            raise AmfError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.mixup_alpha < 0:
            raise AmfError(f"mixup_alpha must be >= 0, got {self.mixup_alpha}")
        if self.focal_alpha is not None and not 0 <= self.focal_alpha <= 1:
            raise AmfError(f"focal_alpha must be in [0, 1], got {self.focal_alpha}")

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d.get("train", d))
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise AmfError(f"unknown config key(s): {', '.join(unknown)} (known: {', '.join(sorted(names))})")
        if d.get("focal_alpha") in ("none", "None", -1):
            d["focal_alpha"] = None
        preset = d.get("preset")
        if preset is not None:
            if preset not in PRESETS:
                raise AmfError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
            spec = PRESETS[preset]
            d.setdefault("arch", spec.arch)
            d.setdefault("input_size", spec.input_size)
        try:
            return cls(**d)
        except TypeError as exc:
            raise AmfError(f"bad config: {exc}") from exc

    @classmethod
    def from_toml(cls, path: Path) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise AmfError(f"config file not found: {path}")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise AmfError(f"{path}: invalid TOML: {exc}") from exc
        return cls.from_dict(data)

    def replace(self, **changes) -> TrainConfig:
        """A copy with ``changes``; ``preset`` resets arch and input_size to the preset's."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if "preset" in changes:
            spec = PRESETS.get(changes["preset"])
            if spec is None:
                raise AmfError(f"unknown preset {changes['preset']!r}; use one of {', '.join(PRESETS)}")
            changes.setdefault("arch", spec.arch)
            changes.setdefault("input_size", spec.input_size)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def model_spec(self) -> ModelSpec:
        """The member's spec; a named pretrained start brings the input normalisation it was trained with."""
        base = PRESETS[self.preset] if self.preset else ModelSpec(self.arch)
        src = source(self.init_weights)
        if src is not None:
            if src.arch != self.arch:
                raise AmfError(f"init_weights {src.name} fits arch {src.arch!r}, not {self.arch!r}")
            base = dataclasses.replace(base, mean=src.mean, std=src.std)
        return dataclasses.replace(base, arch=self.arch, input_size=self.input_size, crop=self.crop,
                                   timm_kwargs=dict(self.timm_kwargs))
