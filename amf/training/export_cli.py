"""``amf export RUN --output weights/``: a training run's all-domains folds -> a weights folder
(:mod:`amf.training.export`).

Arguments and paths are checked here, before torch is imported (several seconds), so a mistyped run
folder or a full output folder fails at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from amf.errors import AmfError
from amf.files import check_replaceable
from amf.progress import interactive
from amf.training.run_folder import RunFolder

#: Below this out-of-fold ROC AUC, export warns that the ensemble is close to chance.
USELESS_AUC = 0.6
DTYPES = ("fp16", "bf16", "fp32")
METHODS = ("balanced_accuracy", "youden", "otsu")  # amf.training.threshold.METHODS, without importing scikit-learn


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="training run folder (amf train --output RUN)")
    p.add_argument("--output", type=Path, required=True, help="weights folder to write")
    p.add_argument("--force", action="store_true",
                   help="replace a non-empty --output folder (a new folder is written, then renamed into its place)")
    p.add_argument("--threshold-method", choices=METHODS, help="default: the run's threshold_method")
    p.add_argument("--threshold-from", type=Path, metavar="LODO_RUN",
                   help="choose the threshold that transfers to unseen domains instead: the cut maximising the mean "
                        "held-out balanced accuracy of this leave-one-domain-out run of the same configuration")
    p.add_argument("--tta-views", type=int,
                   help="test-time views, 1 = none (default: amf.inference.spec.TTAConfig's, 8)")
    p.add_argument("--tta-sigma", type=float, help="TTA stain sigma, natural OD (default: TTAConfig's)")
    p.add_argument("--tta-delta", type=float, help="TTA stain delta, natural OD (default: TTAConfig's)")
    p.add_argument("--dtype", choices=DTYPES, default="fp16", help="storage dtype of the members")
    p.add_argument("--note", help="free text stored in the manifest")
    p.add_argument("--allow-dirty", action="store_true",
                   help="export from a checkout with uncommitted changes (recorded in the manifest; amf audit "
                        "reports it): without it, export refuses, since the manifest's commit would not hold the "
                        "code that ran")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def check(args: argparse.Namespace) -> None:
    """Everything that can fail without torch, first."""
    for run_dir, what in ((args.run, "RUN"), (args.threshold_from, "--threshold-from")):
        if run_dir is not None:
            RunFolder(run_dir).check_is_run(f"{what} ")
    check_replaceable(Path(args.output), args.force)
    if args.tta_views is not None and args.tta_views < 1:
        raise AmfError("--tta-views must be >= 1")
    if not args.allow_dirty:
        from amf.provenance import git_state

        state = git_state()
        if state["dirty"]:
            shown = ", ".join(state["changes"][:5]) + (", ..." if len(state["changes"]) > 5 else "")
            raise AmfError(f"the checkout has uncommitted changes ({shown}): commit them first, so the manifest's "
                           "commit holds the code that exported, or pass --allow-dirty (recorded in the manifest)")


def run(args: argparse.Namespace) -> int:
    check(args)
    import dataclasses

    import torch

    from amf.inference.spec import TTAConfig
    from amf.training.export import ExportOptions, export_run
    from amf.training.run_folder import args_to_argv

    changes = {k: v for k, v in (("views", args.tta_views), ("sigma", args.tta_sigma), ("delta", args.tta_delta))
               if v is not None}
    tta = dataclasses.replace(TTAConfig(), **changes)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    options = ExportOptions(threshold_method=args.threshold_method, tta=tta, dtype=dtype, note=args.note or "",
                            command=[sys.executable, *sys.argv], arguments=args_to_argv("export", args, ("run",)),
                            threshold_from=args.threshold_from, force=args.force,
                            progress=not args.no_progress and interactive(), allow_dirty=args.allow_dirty)
    manifest = export_run(args.run, args.output, options)
    th, prov = manifest.threshold, manifest.provenance
    print(f"wrote {len(manifest.members)} members to {args.output}; threshold {th.value:.4f} ({th.method})")
    for m, c in prov.threshold_candidates.items():
        print(f"  {m:<17} {c.value:.4f}  OOF BA {c.oof_balanced_accuracy:.4f}")
    oof = prov.oof
    print(f"  out-of-fold: n={oof.n}, AUC {_fmt(oof.auc)}, BA {oof.balanced_accuracy:.4f} at the shipped "
          "threshold (patches of the training domains: an upper bound for new domains)")
    if oof.auc is None or oof.auc < USELESS_AUC:
        print(f"amf export: warning: out-of-fold AUC {_fmt(oof.auc)} is below {USELESS_AUC}: this ensemble is "
              "close to chance even on the domains it trained on", file=sys.stderr)
    for domain, d in (prov.threshold_transfer or {}).get("domains", {}).items():
        print(f"  held out {domain}: BA {d['balanced_accuracy_at_transfer']:.4f} at the shipped threshold, "
              f"{d['balanced_accuracy_at_hindsight_best']:.4f} at its hindsight-best")
    return 0


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"
