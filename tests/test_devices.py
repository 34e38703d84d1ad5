"""amf.devices.resolve: the device every command runs on, and the one line that says which and why; and what a GPU
that fails after start-up costs a job (nothing but time), provoked here through the engine's strategy registry
(tests/faults.py) on a machine without one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from amf import devices
from amf.devices import driver_cuda_version, nvidia_driver, resolve
from amf.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
OUTPUT_NAME = "multiple-mitotic-figure-classification.json"
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-side wording: this machine has a GPU")


def test_cpu_is_said_plainly():
    device, line = resolve("cpu")
    assert device.type == "cpu" and line == "running on the CPU (--device cpu)"


@no_gpu
def test_auto_without_a_gpu_says_why_in_one_line():
    device, line = resolve("auto")
    assert device.type == "cpu" and "\n" not in line
    if torch.version.cuda is None:
        assert line == f"running on the CPU (torch {torch.__version__} is a CPU build)"
    else:
        assert line.startswith("CUDA cannot start (") and line.endswith("; running on the CPU")
        assert f"torch built for CUDA {torch.version.cuda}" in line
        assert ("NVIDIA driver " in line) == (nvidia_driver() is not None)


@no_gpu
def test_an_explicit_gpu_that_cannot_start_is_an_error_not_a_fallback():
    with pytest.raises(InputError, match=r"--device cuda: (CUDA cannot start|this torch .* is a CPU build)"):
        resolve("cuda")


@pytest.mark.parametrize("text, version", [
    ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n", "535.104.05"),
    ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.15  Release Build  (dvs-builder@U16)\n",
     "570.86.15"),
    ("garbage\n", None),
])
def test_the_driver_version_is_read_as_the_kernel_reports_it(tmp_path, text, version):
    path = tmp_path / "version"
    path.write_text(text)
    assert nvidia_driver(path) == version
    assert nvidia_driver(tmp_path / "missing") is None


class _Driver:
    """Stands in for ``libcuda.so.1``: ``cuDriverGetVersion`` writes ``code`` and returns ``status``."""

    def __init__(self, code: int, status: int = 0) -> None:
        self.code, self.status = code, status

    def cuDriverGetVersion(self, ref) -> int:  # noqa: N802 - the driver API's name
        ref._obj.value = self.code
        return self.status


@pytest.mark.parametrize("code, status, said", [(12020, 0, "12.2"), (13000, 0, "13.0"), (12040, 100, None)])
def test_the_driver_says_the_newest_cuda_it_supports(monkeypatch, code, status, said):
    monkeypatch.setattr(devices.ctypes, "CDLL", lambda name: _Driver(code, status))
    assert driver_cuda_version() == said


def test_no_driver_library_means_no_cuda_version(monkeypatch):
    def missing(name):
        raise OSError(f"{name}: cannot open shared object file")
    monkeypatch.setattr(devices.ctypes, "CDLL", missing)
    assert driver_cuda_version() is None


def run_with_fault(kind: str, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tests" / "faults.py"), kind, "--input",
                           str(ROOT / "test" / "input"), "--output", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> list[dict]:
    """process.py on the bundled stack with no fault: the CPU's JSON."""
    out = tmp_path_factory.mktemp("plain")
    proc = subprocess.run([sys.executable, str(ROOT / "process.py"), "--input", str(ROOT / "test" / "input"),
                           "--output", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / OUTPUT_NAME).read_text())


def same_within_tolerance(got: list[dict], want: list[dict]) -> None:
    from amf.reproducibility import TOLERANCE

    assert [g["class"] for g in got] == [w["class"] for w in want]
    assert max(abs(g["confidence"] - w["confidence"]) for g, w in zip(got, want, strict=True)) <= TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("kind, what", [("error", "scoring"), ("build", "building the engine")])
def test_a_device_error_after_start_up_reruns_the_stack_on_the_cpu(tmp_path, plain, kind, what):
    proc = run_with_fault(kind, tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"process.py: warning: {what} failed on cpu (RuntimeError: CUDA error: ")
    assert lines[0].endswith("; running on the CPU instead")
    got = json.loads((tmp_path / OUTPUT_NAME).read_text())
    assert got == plain  # the CPU's engine, from the start: the same bits as a run without the fault


@pytest.mark.slow
def test_out_of_memory_halves_the_forward_passes_before_it_falls_back(tmp_path, plain):
    proc = run_with_fault("oom", tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    # CPU_SUB_BATCH images per forward pass (patches x the shipped views) run out while more than OOM_IMAGES; each retry
    # halves the patches: with 4 views, 8 patches (32 images) and 4 (16) run out, 2 (8 images) fit
    from faults import OOM_IMAGES

    from amf.inference.engine import CPU_SUB_BATCH
    from amf.inference.weights import read_manifest

    views = read_manifest(ROOT / "weights").tta.views
    patches, expected = CPU_SUB_BATCH // views, []
    while patches * views > OOM_IMAGES:
        patches //= 2
        expected.append(f"process.py: warning: out of memory on cpu; scoring again with {patches} patch(es) per forward pass")
    assert len(expected) >= 2 and lines == expected
    same_within_tolerance(json.loads((tmp_path / OUTPUT_NAME).read_text()), plain)
