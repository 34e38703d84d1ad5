"""Write ``test/expected_output.json`` from the shipped weights, with the record of the machine that wrote it.

    python tools/record_expected_output.py

Runs ``process.py`` on ``test/input`` with ``weights/`` and writes its JSON to ``test/expected_output.json``, and
``test/expected_output.machine.json`` beside it: the output's sha256, the machine of the run
(:func:`amf.reproducibility.machine`: CPU, ISA, caps, threads, torch), the weights' manifest sha256, the commit
and the command. ``amf audit`` and the tests then hold a new run to the same bits on that machine, and to the
measured tolerance elsewhere (:mod:`amf.audit.expected`). Run it after a change of the weights, from a clean tree.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from amf.audit import expected  # noqa: E402
from amf.reproducibility import describe  # noqa: E402


def main() -> int:
    entry = expected.record(ROOT, ROOT / "weights", ["python", "tools/record_expected_output.py", *sys.argv[1:]])
    dirty = " (from a dirty tree: commit first, then record again)" if entry["git"]["dirty"] else ""
    print(f"wrote {expected.EXPECTED} and {expected.RECORD}: {describe(entry['machine'])}{dirty}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
