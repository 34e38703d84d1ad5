"""Shared test fixtures. Sections are owned by different test modules; add yours, keep the others."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # plain `pytest` (not `python -m pytest`) from any folder
    sys.path.insert(0, str(ROOT))


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` skip, saying why, where no CUDA device starts."""
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (none here)")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


# --- reliability tests (test_io, test_reliability, test_container_conditions, test_fuzz_reader) ---------


def _save_tiny(out: Path, specs: list, views: int) -> Path:
    import torch

    from amf.inference.manifest import Provenance, Threshold
    from amf.inference.model import build_classifier
    from amf.inference.spec import TTAConfig
    from amf.inference.weights import save_ensemble

    torch.manual_seed(0)
    save_ensemble([build_classifier(s) for s in specs], out, Threshold(0.5, "fixed"), TTAConfig(views=views),
                  Provenance(note="test"))
    return out


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """Two random efficientvit_b0 members, 2 test-time views: the production architecture, untrained."""
    from amf.inference.spec import ModelSpec

    return _save_tiny(tmp_path_factory.mktemp("tiny_weights"), [ModelSpec("efficientvit_b0")] * 2, views=2)


MICRO_SPEC = {"arch": "test_vit", "input_size": 32, "timm_kwargs": {"img_size": 32}}


@pytest.fixture(scope="session")
def micro_weights(tmp_path_factory) -> Path:
    """One random timm ``test_vit`` at 32 px, 1 view: the cheapest real ensemble, for subprocess runs."""
    from amf.inference.spec import ModelSpec

    return _save_tiny(tmp_path_factory.mktemp("micro_weights"), [ModelSpec(**MICRO_SPEC)], views=1)


@pytest.fixture(scope="session")
def small_weights(tmp_path_factory) -> Path:
    """Two random ``test_vit`` members at 32 px, 2 views (stain-jittered): the whole ensemble x TTA path, fast."""
    from amf.inference.spec import ModelSpec

    return _save_tiny(tmp_path_factory.mktemp("small_weights"), [ModelSpec(**MICRO_SPEC)] * 2, views=2)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on a shared 2-core machine: one thread is 5-10x faster than two spinning threads.

    Module-scoped, so a module's shared fixtures (engines and the outputs the tests compare against) are built
    and run at the same thread count as its tests: on some CPUs (an Intel Xeon here, not the AMD EPYC) oneDNN's
    results differ in the last bits between one and two threads."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def weights(small_weights) -> Path:
    """The corpus runs on a small test_vit ensemble (2 members x 2 views): the same code path, 20x faster."""
    return small_weights


@pytest.fixture(scope="module")
def engine_for(weights):
    from amf.inference.engine import Engine
    from amf.inference.weights import load_ensemble

    ens = load_ensemble(weights)
    return Engine(ens.members, ens.tta, device="cpu"), ens.threshold.value
