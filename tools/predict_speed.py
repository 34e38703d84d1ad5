"""``amf predict`` figures/s on one folder of real patches, this checkout against others, side by side in one run
(issue 23: at least 2x the figures/s of the code it was filed against).

    python tools/predict_speed.py --checkout ../wt-old [--patches 256] [--repeats 3] [--bf16] [--json FILE]

Each contender is ``python -m amf predict FOLDER --output CSV --weights weights/`` run from its checkout (so
``import amf`` is that checkout's code), with this checkout's weights, ``OMP_NUM_THREADS=--threads`` and its own
warm graph cache (one uncounted run first), timed from process start to exit; repetitions alternate the order.
``--bf16`` adds this checkout with ``--bf16``. ``--own-weights`` runs each other checkout with its own
``weights/`` (what it shipped: the figures/s a user of that commit got, model and engine together); their scores
then differ by model, and no difference of P is reported for them. The folder holds the first ``--patches`` PNGs
of AMi-Br's MIDOG21 patches in ``../shared/data`` (links, nothing copied). Medians are reported with each run's
figures/s, and the largest difference of P(atypical) from this checkout's fp32 CSV.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from amf.provenance import git_state, write_tool_record

ROOT = Path(__file__).resolve().parent.parent
PATCHES = ROOT.parent / "shared" / "data" / "ami-br-midog21" / "patches"


def manifest_sha256(weights: Path) -> str:
    """Which weights a contender ran: the sha256 of its manifest (which holds every member's sha256)."""
    return hashlib.sha256((weights / "manifest.json").read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, action="append", default=[], help="another checkout (repeatable)")
    parser.add_argument("--patches", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bf16", action="store_true", help="also this checkout with amf predict --bf16")
    parser.add_argument("--own-weights", action="store_true",
                        help="run each --checkout with its own weights/ instead of this checkout's")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--note", default="", help="how the machine was kept quiet, recorded with the result")
    args = parser.parse_args(argv)
    files = sorted(PATCHES.rglob("*.png"))[: args.patches]
    if len(files) < args.patches:
        print(f"need {args.patches} PNG patches under {PATCHES}, found {len(files)}", file=sys.stderr)
        return 2
    # name -> (checkout, weights folder, extra options)
    states = {c: git_state(c) for c in {ROOT, *(c.resolve() for c in args.checkout)}}  # before any measurement
    contenders = {"this": (ROOT, ROOT / "weights", [])}
    contenders.update({f"checkout:{c}": (c.resolve(), (c.resolve() if args.own_weights else ROOT) / "weights", [])
                       for c in args.checkout})
    if args.bf16:
        contenders["this --bf16"] = (ROOT, ROOT / "weights", ["--bf16"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = tmp / "patches"
        folder.mkdir()
        for i, f in enumerate(files):
            (folder / f"{i:05d}.png").symlink_to(f)

        def run(name: str) -> float:
            checkout, weights, extra = contenders[name]
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "CUDA_VISIBLE_DEVICES": "",
                   "AMF_GRAPH_CACHE": str(tmp / f"cache-{list(contenders).index(name)}"), "PYTHONPATH": str(checkout)}
            out = tmp / f"{list(contenders).index(name)}.csv"
            cmd = [sys.executable, "-m", "amf", "predict", str(folder), "--output", str(out), "--weights",
                   str(weights), "--device", "cpu", *extra]
            t = time.perf_counter()
            subprocess.run(cmd, cwd=checkout, env=env, check=True, capture_output=True, text=True)
            return time.perf_counter() - t

        def scores(name: str) -> list[float]:
            with open(tmp / f"{list(contenders).index(name)}.csv", newline="") as f:
                return [float(r["p_atypical"]) for r in csv.DictReader(f)]

        for name in contenders:  # warm-up: the graph cache, the page cache
            run(name)
        reference = scores("this")
        diff = {n: max(abs(a - b) for a, b in zip(scores(n), reference, strict=True))
                if contenders[n][1] == contenders["this"][1] else None for n in contenders}
        walls: dict[str, list[float]] = {n: [] for n in contenders}
        for r in range(args.repeats):
            for n in list(contenders) if r % 2 == 0 else list(contenders)[::-1]:
                walls[n].append(run(n))
    rows = {n: {"checkout": str(contenders[n][0]), "weights": str(contenders[n][1]), "options": contenders[n][2],
                "git": states[contenders[n][0]], "weights_sha256": manifest_sha256(contenders[n][1]),
                "median_s": statistics.median(w), "figures_per_s": args.patches / statistics.median(w),
                "max_abs_diff_vs_this": diff[n], "walls": w} for n, w in walls.items()}
    for n, row in rows.items():
        print(f"{n:40s} {row['median_s']:7.1f} s  {row['figures_per_s']:5.2f} figures/s  "
              f"(x{row['figures_per_s'] / rows['this']['figures_per_s']:.2f} of this)  "
              + (f"max |diff| {row['max_abs_diff_vs_this']:.1e}" if row["max_abs_diff_vs_this"] is not None
                 else f"its own weights ({row['weights']})"))
    if args.json:
        write_tool_record(args.json, "predict_speed.py", argv, {
            "patches": args.patches, "folder": os.path.relpath(PATCHES, ROOT), "threads": args.threads,
            "load_average_end": os.getloadavg(), "note": args.note, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
