"""How well a leave-one-domain-out row's confidences read as probabilities: the reliability bins and the expected
calibration error (ECE) with its bootstrap interval, pooled and per held-out domain, from its committed per-figure
file (``amf.evaluation.reliability``, what ``amf evaluate --report`` shows for any set of figures).

    python tools/calibration.py ROW [--mode tta] [--results docs/results/lodo4] [--resamples 1000]

Writes ``RESULTS/calibration_ROW_MODE.json``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from amf.evaluation.reliability import calibration  # noqa: E402
from amf.provenance import git_state, write_tool_record  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("row")
    parser.add_argument("--mode", default="tta")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "results" / "lodo4")
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args(argv)
    source = args.results / f"heldout_{args.row}_{args.mode}.csv"
    with open(source, newline="") as f:
        rows = list(csv.DictReader(f))
    y = np.array([r["label"] == "atypical" for r in rows], dtype=np.float64)
    p = np.array([float(r["p_atypical"]) for r in rows])
    domain = np.array([r["domain"] for r in rows])
    scopes = {"pooled": np.ones(len(rows), dtype=bool), **{d: domain == d for d in dict.fromkeys(domain)}}
    out = {name: {"n": int(mask.sum()), **calibration(y[mask], p[mask], args.resamples).to_dict()}
           for name, mask in scopes.items()}
    write_tool_record(args.results / f"calibration_{args.row}_{args.mode}.json", "calibration.py", argv,
                      {"git": git_state(), "resamples": args.resamples,
                       "source": str(source.relative_to(ROOT)) if source.is_relative_to(ROOT) else str(source),
                       "seed": 0, "scopes": out})
    for name, r in out.items():
        print(f"{name}: n {r['n']}, ECE {r['ece']:.3f} [{r['ece_ci95'][0]:.3f}, {r['ece_ci95'][1]:.3f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
