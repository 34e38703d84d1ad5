"""How far other CPUs move the shipped model's scores: the measurement behind :data:`amf.reproducibility.TOLERANCE`.

    python tools/isa_spread.py [--json docs/results/portability/isa-spread.json] [--oof-limit N]

Each setting runs in its own process with the libraries' kernels capped as another CPU would have them
(``ONEDNN_MAX_CPU_ISA``, ``ATEN_CPU_CAPABILITY``, ``MKL_ENABLE_INSTRUCTIONS``) and its own thread count, and
scores what the audit compares with recorded files:

- the bundled stack through ``process.py`` itself (the container's path: frozen graphs), against
  ``test/expected_output.json``;
- the out-of-fold patches of ``weights/oof.csv`` rescored by their shipped member as ``amf audit`` does (the
  ``batched`` strategy), against that file, which export wrote on the machine recorded in the manifest.

Every pair of settings is compared too. The result records each setting's :func:`amf.reproducibility.machine`,
the largest |difference| of every comparison, and the tolerance in force; the tolerance must hold the largest
with a margin (docs/audit.md, "Exact where, and within what").
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from amf.inference.weights import read_manifest  # noqa: E402
from amf.provenance import git_state, write_tool_record  # noqa: E402
from amf.reproducibility import TOLERANCE  # noqa: E402

#: name -> (environment caps, threads): this CPU as it is, and as CPUs with fewer units would run it.
SETTINGS: dict[str, tuple[dict[str, str], int]] = {
    "default-2t": ({}, 2),
    "default-1t": ({}, 1),
    "onednn-avx512core-2t": ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}, 2),
    "onednn-avx2-2t": ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, 2),
    "avx2-cpu-2t": ({"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
                    2),
    "avx2-cpu-1t": ({"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
                    1),
    "sse41-cpu-2t": ({"ONEDNN_MAX_CPU_ISA": "SSE41", "ATEN_CPU_CAPABILITY": "default",
                      "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}, 2),
}


def worker(out: Path, oof_limit: int | None) -> None:
    """In a process whose environment holds one setting: its machine record, the bundled stack's scores from
    process.py (a child with the same environment) and the out-of-fold patches rescored as the audit does."""
    from amf.audit import expected
    from amf.audit.checks import rescored_oof
    from amf.audit.context import DEFAULT_DATA, Context, read_csv
    from amf.reproducibility import machine

    stack = [e["confidence"] for e in json.loads(expected.run_process(ROOT, ROOT / "weights")[0])]
    ctx = Context(ROOT / "weights", [DEFAULT_DATA], ROOT / "docs" / "results" / "lodo4")
    rows = read_csv(ROOT / "weights" / "oof.csv")[:oof_limit]
    start = time.perf_counter()
    oof = rescored_oof(ctx, rows).tolist()
    out.write_text(json.dumps({"machine": machine(), "stack": stack, "oof": oof,
                               "oof_seconds": round(time.perf_counter() - start, 1)}))


def max_diff(a: list[float], b: list[float]) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "results" / "portability" / "isa-spread.json")
    parser.add_argument("--oof-limit", type=int, default=None, help="score only the first N out-of-fold patches")
    parser.add_argument("--setting", action="append", choices=sorted(SETTINGS), help="run only these (repeatable)")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.oof_limit)
        return 0
    state = git_state()
    expected = [e["confidence"] for e in json.loads((ROOT / "test" / "expected_output.json").read_text())]
    sidecar = ROOT / "test" / "expected_output.machine.json"
    made_at = subprocess.run(["git", "log", "-1", "--format=%H", "--", "test/expected_output.json"], cwd=ROOT,
                             capture_output=True, text=True).stdout.strip()
    expected_record = json.loads(sidecar.read_text()) if sidecar.is_file() else {"machine": None}
    with open(ROOT / "weights" / "oof.csv", newline="") as f:
        oof_file = [float(r["p_atypical"]) for r in csv.DictReader(f)][: args.oof_limit]
    export = read_manifest(ROOT / "weights", verify_files=False).provenance.export
    runs = {}
    for name in args.setting or SETTINGS:
        caps, threads = SETTINGS[name]
        env = {k: v for k, v in os.environ.items() if k not in caps and not k.startswith(("OMP_", "MKL_NUM"))}
        env.update(caps, OMP_NUM_THREADS=str(threads), AMF_GRAPH_CACHE="off", HF_HUB_OFFLINE="1")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run.json"
            command = [sys.executable, __file__, "--worker", str(out)]
            command += ["--oof-limit", str(args.oof_limit)] if args.oof_limit else []
            subprocess.run(command, env=env, check=True)
            runs[name] = json.loads(out.read_text())
        print(f"{name}: stack {max_diff(runs[name]['stack'], expected):.2e} from test/expected_output.json, "
              f"oof {max_diff(runs[name]['oof'], oof_file):.2e} from weights/oof.csv "
              f"({runs[name]['oof_seconds']} s)", flush=True)
    pairs = {f"{a} vs {b}": {"stack": max_diff(runs[a]["stack"], runs[b]["stack"]),
                             "oof": max_diff(runs[a]["oof"], runs[b]["oof"])}
             for a, b in itertools.combinations(runs, 2)}
    recorded = {name: {"stack_vs_expected_output": max_diff(r["stack"], expected),
                       "oof_vs_weights_oof_csv": max_diff(r["oof"], oof_file)} for name, r in runs.items()}
    largest = max([v for p in pairs.values() for v in p.values()]
                  + [v for r in recorded.values() for v in r.values()])
    write_tool_record(args.json, "isa_spread.py", argv, {
        "git": state,
        "expected_output_commit": made_at,
        "recorded_machines": {"test/expected_output.json": expected_record.get("machine"),
                              "weights/oof.csv": (export.environment or {}).get("machine")
                              or (export.environment or {}).get("cpu")},
        "oof_patches": len(oof_file),
        "settings_count": len(runs),
        "settings": {name: {"caps": SETTINGS[name][0], "threads": SETTINGS[name][1],
                            "machine": r["machine"]} for name, r in runs.items()},
        "against_recorded": recorded,
        "pairs": pairs,
        "largest_difference": largest,
        "tolerance": TOLERANCE,
        "margin": TOLERANCE / largest if largest else None,
    })
    print(f"largest |difference| {largest:.2e}; tolerance {TOLERANCE:.0e} "
          f"({TOLERANCE / largest:.0f}x)" if largest else "every setting gave the same bits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
