"""The ``--device`` values every command accepts, checked before torch loads, and the one place that turns them into
a device (:func:`resolve`).

``auto`` (CUDA when it starts, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``. Anything else (``gpu``,
``mps``, ``meta``, a typo) is one clear error instead of a torch traceback, or a device that silently
computes nothing (``meta``).
"""

from __future__ import annotations

import argparse
import ctypes
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from amf.errors import InputError

if TYPE_CHECKING:
    import torch

CHOICES = "auto, cpu, cuda or cuda:N"
_VALID = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def device_arg(text: str) -> str:
    """argparse ``type=`` for ``--device``: the value, lower-cased, or a usage error naming the choices."""
    value = text.strip().lower()
    if not _VALID.match(value):
        hint = " (a GPU is 'cuda')" if value == "gpu" else ""
        raise argparse.ArgumentTypeError(f"{text!r} is not a device{hint}: use {CHOICES}")
    return value


#: CPU flags that say bf16 runs in hardware; without one, oneDNN emulates bf16, slower than fp32 (docs/benchmark.md).
BF16_UNITS = ("avx512_bf16", "amx_bf16")


def cpu_fields() -> dict[str, str]:
    """The first processor's fields of ``/proc/cpuinfo`` (empty where there is none, e.g. macOS): the one reader of
    that file, for the model name, the flags and the machine record (:func:`amf.reproducibility.machine`)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model_and_flags() -> tuple[str, set[str]]:
    """The first CPU's model name and flags (empty where there is no ``/proc/cpuinfo``)."""
    fields = cpu_fields()
    return fields.get("model name", ""), set(fields.get("flags", "").split())


def nvidia_driver(path: Path = Path("/proc/driver/nvidia/version")) -> str | None:
    """The NVIDIA kernel driver's version as the kernel reports it (``/proc/driver/nvidia/version``, visible in a
    container too), or None without one."""
    try:
        text = path.read_text()
    except OSError:
        return None
    found = re.search(r"Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)", text)
    return found.group(1) if found else None


def _cuda_version(code: int) -> str:
    """CUDA's integer version (12020) as text (12.2)."""
    return f"{code // 1000}.{code % 1000 // 10}"


def driver_cuda_version() -> str | None:
    """The newest CUDA the installed driver supports (``cuDriverGetVersion`` from ``libcuda.so.1``), or None where
    no driver library loads. Asked of the driver itself: torch has no public call for it."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
        code = ctypes.c_int()
        if libcuda.cuDriverGetVersion(ctypes.byref(code)) != 0:
            return None
    except (OSError, AttributeError):
        return None
    return _cuda_version(code.value)


def describe_cuda(device: torch.device) -> str:
    """The GPU, the driver (and the newest CUDA it supports) and the CUDA torch was built for, in one line."""
    import torch

    driver = nvidia_driver()
    return (f"{device} ({torch.cuda.get_device_name(device)}, NVIDIA driver {driver or 'version unknown'} for CUDA "
            f"{driver_cuda_version() or '?'}; torch {torch.__version__} built for CUDA {torch.version.cuda})")


def resolve(requested: str | None) -> tuple[torch.device, str]:
    """The device a command runs on, and one line that says which and why (every command prints it the same way).

    ``auto`` (or None): CUDA when it starts for real (a first allocation, not only ``is_available``), else the CPU
    with the reason as torch gives it (an old driver, no device, a failed start): the same numbers, slower.
    ``cpu``: the CPU. ``cuda`` or ``cuda:N``: that device, or an :class:`~amf.errors.InputError` when it cannot
    start; an explicit request never falls back.
    """
    import torch

    value = "auto" if requested is None else requested
    if value == "cpu":
        return torch.device("cpu"), "running on the CPU (--device cpu)"
    if torch.version.cuda is None:
        if value != "auto":
            raise InputError(f"--device {value}: this torch ({torch.__version__}) is a CPU build, without CUDA")
        return torch.device("cpu"), f"running on the CPU (torch {torch.__version__} is a CPU build)"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if torch.cuda.is_available():
                device = torch.device("cuda" if value == "auto" else value)
                torch.zeros(1, device=device)
                return device, f"running on {describe_cuda(device)}"
            reason = next((str(w.message) for w in caught), "") or "torch finds no CUDA device"
        except Exception as exc:  # noqa: BLE001 - any failure to start CUDA means: run on the CPU, or say why not
            reason = f"{type(exc).__name__}: {exc}"
    reason = " ".join(reason.split())[:240]
    driver = nvidia_driver()
    supports = driver_cuda_version() if driver else None
    found = (f"NVIDIA driver {driver}" + (f" for CUDA {supports}" if supports else "") if driver else
             "no NVIDIA driver") + f", torch built for CUDA {torch.version.cuda}"
    if value != "auto":
        raise InputError(f"--device {value}: CUDA cannot start ({found}): {reason}")
    return torch.device("cpu"), f"CUDA cannot start ({found}): {reason}; running on the CPU"
