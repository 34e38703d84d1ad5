"""How many of its own figures a lab needs for Otsu's cut on their scores (issue 24: a cut that holds on a new lab).

    python tools/own_cut_size.py [--results docs/results/lodo4] [--row ROW:MODE] [--sizes 16 50 ...]
                                 [--draws 500] [--json FILE]

The threshold-rules table of docs/results.md shows that Otsu's cut on a held-out domain's own unlabelled scores
stays near the hindsight-best cut when it sees all of the domain's figures (451-1,999). A lab that scores a slide
or a cohort has fewer. For each held-out domain of the row's per-figure file (``heldout_<row>_<mode>.csv``: models
that never saw the domain) and each size n: ``--draws`` random sets of n of its figures (without replacement, the
domain's own mix of classes), Otsu's cut on their scores alone, and the balanced accuracy of the whole domain at
that cut. Reported per domain and size: the miss (the whole domain's hindsight-best BA minus the BA at the cut),
its median and 90th percentile, and the share of draws within issue 24's 0.03.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import amf  # noqa: F401  (first: the environment defaults)
from amf.provenance import git_state, write_tool_record
from amf.training.crossval import MISS_TARGET, read_heldout_csv
from amf.training.threshold import max_balanced_accuracy_threshold, mean_class_recall, otsu_threshold

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_ROW = "lite0-128-hed-strong-crop80-ens5:tta"


def domain_record(scores: np.ndarray, labels: np.ndarray, sizes: list[int], draws: int,
                  rng: np.random.Generator) -> dict:
    """One held-out domain: its hindsight-best BA and, per size, how far Otsu's cut on n of its figures misses it."""
    best = mean_class_recall(scores, labels, max_balanced_accuracy_threshold(scores, labels))
    out = {"figures": int(scores.size), "atypical": int(labels.sum()), "best_balanced_accuracy": best, "sizes": {}}
    for n in (n for n in sizes if n <= scores.size):
        misses = np.array([best - mean_class_recall(scores, labels, otsu_threshold(scores[rng.choice(scores.size, n,
                                                                                                   replace=False)]))
                           for _ in range(draws)])
        out["sizes"][str(n)] = {"median_miss": float(np.median(misses)), "p90_miss": float(np.quantile(misses, 0.9)),
                                "within_target": float(np.mean(misses <= MISS_TARGET))}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "results" / "lodo4")
    parser.add_argument("--row", default=SHIPPED_ROW, help=f"ROW:MODE of crossval.json (default {SHIPPED_ROW})")
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    row, _, mode = args.row.rpartition(":")
    d = read_heldout_csv(args.results / f"heldout_{row}_{mode}.csv")
    rng = np.random.default_rng(args.seed)
    domains = {}
    for domain in sorted(set(d["domain"].tolist())):
        rows = d["domain"] == domain
        domains[domain] = domain_record(d["score"][rows], d["label"][rows], args.sizes, args.draws, rng)
        for n, r in domains[domain]["sizes"].items():
            print(f"{domain:16s} n={n:>5s}  median miss {r['median_miss']:.3f}  90th percentile {r['p90_miss']:.3f}  "
                  f"within {MISS_TARGET}: {r['within_target']:.0%}")
    if args.json:
        write_tool_record(args.json, "own_cut_size.py", argv, {
            "git": git_state(), "row": args.row, "draws": args.draws, "seed": args.seed, "miss_target": MISS_TARGET,
            "domains": domains})
    return 0


if __name__ == "__main__":
    sys.exit(main())
