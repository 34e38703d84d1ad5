"""The classifier: one logit, its own preprocessing, and initial weights only from a local file."""

import pytest
import timm
import torch
from safetensors.torch import save_file

from amf.errors import WeightsError
from amf.model import PRESETS, ModelSpec, build_classifier


def test_one_logit_from_a_patch_at_any_input_size():
    model = build_classifier(ModelSpec("efficientvit_b0", input_size=96)).eval()
    with torch.no_grad():
        out = model(torch.rand(3, 3, 128, 128))
    assert out.shape == (3,)


def test_paper_preset_is_efficientvit_l2_at_256():
    assert PRESETS["paper"].arch == "efficientvit_l2" and PRESETS["paper"].input_size == 256


def test_init_weights_from_a_local_imagenet_style_checkpoint(tmp_path):
    """A 1000-class checkpoint loads into the backbone; the one-logit head stays freshly initialised."""
    source = timm.create_model("efficientvit_b0", pretrained=False)  # 1000 classes, like ImageNet weights
    path = tmp_path / "init.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    model = build_classifier(ModelSpec("efficientvit_b0"), init_weights=path)
    ours, theirs = model.backbone.state_dict(), source.state_dict()
    loaded = [k for k in ours if not k.startswith("head.classifier.4")]
    assert loaded and all(torch.equal(ours[k], theirs[k]) for k in loaded)
    assert ours["head.classifier.4.weight"].shape[0] == 1


def test_init_weights_refuses_missing_foreign_and_corrupt_files(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        build_classifier(ModelSpec("efficientvit_b0"), init_weights=tmp_path / "none.safetensors")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"conv.weight": torch.zeros(1)}, str(foreign))
    with pytest.raises(WeightsError, match="do not fit"):
        build_classifier(ModelSpec("efficientvit_b0"), init_weights=foreign)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        build_classifier(ModelSpec("efficientvit_b0"), init_weights=corrupt)
