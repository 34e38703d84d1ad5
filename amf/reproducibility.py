"""Which machine made a number, and whether a number made again agrees with it: bit for bit where the machine is
the same, within a measured tolerance elsewhere.

A CPU's model and ISA decide which kernels oneDNN, MKL and ATen run (``ONEDNN_MAX_CPU_ISA``,
``MKL_ENABLE_INSTRUCTIONS`` and ``ATEN_CPU_CAPABILITY`` cap them), and so do the thread count and the torch
version. With all of them equal the engine's fp32 scores repeat bit for bit; with any of them different the
last bits move. :func:`machine` records what decides it, :func:`machine_differences` says what differs between
two records, and :func:`agreement` compares recorded scores with scores made again under that rule. The
tolerance is measured, not chosen: docs/audit.md, "Exact where, and within what".

``python -m amf.reproducibility`` prints this process's record as JSON, so that a caller can record the machine
of a child process (``process.py``) run with the same environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: Largest |difference| in P(atypical) accepted between two machines (docs/audit.md, "Exact where, and within
#: what": the measured spread over CPUs, ISAs and thread counts, with its margin).
TOLERANCE = 1e-5

#: CPU flags that change which kernels run (SIMD width, VNNI, bf16, fp16 and AMX units).
ISA_FLAGS = ("sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512bw", "avx512vl",
             "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
             "asimd", "sve", "sve2")
#: Environment variables that cap the kernels the libraries pick (unset: the CPU's best).
ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY")

BIT_IDENTICAL, WITHIN_TOLERANCE, DIFFERS = "bit-identical", "within tolerance", "differs"


def _caches() -> dict[str, str]:
    """Cache sizes by level and type (oneDNN sizes its blocking by them): ``{"L1d": "48K", "L2": "2048K", ...}``."""
    out: dict[str, str] = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        out[f"L{level}" + {"Data": "d", "Instruction": "i"}.get(kind, "")] = size
    return out


def machine(threads: int | None = None) -> dict:
    """What decides the bits of a CPU computation here: the CPU (model, vendor, family/model/stepping, ISA flags,
    caches), the caps set on the libraries' kernels, the torch version and the thread count (default: torch's)."""
    import torch

    from amf.devices import cpu_fields

    info = cpu_fields()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    return {
        "cpu": info.get("model name") or info.get("Processor") or "unknown",
        "vendor": info.get("vendor_id", "unknown"),
        "family_model_stepping": "/".join(info.get(k, "?") for k in ("cpu family", "model", "stepping")),
        "isa": [f for f in ISA_FLAGS if f in flags],
        "caches": _caches(),
        "caps": {name: os.environ.get(name, "") for name in ISA_CAPS},
        "aten_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "threads": int(threads or torch.get_num_threads()),
    }


def child_machine(python: Sequence[str] = (sys.executable,), env: dict[str, str] | None = None,
                  cwd: Path | None = None) -> dict:
    """The :func:`machine` record of a new process started as ``python`` with ``env``: what a child such as
    ``process.py`` computes with (its default thread count, the caps in its environment), which this process's own
    settings (a test that set one thread) need not be."""
    proc = subprocess.run([*python, "-m", "amf.reproducibility"], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"could not record the machine: {proc.stderr.strip()[-300:]}")
    return json.loads(proc.stdout)


def recorded_machine(environment: dict | None) -> dict | None:
    """The machine of an :func:`amf.provenance.environment` record; for one written before machines were recorded,
    what it holds of one (the CPU's name and the thread count), which can tell a machine apart but never match."""
    if not environment:
        return None
    return environment.get("machine") or {k: environment[k] for k in ("cpu", "threads") if k in environment}


def _shown(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items() if v) or "none"
    if isinstance(value, list):
        return " ".join(map(str, value)) or "none"
    return str(value)


def machine_differences(here: dict | None, recorded: dict | None) -> list[str]:
    """What differs between two :func:`machine` records, one item each (``"threads: 1 here, 2 recorded"``); empty
    means the same machine, so the same bits. What a record lacks (one written before machines were recorded)
    counts as different: bit-identity can then not be claimed."""
    if not recorded:
        return ["the recording machine was not recorded"]
    if not here:
        return ["this machine was not recorded"]
    out = [f"{k}: {_shown(here.get(k))} here, {_shown(recorded[k])} recorded"
           for k in sorted(recorded) if here.get(k) != recorded[k]]
    missing = [k for k in sorted(here) if k not in recorded]
    return out + ([f"not recorded: {', '.join(missing)}"] if missing else [])


def describe(record: dict | None) -> str:
    """One line naming a machine: CPU, ISA caps in force, threads, torch."""
    if not record:
        return "an unrecorded machine"
    caps = ", ".join(f"{k}={v}" for k, v in record.get("caps", {}).items() if v)
    return (f"{record.get('cpu', '?')} ({record.get('aten_capability', '?')}"
            f"{', ' + caps if caps else ''}), {record.get('threads', '?')} thread(s), torch {record.get('torch', '?')}")


@dataclass(frozen=True)
class Agreement:
    """Scores made here against recorded ones: the verdict, the largest |difference|, the entries whose class
    changed, and why the rule was exactness or the tolerance (what differs between the two machines)."""

    verdict: str
    max_difference: float
    n: int
    changed_classes: tuple[int, ...]
    machine_differs: tuple[str, ...]
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.verdict != DIFFERS

    def line(self) -> str:
        where = (f"on another machine ({'; '.join(self.machine_differs)})" if self.machine_differs
                 else "on the recording machine")
        said = {BIT_IDENTICAL: "bit-identical", WITHIN_TOLERANCE: f"within {self.tolerance:.0e}"}.get(
            self.verdict, "DIFFERENT")
        classes = f"; class changed at {list(self.changed_classes)[:5]}" if self.changed_classes else ""
        return f"{said} {where}: {self.n} scores, max |difference| {self.max_difference:.2e}{classes}"


def agreement(got: Sequence[float], want: Sequence[float], here: dict | None, recorded: dict | None,
              classes: tuple[Sequence[str], Sequence[str]] | None = None, tolerance: float = TOLERANCE) -> Agreement:
    """``got`` (made on ``here``) against ``want`` (made on ``recorded``): bit-identical is required where the
    machines are the same; elsewhere every |difference| must be within ``tolerance``. ``classes`` (got's, want's):
    a changed class fails everywhere. Different lengths fail."""
    differs = tuple(machine_differences(here, recorded))
    same_length = len(got) == len(want)
    worst = max((abs(float(a) - float(b)) for a, b in zip(got, want, strict=False)), default=0.0)
    changed = tuple(i for i, (a, b) in enumerate(zip(*classes, strict=False)) if a != b) if classes else ()
    if same_length and not changed and all(float(a) == float(b) for a, b in zip(got, want, strict=True)):
        verdict = BIT_IDENTICAL
    elif same_length and not changed and differs and worst <= tolerance:
        verdict = WITHIN_TOLERANCE
    else:
        verdict = DIFFERS
    return Agreement(verdict, worst if same_length else float("inf"), min(len(got), len(want)), changed, differs,
                     tolerance)


if __name__ == "__main__":
    print(json.dumps(machine()))
