"""How a result came about: the code (git commit and whether the tree was dirty), the machine and the
package versions that touch the numbers, and the config file a run was started from.

Recorded when it happens (by ``train``, ``export`` and ``crossval``) so that ``amf audit`` can check it later
from what the repository ships; nothing here is ever reconstructed after the fact.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

#: Distributions whose versions change the numbers a run or an export produces.
NUMERIC_PACKAGES = ("torch", "timm", "numpy", "scikit-learn", "scikit-image", "safetensors", "pillow")

#: The repository root (where ``.git`` is, in a checkout).
ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str, cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd or ROOT, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_commit(cwd: Path | None = None) -> str:
    """The checked-out commit, or ``"unknown"`` outside a git checkout."""
    out = _git("rev-parse", "HEAD", cwd=cwd)
    return out.strip() if out and out.strip() else "unknown"


def git_state(cwd: Path | None = None) -> dict:
    """``{"commit", "dirty", "changes"}``: the commit, and the tracked or untracked files that differ from it
    (ignored files such as ``runs/`` are not changes). ``dirty`` is ``None`` outside a git checkout."""
    commit = git_commit(cwd)
    status = _git("status", "--porcelain", "--untracked-files=all", cwd=cwd)
    if status is None:
        return {"commit": commit, "dirty": None, "changes": []}
    changes = sorted(line[3:] for line in status.splitlines() if line.strip())
    return {"commit": commit, "dirty": bool(changes), "changes": changes}


def untracked_files(cwd: Path | None = None) -> set[str]:
    """The untracked files git does not ignore (empty outside a git checkout)."""
    return set((_git("ls-files", "--others", "--exclude-standard", cwd=cwd) or "").splitlines())


def commit_has(commit: str, path: str, cwd: Path | None = None) -> bool:
    """Whether ``commit`` exists and holds ``path`` (relative to the repository root)."""
    return _git("cat-file", "-e", f"{commit}:{path}", cwd=cwd) is not None


def file_at(commit: str, path: str, cwd: Path | None = None) -> bytes | None:
    """The bytes of ``path`` at ``commit``, or None when either does not exist."""
    try:
        out = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=cwd or ROOT, capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def cpu_name() -> str:
    """The CPU model as the kernel names it (``platform.processor()`` is often empty on Linux)."""
    from amf.devices import cpu_fields

    return cpu_fields().get("model name") or platform.processor() or platform.machine()


def environment(threads: int | None = None, device: str | None = None) -> dict:
    """Python and the :data:`NUMERIC_PACKAGES` versions, the CPU (and GPU when one is used), the thread count, and
    the :func:`amf.reproducibility.machine` record that says where the same command gives the same bits."""
    import torch

    from amf.reproducibility import machine

    packages = {}
    for name in NUMERIC_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    env = {
        "python": platform.python_version(),
        "packages": packages,
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": _cpu_count(),
        "threads": threads if threads else torch.get_num_threads(),
        "device": device or "cpu",
        "machine": machine(threads),
    }
    if device and device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


def _cpu_count() -> int | None:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count()


def config_file(path: Path | None) -> dict | None:
    """The config file a run was started from: its path (relative to the repository when inside it), sha256
    and full text, so the settings can be checked against the committed file even after it changes."""
    if path is None:
        return None
    path = Path(path)
    data = path.read_bytes()
    try:
        shown = str(path.resolve().relative_to(ROOT))
    except ValueError:
        shown = str(path)
    return {"path": shown, "sha256": hashlib.sha256(data).hexdigest(), "text": data.decode("utf-8")}


def command_line() -> list[str]:
    """The exact process command line."""
    return [sys.executable, *sys.argv]


def write_tool_record(path: Path, script: str, argv: list[str] | None, fields: dict) -> None:
    """A ``tools/`` script's result file: ``{"command": ["python", "tools/SCRIPT", ARGS...], **fields}`` as
    indented JSON, its folder made. Every result records the command that made it, so a number quoted from it
    in the docs can be made again (``argv``: the script's own arguments, ``None`` for the process's)."""
    import json

    command = ["python", f"tools/{script}", *(argv if argv is not None else sys.argv[1:])]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"command": command, **fields}, indent=2) + "\n")


def job_stamp(threads: int | None = None, device: str | None = None) -> dict:
    """What every job that writes a record (a training run, an export) stamps it with: the git state of the code
    (:func:`git_state`), the :func:`environment` and the UTC time, taken at one moment. Training and export
    each file these under their own keys."""
    import datetime

    return {"git": git_state(), "environment": environment(threads, device),
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}

