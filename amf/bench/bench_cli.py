"""``python -m amf bench``: speed and memory of the inference path, measured side by side in one run.

    python -m amf bench [--weights DIR] [--quick] [--json FILE] [--device cpu|cuda] [--threads N]

The sections and their method are :mod:`amf.bench.bench`'s; docs/benchmark.md has the measured numbers.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from amf.bench.bench import (
    cold_start_phases,
    engine_speed,
    ensemble_summary,
    format_table,
    int_list,
    machine,
    paper_ensemble_fit,
    per_stack_latency,
    predict_folder,
    resolve_weights,
    say,
    throughput,
)
from amf.devices import CHOICES, device_arg


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", type=Path, default=None,
                        help="weights folder (default: weights/ if it has a manifest, else a random stand-in)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and sizes: about 2 minutes on 2 cores")
    parser.add_argument("--json", type=Path, default=None,
                        help="write the results, every repetition, to this JSON file")
    parser.add_argument("--device", type=device_arg, default="auto",
                        help=f"{CHOICES} (default auto: CUDA when available, else the CPU)")
    parser.add_argument("--threads", type=int, default=1,
                        help="OMP_NUM_THREADS of the timed processes (default 1; see docs/benchmark.md)")
    parser.add_argument("--speed-threads", default=None,
                        help="comma-separated thread counts for the engine-speed table (default 1,2; quick: 1)")
    parser.add_argument("--repeats", type=int, default=None, help="repetitions per measurement (default 5; quick: 3)")
    parser.add_argument("--stack-sizes", default=None,
                        help="pages per stack for the per-stack latency (default 1,16,128; quick: 1,16)")
    parser.add_argument("--throughput-sizes", default=None,
                        help="patch counts for throughput (default 16,256,4096; quick: 16)")
    parser.add_argument("--predict-patches", type=int, default=None,
                        help="PNG patches for the amf predict row (default 256; quick: 64)")
    parser.add_argument("--skip", default="",
                        help="comma-separated sections to skip: speed,latency,throughput,predict,fit")


def run(args: argparse.Namespace) -> int:
    quick = args.quick
    repeats = args.repeats or (3 if quick else 5)
    latency_repeats = args.repeats or (1 if quick else 5)
    speed_threads = int_list(args.speed_threads or ("1" if quick else "1,2"))
    stack_sizes = int_list(args.stack_sizes or ("1,16" if quick else "1,16,128"))
    throughput_sizes = int_list(args.throughput_sizes or ("16" if quick else "16,256,4096"))
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    from amf.devices import resolve

    resolved, line = resolve(args.device)
    device = args.device = str(resolved)
    print(f"amf bench: {line}", file=sys.stderr)
    from amf.provenance import git_state

    # the code measured: recorded before the first measurement, so a later edit of the checkout does not show
    result: dict = {"git": git_state(), "machine": machine(device), "settings": {
        "quick": quick, "repeats": repeats, "latency_repeats": latency_repeats, "threads": args.threads,
        "speed_threads": speed_threads, "stack_sizes": stack_sizes, "throughput_sizes": throughput_sizes,
        "device": device}}
    with tempfile.TemporaryDirectory(prefix="amf-bench-") as tmp:
        tmp = Path(tmp)
        weights, stand_in = resolve_weights(args.weights, tmp / "weights")
        result["weights"] = {"dir": str(weights), "stand_in": stand_in, **ensemble_summary(weights)}
        say(f"weights: {weights}" + (" (random stand-in: 5 x efficientvit_b0, 8 views)" if stand_in else ""))
        if "speed" not in skip:
            result["engine_speed"] = engine_speed(weights, device, speed_threads, repeats, all_strategies=not quick)
        if "latency" not in skip:
            result["per_stack"] = per_stack_latency(weights, stack_sizes, latency_repeats, args.threads, device, tmp)
            result["cold_start_phases"] = cold_start_phases(weights, args.threads, device, tmp,
                                                            max(1, latency_repeats // 2))
        if "throughput" not in skip:
            result["throughput"] = throughput(weights, throughput_sizes, args.threads, device)
        if "predict" not in skip:
            result["predict"] = predict_folder(weights, args.predict_patches or (64 if quick else 256), args.threads,
                                               device, tmp)
        if "fit" not in skip:
            result["paper_ensemble_fit"] = paper_ensemble_fit()
    result["machine"]["load_average_end"] = os.getloadavg()
    print(format_table(result))
    if args.json:  # the table is for people; the JSON, with every repetition, only where asked for
        from amf.files import write_json

        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0
