"""Durable file operations shared by the whole package: hashes, atomic writes, JSON reads with clear errors.

Why one module: every output we write (challenge JSON, predictions CSV, weights, checkpoints, metrics)
must be all-or-nothing, and every JSON we read must fail with a one-line error of the right type.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from amf.errors import AmfError

T = TypeVar("T")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_temp(path: Path, data: bytes) -> Path:
    """Write ``data`` to a new hidden temporary file beside ``path`` (same folder, so a rename is atomic).

    The file is flushed to disk and gets the mode a plain ``open`` would give it (``0o666`` less the
    umask), not ``mkstemp``'s ``0o600``. On any failure the temporary file is removed and the error raised.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~umask())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def umask() -> int:
    """The process umask, read without changing it where Linux allows (``os.umask`` sets it too)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: some filesystems refuse to sync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename: readers never see half a file.

    A crash or signal at any moment leaves either the old file or the new one, never a mix; the
    temporary file is removed on any Python-level failure (including SIGTERM turned into ``SystemExit``).
    Only SIGKILL can leave a ``.<name>.*.tmp`` file behind, never under the final name.
    """
    path = Path(path)
    tmp = write_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def read_json(path: Path, error: type[AmfError], missing_hint: str = "") -> object:
    """Parse ``path`` as JSON, raising ``error`` with a one-line message when it is missing, unreadable or invalid."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path} is missing{missing_hint}")
    try:
        return json.loads(path.read_bytes())
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path} is not valid JSON: {exc}") from exc


def json_safe(value: object) -> object:
    """``value`` with every NaN and infinity replaced by None, recursively: strict JSON has neither, and an
    undefined number (an AUC of one class, a loss that never came) is written ``null``. numpy scalars
    become Python numbers and paths strings, so any record of ours can be written."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def json_text(value: object, indent: int | None = 2) -> str:
    """Strict JSON of :func:`json_safe` ``(value)``, ending in a newline (``indent=None``: one line)."""
    return json.dumps(json_safe(value), indent=indent, allow_nan=False) + "\n"


def write_json(path: Path, value: object) -> None:
    """The one JSON writer of our own records (run files, manifests, results): :func:`json_text`, written
    atomically. The challenge's output and the official metrics file keep their prescribed formats."""
    atomic_write_bytes(Path(path), json_text(value).encode())


def check_replaceable(out_dir: Path, force: bool) -> None:
    """Refuse to write a folder over a file, or over a non-empty folder unless ``force``."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise AmfError(f"--output {out_dir} is a file, not a folder; name a folder (--force replaces folders only)")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise AmfError(f"--output {out_dir} is not an empty folder; pass --force to replace it "
                       "(nothing of the old folder is kept)")


def replace_folder(out_dir: Path, write: Callable[[Path], T]) -> T:
    """``write`` into a new sibling folder, then rename it to ``out_dir``: the old folder goes whole, or not at
    all (a failure puts it back), and no file of it is left beside the new one."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.new-", dir=out_dir.parent))
    old = None
    os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes it private; a weights folder is read by other users (containers)
    try:
        result = write(tmp)
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, old / out_dir.name)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out_dir.exists():
            os.replace(old / out_dir.name, out_dir)  # put the old folder back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return result
