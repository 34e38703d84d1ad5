"""The classifier: one logit, its own preprocessing, and initial weights only from a local file."""

import json

import pytest
import timm
import torch
from safetensors.torch import save_file

from amf.errors import WeightsError
from amf.inference.model import build_classifier
from amf.inference.spec import PRESETS, ModelSpec


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


def test_centre_crop_zooms_in_on_the_figure_and_travels_with_the_weights(tmp_path):
    """``crop`` = the model sees the centre square only: the same as cropping the patch first; the manifest
    carries it (older manifests mean the whole patch), and every engine strategy applies it."""
    import numpy as np

    from amf.bench.bench import randomize, synthetic_patches
    from amf.inference.engine import STRATEGIES, Engine
    from amf.inference.manifest import Provenance, Threshold
    from amf.inference.spec import TTAConfig
    from amf.inference.weights import load_ensemble, save_ensemble

    spec = ModelSpec("efficientvit_b0", input_size=64, crop=80)
    model = randomize(build_classifier(spec), seed=1).eval()
    whole = build_classifier(ModelSpec("efficientvit_b0", input_size=64)).eval()
    whole.load_state_dict(model.state_dict())
    patches = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(patches), whole(patches[..., 24:104, 24:104]))
        assert not torch.allclose(model(patches), whole(patches))
    assert ModelSpec.from_dict({"arch": "efficientvit_b0", "input_size": 64}).crop == 128

    save_ensemble([model], tmp_path, Threshold(0.5, "fixed"), TTAConfig(views=2), Provenance(note="test"))
    assert load_ensemble(tmp_path).members[0].spec.crop == 80
    stack = np.stack(list(synthetic_patches(3, seed=3)))
    loop = Engine([model], TTAConfig(views=2), device="cpu", strategy="loop").predict_proba(stack)
    for strategy in STRATEGIES:
        np.testing.assert_allclose(Engine([model], TTAConfig(views=2), device="cpu", strategy=strategy)
                                   .predict_proba(stack), loop, rtol=0, atol=1e-5)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["model"]["crop"] = 200
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match="crop"):
        load_ensemble(tmp_path)
