"""The ``--device`` values every command accepts, checked before torch loads.

``auto`` (CUDA when it starts, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``. Anything else (``gpu``,
``mps``, ``meta``, a typo) is one clear error instead of a torch traceback, or a device that silently
computes nothing (``meta``).
"""

from __future__ import annotations

import argparse
import re

CHOICES = "auto, cpu, cuda or cuda:N"
_VALID = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def device_arg(text: str) -> str:
    """argparse ``type=`` for ``--device``: the value, lower-cased, or a usage error naming the choices."""
    value = text.strip().lower()
    if not _VALID.match(value):
        hint = " (a GPU is 'cuda')" if value == "gpu" else ""
        raise argparse.ArgumentTypeError(f"{text!r} is not a device{hint}: use {CHOICES}")
    return value
