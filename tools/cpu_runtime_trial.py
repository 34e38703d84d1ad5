"""ONNX Runtime and OpenVINO against the engine's ``graph`` strategy on the CPU: same members, same views, side by
side in one run (issue 23: adopt one only if it is at least 1.5x faster and within 1e-5 of the ``loop`` reference).

    pip install onnxruntime==1.23.2 openvino==2026.4.1 onnx onnxscript   # not in any requirements file
    python tools/cpu_runtime_trial.py [--weights weights] [--repeats 5] [--json FILE]

Each member, batch norm folded (:func:`amf.inference.prepare.fold_batchnorm`), is exported to ONNX once and run by
both runtimes with one thread, fp32, 32 views per call, the views made by :func:`amf.inference.tta.make_views`
exactly as the engine makes them; P(atypical) is the mean of the sigmoids over members and views, as the engine's.
Repetitions alternate their order; medians are reported, with each runtime's session build time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import amf  # noqa: F401  (first: the environment defaults)
from amf.bench.bench import rows_over, side_by_side, synthetic_patches
from amf.inference.engine import Engine, to_tensor
from amf.inference.prepare import example_input, fold_batchnorm
from amf.inference.tta import make_views
from amf.inference.weights import default_weights, load_ensemble
from amf.provenance import write_tool_record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=default_weights())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--patches", type=int, default=16)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    import onnxruntime as ort
    import openvino as ov

    torch.set_num_threads(1)
    ens = load_ensemble(args.weights)
    patches = np.stack(list(synthetic_patches(args.patches, seed=1)))
    reference = Engine(ens.members, ens.tta, device="cpu", strategy="loop").predict_proba(patches)
    t = time.perf_counter()
    graph = Engine(ens.members, ens.tta, device="cpu", strategy="graph")
    build = {"graph": time.perf_counter() - t}
    sample = make_views(to_tensor(patches), ens.tta)[:32]
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for k, member in enumerate(ens.members):
            files.append(f"{tmp}/member_{k}.onnx")
            torch.onnx.export(fold_batchnorm(member, example_input()), (sample,), files[-1], input_names=["x"],
                              output_names=["logit"], dynamic_axes={"x": {0: "batch"}}, dynamo=False)
        t = time.perf_counter()
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        sessions = [ort.InferenceSession(f, options, providers=["CPUExecutionProvider"]) for f in files]
        build["onnxruntime"] = time.perf_counter() - t
        t = time.perf_counter()
        core = ov.Core()
        core.set_property("CPU", {"INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": "f32"})
        compiled = [core.compile_model(core.read_model(f), "CPU") for f in files]
        build["openvino"] = time.perf_counter() - t

    forward = {"onnxruntime": lambda k, x: sessions[k].run(None, {"x": x})[0],
               "openvino": lambda k, x: compiled[k](x)[0]}

    def proba(name: str) -> np.ndarray:
        if name == "graph":
            return graph.predict_proba(patches)
        views = make_views(to_tensor(patches), ens.tta).numpy()  # view-major: (V * N, 3, H, W)
        total = np.zeros(views.shape[0])
        for k in range(len(ens.members)):
            for i in range(0, views.shape[0], 32):
                total[i:i + 32] += 1 / (1 + np.exp(-np.asarray(forward[name](k, views[i:i + 32]), dtype=np.float64)))
        return (total / len(ens.members)).reshape(ens.tta.views, -1).mean(axis=0)

    names = ["graph", "onnxruntime", "openvino"]
    diff = {n: float(np.abs(proba(n) - reference).max()) for n in names}  # also the warm-up
    rows = rows_over("graph", side_by_side({n: (lambda n=n: proba(n)) for n in names}, args.repeats), build, diff)
    for n, row in rows.items():
        print(f"{n:12s} {row['median_s']:6.2f} s  x{row['speedup_over_graph']:.2f} over graph  build "
              f"{row['build_s']:.2f} s  max |diff| vs loop {row['max_abs_diff_vs_loop']:.1e}")
    if args.json:
        write_tool_record(args.json, "cpu_runtime_trial.py", argv, {
            "patches": args.patches, "members": len(ens.members), "views": ens.tta.views, "threads": 1,
            "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__, "openvino": ov.__version__},
            "load_average_end": os.getloadavg(), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
