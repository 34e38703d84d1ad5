"""The settings of a training run (:class:`TrainConfig`): what ``configs/*.toml`` hold and ``config.json`` records.

Its own module because three commands read it: ``train`` runs it, ``crossval`` and ``export`` read it back
from a run folder (:class:`amf.training.run_folder.RunFolder`) without importing the training loop.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from amf.errors import AmfError
from amf.inference.io import PATCH_SIZE
from amf.inference.spec import PRESETS, ModelSpec, check_geometry
from amf.training.threshold import METHODS

#: Training precisions (``dtype``): torch dtype names.
DTYPES = ("float32", "float64")
#: CUDA mixed precision (``amp``): auto is bf16 where the GPU has it, else fp16.
AMP_MODES = ("auto", "bf16", "fp16", "off")
#: How the one-logit head starts (``head_init``): timm's initialisation, or zero (every P(atypical) at 0.5).
HEAD_INITS = ("timm", "zero")


def setting(default, help: str, choices: tuple[str, ...] | None = None, **limits):
    """A :class:`TrainConfig` field with the help text of its ``--flag`` and the registry its value comes from
    (``choices``); ``limits`` (``min``, ``max``, ``below``) bound a number. Written once, used by the TOML
    loader, the check of a config and the command line alike."""
    meta = {"help": help, "choices": choices, **limits}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Every setting of a run; loadable from TOML (flat keys with these names, or a ``[train]`` table, and
    ``extends = "other.toml"`` to start from another file), each also a ``--flag`` of ``amf train``."""

    preset: str | None = setting(None, "model preset: sets arch and input_size unless those are given",
                                 tuple(PRESETS))
    arch: str = setting("efficientvit_b0", "any timm model name (weights are never downloaded)")
    input_size: int = setting(128, "the backbone's input side in px; patches are resized inside the model", min=1)
    crop: int = setting(PATCH_SIZE, "the centre square (px) of the patch the model sees: zooms in on the figure, "
                                    "same cost")
    timm_kwargs: dict = setting({}, "extra keyword arguments of timm.create_model (--set only)")
    init_weights: str | None = setting(None, "backbone start: imagenet:efficientnet_liteN (amf.training.pretrained) "
                                             "or a local .safetensors / torch checkpoint; never the network")
    head_init: str = setting("timm", "zero: the new one-logit head starts at logit 0 (pretrained backbones)",
                             HEAD_INITS)
    epochs: int = setting(10, "training epochs per fold", min=1)
    batch_size: int = setting(32, "training batch size (global, over all processes)", min=1)
    eval_batch_size: int = setting(128, "validation batch size", min=1)
    lr: float = setting(1e-3, "peak AdamW learning rate after warm-up")
    min_lr: float = setting(1e-6, "learning rate at the end of the cosine decay")
    weight_decay: float = setting(0.05, "AdamW weight decay")
    warmup_epochs: float = setting(1.0, "linear warm-up, in epochs")
    grad_clip: float = setting(0.0, "max gradient norm; 0 disables")
    focal_alpha: float | None = setting(0.5, "focal loss weight of the atypical class, or none; sampling "
                                             "already balances classes", min=0, max=1)
    focal_gamma: float = setting(2.0, "focal loss gamma; 0 with focal_alpha none is binary cross-entropy")
    weighted_sampling: bool = setting(True, "class-balanced sampling of training batches")
    d4: bool = setting(True, "random rotations and flips (the 8 symmetries of the square)")
    stain_sigma: float = setting(0.1, "H&E concentration scale jitter U[1-s, 1+s], natural OD units "
                                      "(amf.inference.stain); 0 and 0 disable it")
    stain_delta: float = setting(0.05, "H&E concentration shift jitter U[-d, d], natural OD units")
    mixup_alpha: float = setting(0.0, "mixup (Zhang et al. 2018): Beta(a, a) blend of image pairs and their "
                                      "losses; 0 = off", min=0)
    ema_decay: float = setting(0.0, "weight averaging: validate and keep an EMA of the weights, decay rising to "
                                    "this; 0 = off", min=0, below=1)
    teacher_scores: str | None = setting(None, "distillation: a CSV of a teacher's P(atypical) per training patch "
                                               "(image, p_atypical[, heldout_domain]; amf.training.distill)")
    distill_weight: float = setting(0.0, "distillation: the target is (1 - w) * label + w * teacher's P; 0 = off",
                                    min=0, max=1)
    folds: int = setting(5, "k of the k-fold", min=2)
    lodo: bool = setting(True, "train the leave-one-domain-out x k-fold models (the cross-domain estimate)")
    ensemble: bool = setting(True, "train the all-domains k-fold (the ensemble that gets shipped)")
    fold_limit: int = setting(0, "train only folds 0..N-1 of each k-fold (cheap ablations); 0 = all k", min=0)
    seed: int = setting(0, "seed of the splits, initialisation, sampling and augmentation")
    threads: int = setting(2, "torch CPU threads; 0 leaves torch's default")
    deterministic: bool = setting(True, "deterministic algorithms: the same run gives the same bits")
    amp: str = setting("auto", "CUDA mixed precision: auto (bf16 if supported, else fp16), bf16, fp16 or off",
                       AMP_MODES)
    dtype: str = setting("float32", "training precision; float64 is several times slower, for numerical checks",
                         DTYPES)
    threshold_method: str = setting("balanced_accuracy", "how the decision threshold is chosen on out-of-fold "
                                                         "scores", METHODS)
    limit: int = setting(0, "use only N patches, spread over domains and classes (tiny runs); 0 = all", min=0)
    keep_checkpoints: bool = setting(True, "keep checkpoint.pt after a fold finishes")
    note: str = setting("", "free text carried into the export's provenance")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check_setting(f, getattr(self, f.name))
        try:
            check_geometry(self.input_size, self.crop)
        except ValueError as exc:
            raise AmfError(str(exc)) from exc
        if self.fold_limit > self.folds:
            raise AmfError(f"fold_limit must be in [0, folds={self.folds}], got {self.fold_limit}")
        if not (self.lodo or self.ensemble):
            raise AmfError("nothing to train: lodo and ensemble are both off")
        if self.distill_weight > 0 and not self.teacher_scores:
            raise AmfError("distill_weight needs teacher_scores, the teacher's CSV (amf.training.distill)")

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d.get("train", d))
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise AmfError(f"unknown config key(s): {', '.join(unknown)} (known: {', '.join(sorted(names))})")
        if d.get("focal_alpha") in ("none", "None", -1):
            d["focal_alpha"] = None
        try:
            return cls(**with_preset(d))
        except TypeError as exc:
            raise AmfError(f"bad config: {exc}") from exc

    @classmethod
    def from_toml(cls, path: Path) -> TrainConfig:
        return cls.from_dict(read_toml(Path(path)))

    def replace(self, **changes) -> TrainConfig:
        """A copy with ``changes`` (None values are ignored); ``preset`` resets arch and input_size to the
        preset's unless those change too."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **with_preset(changes))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def model_spec(self) -> ModelSpec:
        """The member's spec; a named pretrained start brings the input normalisation it was trained with."""
        from amf.training.pretrained import source  # torch: only where a member is built

        base = PRESETS[self.preset] if self.preset else ModelSpec(self.arch)
        src = source(self.init_weights)
        if src is not None:
            if src.arch != self.arch:
                raise AmfError(f"init_weights {src.name} fits arch {src.arch!r}, not {self.arch!r}")
            base = dataclasses.replace(base, mean=src.mean, std=src.std)
        return dataclasses.replace(base, arch=self.arch, input_size=self.input_size, crop=self.crop,
                                   timm_kwargs=dict(self.timm_kwargs))


def with_preset(values: dict) -> dict:
    """``values`` with a named ``preset``'s arch and input_size filled in where they are not given."""
    preset = values.get("preset")
    if preset is None:
        return values
    if preset not in PRESETS:
        raise AmfError(f"preset must be one of {', '.join(PRESETS)}, not {preset!r}")
    spec = PRESETS[preset]
    return {"arch": spec.arch, "input_size": spec.input_size, **values}


def check_setting(f: dataclasses.Field, value: object) -> None:
    """One setting against its field's registry (``choices``) and bounds."""
    meta = f.metadata
    choices = meta.get("choices")
    if choices is not None and value is not None and value not in choices:
        raise AmfError(f"{f.name} must be one of {', '.join(choices)}, not {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    low, high, below = meta.get("min"), meta.get("max"), meta.get("below")
    if (low is not None and value < low) or (high is not None and value > high) or (below is not None and
                                                                                      value >= below):
        if high is None and below is None:
            raise AmfError(f"{f.name} must be >= {low}, got {value}")
        upper = f"{high}]" if high is not None else f"{below})"
        raise AmfError(f"{f.name} must be in [{low}, {upper}, got {value}")


def read_toml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A config file's settings, with ``extends = "base.toml"`` (relative to the file) resolved: the base's
    settings, then this file's on top. So a recipe says only what it changes."""
    if not path.is_file():
        raise AmfError(f"config file not found: {path}")
    if path.resolve() in seen:
        raise AmfError(f"{path}: extends itself (via {' -> '.join(p.name for p in seen)})")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise AmfError(f"{path}: invalid TOML: {exc}") from exc
    data = dict(data.get("train", data))
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise AmfError(f"{path}: extends must be a file name, not {base!r}")
    return {**read_toml(path.parent / base, (*seen, path.resolve())), **data}
