"""Named pretrained starts: every tensor placed (strictly, by position), the ImageNet weights still see a cat,
the head starts at zero, and a run records the source and the file's sha256."""

import json

import numpy as np
import pytest
import timm
import torch
from synthetic_data import amibr_style_dataset

from amf.errors import AmfError, WeightsError
from amf.files import sha256_file
from amf.training.pretrained import SOURCES, checkpoint_path, init_backbone, init_head, map_by_order, source
from amf.training.train import TrainConfig, train_run

pytestmark = pytest.mark.slow  # trains from the ImageNet starts

NAMES = sorted(SOURCES)


def _checkpoint(name: str) -> dict:
    return torch.load(checkpoint_path(SOURCES[name]), map_location="cpu", weights_only=True)


@pytest.mark.parametrize("name", NAMES)
def test_every_backbone_tensor_is_placed_with_its_shape(name):
    """The one-logit model takes every checkpoint tensor but the 1000-class head, in order, unchanged."""
    src = SOURCES[name]
    model = timm.create_model(src.arch, pretrained=False, num_classes=1)
    init_backbone(model, name)
    theirs = list(_checkpoint(name).values())[:-2]  # their head: _fc.weight, _fc.bias
    ours = [v for k, v in model.state_dict().items() if not k.startswith("classifier")]
    assert len(ours) == len(theirs) > 200
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape and torch.equal(a, b.to(a.dtype))


@pytest.mark.parametrize("name", NAMES)
def test_imagenet_weights_still_classify_photos(name):
    """Mapped with their head onto timm's 1000-class model, the weights name a cat and an espresso."""
    from skimage import data
    from skimage.transform import resize

    model = timm.create_model(SOURCES[name].arch, pretrained=False).eval()
    model.load_state_dict(map_by_order(_checkpoint(name), model.state_dict(), skip_target="no-head"))
    photos = np.stack([resize(data.chelsea(), (224, 224), anti_aliasing=True),
                       resize(data.coffee(), (224, 224), anti_aliasing=True)])
    x = (torch.from_numpy(photos).permute(0, 3, 1, 2).float() - 0.5) / 0.5  # mean = std = 0.5
    with torch.no_grad():
        top = model(x).argmax(-1).tolist()
    assert top[0] in range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert top[1] in (967, 968)  # espresso, cup


def test_mapping_refuses_a_count_shape_or_kind_that_differs():
    target = {"a.weight": torch.zeros(2, 3), "a.bias": torch.zeros(2), "head.weight": torch.zeros(1, 2)}
    good = {"x.weight": torch.ones(2, 3), "x.bias": torch.ones(2), "fc.weight": torch.ones(5, 2)}
    assert set(map_by_order(good, target, "head")) == {"a.weight", "a.bias"}
    with pytest.raises(WeightsError, match="does not fit"):
        map_by_order({"x.weight": torch.ones(3, 2), "x.bias": torch.ones(2), "fc.w": torch.ones(1)}, target, "head")
    with pytest.raises(WeightsError, match="does not fit"):
        map_by_order({"x.bias": torch.ones(2, 3), "x.weight": torch.ones(2), "fc.w": torch.ones(1)}, target, "head")
    with pytest.raises(WeightsError, match="backbone tensors"):
        map_by_order({"x.weight": torch.ones(2, 3), "fc.w": torch.ones(1)}, target, "head")


def test_names_local_files_and_errors(tmp_path):
    assert source(None) is None and source(str(tmp_path / "local.pth")) is None
    assert source("imagenet:efficientnet_lite1").mean == (0.5, 0.5, 0.5)
    with pytest.raises(WeightsError, match="unknown pretrained source"):
        source("imagenet:resnet50")
    model = timm.create_model("efficientnet_lite1", pretrained=False, num_classes=1)
    with pytest.raises(WeightsError, match="fits arch"):
        init_backbone(model, "imagenet:efficientnet_lite0")
    with pytest.raises(AmfError, match="fits arch"):
        TrainConfig(arch="efficientvit_b0", init_weights="imagenet:efficientnet_lite0").model_spec()


def test_zero_head_starts_every_probability_at_one_half():
    model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=1).eval()
    init_backbone(model, "imagenet:efficientnet_lite0")
    with torch.no_grad():
        assert model(torch.rand(2, 3, 64, 64)).abs().max() > 0.01  # timm's head: not zero
    init_head(model, "zero")
    with torch.no_grad():
        assert torch.equal(model(torch.rand(2, 3, 64, 64)), torch.zeros(2, 1))


def test_a_run_records_the_source_and_its_sha256(tmp_path):
    labels = amibr_style_dataset(tmp_path / "data", n=12)
    cfg = TrainConfig(arch="efficientnet_lite0", init_weights="imagenet:efficientnet_lite0", head_init="zero",
                      input_size=32, epochs=1, batch_size=4, folds=2, lodo=False, fold_limit=1, threads=1)
    train_run(cfg, labels, tmp_path / "run")
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    path = checkpoint_path(SOURCES["imagenet:efficientnet_lite0"])
    assert record["init"]["source"] == "imagenet:efficientnet_lite0"
    assert record["init"]["sha256"] == sha256_file(path) == record["init_weights_sha256"]
    assert record["model"]["mean"] == [0.5, 0.5, 0.5] and record["model"]["std"] == [0.5, 0.5, 0.5]
