#!/usr/bin/env python
"""Grand-Challenge entrypoint for MIDOG 2025 Track 2: classify every figure of the input stack.

    python process.py [--input /input] [--output /output] [--weights weights/]

Runs on a GPU when there is one, else on the CPU. The work is in :mod:`amf.challenge`.
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    from amf.challenge import DEFAULT_WEIGHTS, run
    from amf.errors import AmfError

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=Path("/input"), help="platform input folder")
    parser.add_argument("--output", type=Path, default=Path("/output"), help="platform output folder")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="exported weights folder")
    args = parser.parse_args()
    try:
        run(args.input, args.output, args.weights)
    except AmfError as exc:
        print(f"process.py: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
