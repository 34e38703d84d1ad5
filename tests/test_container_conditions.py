"""process.py under the platform's conditions, and with bounded memory on long stacks.

The sandbox (Linux, root, util-linux ``unshare``/``chroot``/``setpriv``; what this machine allows):

* a new mount namespace whose root is an empty tmpfs, remounted read-only, holding read-only binds of
  ``/usr``, ``/etc``, the repository (with its venv), the Python installation and the weights;
* ``/input``: a read-only bind of a copy of the input (the files are also ``chmod a-w``);
* ``/output``: the only writable bind, owned by the unprivileged user; ``/tmp``: a fresh tmpfs;
  ``/dev``: a read-only tmpfs with null, zero, full, random and urandom only (no ``/dev/shm``);
* a new network namespace: no interface but a down loopback, so no network at all;
* user and group ``nobody`` (65534), no capabilities, ``no_new_privs``;
* ``HOME=/nonexistent`` and an otherwise empty environment.

A probe in the sandbox proves each condition (write attempts, a connection attempt, the uid) before it
runs ``process.py``; the test fails if any condition is not in force. Where the sandbox cannot be made
(no root, no ``unshare``), the conditions test is skipped saying why, and the memory test runs plainly.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from amf.inference.challenge import INTERFACE
from amf.inference.challenge import OUTPUT_NAME as OUT

pytestmark = pytest.mark.slow  # process.py under the container's conditions

ROOT = Path(__file__).resolve().parents[1]

SANDBOX = r"""
set -eu
NEW=$1; INP=$2; OUTD=$3; W=$4; shift 4
mount -t tmpfs -o mode=755,size=16m tmpfs "$NEW"
ro() { mkdir -p "$NEW$2"; mount --bind "$1" "$NEW$2"; mount -o remount,bind,ro "$NEW$2"; }
ro /usr /usr
ro /etc /etc
for l in bin lib lib64 sbin; do
    if [ -L "/$l" ]; then ln -s "$(readlink "/$l")" "$NEW/$l"; elif [ -d "/$l" ]; then ro "/$l" "/$l"; fi
done
mkdir -p "$NEW/dev" "$NEW/proc" "$NEW/sys" "$NEW/tmp" "$NEW/input" "$NEW/output" "$NEW/weights"
mount -t tmpfs -o mode=755,size=1m tmpfs "$NEW/dev"
for d in null zero full random urandom; do touch "$NEW/dev/$d"; mount --bind "/dev/$d" "$NEW/dev/$d"; done
mount -o remount,ro "$NEW/dev"
mount -t proc proc "$NEW/proc"
mount -t sysfs -o ro sysfs "$NEW/sys" 2>/dev/null ||
    { mount --rbind /sys "$NEW/sys"; mount -o remount,bind,ro "$NEW/sys"; }
mount -t tmpfs -o mode=1777,size=256m tmpfs "$NEW/tmp"
# After /tmp's tmpfs, so a checkout or venv that lives under /tmp is bound on top of it, read-only.
for p in "$@"; do ro "$p" "$p"; done
ro "$INP" /input
ro "$W" /weights
mount --bind "$OUTD" "$NEW/output"
mount -o remount,ro "$NEW"
exec chroot "$NEW" /usr/bin/setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all \
    --bounding-set=-all --no-new-privs /usr/bin/env -i PATH=/usr/bin:/bin HOME=/nonexistent TMPDIR=/tmp \
    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 "$PYTHON_EXE" -c "$PROBE" "$REPO" /input /output /weights
"""

# Runs inside (or, without a sandbox, instead of it): check the conditions, run process.py, report as JSON.
PROBE = r"""
import json, os, resource, socket, subprocess, sys
repo, inp, out, weights = sys.argv[1:5]
report = {"uid": os.getuid(), "writable": {}}
for d in ["/", inp, repo, os.path.join(repo, "amf"), sys.prefix, os.environ.get("HOME", "/nonexistent"),
          "/var/tmp", "/dev", "/dev/shm", "/tmp", out]:
    try:
        p = os.path.join(d, ".probe")
        open(p, "w").close()
        os.unlink(p)
        report["writable"][d] = True
    except OSError as e:
        report["writable"][d] = e.strerror
try:
    socket.create_connection(("10.255.255.1", 80), timeout=2).close()
    report["network"] = "connected"
except OSError as e:
    report["network"] = str(e)
report["interfaces"] = [name for _, name in socket.if_nameindex()]
proc = subprocess.run([sys.executable, os.path.join(repo, "process.py"), "--input", inp, "--output", out,
                       "--weights", weights], capture_output=True, text=True, cwd=repo)
report.update(rc=proc.returncode, stdout=proc.stdout, stderr=proc.stderr,
              maxrss_kb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print("REPORT " + json.dumps(report))
"""


def sandbox_problem() -> str | None:
    """Why the sandbox cannot be made here, or None."""
    if sys.platform != "linux":
        return "not Linux"
    if os.geteuid() != 0:
        return "not root: mount and network namespaces, chroot and a uid change need root"
    for tool in ("unshare", "chroot", "setpriv", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    try:
        probe = subprocess.run(["unshare", "--mount", "--net", "--fork", "--propagation", "private", "sh", "-c",
                                "mount -t tmpfs tmpfs /mnt && umount /mnt"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare failed: {exc}"
    if probe.returncode != 0:
        return f"cannot create mount and network namespaces: {probe.stderr.strip()}"
    return None


PROBLEM = sandbox_problem()


def make_input(root: Path, n: int) -> Path:
    inp = root / "input"
    folder = inp / "images" / INTERFACE
    folder.mkdir(parents=True)
    rng = np.random.default_rng(n)
    with tifffile.TiffWriter(folder / "stack.tiff") as w:
        for start in range(0, n, 100):  # written in blocks, so the test itself stays small in memory
            block = rng.integers(0, 256, (min(100, n - start), 128, 128, 3), dtype=np.uint8)
            for page in block:
                w.write(page, photometric="rgb")
    (inp / "inputs.json").write_text(json.dumps(
        [{"image": {"name": "stack.tiff"}, "interface": {"slug": INTERFACE, "relative_path": f"images/{INTERFACE}"}}]))
    for p in [inp, *inp.rglob("*")]:  # read-only for everyone, readable by everyone
        p.chmod(0o555 if p.is_dir() else 0o444)
    return inp


def start_contained(tmp: Path, inp: Path, weights: Path, output_owner: int = 65534) -> tuple[subprocess.Popen, Path]:
    """Start the probe and process.py in the sandbox (plainly where there is none)."""
    out = tmp / "output"
    out.mkdir()
    w = Path(shutil.copytree(weights, tmp / "weights"))
    for p in [w, *w.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    if PROBLEM is None:
        os.chown(out, output_owner, output_owner)
        (tmp / "newroot").mkdir()
        binds = sorted({str(ROOT), sys.prefix, sys.base_prefix, str(Path(sys.executable).resolve().parents[1])})
        binds = [b for b in binds if not any(b != o and b.startswith(o + os.sep) for o in binds)]
        env.update(PYTHON_EXE=sys.executable, PROBE=PROBE, REPO=str(ROOT))
        cmd = ["unshare", "--mount", "--net", "--fork", "--propagation", "private", "bash", "-c", SANDBOX, "sandbox",
               str(tmp / "newroot"), str(inp), str(out), str(w), *binds]
    else:
        cmd = [sys.executable, "-c", PROBE, str(ROOT), str(inp), str(out), str(w)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env), out


def finish_contained(started: tuple[subprocess.Popen, Path]) -> tuple[dict, Path]:
    """Wait for a sandboxed run; return the probe's report and the output folder."""
    proc, out = started
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    line = next((ln for ln in stdout.splitlines() if ln.startswith("REPORT ")), None)
    assert line is not None, f"sandbox failed (rc {proc.returncode}): {stderr[-3000:]}"
    return json.loads(line[len("REPORT "):]), out


def run_contained(tmp: Path, inp: Path, weights: Path, output_owner: int = 65534) -> tuple[dict, Path]:
    return finish_contained(start_contained(tmp, inp, weights, output_owner))


def check_records(out: Path, n: int) -> None:
    records = json.loads((out / OUT).read_text())
    assert isinstance(records, list) and len(records) == n
    assert all(set(r) == {"class", "confidence"} and type(r["confidence"]) is float
               and math.isfinite(r["confidence"]) for r in records)
    assert [p.name for p in out.iterdir()] == [OUT]  # nothing else: no temporary file


@pytest.fixture(scope="module")
def runs(tmp_path_factory, micro_weights) -> dict[int, tuple[dict, Path]]:
    """process.py on a 200- and a 2,000-page stack, tiny model, 1 view, each in the sandbox, side by side."""
    started = {}
    for n in (200, 2000):
        tmp = tmp_path_factory.mktemp(f"stack{n}")
        tmp.chmod(0o755)
        started[n] = start_contained(tmp, make_input(tmp, n), micro_weights)
    return {n: finish_contained(s) for n, s in started.items()}


def test_long_stacks_are_classified_in_full(runs):
    for n, (report, out) in runs.items():
        assert report["rc"] == 0, report["stderr"]
        check_records(out, n)


def test_memory_stays_flat_as_the_stack_grows(runs):
    small, large = runs[200][0]["maxrss_kb"], runs[2000][0]["maxrss_kb"]
    growth_mb = (large - small) / 1024
    # 1,800 more pages are 88 MB of pixels; bounded batches keep the peak within a few MB of the small run.
    assert growth_mb < 100, f"peak RSS {small / 1024:.0f} MB for 200 pages, {large / 1024:.0f} MB for 2,000"


@pytest.mark.skipif(PROBLEM is not None, reason=f"container conditions cannot be enforced here: {PROBLEM}")
def test_container_conditions_are_in_force_and_process_py_succeeds(runs):
    report, out = runs[200]
    assert report["uid"] == 65534
    w = report["writable"]
    writable = sorted(d for d, ok in w.items() if ok is True)
    assert writable == ["/output", "/tmp"], w  # / (so HOME, the repo, the venv), /input, /dev: all read-only
    assert w["/nonexistent"] in ("No such file or directory", "Read-only file system")
    assert report["network"] != "connected" and report["interfaces"] == ["lo"]
    assert report["rc"] == 0, report["stderr"]
    check_records(out, 200)


@pytest.mark.skipif(PROBLEM is not None, reason=f"container conditions cannot be enforced here: {PROBLEM}")
def test_unwritable_output_is_one_clear_line(tmp_path, micro_weights):
    """/output owned by root: the unprivileged user cannot write there; refused before any model work."""
    tmp_path.chmod(0o755)
    report, out = run_contained(tmp_path, make_input(tmp_path, 3), micro_weights, output_owner=0)
    assert report["rc"] == 2
    assert report["stderr"].splitlines() == [
        "process.py: error: cannot write to output folder /output: Permission denied"]
    assert list(out.iterdir()) == []
