"""The prepared device check (``tools/gpu_check.sh``): what the container and training do on a GPU, in one JSON.

Parts, each recorded as ``{"status": "ok" | "failed" | "skipped", ...}`` with what it measured:

engine
    The shipped weights on the bundled stack: the CPU naive loop (the reference) against the fused CUDA
    engine in fp32 (the container's setting) and with bf16 autocast (what it would cost in agreement):
    max |difference| and whether every class is the same. On a CPU-only machine: the CPU ``graph``
    engine against the loop, and the CUDA rows skipped.
process
    ``process.py`` on the bundled stack (on the GPU where there is one) against ``test/expected_output.json``:
    classes equal, max |difference| within :data:`amf.reproducibility.TOLERANCE`; and its start-up line, which on
    a GPU names the device, the NVIDIA driver and the CUDA versions.
cuda_fallback
    ``process.py`` told a GPU exists while none is visible: exit 0, one line saying so (stdout, with the
    job's log; stderr stays for errors), the same JSON.
fault_fallback
    ``process.py`` with a CUDA error injected in every forward pass after start-up (``tests/faults.py``): exit 0,
    one line on stderr naming the error, the stack rerun on the CPU and the expected JSON within the tolerance.
bench
    ``python -m amf bench --quick`` on CUDA: engine speed (fused against the naive loop, the fraction of the GPU's
    fp32 matmul rate), per-stack latency against the reference model, throughput at 16, 256 and 4,096 patches
    (patches/s, peak GPU memory) and the ``amf predict`` row. Skipped without a GPU.
train
    One short run of the ``paper`` preset (efficientvit_l2 at 256 px, bf16 autocast) on synthetic patches:
    seconds per epoch and images/s. Skipped without a GPU.

Usage: ``python tools/gpu_check.py OUT.json`` with the repository on ``PYTHONPATH`` (``tools/gpu_check.sh`` sets it,
and picks the interpreter and the output).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

import amf  # noqa: F401  (first: its environment defaults, offline and passive threads, must precede torch)
from amf.devices import nvidia_driver
from amf.inference.challenge import INTERFACE, OUTPUT_NAME
from amf.provenance import ROOT, environment, git_state
from amf.reproducibility import TOLERANCE

STACK_INPUT = ROOT / "test" / "input"


def part(fn, *args) -> dict:
    """Run one part; a failure is recorded with its last lines, and the other parts still run."""
    started = time.perf_counter()
    try:
        out = fn(*args)
    except Exception as exc:  # noqa: BLE001 - a check reports every failure, it does not stop at one
        out = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
               "traceback": traceback.format_exc().splitlines()[-6:]}
    out["seconds"] = round(time.perf_counter() - started, 2)
    print(f"{fn.__name__}: {out['status']} ({out['seconds']} s)", file=sys.stderr)
    return out


def engine_check(cuda: bool) -> dict:
    from amf.inference.engine import Engine
    from amf.inference.io import iter_patches
    from amf.inference.weights import load_ensemble

    ens = load_ensemble(ROOT / "weights", device="cpu")
    stack = next((STACK_INPUT / "images" / INTERFACE).glob("*.tif*"))
    patches = np.stack(list(iter_patches(stack)))
    reference = Engine(ens.members, ens.tta, device="cpu", strategy="loop").predict_proba(patches)
    t = ens.threshold.value
    rows = {"cpu_graph": Engine(ens.members, ens.tta, device="cpu", strategy="graph").predict_proba(patches)}
    if cuda:
        rows["cuda_fused_fp32"] = Engine(ens.members, ens.tta, device="cuda", strategy="fused").predict_proba(patches)
        rows["cuda_fused_bf16"] = Engine(ens.members, ens.tta, device="cuda", strategy="fused",
                                         bf16=True).predict_proba(patches)
    out = {"status": "ok", "reference": "cpu loop", "patches": len(patches), "threshold": t,
           "closest_to_threshold": float(np.min(np.abs(reference - t)))}
    for name, probs in rows.items():
        out[name] = {"max_abs_diff": float(np.max(np.abs(probs - reference))),
                     "classes_equal": bool(np.array_equal(probs >= t, reference >= t))}
    if not cuda:
        out["skipped"] = ["cuda_fused_fp32", "cuda_fused_bf16"]
    if not all(r["classes_equal"] for r in out.values() if isinstance(r, dict)):
        out["status"] = "failed"
    return out


def process_check(tmp: Path) -> dict:
    proc = subprocess.run([sys.executable, str(ROOT / "process.py"), "--input", str(STACK_INPUT), "--output",
                           str(tmp / "process")], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return {"status": "failed", "returncode": proc.returncode, "stderr": proc.stderr[-2000:]}
    got = json.loads((tmp / "process" / OUTPUT_NAME).read_text())
    diff, same = _against_expected(got)
    start = next((line for line in proc.stdout.splitlines() if "running on" in line), "")
    named = not torch.cuda.is_available() or ("NVIDIA driver" in start and "built for CUDA" in start
                                                 and "for CUDA ?" not in start)
    return {"status": "ok" if same and diff <= TOLERANCE and named else "failed", "classes_equal": same,
            "max_abs_diff": diff, "start_line": start, "stdout": proc.stdout.strip().splitlines(),
            "stderr": proc.stderr.strip().splitlines()}


def _against_expected(got: list[dict]) -> tuple[float, bool]:
    want = json.loads((ROOT / "test" / "expected_output.json").read_text())
    diff = max(abs(a["confidence"] - b["confidence"]) for a, b in zip(got, want, strict=True))
    return diff, [a["class"] for a in got] == [b["class"] for b in want]


def fault_fallback_check(tmp: Path) -> dict:
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "faults.py"), "error", "--input", str(STACK_INPUT),
                           "--output", str(tmp / "fault")], capture_output=True, text=True, timeout=600, cwd=ROOT)
    out = {"returncode": proc.returncode, "stderr": proc.stderr.strip().splitlines(),
           "start_line": next((line for line in proc.stdout.splitlines() if "running on" in line), "")}
    if proc.returncode != 0:
        return {"status": "failed", **out}
    diff, same = _against_expected(json.loads((tmp / "fault" / OUTPUT_NAME).read_text()))
    ok = len(out["stderr"]) == 1 and "CUDA error" in out["stderr"][0] and same and diff <= TOLERANCE
    return {"status": "ok" if ok else "failed", "max_abs_diff": diff, "classes_equal": same, **out}


def cuda_fallback_check(tmp: Path) -> dict:
    script = ("import os, runpy, sys; os.environ['CUDA_VISIBLE_DEVICES'] = ''; import torch; "
              "torch.cuda.is_available = lambda: True; "
              f"sys.argv = ['process.py', '--input', {str(STACK_INPUT)!r}, '--output', {str(tmp / 'fallback')!r}]; "
              f"runpy.run_path({str(ROOT / 'process.py')!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if "CUDA" in line]
    out = {"returncode": proc.returncode, "cuda_lines": lines, "stderr": proc.stderr.strip().splitlines()}
    if proc.returncode != 0:
        return {"status": "failed", **out}
    diff, same = _against_expected(json.loads((tmp / "fallback" / OUTPUT_NAME).read_text()))
    ok = len(lines) == 1 and "running on the CPU" in lines[0] and not out["stderr"] and same and diff <= TOLERANCE
    return {"status": "ok" if ok else "failed", "max_abs_diff": diff, **out}


def bench_check(tmp: Path) -> dict:
    out_json = tmp / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "amf", "bench", "--quick", "--device", "cuda", "--skip", "fit",
                           "--throughput-sizes", "16,256,4096", "--json", str(out_json)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    if proc.returncode != 0:
        return {"status": "failed", "returncode": proc.returncode, "stderr": proc.stderr[-2000:]}
    return {"status": "ok", "bench": json.loads(out_json.read_text()), "table": proc.stdout[-4000:]}


def train_check(tmp: Path) -> dict:
    """One epoch of efficientvit_l2 @ 256 px with bf16 autocast on 512 synthetic patches (speed, not accuracy)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = ["slide,patch,majority_atypical,scanner"]
    for i in range(512):
        path = tmp / "data" / "patches" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (128, 128, 3)).astype(np.uint8)).save(path)
        rows.append(f"{i % 16:03d}.tiff,patches/{i}.png,{i % 4 == 0},scanner{i % 2}")
    (tmp / "data" / "labels.csv").write_text("\n".join(rows) + "\n")
    run = tmp / "train"
    cmd = [sys.executable, "-m", "amf", "train", "--config", str(ROOT / "configs" / "paper.toml"), "--labels",
           str(tmp / "data" / "labels.csv"), "--output", str(run), "--no-lodo", "--fold-limit", "1", "--epochs", "2",
           "--device", "cuda", "--no-progress"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        return {"status": "failed", "returncode": proc.returncode, "stderr": proc.stderr[-2000:]}
    epochs = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    epochs = [e for e in epochs if e.get("event") == "epoch"]
    return {"status": "ok", "wall_seconds": round(wall, 1), "amp": "bf16 autocast (configs/paper.toml amp = auto)",
            "epochs": [{"seconds": e["seconds"], "n_train": e["n_train"],
                        "images_per_second": round(e["n_train"] / e["seconds"], 1)} for e in epochs]}


def main(out_path: Path) -> int:
    cuda = torch.cuda.is_available()
    skipped = {"status": "skipped", "reason": "no CUDA device on this machine"}
    report = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "torch": torch.__version__, "torch_cuda": torch.version.cuda, "cuda_available": cuda,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "driver": nvidia_driver(),
        "git": git_state(), "environment": environment(device="cuda" if cuda else "cpu"),
    }
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        report["engine"] = part(engine_check, cuda)
        report["process"] = part(process_check, tmp)
        report["cuda_fallback"] = part(cuda_fallback_check, tmp)
        report["fault_fallback"] = part(fault_fallback_check, tmp)
        report["bench"] = part(bench_check, tmp) if cuda else skipped
        report["train"] = part(train_check, tmp) if cuda else skipped
    report["skipped"] = [k for k, v in report.items() if isinstance(v, dict) and v.get("status") == "skipped"]
    report["failed"] = [k for k, v in report.items() if isinstance(v, dict) and v.get("status") == "failed"]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out_path}; failed: {report['failed'] or 'none'}; skipped: {report['skipped'] or 'none'}")
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "runs" / "gpu_check.json"))
