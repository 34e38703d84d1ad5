"""Accuracy against cost for every row of the leave-one-domain-out table (issue 24): the frontier to choose from.

    python tools/frontier.py [--results docs/results/lodo4] [--bootstrap 1000] [--json FILE] [--plot FILE]

For each row and mode of ``crossval.json`` whose provenance records its training config: the mean held-out BA
and AUC with bootstrap 95% intervals (:func:`amf.training.crossval.mean_interval`, from the committed per-figure
file), and the cost of one figure, as GFLOP: one forward pass of the row's member (counted by
:func:`amf.bench.bench.forward_flops` on the model the config builds, crop and resize included) times the members
per domain times the views. FLOPs, not seconds: they do not move with the machine's load, and the engine turns
them into time at one rate for one architecture (``docs/benchmark.md``). Rows scored before their provenance was
recorded are listed without a cost, rows scored on fewer held-out domains than the rest are listed but not
plotted (their mean is over other domains), and bf16 modes are left out (the same FLOPs as fp32; their effect is a
paired comparison in ``compare.json``). The plot marks the rows no other row beats in both cost and mean AUC.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import amf  # noqa: F401  (first: the environment defaults)
from amf.bench.bench import forward_flops
from amf.inference.model import build_classifier
from amf.provenance import git_state, write_tool_record
from amf.training.config import TrainConfig
from amf.training.crossval import mean_interval, mode_bf16

ROOT = Path(__file__).resolve().parent.parent


def member_gflop(config: dict, cache: dict[str, float]) -> float:
    """GFLOP of one forward pass of one 128 px patch through a member built from a recorded config."""
    spec = TrainConfig.from_dict(config).model_spec()
    key = json.dumps(spec.to_dict(), sort_keys=True)
    if key not in cache:
        cache[key] = forward_flops(build_classifier(spec).eval()) / 1e9
    return cache[key]


def frontier(results: Path, n_resamples: int) -> list[dict]:
    """One record per row and mode: accuracy with intervals, members, views, GFLOP per figure (or None)."""
    table = json.loads((results / "crossval.json").read_text())
    cache: dict[str, float] = {}
    out = []
    for row, modes in table.items():
        # the row's models are the same in every mode; a mode scored before provenance was recorded borrows it.
        # A blend (amf crossval --blend) records its parts, not a config: it is listed without a cost.
        config = next((r["provenance"]["config"] for r in modes.values() if "config" in r.get("provenance", {})),
                      None)
        for mode, r in modes.items():
            if mode_bf16(mode):  # a precision, not a configuration: its FLOPs are fp32's (docs/benchmark.md)
                continue
            members = max(d["members"] for d in r["domains"].values())
            gflop = member_gflop(config, cache) * members * r["tta"]["views"] if config else None
            acc = mean_interval(results / f"heldout_{row}_{mode}.csv", n_resamples)
            out.append({"row": row, "mode": mode, "members": members, "views": r["tta"]["views"],
                        "gflop_per_figure": gflop, **acc})
    # a mean over fewer held-out domains is not comparable: such rows get no place on the frontier
    full = max(len(x["domains"]) for x in out)
    costed = [x for x in out if x["gflop_per_figure"] is not None and len(x["domains"]) == full]
    for x in costed:
        x["on_frontier"] = not any(y["gflop_per_figure"] <= x["gflop_per_figure"] and y["roc_auc"] > x["roc_auc"]
                                   for y in costed if y is not x)
    return out


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    costed = sorted((x for x in records if "on_frontier" in x), key=lambda x: x["gflop_per_figure"])
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for ax, key, name in ((axes[0], "roc_auc", "mean held-out ROC AUC"),
                          (axes[1], "balanced_accuracy", "mean held-out balanced accuracy")):
        for x in costed:
            lo, hi = x[f"{key}_ci95"]
            colour = "tab:red" if x["on_frontier"] else "tab:blue"
            ax.errorbar(x["gflop_per_figure"], x[key], yerr=[[x[key] - lo], [hi - x[key]]], fmt="o", color=colour,
                        ms=4, capsize=2, alpha=0.8)
            ax.annotate(f"{x['row']} [{x['mode']}]", (x["gflop_per_figure"], x[key]), fontsize=6,
                        xytext=(3, 2), textcoords="offset points")
        best = [x for x in costed if x["on_frontier"]]
        ax.plot([x["gflop_per_figure"] for x in best], [x[key] for x in best], color="tab:red", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("GFLOP per figure (members x views x one forward pass)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    fig.suptitle("Leave one domain out on AMi-Br: accuracy against cost (95% bootstrap intervals; red: no row is "
                 "cheaper with a higher AUC)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "results" / "lodo4")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    git = git_state()
    records = frontier(args.results, args.bootstrap)
    for x in sorted(records, key=lambda x: x["gflop_per_figure"] if x["gflop_per_figure"] is not None else 1e9):
        cost = f"{x['gflop_per_figure']:7.2f}" if x["gflop_per_figure"] is not None else "    n/a"
        ba, auc = x["balanced_accuracy_ci95"], x["roc_auc_ci95"]
        print(f"{cost} GFLOP  {x['row']} [{x['mode']}]  BA {x['balanced_accuracy']:.3f} [{ba[0]:.3f}, {ba[1]:.3f}]  "
              f"AUC {x['roc_auc']:.3f} [{auc[0]:.3f}, {auc[1]:.3f}]" + ("  frontier" if x.get("on_frontier") else ""))
    if args.json:
        write_tool_record(args.json, "frontier.py", argv, {
            "git": git, "results": os.path.relpath(args.results, ROOT), "rows": records})
    if args.plot:
        plot(records, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
