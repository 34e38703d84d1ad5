"""Lower precision on the CPU against the engine's fp32 ``graph`` strategy: same members, same views, side by side
in one run (issue 23: bf16 and int8 as opt-in engine settings where they pay).

    python tools/precision_trial.py [--weights weights] [--repeats 5] [--json FILE]

Rows, each the whole ensemble with all its views on the same patches, one thread:

``graph``             the CPU default: frozen fp32 TorchScript graphs (:mod:`amf.inference.prepare`).
``batched``           eager fp32, batch norm folded: the strategy bf16 runs on.
``batched+bf16``      the same with bf16 autocast: the engine's opt-in ``bf16`` (``amf predict --bf16``).
``graph-bf16``        each member's weights cast to bf16, traced, frozen and optimised like ``graph``.
``int8-<backend>``    post-training static int8 (``torch.ao.quantization`` FX mode, per-channel weights, the
                      backend's default observers) of each member's backbone, calibrated on the very views it
                      is then measured on (the most favourable calibration there is), frozen.

The patches: ``--stack`` (default the organisers' real sample stack in ``../shared/data``, else the bundled
synthetic one in ``test/input``).

Each row reports its median time, its speed-up over ``graph``, and the largest difference of P(atypical) from
the ``loop`` reference on these patches. What a setting costs in accuracy is measured on the LODO figures
(``amf crossval --bf16``, then ``--compare ROW:tta ROW:tta-bf16``), not here: only a setting that is faster
is worth that measurement.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import amf  # noqa: F401  (first: the environment defaults)
from amf.bench.bench import machine, rows_over, side_by_side
from amf.inference.engine import Engine, to_tensor
from amf.inference.io import read_patches
from amf.inference.prepare import example_input, fold_batchnorm, quiet_jit
from amf.inference.tta import make_views
from amf.inference.weights import default_weights, load_ensemble
from amf.provenance import git_state, write_tool_record

ROOT = Path(__file__).resolve().parent.parent
STACKS = "images/stacked-histopathology-roi-cropouts"
SAMPLE = ROOT.parent / "shared" / "data" / "midog25-t2-samples" / "algorithm-input" / STACKS
BUNDLED = ROOT / "test" / "input" / STACKS


def preprocess(member: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What :class:`amf.inference.model.Classifier` does before its backbone (crop, resize, normalise), so the
    backbone alone can be quantised (FX cannot trace the crop's shape test)."""
    spec = member.spec
    side = x.shape[-1]
    if spec.crop < side:
        start = (side - spec.crop) // 2
        x = x[..., start:start + spec.crop, start:start + spec.crop]
    if x.shape[-1] != spec.input_size:
        x = torch.nn.functional.interpolate(x, size=(spec.input_size,) * 2, mode="bilinear", align_corners=False)
    return (x - member.mean) / member.std


def int8_member(member: torch.nn.Module, backend: str, calibration: torch.Tensor) -> Callable:
    """The member with its backbone quantised to int8 by ``backend`` and calibrated on ``calibration`` views."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = backend
    example = preprocess(member, example_input())
    prepared = prepare_fx(copy.deepcopy(member.backbone).eval(), get_default_qconfig_mapping(backend), (example,))
    with torch.no_grad():
        for i in range(0, calibration.shape[0], 32):
            prepared(preprocess(member, calibration[i:i + 32]))
    with torch.no_grad(), quiet_jit():
        graph = torch.jit.freeze(torch.jit.trace(convert_fx(prepared), example, check_trace=False).eval())
    return lambda x: graph(preprocess(member, x)).squeeze(-1)


def bf16_graph(member: torch.nn.Module) -> Callable:
    """The member, batch norm folded, its weights in bf16, frozen and optimised like the ``graph`` strategy."""
    folded = fold_batchnorm(member, example_input()).to(torch.bfloat16).eval()
    with torch.no_grad(), quiet_jit():
        graph = torch.jit.optimize_for_inference(torch.jit.freeze(
            torch.jit.trace(folded, example_input().to(torch.bfloat16), check_trace=False).eval()))
    return lambda x: graph(x.to(torch.bfloat16)).float()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=default_weights())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--stack", type=Path, help="a multi-page TIFF (default: the real sample stack, if present)")
    args = parser.parse_args(argv)
    for category in (UserWarning, FutureWarning, DeprecationWarning):  # FX quantisation's deprecation notes
        warnings.filterwarnings("ignore", category=category)

    torch.set_num_threads(1)
    started, git = machine("cpu"), git_state()  # before the trial's own work
    ens = load_ensemble(args.weights)
    stack = args.stack or sorted((SAMPLE if SAMPLE.is_dir() else BUNDLED).glob("*.tif*"))[0]
    patches = read_patches(stack)
    reference = Engine(ens.members, ens.tta, device="cpu", strategy="loop").predict_proba(patches)
    views = make_views(to_tensor(patches), ens.tta)  # view-major: (V * N, 3, H, W)

    engines: dict[str, Callable[[], np.ndarray]] = {}
    build: dict[str, float] = {}
    for name, strategy, bf16 in (("graph", "graph", False), ("batched", "batched", False),
                                 ("batched+bf16", "batched", True)):
        t = time.perf_counter()
        engine = Engine(ens.members, ens.tta, device="cpu", strategy=strategy, bf16=bf16)
        build[name] = time.perf_counter() - t
        engines[name] = lambda e=engine: e.predict_proba(patches)

    def ensemble_proba(forwards: list[Callable]) -> np.ndarray:
        total = np.zeros(views.shape[0])
        with torch.inference_mode():
            for forward in forwards:
                for i in range(0, views.shape[0], 32):
                    total[i:i + 32] += torch.sigmoid(forward(views[i:i + 32]).double()).numpy()
        return (total / len(forwards)).reshape(ens.tta.views, -1).mean(axis=0)

    made: dict[str, Callable[[], list[Callable]]] = {
        "graph-bf16": lambda: [bf16_graph(m) for m in ens.members],
        **{f"int8-{b}": (lambda b=b: [int8_member(m, b, views) for m in ens.members]) for b in ("x86", "onednn")},
    }
    failed = {}
    for name, make in made.items():
        t = time.perf_counter()
        try:
            forwards = make()
        except Exception as exc:  # a backend that cannot take these members is a result, not a crash
            failed[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            continue
        build[name] = time.perf_counter() - t
        engines[name] = lambda f=forwards: ensemble_proba(f)

    names = list(engines)
    diff = {n: float(np.abs(engines[n]() - reference).max()) for n in names}  # also the warm-up
    rows = rows_over("graph", side_by_side(engines, args.repeats), build, diff)
    for n, row in rows.items():
        print(f"{n:14s} {row['median_s']:6.2f} s  x{row['speedup_over_graph']:.2f} over graph  build "
              f"{row['build_s']:.2f} s  max |diff| vs loop {row['max_abs_diff_vs_loop']:.1e}")
    for n, why in failed.items():
        print(f"{n:14s} failed: {why}")
    if args.json:
        write_tool_record(args.json, "precision_trial.py", argv, {
            "git": git, "machine": started, "stack": os.path.relpath(stack, ROOT), "patches": len(patches),
            "members": len(ens.members), "views": ens.tta.views, "threads": 1,
            "load_average_end": os.getloadavg(), "rows": rows, "failed": failed})
    return 0


if __name__ == "__main__":
    sys.exit(main())
