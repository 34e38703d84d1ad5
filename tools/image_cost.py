"""What the container image costs: its size, installed and as export.sh's upload, and the time from ``docker run``
to the JSON against ``process.py`` from ``.venv``, measured side by side in one run.

    python tools/image_cost.py --image midog25-t2-amf:cu128 [--upload FILE.tar.gz] [--repeats 5] [--json FILE]

Each repetition starts a new container (``--network none``, a read-only root, tmpfs ``/tmp``, read-only ``/input``:
the platform's flags) and a new ``.venv`` process on the bundled stack, in alternating order, and times each to its
exit, the JSON written. One run of each goes first, unmeasured, so the page cache holds both; "cold" here is a
new container or process, not a cold disk. The ``.venv`` side uses its own warm graph cache (``~/.cache/amf``), as
the image does its baked-in one. Medians and their ratio are printed and recorded with the git state, the machine
and the docker engine.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from amf.inference.challenge import OUTPUT_NAME  # noqa: E402
from amf.provenance import environment, git_state, write_tool_record  # noqa: E402

MIB = 1024**2
PLATFORM = ["--network", "none", "--read-only", "--tmpfs", "/tmp", "--shm-size", "1g"]


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout.strip()


def timed(cmd: list[str], output: Path) -> float:
    """Seconds from start to exit of ``cmd``, which must write the challenge JSON into ``output``."""
    output.mkdir(parents=True, exist_ok=True)
    output.chmod(0o777)
    (output / OUTPUT_NAME).unlink(missing_ok=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0 or not (output / OUTPUT_NAME).is_file():
        raise SystemExit(f"image_cost: {' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="midog25-t2-amf:cu128")
    parser.add_argument("--upload", type=Path, help="export.sh's .tar.gz of the same image, to record its size")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the record here")
    args = parser.parse_args(argv)
    state = git_state()  # before any measurement
    stack = ROOT / "test" / "input"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        runs = {
            "docker_run": lambda: timed(["docker", "run", "--rm", *PLATFORM, "--volume", f"{stack}:/input:ro",
                                         "--volume", f"{out / 'image'}:/output", args.image], out / "image"),
            "venv_process": lambda: timed([str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "process.py"),
                                           "--input", str(stack), "--output", str(out / "venv")], out / "venv"),
        }
        for run in runs.values():  # unmeasured: the page cache holds both
            run()
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        for i in range(args.repeats):
            for name in (list(runs) if i % 2 == 0 else list(runs)[::-1]):
                seconds[name].append(round(runs[name](), 3))
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    record = {
        "image": args.image,
        "image_id": docker("image", "inspect", args.image, "--format", "{{.Id}}"),
        "installed_mib": round(int(docker("image", "inspect", args.image, "--format", "{{.Size}}")) / MIB, 1),
        "upload": ({"file": args.upload.name, "mib": round(args.upload.stat().st_size / MIB, 1)}
                   if args.upload else None),
        "repeats": args.repeats,
        "seconds": seconds,
        "median_seconds": medians,
        "ratio_docker_to_venv": round(medians["docker_run"] / medians["venv_process"], 2),
        "engine": docker("info", "--format", "{{.ServerVersion}}, storage {{.Driver}}"),
        "git": state,
        "environment": environment(),
    }
    upload = f", upload {record['upload']['mib']:,.0f} MiB" if args.upload else ""
    print(f"{args.image}: installed {record['installed_mib']:,.0f} MiB{upload}; docker run to the JSON "
          f"{medians['docker_run']:.1f} s against {medians['venv_process']:.1f} s for process.py from .venv "
          f"(medians of {args.repeats}, {record['ratio_docker_to_venv']:.2f}x)")
    if args.json:
        write_tool_record(args.json, "image_cost.py", argv, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
