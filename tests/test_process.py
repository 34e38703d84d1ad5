"""process.py with the shipped weights: the bundled stack's expected output, and the challenge schema."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from amf.audit import expected
from amf.inference.challenge import INTERFACE
from amf.inference.weights import read_manifest
from amf.reproducibility import BIT_IDENTICAL, WITHIN_TOLERANCE

pytestmark = pytest.mark.slow  # process.py end to end

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "midog25-t2-samples" / "algorithm-input"
OUTPUT_NAME = "multiple-mitotic-figure-classification.json"


def run_process(input_dir: Path, output_dir: Path) -> list[dict]:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "process.py"), "--input", str(input_dir), "--output", str(output_dir)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    raw = (output_dir / OUTPUT_NAME).read_text()
    assert "NaN" not in raw and "Infinity" not in raw
    return json.loads(raw)


def check_schema(records: list[dict], pages: int) -> None:
    threshold = read_manifest(ROOT / "weights").threshold.value
    assert isinstance(records, list) and len(records) == pages
    for r in records:
        assert set(r) == {"class", "confidence"}
        assert type(r["confidence"]) is float and math.isfinite(r["confidence"])  # an int 0/1 fails officially
        assert 0.0 <= r["confidence"] <= 1.0
        assert r["class"] == ("atypical" if r["confidence"] >= threshold else "normal")


@pytest.fixture(scope="module")
def bundled_run() -> tuple[list[dict], dict]:
    """process.py on the bundled stack, and the machine it ran on."""
    got, machine = expected.run_process(ROOT, ROOT / "weights")
    return json.loads(got), machine


@pytest.fixture(scope="module")
def bundled_output(bundled_run) -> list[dict]:
    return bundled_run[0]


def test_bundled_stack_matches_expected_output(bundled_run):
    """Bit for bit on the machine that recorded test/expected_output.json, within the tolerance elsewhere."""
    assert not expected.recorded(ROOT)[2], expected.recorded(ROOT)[2]
    verdict = expected.compare(ROOT, *bundled_run)
    assert verdict.ok, verdict.line()
    if not verdict.machine_differs:
        assert verdict.verdict == BIT_IDENTICAL


def test_the_bundled_stack_on_another_cpus_code_path_passes_within_the_tolerance():
    """oneDNN capped at AVX2 runs the kernels of an AVX2-only CPU: other bits, the same verdict."""
    got, machine = expected.run_process(ROOT, ROOT / "weights", env={**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert machine["caps"]["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    verdict = expected.compare(ROOT, json.loads(got), machine)
    assert verdict.ok, verdict.line()
    recorded = expected.recorded(ROOT)[1]
    if recorded["caps"].get("ONEDNN_MAX_CPU_ISA") != "AVX2":  # recorded on another code path: the tolerance rules
        assert verdict.machine_differs and verdict.verdict in (WITHIN_TOLERANCE, BIT_IDENTICAL)


def test_shipped_weights_come_from_the_documented_config():
    """README's reproduction command (its first ``amf train`` block) is what trained weights/: the settings it
    gives are the manifest's, and its export options are the manifest's threshold rule."""
    import shlex

    from amf.audit.checks import recorded_config
    from amf.files import json_safe
    from amf.training.config import TrainConfig

    manifest = read_manifest(ROOT / "weights")
    section = (ROOT / "README.md").read_text().split("### Reproducing the shipped weights")[1]
    block = section.split("```bash")[1].split("```")[0].replace("\\\n", " ")
    train, export = (shlex.split(line) for line in block.strip().splitlines())
    assert train[:4] == ["python", "-m", "amf", "train"] and export[:4] == ["python", "-m", "amf", "export"]
    documented = recorded_config(train[3:], ROOT)
    trained = json_safe(TrainConfig.from_dict(manifest.provenance.training.config).to_dict())  # new keys at defaults
    assert {k for k in documented if documented[k] != trained.get(k)} == set()
    assert manifest.model.crop == 80 and "configs/lite0-crop80.toml" in manifest.provenance.training.command
    method = export[export.index("--threshold-method") + 1] if "--threshold-method" in export else None
    assert manifest.threshold.method == f"oof_{method or documented['threshold_method']}"


def test_bundled_output_schema(bundled_output):
    check_schema(bundled_output, pages=16)


def test_page_order_follows_the_stack(tmp_path):
    """Reversing the stack's pages reverses the output: results are in page order."""
    import numpy as np
    import tifffile

    from amf.inference.io import read_patches

    stack = ROOT / "test" / "input" / "images" / INTERFACE / "stack_synthetic.tiff"
    pages = read_patches(stack)
    folder = tmp_path / "in" / "images" / INTERFACE
    folder.mkdir(parents=True)
    tifffile.imwrite(folder / "reversed.tiff", np.ascontiguousarray(pages[::-1]), photometric="rgb")
    (tmp_path / "in" / "inputs.json").write_text((ROOT / "test" / "input" / "inputs.json").read_text())
    forward = run_process(ROOT / "test" / "input", tmp_path / "fwd")
    backward = run_process(tmp_path / "in", tmp_path / "bwd")
    for a, b in zip(forward, reversed(backward)):
        assert a["class"] == b["class"] and abs(a["confidence"] - b["confidence"]) <= 1e-6


def test_real_sample_stack(tmp_path):
    if not SAMPLE.is_dir():
        pytest.skip(f"the organisers' sample input is missing at {SAMPLE} (../shared/data/midog25-t2-samples)")
    check_schema(run_process(SAMPLE, tmp_path), pages=16)


def test_container_test_script():
    """./test.sh --local, the container-like run of process.py from .venv, passes; tests/test_image.py runs the
    script against the built image (make test-image)."""
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("test.sh runs process.py from .venv, which this checkout lacks (make venv makes it)")
    proc = subprocess.run(["bash", str(ROOT / "test.sh"), "--local"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "test.sh: OK, 16 entries match" in proc.stdout
    assert "graph cache" not in proc.stdout + proc.stderr  # an unwritable HOME nobody asked to cache in: silent


def test_a_cuda_start_failure_falls_back_to_the_cpu_in_one_line(tmp_path):
    """torch is told a GPU exists, but none is visible: CUDA's start fails, the CPU gives the expected JSON."""
    script = ("import os, runpy, sys; os.environ['CUDA_VISIBLE_DEVICES'] = ''; import torch; "
              "torch.cuda.is_available = lambda: True; "
              f"sys.argv = ['process.py', '--input', {str(ROOT / 'test' / 'input')!r}, '--output', {str(tmp_path)!r}]; "
              f"runpy.run_path({str(ROOT / 'process.py')!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = [line for line in proc.stdout.splitlines() if "CUDA" in line]
    assert len(lines) == 1 and lines[0].startswith("process.py: CUDA cannot start (")
    assert lines[0].endswith("; running on the CPU")
    plain = run_process(ROOT / "test" / "input", tmp_path / "plain")  # the same machine, no CUDA pretended
    assert (tmp_path / OUTPUT_NAME).read_bytes() == (tmp_path / "plain" / OUTPUT_NAME).read_bytes()
    assert json.loads((tmp_path / OUTPUT_NAME).read_text()) == plain
