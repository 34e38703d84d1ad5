"""The ``--device`` values every command accepts, checked before torch loads.

``auto`` (CUDA when it starts, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``. Anything else (``gpu``,
``mps``, ``meta``, a typo) is one clear error instead of a torch traceback, or a device that silently
computes nothing (``meta``).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

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


def cpu_model_and_flags() -> tuple[str, set[str]]:
    """The first CPU's model name and flags from ``/proc/cpuinfo`` (empty where there is none, e.g. macOS)."""
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return model, flags
