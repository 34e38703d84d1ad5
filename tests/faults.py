"""``process.py`` with a device fault injected through the engine's strategy registry
(:data:`amf.inference.engine.RUNNERS`), the production path otherwise untouched: what a GPU that fails after start-up
does to a job, provoked on a machine without one (tests/test_device_faults.py).

    python tests/faults.py KIND process.py-arguments...

KIND: ``error`` (every forward pass raises CUDA's "illegal memory access"), ``build`` (the engine cannot be built),
``oom`` (a forward pass of more than 8 images runs out of memory).
"""

from __future__ import annotations

import functools
import runpy
import sys
from pathlib import Path

import torch

from amf.inference import engine, pipeline

ROOT = Path(__file__).resolve().parents[1]


class CudaError(engine._Batched):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


class BuildError(engine._Batched):
    def __init__(self, *args, **kwargs):
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device")


#: the most images a forward pass of the ``oom`` fault holds
OOM_IMAGES = 8


class OutOfMemory(engine._Batched):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > OOM_IMAGES:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {x.shape[0] * 48} MiB")
        return super().forward(x)


KINDS = {"error": CudaError, "build": BuildError, "oom": OutOfMemory}


def main() -> None:
    kind = sys.argv[1]
    engine.RUNNERS["faulty"] = KINDS[kind]
    pipeline.load = functools.partial(pipeline.load, strategy="faulty")  # as process.py's engine on a GPU would be
    sys.argv = ["process.py", *sys.argv[2:]]
    runpy.run_path(str(ROOT / "process.py"), run_name="__main__")


if __name__ == "__main__":
    main()
