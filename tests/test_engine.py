"""The inference engine: every strategy equals the naive loop, outputs are deterministic, NaN is refused,
and the graph cache gives the same numbers without building a model."""

from __future__ import annotations

import copy
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from amf.bench.bench import randomize, synthetic_patches
from amf.errors import OutputError
from amf.inference.engine import STRATEGIES, Engine
from amf.inference.loading import graph_cache_key, load_engine
from amf.inference.manifest import Provenance, Threshold
from amf.inference.model import build_classifier
from amf.inference.prepare import fold_batchnorm
from amf.inference.spec import ModelSpec, TTAConfig
from amf.inference.weights import load_ensemble, read_manifest, save_ensemble

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # two threads on two shared cores are several times slower

ROOT = Path(__file__).resolve().parent.parent
TTA = TTAConfig(views=3)


@pytest.fixture(scope="module")
def members(one_torch_thread):
    """Two efficientvit_b0 whose outputs depend on their input (timm's init gives a near-constant output)."""
    return [randomize(build_classifier(ModelSpec("efficientvit_b0")), seed=s) for s in (1, 2)]


@pytest.fixture(scope="module")
def patches():
    return np.stack(list(synthetic_patches(10, seed=3)))


@pytest.fixture(scope="module")
def engines(members):
    return {s: Engine(members, TTA, device="cpu", strategy=s) for s in STRATEGIES}


@pytest.fixture(scope="module")
def outputs(engines, patches):
    return {s: e.predict_proba(patches) for s, e in engines.items()}


@pytest.fixture
def graph(engines):
    """The default engine, its chunk size restored after each test."""
    engine = engines["graph"]
    chunk = engine.chunk_size
    yield engine
    engine.chunk_size = chunk


def test_members_are_input_sensitive(outputs):
    # Otherwise every comparison below would be trivially true.
    assert np.ptp(outputs["loop"]) > 1e-3


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s != "loop"])
def test_strategy_equals_naive_loop(outputs, strategy):
    assert outputs[strategy].shape == (10,) and outputs[strategy].dtype == np.float64
    np.testing.assert_allclose(outputs[strategy], outputs["loop"], rtol=0, atol=1e-5)


def test_loop_is_the_definition(members, patches):
    """The loop's number is the mean over members and views of sigmoid(member(view))."""
    from amf.inference.engine import to_tensor
    from amf.inference.tta import make_view

    x = to_tensor(patches)
    with torch.inference_mode():
        want = np.mean([torch.sigmoid(m(make_view(x, TTA, v))).numpy() for m in members for v in range(TTA.views)],
                       axis=0)
    np.testing.assert_allclose(Engine(members, TTA, strategy="loop", device="cpu").predict_proba(patches), want,
                               rtol=0, atol=1e-6)


def test_default_is_bit_identical_across_runs_and_chunk_sizes(graph, patches, outputs):
    first = outputs["graph"]
    engine = graph
    for chunk in (3, 16):
        engine.chunk_size = chunk
        assert np.array_equal(engine.predict_proba(patches), first)
        assert np.array_equal(engine.predict_proba(patches), first)  # run after run
    # The same patch in another stack, at another place: the same number to within 1e-6.
    np.testing.assert_allclose(engine.predict_proba(patches[4:7]), first[4:7], rtol=0, atol=1e-6)
    order = np.random.default_rng(0).permutation(len(patches))
    np.testing.assert_allclose(engine.predict_proba(patches[order]), first[order], rtol=0, atol=1e-6)


def test_chunks_are_whole_forward_passes(members):
    engine = Engine(members, TTA, device="cpu", strategy="loop", sub_batch=32, chunk_size=5)
    assert engine.patches_per_forward == 10 and engine.sub_batch == 30 and engine.chunk_size == 10
    engine.chunk_size = 11
    assert engine.chunk_size == 20


def test_batched_deterministic(engines, patches, outputs):
    engine = engines["batched"]
    for chunk in (3, 16):
        engine.chunk_size = chunk
        assert np.array_equal(engine.predict_proba(patches), outputs["batched"])


def test_fused_deterministic(engines, patches, outputs):
    engine = engines["fused"]
    engine.chunk_size = 2
    a, b = engine.predict_proba(patches[:4]), engine.predict_proba(patches[:4])
    assert np.array_equal(a, b)
    np.testing.assert_allclose(a, outputs["fused"][:4], rtol=0, atol=1e-6)


def test_iterable_equals_array(graph, patches, outputs):
    engine = graph
    engine.chunk_size = 4
    assert np.array_equal(engine.predict_proba(iter(list(patches))), outputs["graph"])
    assert np.array_equal(engine.predict_proba(p for p in patches), engine.predict_proba(patches))
    assert engine.predict_proba(iter([])).shape == (0,)


def test_default_strategy_on_cpu_is_graph(members):
    assert Engine(members, TTA, device="cpu").strategy == "graph"
    with pytest.raises(ValueError):
        Engine(members, TTA, device="cuda", strategy="graph")
    with pytest.raises(ValueError):
        Engine(members, TTA, device="cpu", strategy="vectorised")


def test_bf16_is_opt_in_eager_and_close_to_fp32(members, patches, outputs):
    """bf16 autocast runs the eager strategies (a frozen graph is fp32 only): off by default, near fp32 when on."""
    assert not Engine(members, TTA, device="cpu").bf16
    engine = Engine(members, TTA, device="cpu", bf16=True)
    assert engine.strategy == "batched" and engine.describe()["bf16"]
    got = engine.predict_proba(patches)
    assert not np.array_equal(got, outputs["batched"])  # the setting reaches the forward pass
    np.testing.assert_allclose(got, outputs["loop"], rtol=0, atol=2e-2)
    with pytest.raises(ValueError, match="bf16"):
        Engine(members, TTA, device="cpu", strategy="graph", bf16=True)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_nan_weights_raise_output_error(members, patches, strategy):
    broken = copy.deepcopy(members[1])
    with torch.no_grad():
        broken.backbone.head.classifier[-1].weight.fill_(float("nan"))
    engine = Engine([members[0], broken], TTA, device="cpu", strategy=strategy)
    with pytest.raises(OutputError, match="NaN or inf"):
        engine.predict_proba(patches[:2])


def test_members_left_untouched(members, patches):
    before = {k: v.clone() for k, v in members[0].state_dict().items()}
    for s in ("graph", "batched", "fused"):
        Engine(members, TTA, device="cpu", strategy=s)
    after = members[0].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in members[0].modules()) > 0


def test_fold_batchnorm_removes_norms_and_keeps_output(members):
    folded = fold_batchnorm(members[0])
    assert not any(type(m) is torch.nn.BatchNorm2d for m in folded.backbone.stages.modules())
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), members[0](x), rtol=1e-5, atol=1e-5)


def test_stain_matrices_equal_skimage():
    from skimage.color import hed_from_rgb, rgb_from_hed

    from amf.inference.stain import HED_FROM_RGB, RGB_FROM_HED

    assert np.array_equal(HED_FROM_RGB, hed_from_rgb) and np.array_equal(RGB_FROM_HED, rgb_from_hed)


# --- load_engine and its graph cache ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def weights(members, tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    save_ensemble(members, folder, Threshold(0.4, "test"), TTA, Provenance(note="test"))
    return folder


def test_load_engine_cache_miss_then_hit(weights, patches, tmp_path):
    cache = tmp_path / "cache"
    reference = load_ensemble(weights)
    want = Engine(reference.members, reference.tta, device="cpu", strategy="loop").predict_proba(patches)

    first = load_engine(weights, device="cpu", cache_dir=cache)
    assert first.source == "built" and first.threshold == 0.4
    entry = cache / graph_cache_key(first.manifest)
    assert sorted(p.name for p in entry.iterdir()) == ["index.json", "member_0.pt", "member_1.pt"]
    second = load_engine(weights, device="cpu", cache_dir=cache)
    assert second.source == "graph-cache" and second.engine.strategy == "graph"
    a, b = first.engine.predict_proba(patches), second.engine.predict_proba(patches)
    assert np.array_equal(a, b)
    np.testing.assert_allclose(a, want, rtol=0, atol=1e-5)


def test_damaged_cache_is_rebuilt(weights, patches, tmp_path, caplog):
    cache = tmp_path / "cache"
    want = load_engine(weights, device="cpu", cache_dir=cache).engine.predict_proba(patches)
    entry = next(cache.iterdir())
    (entry / "member_1.pt").write_bytes(b"not a graph")
    again = load_engine(weights, device="cpu", cache_dir=cache)
    assert "ignoring graph cache" in caplog.text and "sha256" in caplog.text
    assert again.source == "built"
    assert np.array_equal(again.engine.predict_proba(patches), want)
    assert load_engine(weights, device="cpu", cache_dir=cache).source == "graph-cache"  # rewritten


def test_cache_key_follows_the_member_files(weights):
    manifest = read_manifest(weights)
    other = dataclasses.replace(manifest, members=(dataclasses.replace(manifest.members[0], sha256="0" * 64),
                                                   *manifest.members[1:]))
    assert graph_cache_key(manifest) != graph_cache_key(other)


def test_cache_disabled_and_other_strategies(weights, tmp_path):
    assert load_engine(weights, device="cpu", cache_dir=None).source == "built"
    loaded = load_engine(weights, device="cpu", strategy="batched", cache_dir=tmp_path / "c")
    assert loaded.engine.strategy == "batched" and not (tmp_path / "c").exists()


def test_cache_hit_imports_no_timm(weights, tmp_path):
    """The point of the cache: a warm start needs neither timm nor a trace."""
    cache = tmp_path / "cache"
    load_engine(weights, device="cpu", cache_dir=cache)
    code = ("import sys; from amf.inference.loading import load_engine; "
            f"e = load_engine({str(weights)!r}, device='cpu', cache_dir=__import__('pathlib').Path({str(cache)!r})); "
            "print(e.source, 'timm' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["graph-cache", "False"]


@pytest.mark.parametrize("arch", ["efficientnet_lite0", "efficientvit_b0", "test_efficientnet"])
def test_every_batch_norm_is_folded_by_every_strategy(arch):
    """The architectures of configs/*.toml (timm's BatchNormAct2d and plain BatchNorm2d): no batch norm is left to
    compute after preparation, and the folded member computes what the member does."""
    from amf.inference.prepare import unfolded_batchnorms

    member = randomize(build_classifier(ModelSpec(arch)), seed=3)
    assert unfolded_batchnorms(member) > 0
    x = torch.rand(4, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    folded = fold_batchnorm(member)
    assert unfolded_batchnorms(folded) == 0
    with torch.no_grad():
        assert torch.allclose(folded(x), member(x), atol=1e-3, rtol=1e-4)
    for strategy in ("batched", "graph"):
        engine = Engine([member], TTAConfig(views=1), device="cpu", strategy=strategy)
        runner = engine._runner
        assert [unfolded_batchnorms(m) for m in getattr(runner, "members", getattr(runner, "graphs", []))] == [0]


def test_a_norm_that_cannot_be_folded_is_named_in_one_warning():
    """A norm fed by no convolution stays, and the engine says so in one line."""
    from amf.inference.prepare import unfolded_batchnorms

    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.norm = torch.nn.BatchNorm2d(3)  # on the input, not on a convolution's output

        def forward(self, x):
            return self.conv(self.norm(x)).mean(dim=(1, 2, 3))

    member = Odd().eval()
    assert unfolded_batchnorms(fold_batchnorm(member)) == 1
    with pytest.warns(UserWarning, match=r"1 batch-norm layer\(s\) .* could not be folded"):
        Engine([member], TTAConfig(views=1), device="cpu", strategy="batched")


def test_an_engine_leaves_the_process_settings_as_it_found_them(members):
    """Threads (and on CUDA the TF32 flags) are the engine's while it works, and the caller's again after."""
    before = torch.get_num_threads()
    wanted = 2 if before == 1 else 1
    engine = Engine(members, TTA, device="cpu", strategy="batched", num_threads=wanted)
    assert torch.get_num_threads() == before
    engine.predict_proba(synthetic_patches(3))
    assert torch.get_num_threads() == before and engine.describe()["threads"] == wanted


@pytest.mark.gpu
@pytest.mark.parametrize("strategy", ["fused", "batched"])
def test_the_gpu_gives_the_cpu_loops_numbers_within_the_tolerance(members, patches, outputs, strategy):
    """fp32 with TF32 off on CUDA: the CPU's reference numbers to float rounding, every class the same."""
    from amf.reproducibility import TOLERANCE

    mean, spread = Engine(members, TTA, device="cuda", strategy=strategy).predict(patches)
    assert np.max(np.abs(mean - outputs["loop"])) <= TOLERANCE
    assert np.all(spread >= 0)
