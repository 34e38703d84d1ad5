"""D4 geometry and the deterministic test-time views."""

import torch

from amf.inference.spec import TTAConfig
from amf.inference.tta import D4_SIZE, d4, make_view, make_views, random_d4


def test_d4_elements_are_distinct_and_invertible():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    outs = [d4(x, k) for k in range(D4_SIZE)]
    assert len({tuple(o.flatten().tolist()) for o in outs}) == 8
    # every element is a permutation of the pixels
    for o in outs:
        assert sorted(o.flatten().tolist()) == list(range(16))


def test_random_d4_applies_one_element_per_image():
    x = torch.rand(12, 3, 5, 5)
    out = random_d4(x, torch.Generator().manual_seed(0))
    for i in range(12):
        assert any(torch.equal(out[i], d4(x[i], k)) for k in range(D4_SIZE))


def test_views_layout_and_first_view_is_identity():
    x = torch.rand(3, 3, 8, 8)
    cfg = TTAConfig(views=5, sigma=0.1, delta=0.1, seed=1)
    views = make_views(x, cfg)
    assert views.shape == (15, 3, 8, 8)
    assert torch.equal(views[:3], x)
    for v in range(5):
        assert torch.equal(views[v * 3 : (v + 1) * 3], make_view(x, cfg, v))


def test_views_do_not_depend_on_batch_or_run():
    x = torch.rand(6, 3, 8, 8)
    cfg = TTAConfig(views=8, seed=3)
    whole = make_views(x, cfg).view(8, 6, 3, 8, 8)
    part = make_views(x[2:4], cfg).view(8, 2, 3, 8, 8)
    assert torch.allclose(whole[:, 2:4], part, atol=1e-7)
    assert torch.equal(make_views(x, cfg), make_views(x, cfg))
    assert not torch.equal(make_views(x, TTAConfig(views=8, seed=4)), make_views(x, cfg))
