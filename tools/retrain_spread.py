"""How far a member retrained on another CPU lands from the shipped one: the measurement behind
``amf audit --retrain``'s bounds off the recording machine (:data:`amf.audit.checks.RETRAIN_AUC_GAP`,
:data:`amf.audit.checks.RETRAIN_CLASS_AGREEMENT`).

    python tools/retrain_spread.py RUN [RUN ...] [--json docs/results/portability/retrain-spread.json]

Each RUN is a run folder trained with the shipped member's recorded job command (``amf audit --retrain``'s
command; ``--fold all/fold0``), on some machine or with the kernels capped as another CPU would have them
(``ONEDNN_MAX_CPU_ISA`` and the like). For each, the machine and commit its job recorded, whether its tensors equal
the shipped member's, and :func:`amf.audit.checks.rebuilt_against_shipped`: its scores against the shipped member's
on the member's validation patches with the shipped views.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from amf.audit.checks import (  # noqa: E402
    RETRAIN_AUC_GAP,
    RETRAIN_CLASS_AGREEMENT,
    rebuilt_against_shipped,
    stored_state,
)
from amf.audit.context import DEFAULT_DATA, Context  # noqa: E402
from amf.provenance import git_state, write_tool_record  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    import torch
    from safetensors.torch import load_file

    from amf.training.run_folder import BEST, load_best_state

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--fold", default="all/fold0")
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "results" / "portability" / "retrain-spread.json")
    args = parser.parse_args(argv)
    ctx = Context(ROOT / "weights", [DEFAULT_DATA], ROOT / "docs" / "results" / "lodo4")
    columns = ctx.manifest.provenance.member_folds
    member = next(k for k, f in columns.items() if f == args.fold)
    k = int(member.removeprefix("member_"))
    shipped = load_file(str(ctx.weights / f"member_{k}.safetensors"))
    shipped_job = next(j for j in ctx.manifest.provenance.jobs if args.fold in (j.folds or []))
    results = {}
    for run in args.runs:
        job = json.loads((run / "log.jsonl").read_text().splitlines()[0])  # the job's first record: how it ran
        state = stored_state(ctx, load_best_state(run / args.fold / BEST))
        same = set(state) == set(shipped) and all(torch.equal(state[n], shipped[n]) for n in shipped)
        found = rebuilt_against_shipped(ctx, k, state)
        results[run.name] = {"command": job.get("command"), "git": job.get("git"),
                             "environment": job.get("environment"), "bit_identical": same, **found}
        print(f"{run.name}: bit-identical {same}; AUC {found['auc_rebuilt']:.4f} vs {found['auc_shipped']:.4f}, "
              f"classes agree {found['class_agreement']:.1%}, max |difference| {found['max_abs_difference']:.3f}, "
              f"median {found['median_abs_difference']:.4f}", flush=True)
    write_tool_record(args.json, "retrain_spread.py", argv, {
        "git": git_state(), "fold": args.fold, "member": member,
        "shipped_job_environment": shipped_job.environment,
        "runs": results,
        "largest_auc_difference": max(abs(r["auc_difference"]) for r in results.values()),
        "lowest_class_agreement": min(r["class_agreement"] for r in results.values()),
        "bounds": {"auc_difference": RETRAIN_AUC_GAP, "class_agreement": RETRAIN_CLASS_AGREEMENT},
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
