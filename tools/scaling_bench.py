"""Side-by-side timings for docs/scaling.md: one fold trained by 1 process against 2 (torchrun, gloo) and against
1 process with 2 threads, and two folds trained in sequence by one job against two parallel jobs (``--fold``).
Medians over ``--repeats``.

    .venv/bin/python tools/scaling_bench.py [--config configs/lite0.toml] [--limit 600] [--repeats 3] [--json FILE]

Every run trains ``--epochs`` epochs on ``--limit`` patches of AMi-Br MIDOG21 (../shared/data) with one torch
thread per process (except the 2-thread row), into a fresh temporary run folder. Images per second come from the
run's own log (training patches / epoch seconds, validation included); wall times include start-up and data loading.
Run it on an otherwise idle machine: the ratios are only meaningful side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LABELS = ROOT.parent / "shared" / "data" / "ami-br-midog21" / "labels.csv"


def command(args: argparse.Namespace, output: Path, folds: list[str], processes: int = 1,
            threads: int = 1) -> list[str]:
    """``amf train`` of ``folds`` into ``output``, under torchrun when ``processes > 1``."""
    launcher = [sys.executable, "-m", "amf"]
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                    str(processes), "-m", "amf"]
    return [*launcher, "train", "--config", str(args.config), "--labels", str(args.labels), "--output", str(output),
            "--no-lodo", "--limit", str(args.limit), "--epochs", str(args.epochs), "--threads", str(threads),
            "--no-progress", *[a for f in folds for a in ("--fold", f)]]


def env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads)}


def train(args: argparse.Namespace, output: Path, folds: list[str], processes: int = 1, threads: int = 1) -> float:
    """Run :func:`command`; returns the wall time in seconds."""
    t0 = time.perf_counter()
    subprocess.run(command(args, output, folds, processes, threads), cwd=ROOT, env=env(threads), check=True,
                   capture_output=True)
    return time.perf_counter() - t0


def images_per_second(run: Path) -> float:
    """Training patches per epoch-second over every epoch in the run's log."""
    epochs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    epochs = [e for e in epochs if e.get("event") == "epoch"]
    return sum(e["n_train"] for e in epochs) / sum(e["seconds"] for e in epochs)


def parallel(args: argparse.Namespace, output: Path, folds: list[str]) -> float:
    """Each fold as its own job, all at once (as a job array would); wall time until the last one ends."""
    t0 = time.perf_counter()
    jobs = [subprocess.Popen(command(args, output, [f]), cwd=ROOT, env=env(1), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
            for f in folds]
    for job in jobs:
        _, err = job.communicate()
        if job.returncode:
            raise SystemExit(err.decode()[-2000:])
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "lite0.toml")
    p.add_argument("--labels", type=Path, default=LABELS)
    p.add_argument("--limit", type=int, default=600, help="patches used (default 600)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    if not args.labels.is_file():
        raise SystemExit(f"labels not found: {args.labels} (../shared/data, see its SOURCES.md)")
    rows: dict[str, list[float]] = {k: [] for k in (
        "one_process_img_s", "two_process_img_s", "one_process_2_threads_img_s", "one_process_wall_s",
        "two_process_wall_s", "one_process_2_threads_wall_s", "sequence_wall_s", "parallel_wall_s")}
    folds = ["all/fold0", "all/fold1"]
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            rows["one_process_wall_s"].append(train(args, tmp / "one", folds[:1]))
            rows["one_process_img_s"].append(images_per_second(tmp / "one"))
            rows["two_process_wall_s"].append(train(args, tmp / "two", folds[:1], processes=2))
            rows["two_process_img_s"].append(images_per_second(tmp / "two"))
            rows["one_process_2_threads_wall_s"].append(train(args, tmp / "threads", folds[:1], threads=2))
            rows["one_process_2_threads_img_s"].append(images_per_second(tmp / "threads"))
            rows["sequence_wall_s"].append(train(args, tmp / "seq", folds))
            rows["parallel_wall_s"].append(parallel(args, tmp / "par", folds))
        print(f"repeat {r + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rows.items()), flush=True)
    med = {k: statistics.median(v) for k, v in rows.items()}
    ratios = {
        "two_vs_one_process_images_per_second": med["two_process_img_s"] / med["one_process_img_s"],
        "two_vs_one_process_wall": med["two_process_wall_s"] / med["one_process_wall_s"],
        "two_processes_vs_two_threads_images_per_second": med["two_process_img_s"] / med["one_process_2_threads_img_s"],
        "parallel_vs_sequence_wall": med["parallel_wall_s"] / med["sequence_wall_s"],
    }
    print(f"\nmedians of {args.repeats} ({args.config.name}, {args.limit} patches, {args.epochs} epoch(s), "
          f"{os.cpu_count()} CPUs):")
    for k, v in med.items():
        print(f"  {k:<30} {v:8.2f}")
    for k, v in ratios.items():
        print(f"  {k:<48} {v:6.2f}x")
    if args.json:
        from amf.files import write_json

        config = args.config.resolve()
        write_json(args.json, {"settings": {"config": str(config.relative_to(ROOT) if config.is_relative_to(ROOT)
                                                          else config),
                                            "limit": args.limit, "epochs": args.epochs, "repeats": args.repeats,
                                            "cpus": os.cpu_count()},
                               "runs": rows, "medians": med, "ratios": ratios})
    return 0


if __name__ == "__main__":
    sys.exit(main())
