"""The measurements of ``amf bench`` (:mod:`amf.bench.bench_cli`): speed and memory of the inference path, side by
side in one run.

Sections (``docs/benchmark.md`` has the method and the measured numbers):

engine speed
    The naive loop (each member, each view, batch 16) against the engine's strategies, on the same 16
    patches, interleaved repetition by repetition, at each thread count of ``--speed-threads``, and the
    opt-in bf16 autocast on its eager strategy (``batched+bf16`` on a CPU). Medians of wall-clock and CPU
    time, the ratio to the loop, GFLOP/s and the fraction of a large fp32 matmul's rate.
per-stack latency and cold start
    ``process.py`` end to end, from process start to JSON written, with its graph cache warm (as in the
    image) and off, next to the organisers' reference model (``amf.bench.reference``: timm efficientnetv2_m
    at 224 px, one model, no TTA, random weights) run the same way on the same stack, alternating. Cold
    start is ``process.py`` on a one-patch stack: process start to its first prediction written. A fresh
    worker process also times the phases of a cold start.
throughput
    patches/s at 16, 256 and 4,096 patches, in a fresh worker process, with its peak RSS (and peak GPU
    memory on CUDA).
largest paper ensemble
    How many efficientvit_l2 members at 256 px fit in 16 GB of GPU memory with bf16 weights: computed
    (not measured) from the parameter count and the activation peak of one forward, traced on the meta
    device.

Without ``--weights`` and without a ``weights/manifest.json``, a stand-in is benchmarked: 5 random
efficientvit_b0 members at 128 px, 8 views, written with :func:`amf.inference.weights.save_ensemble` like a real export.
Subprocesses get ``OMP_NUM_THREADS=--threads`` (default 1: on two cores shared with other work, two threads
measured 10x slower than one, for every strategy alike).

Imports of torch and of amf's own modules sit inside the functions on purpose: the cold-start and throughput
workers run this module in fresh processes and time their own imports (torch, timm, the engine) as phases,
so nothing heavy may load when the module does. Only the standard library (and :mod:`amf.devices`, which
imports nothing else) is imported at the top.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from amf.provenance import ROOT

GIB = 1024**3
MIB = 1024**2


# --- inputs --------------------------------------------------------------------------------------------------


#: The suffix of an engine row run with bf16 autocast (``batched+bf16``).
BF16 = "+bf16"


def resolve_weights(given: Path | None, stand_in_dir: Path) -> tuple[Path, bool]:
    """The weights to benchmark: ``given``, else ``weights/`` when it has a manifest, else a fresh stand-in."""
    if given is not None:
        return Path(given), False
    default = ROOT / "weights"
    if (default / "manifest.json").is_file():
        return default, False
    make_stand_in(stand_in_dir)
    return stand_in_dir, True


def make_stand_in(out_dir: Path, members: int = 5, views: int = 8, arch: str = "efficientvit_b0") -> Path:
    """A random ensemble written like an export. Convolutions get He-normal weights and batch norms random
    statistics, so that outputs vary from patch to patch and view to view as a trained model's do (timm's
    default init gives nearly the same output for every input)."""
    from amf.inference.manifest import Provenance, Threshold
    from amf.inference.model import build_classifier
    from amf.inference.spec import ModelSpec, TTAConfig
    from amf.inference.weights import save_ensemble

    ensemble = [randomize(build_classifier(ModelSpec(arch)), seed=i) for i in range(members)]
    save_ensemble(ensemble, out_dir, Threshold(0.5, "stand-in"), TTAConfig(views=views),
                  Provenance(note="random stand-in written by python -m amf bench"))
    return out_dir


def randomize(model, seed: int):
    """Re-initialise ``model`` in place so that its output depends on its input (see :func:`make_stand_in`)."""
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=g)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=m.in_features**-0.5, generator=g)
            elif isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0.0, 0.1, generator=g)
    return model.eval()


def synthetic_patches(n: int, seed: int = 0) -> Iterator:
    """``n`` deterministic uint8 ``(128, 128, 3)`` patches: a colour gradient plus noise, one at a time."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ramp = np.linspace(-1.0, 1.0, 128)[None, :, None]
    for _ in range(n):
        base = rng.uniform(60, 220, size=(1, 1, 3))
        slope = rng.normal(0, 30, size=(1, 1, 3))
        noise = rng.normal(0, 20, size=(128, 128, 3))
        yield np.clip(base + slope * ramp + noise, 0, 255).astype(np.uint8)


def write_stack(folder: Path, pages: int, seed: int = 0) -> Path:
    """A platform input folder (``inputs.json`` + one TIFF stack of ``pages`` RGB pages); returns ``folder``."""
    import numpy as np
    import tifffile

    from amf.inference.challenge import INTERFACE

    stacks = folder / "images" / INTERFACE
    stacks.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(stacks / "stack.tif", np.stack(list(synthetic_patches(pages, seed))), photometric="rgb")
    inputs = [{"image": {"name": "stack.tif"}, "interface": {"slug": INTERFACE, "kind": "Image",
                                                             "relative_path": f"images/{INTERFACE}"}}]
    (folder / "inputs.json").write_text(json.dumps(inputs, indent=2))
    return folder


# --- engine speed ---------------------------------------------------------------------------------------------


def engine_speed(weights: Path, device: str, thread_counts: list[int], repeats: int, n: int = 16,
                 all_strategies: bool = True) -> dict:
    """Naive loop vs each strategy on the same ``n`` patches, interleaved; medians per thread count."""
    import numpy as np
    import torch

    from amf.inference.engine import Engine, default_strategy
    from amf.inference.weights import load_ensemble

    say(f"engine speed: {n} patches, threads {thread_counts}, {repeats} repetitions")
    ensemble = load_ensemble(weights, device=device)
    patches = np.stack(list(synthetic_patches(n, seed=1)))
    default = default_strategy(device)
    others = ["batched"] + (["fused"] if device == "cpu" and all_strategies else [])
    # and the opt-in bf16 autocast, on the eager strategy that runs it by default (its accuracy: docs/benchmark.md)
    strategies = ["loop", default] + [s for s in others if s != default] + [default_strategy(device, bf16=True) + BF16]
    flops = sum(forward_flops(m) for m in ensemble.members) * ensemble.tta.views * n  # per predict_proba call
    cuda = device.startswith("cuda")  # a GPU's rate is the card's, not per CPU thread
    out: dict = {"patches": n, "default": default, "strategies": strategies, "by_threads": {},
                 "gflop_per_call": flops / 1e9, "gflop_per_patch": flops / n / 1e9}
    previous = torch.get_num_threads()
    try:
        for threads in thread_counts:
            torch.set_num_threads(threads)
            engines, build = {}, {}
            for s in strategies:
                t = time.perf_counter()
                engines[s] = Engine(ensemble.members, ensemble.tta, device=device, strategy=s.removesuffix(BF16),
                                    bf16=s.endswith(BF16))
                build[s] = time.perf_counter() - t
            reference = engines["loop"].predict_proba(patches)
            max_diff = {}
            for s, e in engines.items():  # warm-up, and the equivalence check on these patches
                max_diff[s] = float(np.abs(e.predict_proba(patches) - reference).max())
            times: dict[str, list[tuple[float, float]]] = {s: [] for s in strategies}
            for r in range(repeats):
                order = strategies if r % 2 == 0 else strategies[::-1]
                for s in order:
                    times[s].append(_time(lambda e=engines[s]: e.predict_proba(patches), device))
            peak = matmul_peak_gflops(threads, device)
            loop_wall = statistics.median(w for w, _ in times["loop"])
            loop_cpu = statistics.median(c for _, c in times["loop"])
            rows = {}
            for s in strategies:
                wall = statistics.median(w for w, _ in times[s])
                cpu = statistics.median(c for _, c in times[s])
                rows[s] = {"wall_s": wall, "cpu_s": cpu, "speedup_wall": loop_wall / wall,
                           "speedup_cpu": loop_cpu / cpu,
                           "build_s": build[s], "max_abs_diff_vs_loop": max_diff[s],
                           "gflops_per_s": flops / wall / 1e9,
                           **({} if cuda else {"gflops_per_s_per_thread": flops / wall / 1e9 / threads}),
                           "fraction_of_matmul_peak": flops / wall / 1e9 / peak, "walls": [w for w, _ in times[s]]}
            out["by_threads"][str(threads)] = {"matmul_peak_gflops": peak, **rows}
            say("  threads %d: " % threads + ", ".join(
                f"{s} {r['wall_s']:.2f} s (x{r['speedup_wall']:.2f})" for s, r in rows.items()))
    finally:
        torch.set_num_threads(previous)
    return out


def side_by_side(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Wall seconds of each call, ``repeats`` times, interleaved (the order reversed every other repetition), so
    that a machine's slow moments fall on every contender alike."""
    names = list(calls)
    walls: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in names if r % 2 == 0 else names[::-1]:
            t = time.perf_counter()
            calls[n]()
            walls[n].append(time.perf_counter() - t)
    return walls


def rows_over(base: str, walls: dict[str, list[float]], build: dict[str, float], diff: dict[str, float]) -> dict:
    """One row per contender of :func:`side_by_side`: median seconds, speed-up over ``base``, build seconds and the
    largest difference from the reference; the tools' JSON rows."""
    median = {n: statistics.median(w) for n, w in walls.items()}
    return {n: {"median_s": median[n], f"speedup_over_{base}": median[base] / median[n], "build_s": build[n],
                "max_abs_diff_vs_loop": diff[n], "walls": walls[n]} for n in walls}


def forward_flops(member, input_side: int = 128) -> int:
    """FLOPs of one member's forward on one patch, counted once by torch's FLOP counter (a multiply-add is 2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    device = next(member.parameters()).device
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        member(torch.zeros(1, 3, input_side, input_side, device=device))
    return int(counter.get_total_flops())


def matmul_peak_gflops(threads: int, device: str = "cpu", repeats: int = 5) -> float:
    """What the device reaches on a large fp32 matmul (the best of ``repeats``): the measured ceiling that the
    engine's FLOP rate is a fraction of. On the CPU a 1,024² product on ``threads`` threads; on CUDA a 4,096²
    product with TF32 off, as the engine computes there."""
    import torch

    cuda = device.startswith("cuda")
    side = 4096 if cuda else 1024
    a = torch.rand(side, side, device=device)
    b = torch.rand(side, side, device=device)
    best = float("inf")
    previous = torch.get_num_threads(), torch.backends.cuda.matmul.allow_tf32
    torch.set_num_threads(threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        torch.mm(a, b)
        for _ in range(repeats):
            best = min(best, _time(lambda: torch.mm(a, b), device)[0])
    finally:
        torch.set_num_threads(previous[0])
        torch.backends.cuda.matmul.allow_tf32 = previous[1]
    return 2 * side**3 / best / 1e9


def _time(fn, device: str) -> tuple[float, float]:
    import torch

    w, c = time.perf_counter(), time.process_time()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - w, time.process_time() - c


# --- processes: per-stack latency, cold start ------------------------------------------------------------------


def child_env(threads: int, device: str) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def timed_process(cmd: list[str], env: dict, result_file: Path, pages: int, log: Path) -> dict:
    """Run ``cmd``: seconds from just before the spawn to ``result_file`` appearing (the JSON written, by an
    atomic rename) and to the exit; peak RSS from ``/proc/PID/status`` (``VmHWM``), sampled every 10 ms.

    (``wait4``'s ``ru_maxrss`` would do, except that Linux carries the parent's high-water mark over a
    fork and exec: a child of this benchmark process would report at least this process's size.)
    """
    result_file.unlink(missing_ok=True)
    written = None
    peak_kib = 0
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            now = time.perf_counter()
            if written is None and result_file.exists():
                written = now - start
            if pid:
                break
            peak_kib = max(peak_kib, _vm_hwm_kib(proc.pid))
            time.sleep(0.01)
    exited = now - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{log.read_text()[-2000:]}")
    records = json.loads(result_file.read_text())
    if len(records) != pages:
        raise RuntimeError(f"{cmd[1]} wrote {len(records)} records for {pages} pages")
    return {"wall_s": written if written is not None else exited, "exit_s": exited, "peak_rss_mib": peak_kib / 1024,
            "cpu_s": usage.ru_utime + usage.ru_stime}


def _vm_hwm_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


CONTENDERS = ("amf", "amf_nocache", "reference")


def per_stack_latency(weights: Path, sizes: list[int], repeats: int, threads: int, device: str, tmp: Path) -> dict:
    """``process.py`` itself, with and without its graph cache, and the reference container, on the same stacks.

    ``amf`` is ``process.py`` with a warm graph cache, as in the container image (the Dockerfile warms it at
    build); ``amf_nocache`` is the same command with the cache off (``AMF_GRAPH_CACHE=off``: every run
    imports timm, builds and freezes the members). The three alternate, in a rotating order, ``repeats``
    times; round 0 warms the cache and is not counted.
    """
    from amf.inference.challenge import OUTPUT_NAME

    say(f"per-stack latency: stacks of {sizes} pages, {repeats} repetitions, OMP_NUM_THREADS={threads}")
    env = child_env(threads, device)
    env["AMF_GRAPH_CACHE"] = str(tmp / "graph-cache")
    envs = {"amf": env, "amf_nocache": {**env, "AMF_GRAPH_CACHE": "off"}, "reference": env}
    inputs = {s: write_stack(tmp / f"stack-{s}", s, seed=s) for s in sizes}
    runs: dict[str, dict[int, list[dict]]] = {c: {} for c in CONTENDERS}
    for r in range(repeats + 1):  # round 0 warms the graph cache (and the file cache): not counted
        for s in sizes if r else sizes[:1]:
            out = {c: tmp / f"out-{c}-{s}" for c in CONTENDERS}
            cmds = {c: [sys.executable, "process.py", "--input", str(inputs[s]), "--output", str(out[c]),
                        "--weights", str(weights)] for c in ("amf", "amf_nocache")}
            cmds["reference"] = [sys.executable, "-m", "amf.bench.reference", "--input", str(inputs[s]),
                                 "--output", str(out["reference"]), "--device", device]
            order = CONTENDERS[r % 3:] + CONTENDERS[: r % 3] if r else ("amf",)
            for who in order:
                res = timed_process(cmds[who], envs[who], out[who] / OUTPUT_NAME, s, tmp / f"{who}.log")
                if r:
                    runs[who].setdefault(s, []).append(res)
            if r:
                say(f"  rep {r}, {s} pages: " + ", ".join(f"{c} {runs[c][s][-1]['wall_s']:.1f} s" for c in CONTENDERS))
    rows = {}
    for s in sizes:
        row = {}
        for c in CONTENDERS:
            row[f"{c}_s"] = statistics.median(x["wall_s"] for x in runs[c][s])
            row[f"{c}_exit_s"] = statistics.median(x["exit_s"] for x in runs[c][s])
            row[f"{c}_peak_rss_mib"] = statistics.median(x["peak_rss_mib"] for x in runs[c][s])
            row[f"{c}_walls"] = [x["wall_s"] for x in runs[c][s]]
        row["amf_over_reference"] = row["amf_s"] / row["reference_s"]
        row["amf_nocache_over_reference"] = row["amf_nocache_s"] / row["reference_s"]
        rows[str(s)] = row
    one = rows.get("1", {})
    return {"threads": threads, "by_pages": rows,
            "cold_start_s": one.get("amf_s"), "cold_start_nocache_s": one.get("amf_nocache_s")}


def cold_start_phases(weights: Path, threads: int, device: str, tmp: Path, repeats: int) -> dict:
    """Where a cold start's time goes: fresh workers run a one-page job step by step, timing each step from
    the spawn; ``challenge`` builds the engine from the members (what ``process.py`` does without its graph
    cache), ``load_engine`` reads a warm graph cache (what ``process.py`` does in the image)."""
    say(f"cold-start phases: {repeats} fresh worker(s) per loader")
    stack = write_stack(tmp / "stack-phases", 1, seed=99)
    env = child_env(threads, device)
    env["AMF_GRAPH_CACHE"] = str(tmp / "graph-cache")
    out = {}
    for loader in ("challenge", "load_engine"):
        samples: list[dict] = []
        for _ in range(repeats):
            env["AMF_BENCH_T0"] = repr(time.time())
            cmd = [sys.executable, "-m", "amf.bench.bench", "--worker", "coldstart", "--loader", loader,
                   "--weights", str(weights), "--input", str(stack), "--device", device]
            done = subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True, text=True)
            samples.append(json.loads(done.stdout.strip().splitlines()[-1]))
        out[loader] = {k: statistics.median(s[k] for s in samples) for k, v in samples[0].items()
                       if isinstance(v, float)}
        out[loader].update({k: v for k, v in samples[-1].items() if not isinstance(v, float)})
    return out


def throughput(weights: Path, sizes: list[int], threads: int, device: str) -> dict:
    """patches/s at each size, in a fresh worker process (so its peak RSS is the engine's own)."""
    say(f"throughput: {sizes} patches, OMP_NUM_THREADS={threads}")
    cmd = [sys.executable, "-m", "amf.bench.bench", "--worker", "throughput", "--weights", str(weights),
           "--sizes", ",".join(map(str, sizes)), "--device", device]
    done = subprocess.run(cmd, env=child_env(threads, device), cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def predict_folder(weights: Path, n: int, threads: int, device: str, tmp: Path) -> dict:
    """``amf predict`` end to end on a folder of ``n`` PNG patches, as a user runs it: figures/s from process start
    to CSV written (weights check, the decode-everything-first pass, the model, the CSV)."""
    from PIL import Image

    folder = tmp / "predict-pngs"
    folder.mkdir(exist_ok=True)
    for i, patch in enumerate(synthetic_patches(n, seed=7)):
        Image.fromarray(patch).save(folder / f"{i:05d}.png")
    say(f"predict: {n} PNG patches, OMP_NUM_THREADS={threads}")
    cmd = [sys.executable, "-m", "amf", "predict", str(folder), "--output", str(tmp / "predict.csv"), "--weights",
           str(weights), "--device", device]
    t = time.perf_counter()
    subprocess.run(cmd, env=child_env(threads, device), cwd=ROOT, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t
    return {"patches": n, "wall_s": wall, "figures_per_s": n / wall, "threads": threads}


# --- worker (a fresh process) -----------------------------------------------------------------------------------


def worker(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m amf.bench.bench --worker")
    parser.add_argument("--worker", choices=("coldstart", "throughput"), required=True)
    parser.add_argument("--loader", choices=("challenge", "load_engine"), default="challenge")
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--input", type=Path)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--sizes", default="16")
    args = parser.parse_args(argv)
    return {"coldstart": _coldstart, "throughput": _throughput}[args.worker](args)


def _coldstart(args: argparse.Namespace) -> int:
    t0 = float(os.environ.get("AMF_BENCH_T0", time.time()))
    phases = {"python_start_s": time.time() - t0}
    import torch  # noqa: F401

    phases["import_torch_s"] = time.time() - t0
    from amf.inference.challenge import find_jobs
    from amf.inference.engine import Engine
    from amf.inference.io import iter_patches
    from amf.inference.loading import load_engine
    from amf.inference.weights import load_ensemble, read_manifest

    phases["import_amf_s"] = time.time() - t0
    manifest = read_manifest(args.weights)
    job = find_jobs(args.input, Path(tempfile.gettempdir()))[0]
    phases["verify_weights_s"] = time.time() - t0
    if args.loader == "challenge":
        import amf.inference.model  # noqa: F401  (timm)

        phases["import_timm_s"] = time.time() - t0
        ensemble = load_ensemble(args.weights, manifest=manifest)
        phases["load_members_s"] = time.time() - t0
        engine = Engine(ensemble.members, ensemble.tta, device=args.device)
        phases["build_engine_s"] = time.time() - t0
    else:
        loaded = load_engine(args.weights, device=args.device, manifest=manifest)
        engine = loaded.engine
        phases["load_engine_s"] = time.time() - t0
        phases["source"] = loaded.source
        phases["timm_imported"] = "timm" in sys.modules
    engine.predict_proba(iter_patches(job.stack))
    phases["first_prediction_s"] = time.time() - t0
    print(json.dumps(phases))
    return 0


def _throughput(args: argparse.Namespace) -> int:
    import torch

    from amf.inference.engine import Engine
    from amf.inference.weights import load_ensemble

    ensemble = load_ensemble(args.weights, device=args.device)
    t = time.perf_counter()
    engine = Engine(ensemble.members, ensemble.tta, device=args.device)
    out: dict = {"engine": engine.describe(), "build_s": time.perf_counter() - t, "by_patches": {}}
    engine.predict_proba(synthetic_patches(16, seed=5))  # warm-up
    on_cuda = args.device.startswith("cuda")
    for n in int_list(args.sizes):
        if on_cuda:
            torch.cuda.reset_peak_memory_stats()
        wall, cpu = _time(lambda: engine.predict_proba(synthetic_patches(n, seed=n)), args.device)
        row = {"patches_per_s": n / wall, "wall_s": wall, "cpu_s": cpu,
               "peak_rss_mib_so_far": _vm_hwm_kib(os.getpid()) / 1024}  # ru_maxrss would include the parent's
        if on_cuda:
            row["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / MIB
        out["by_patches"][str(n)] = row
    print(json.dumps(out))
    return 0


# --- the paper ensemble on a 16 GB GPU ---------------------------------------------------------------------------


def paper_ensemble_fit(budget_gib: float = 16.0, reserve_gib: float = 1.0, arch: str = "efficientvit_l2",
                       input_size: int = 256, sub_batches: tuple[int, ...] = (32, 128)) -> dict:
    """Members of ``arch`` at ``input_size`` px that fit in ``budget_gib`` of GPU memory, with bf16 weights.

    Computed, not measured: parameters and buffers are counted on the meta device; the activation peak
    of one eager bf16 forward (LiteMLA's fp32 attention included) is traced on meta tensors by following
    every tensor storage alive at each operation. ``reserve_gib`` is held back for the CUDA context, cuDNN
    workspaces and allocator slack. The fused engine holds all K members' activations at once
    (K x sub_batch images); a member-by-member forward (the ``batched`` strategy) holds one member's.
    """
    import torch

    from amf.inference.io import PATCH_SIZE
    from amf.inference.model import Classifier
    from amf.inference.spec import ModelSpec

    with torch.device("meta"):
        model = Classifier(ModelSpec(arch, input_size=input_size)).to(torch.bfloat16).eval()
    params = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for b in model.buffers())
    weights_bytes = 2 * (params + buffers)
    probe = 16
    per_image = activation_peak_bytes(model, torch.empty(probe, 3, PATCH_SIZE, PATCH_SIZE, device="meta",
                                                         dtype=torch.bfloat16))
    per_image /= probe
    free = (budget_gib - reserve_gib) * GIB
    rows = {}
    for b in sub_batches:
        fused = int(free // (weights_bytes + b * per_image))
        sequential = int((free - b * per_image) // weights_bytes)
        rows[str(b)] = {"fused_members": fused, "member_by_member_members": sequential,
                        "activations_per_member_gib": b * per_image / GIB}
    return {
        "method": "computed (meta-device parameter count and traced activation peak), not measured on a GPU",
        "arch": arch, "input_size": input_size, "budget_gib": budget_gib, "reserve_gib": reserve_gib,
        "params": params, "weights_bf16_mib": weights_bytes / MIB,
        "activation_peak_per_image_mib": per_image / MIB, "by_sub_batch": rows,
    }


def activation_peak_bytes(model, x) -> int:
    """Peak bytes of tensor storage alive during ``model(x)`` (inputs and parameters excluded)."""
    import torch
    from torch.multiprocessing.reductions import StorageWeakRef
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class Peak(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.alive: list[tuple[StorageWeakRef, int]] = []
            self.peak = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            self.alive = [(ref, n) for ref, n in self.alive if not ref.expired()]
            seen = {ref.cdata for ref, _ in self.alive} | {StorageWeakRef(t.untyped_storage()).cdata for t in keep}
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    ref = StorageWeakRef(t.untyped_storage())
                    if ref.cdata not in seen:
                        self.alive.append((ref, t.untyped_storage().nbytes()))
                        seen.add(ref.cdata)
            self.peak = max(self.peak, sum(n for _, n in self.alive))
            return out

    keep = [x, *model.parameters(), *model.buffers()]
    with torch.inference_mode(), Peak() as peak:
        model(x)
    return peak.peak


# --- reporting ---------------------------------------------------------------------------------------------------


def machine(device: str) -> dict:
    import timm
    import torch

    from amf.devices import cpu_model_and_flags

    cpu, flags = cpu_model_and_flags()
    cpu = cpu or platform.processor() or ""
    info = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu, "cpu_count": os.cpu_count(), "load_average_start": os.getloadavg(),
        "python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        # the units that decide what bf16 and int8 can gain (absent: emulated, slower than fp32)
        "cpu_flags": sorted(flags & {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"}),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def format_table(r: dict) -> str:
    lines = [f"amf bench  {r['machine']['date_utc']}  {r['machine']['cpu']} x{r['machine']['cpu_count']}  "
             f"device {r['settings']['device']}  torch {r['machine']['torch']}",
             f"weights: {r['weights']['dir']}" + (" (random stand-in)" if r["weights"]["stand_in"] else "")
             + f"  {r['weights']['members']} x {r['weights']['arch']} @ {r['weights']['input_size']} px, "
               f"{r['weights']['views']} views"]
    if "engine_speed" in r:
        es = r["engine_speed"]
        lines += ["", f"Engine speed, {es['patches']} patches (median wall / CPU s; speed-up over the naive loop)"]
        if "gflop_per_patch" in es:
            per = ("GFLOP/s and the fraction of the GPU's rate on a large fp32 matmul" if r["settings"]["device"]
                   .startswith("cuda") else "GFLOP/s per thread and the fraction of a large fp32 matmul's rate on as "
                   "many threads")
            lines.append(f"  {es['gflop_per_patch']:.2f} GFLOP per patch (all members and views); {per}")
        for threads, rows in es["by_threads"].items():
            rows = {k: v for k, v in rows.items() if isinstance(v, dict)}
            for s, row in rows.items():
                tag = " (default)" if s == es["default"] else ""
                flop = (f"   {row['gflops_per_s_per_thread']:5.1f} GFLOP/s/thread, {row['fraction_of_matmul_peak']:.0%}"
                        " of matmul" if "gflops_per_s_per_thread" in row else
                        f"   {row['gflops_per_s']:7.1f} GFLOP/s, {row['fraction_of_matmul_peak']:.1%} of matmul"
                        if "gflops_per_s" in row else "")
                lines.append(f"  threads {threads}  {s + tag:18s} {row['wall_s']:7.2f} / {row['cpu_s']:6.2f} s   "
                             f"x{row['speedup_wall']:.2f} wall, x{row['speedup_cpu']:.2f} CPU   "
                             f"build {row['build_s']:.2f} s   max |diff| {row['max_abs_diff_vs_loop']:.1e}{flop}")
    if "predict" in r:
        pr = r["predict"]
        lines += ["", f"amf predict on a folder of {pr['patches']} PNG patches, process start to CSV written "
                      f"(OMP_NUM_THREADS={pr['threads']}): {pr['wall_s']:.1f} s, {pr['figures_per_s']:.1f} figures/s"]
    if "per_stack" in r:
        ps = r["per_stack"]
        lines += ["", f"Per-stack latency, process start to JSON written (median s, OMP_NUM_THREADS={ps['threads']}; "
                      "amf = process.py with its warm graph cache, as in the image; no cache = AMF_GRAPH_CACHE=off)"]
        for pages, row in ps["by_pages"].items():
            lines.append(f"  {pages:>5} pages  amf {row['amf_s']:6.2f}  no cache {row['amf_nocache_s']:6.2f}  "
                         f"reference {row['reference_s']:6.2f}   amf/ref {row['amf_over_reference']:.2f}  "
                         f"no cache/ref {row['amf_nocache_over_reference']:.2f}   peak RSS MiB "
                         f"{row['amf_peak_rss_mib']:.0f} / {row['amf_nocache_peak_rss_mib']:.0f} / "
                         f"{row['reference_peak_rss_mib']:.0f}")
        if ps.get("cold_start_s") is not None:
            lines.append(f"  cold start (one patch, process start to JSON written): process.py "
                         f"{ps['cold_start_s']:.2f} s with its graph cache, {ps['cold_start_nocache_s']:.2f} s without")
    if "cold_start_phases" in r:
        for loader, ph in r["cold_start_phases"].items():
            lines.append(f"  phases, {loader:11s} (s since spawn): " + ", ".join(
                f"{k.removesuffix('_s')} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in ph.items()))
    if "throughput" in r:
        tp = r["throughput"]
        lines += ["", f"Throughput ({tp['engine']['strategy']}, {tp['engine']['threads']} thread(s), "
                      f"engine build {tp['build_s']:.2f} s)"]
        for n, row in tp["by_patches"].items():
            gpu = f", peak GPU {row['peak_gpu_mib']:.0f} MiB" if "peak_gpu_mib" in row else ""
            lines.append(f"  {n:>5} patches  {row['patches_per_s']:8.2f} patches/s  ({row['wall_s']:.1f} s)   "
                         f"peak RSS {row['peak_rss_mib_so_far']:.0f} MiB{gpu}")
    if "paper_ensemble_fit" in r:
        f = r["paper_ensemble_fit"]
        lines += ["", f"Largest {f['arch']} @ {f['input_size']} px ensemble in {f['budget_gib']:.0f} GB, bf16 weights "
                      f"({f['method']})",
                  f"  {f['params'] / 1e6:.1f} M parameters = {f['weights_bf16_mib']:.0f} MiB per member; "
                  f"activation peak {f['activation_peak_per_image_mib']:.1f} MiB per image; "
                  f"{f['reserve_gib']:.0f} GiB reserved"]
        for b, row in f["by_sub_batch"].items():
            lines.append(f"  {b:>4} images per member-forward: fused {row['fused_members']} members, "
                         f"member by member {row['member_by_member_members']}")
    return "\n".join(lines)


def ensemble_summary(weights: Path) -> dict:
    from amf.inference.weights import read_manifest

    manifest = read_manifest(weights, verify_files=False)
    return {"members": len(manifest.members), "arch": manifest.model.arch, "input_size": manifest.model.input_size,
            "views": manifest.tta.views}


def int_list(text: str) -> list[int]:
    return [int(x) for x in str(text).split(",") if x.strip()]


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(worker(sys.argv[1:]))
