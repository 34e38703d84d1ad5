"""tools/gpu_check.sh on a machine without a GPU: the CPU parts run and pass, the GPU parts say they were skipped."""

import json
import subprocess
from pathlib import Path

import pytest
import torch

from amf.reproducibility import TOLERANCE

pytestmark = pytest.mark.slow  # runs tools/gpu_check.sh

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_the_cpu_parts_and_marks_the_gpu_parts_skipped(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([str(ROOT / "tools" / "gpu_check.sh"), str(out)], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    report = json.loads(out.read_text())
    assert report["failed"] == []
    for name in ("engine", "process", "cuda_fallback", "fault_fallback"):
        assert report[name]["status"] == "ok", report[name]
    assert report["process"]["max_abs_diff"] <= TOLERANCE and report["engine"]["cpu_graph"]["classes_equal"]
    assert len(report["fault_fallback"]["stderr"]) == 1
    assert len(report["cuda_fallback"]["cuda_lines"]) == 1 and report["cuda_fallback"]["stderr"] == []
    if not torch.cuda.is_available():
        assert report["skipped"] == ["bench", "train"]
        assert report["engine"]["skipped"] == ["cuda_fused_fp32", "cuda_fused_bf16"]
