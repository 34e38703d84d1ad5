"""The bundled stack's recorded output, ``test/expected_output.json``, and the record beside it of the machine
that wrote it (``test/expected_output.machine.json``): written by ``tools/record_expected_output.py``, checked by
``amf audit`` (``bundled_stack``) and the tests.

The record holds the output's sha256, so an edit of the output is caught on any machine, and the
:func:`amf.reproducibility.machine` of the ``process.py`` run that wrote it, so a new run is held to the same bits
on that machine and to :data:`amf.reproducibility.TOLERANCE` elsewhere (:func:`amf.reproducibility.agreement`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from amf.errors import AmfError
from amf.files import atomic_write_bytes, sha256_file, write_json
from amf.inference.challenge import OUTPUT_NAME
from amf.reproducibility import Agreement, agreement, child_machine

EXPECTED = Path("test") / "expected_output.json"
RECORD = Path("test") / "expected_output.machine.json"


def run_process(root: Path, weights: Path, python: Sequence[str] = (sys.executable,),
                env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[bytes, dict]:
    """``process.py`` of ``root`` on its ``test/input`` with ``weights``: the JSON it wrote, and the machine it ran
    on (a new process with the same interpreter and environment). An :class:`AmfError` with its stderr when it
    fails."""
    with tempfile.TemporaryDirectory(prefix="amf-bundled-") as tmp:
        proc = subprocess.run([*python, str(root / "process.py"), "--input", str(root / "test" / "input"),
                               "--output", tmp, "--weights", str(weights)], capture_output=True, text=True, env=env,
                              cwd=cwd or root, timeout=600)
        out = Path(tmp) / OUTPUT_NAME
        if proc.returncode != 0 or not out.is_file():
            raise AmfError(f"process.py exited {proc.returncode}: {' '.join(proc.stderr.split())[-300:]}")
        return out.read_bytes(), child_machine(python, env, cwd or root)


def record(root: Path, weights: Path, command: list[str]) -> dict:
    """Run the bundled stack and write ``test/expected_output.json`` and its machine record; returns the record."""
    from amf.provenance import git_state

    state = git_state(root)
    data, machine = run_process(root, weights)
    atomic_write_bytes(root / EXPECTED, data)
    entry = {"file": EXPECTED.name, "sha256": sha256_file(root / EXPECTED), "machine": machine,
             "weights_manifest_sha256": sha256_file(Path(weights) / "manifest.json"), "git": state,
             "command": command}
    write_json(root / RECORD, entry)
    return entry


def recorded(root: Path) -> tuple[list[dict], dict | None, str]:
    """The expected output, its machine record, and what is wrong with the pair ('' when nothing): a missing record,
    or an output whose sha256 is not the one recorded (edited since it was written)."""
    entries = json.loads((root / EXPECTED).read_text())
    if not (root / RECORD).is_file():
        return entries, None, f"{RECORD} is missing: the machine that wrote {EXPECTED} is unknown"
    entry = json.loads((root / RECORD).read_text())
    digest = sha256_file(root / EXPECTED)
    if digest != entry.get("sha256"):
        recorded = str(entry.get("sha256"))[:12]
        return entries, entry.get("machine"), (f"{EXPECTED} has sha256 {digest[:12]}..., {RECORD} recorded "
                                               f"{recorded}...: it was edited after it was written")
    return entries, entry.get("machine"), ""


def compare(root: Path, got: list[dict], here: dict) -> Agreement:
    """A fresh run's entries against the expected output, under the rule of :func:`amf.reproducibility.agreement`;
    a changed class fails everywhere."""
    want, machine, _ = recorded(root)
    return agreement([e["confidence"] for e in got], [e["confidence"] for e in want], here, machine,
                     ([e["class"] for e in got], [e["class"] for e in want]))
