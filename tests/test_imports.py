"""Importing amf changes nothing process-wide: no environment variable beyond the two defaults that must precede
torch (``HF_HUB_OFFLINE``, ``OMP_WAIT_POLICY``, set by ``amf/__init__.py`` with ``setdefault``), no logger, no torch
setting. The entry points set what their job needs (``amf train``: ``CUBLAS_WORKSPACE_CONFIG``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import importlib, json, logging, os, pkgutil
# the libraries amf uses, first: what they set on import is theirs, not amf's
import matplotlib, numpy, PIL, safetensors, scipy, SimpleITK, skimage, sklearn, tifffile, timm, torch
import torch._inductor.config
def loggers():
    out = {"": [repr(h) for h in logging.getLogger().handlers] + [logging.getLogger().level]}
    for name, lg in logging.Logger.manager.loggerDict.items():
        if isinstance(lg, logging.Logger):
            out[name] = [repr(h) for h in lg.handlers] + [lg.level, lg.propagate, lg.disabled]
    return out
env, logs, threads = dict(os.environ), loggers(), torch.get_num_threads()
def flags():
    return [torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
            torch.are_deterministic_algorithms_enabled()]
before = flags()
import amf
names = sorted(m.name for m in pkgutil.walk_packages(amf.__path__, "amf.") if not m.name.endswith("__main__"))
for name in names:
    importlib.import_module(name)
after = loggers()
print(json.dumps({
    "modules": len(names),
    "env": {k: [env.get(k), v] for k, v in os.environ.items() if env.get(k) != v},
    "loggers": sorted(n for n in set(logs) & set(after) if logs[n] != after[n]),
    "threads": [threads, torch.get_num_threads()],
    "flags": [before, flags()],
}))
"""


def test_importing_every_amf_module_changes_nothing_process_wide():
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "OMP_WAIT_POLICY")}
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["modules"] > 50
    assert found["env"] == {"HF_HUB_OFFLINE": [None, "1"], "OMP_WAIT_POLICY": [None, "PASSIVE"]}, found["env"]
    assert found["loggers"] == [] and found["threads"][0] == found["threads"][1]
    assert found["flags"][0] == found["flags"][1]
