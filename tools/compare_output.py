"""Compare a container run's JSON with ``test/expected_output.json``: the challenge format, classes equal, confidences
within :data:`amf.reproducibility.TOLERANCE`. Plain Python (no torch), for ``test.sh`` and ``tools/verify_docker.sh``
on a host that only has docker.

    python3 tools/compare_output.py GOT.json [EXPECTED.json] [--label NAME]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from amf.reproducibility import TOLERANCE  # noqa: E402  (loads torch only to record a machine)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("got", type=Path)
    parser.add_argument("expected", type=Path, nargs="?", default=ROOT / "test" / "expected_output.json")
    parser.add_argument("--label", default="test.sh")
    args = parser.parse_args()
    got, want = (json.loads(p.read_text()) for p in (args.got, args.expected))
    problems = []
    if not isinstance(got, list) or len(got) != len(want):
        problems.append(f"{len(got) if isinstance(got, list) else 'not a list of'} entries, expected {len(want)}")
    else:
        for i, (g, w) in enumerate(zip(got, want)):
            if set(g) != {"class", "confidence"}:
                problems.append(f"entry {i}: keys {sorted(g)}")
            elif not isinstance(g["confidence"], float):
                problems.append(f"entry {i}: confidence {g['confidence']!r} is not a JSON float")
            elif g["class"] != w["class"]:
                problems.append(f"entry {i}: class {g['class']}, expected {w['class']}")
            elif abs(g["confidence"] - w["confidence"]) > TOLERANCE:
                problems.append(f"entry {i}: confidence {g['confidence']}, expected {w['confidence']} "
                                f"(tolerance {TOLERANCE:.0e})")
    if problems:
        print(f"{args.label}: FAILED: {'; '.join(problems[:3])}", file=sys.stderr)
        return 1
    worst = max(abs(g["confidence"] - w["confidence"]) for g, w in zip(got, want))
    print(f"{args.label}: OK, {len(got)} entries match {args.expected.name} (classes equal, max |difference| "
          f"{worst:.1e}, tolerance {TOLERANCE:.0e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
