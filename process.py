#!/usr/bin/env python
"""Grand-Challenge entrypoint for MIDOG 2025 Track 2: classify every figure of the input stack.

    python process.py [--input /input] [--output /output] [--weights weights/]

Runs on a GPU when there is one, else on the CPU. The work is in :mod:`amf.inference.challenge`.

Exit status: 0 with every result written; 2 with one line ``process.py: error: ...`` on stderr for any
foreseen failure (bad input, weights or output folder, a NaN from the model), and then nothing was
written; 143 when stopped by SIGTERM and 130 by Ctrl-C / SIGINT (nothing written either). See docs/failure-modes.md.
"""

import argparse
import signal
import sys
from pathlib import Path

# Environment defaults (offline, passive OpenMP threads) are set by the amf package, before torch loads.


def _terminate(signum, frame):
    # Turn SIGTERM into an exception, so temporary files are removed on the way out.
    raise SystemExit(128 + signum)


def main() -> int:
    signal.signal(signal.SIGTERM, _terminate)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=Path("/input"), help="platform input folder (default: /input)")
    parser.add_argument("--output", type=Path, default=Path("/output"),
                        help="platform output folder (default: /output)")
    parser.add_argument("--weights", type=Path, default=None, help="exported weights folder (default: weights/)")
    args = parser.parse_args()
    try:
        from amf.errors import AmfError
        from amf.inference.challenge import run
        from amf.inference.weights import default_weights

        try:
            run(args.input, args.output, args.weights or default_weights())
        except AmfError as exc:
            print(f"process.py: error: {' '.join(str(exc).split())}", file=sys.stderr)
            return 2
    except SystemExit as exc:
        if exc.code == 128 + signal.SIGTERM:
            print("process.py: error: stopped by SIGTERM; no result was written", file=sys.stderr)
        raise
    except KeyboardInterrupt:  # Ctrl-C / SIGINT: temporary files are gone on the way out, as for SIGTERM
        print("process.py: error: interrupted; no result was written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
