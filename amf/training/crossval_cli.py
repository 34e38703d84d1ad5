"""``amf crossval RUN... --output DIR``: held-out-domain results of training runs (:mod:`amf.training.crossval`).

Run folders are checked here, before torch, scikit-learn and matplotlib are imported (several seconds),
so a mistyped folder fails at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from amf.errors import AmfError
from amf.progress import interactive
from amf.training.run_folder import RunFolder


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="*", type=Path, help="training run folders with LODO folds")
    p.add_argument("--compare", nargs=2, action="append", default=[], metavar=("A", "B"),
                   help="instead: B minus A, each RUN_NAME:MODE already scored in --output (e.g. lite0-128:plain "
                        "lite0-128:tta), mean held-out BA and AUC with a paired bootstrap 95%% interval (repeatable); "
                        "RUN_NAME:MODE@otsu classifies that row at Otsu's cut on its out-of-fold scores instead")
    p.add_argument("--blend", nargs="+", metavar="NAME ROW:MODE",
                   help="instead: write row NAME, the models of two or more rows already scored in --output together "
                        "(e.g. --blend two-students ROW:tta ROW-seed1:tta): their held-out and out-of-fold scores "
                        "averaged figure by figure, thresholds chosen again; no model is run (amf.training.blend)")
    p.add_argument("--gate", action="store_true",
                   help="with --compare A B: the ship gate, B (the candidate) in place of A (the incumbent) only if on "
                        "every held-out domain the paired 95%% interval of B minus A balanced accuracy (at each row's "
                        "shipped cut: give ROW:MODE@otsu for an Otsu export) and of ROC AUC has a lower bound >= 0; "
                        "prints each domain's verdict, TUPAC16 first, records it in compare.json and exits with "
                        "status 1 when a candidate fails (amf.training.crossval.ship_gate)")
    p.add_argument("--at-thresholds-of-a", action="store_true",
                   help="with --compare: classify B's scores at A's thresholds (e.g. ROW:tta ROW:tta-bf16: what "
                        "--bf16 does at prediction time, with the fp32 threshold the weights ship with)")
    p.add_argument("--output", type=Path, required=True, help="folder for crossval.json/.md, ROC PNGs, CSVs")
    p.add_argument("--tta", choices=["on", "off", "both"], default="both", help="score with TTA, without, or both")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CIs (0 = none)")
    p.add_argument("--views", type=int, action="append", default=[], metavar="N",
                   help="also score with the first N of the shipped test-time views (repeatable; accuracy vs latency)")
    p.add_argument("--bf16", action="store_true",
                   help="also score every mode in bf16 autocast (modes named <mode>-bf16, e.g. tta-bf16), to measure "
                        "the engine's opt-in bf16 against fp32 with --compare ROW:tta ROW:tta-bf16")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--rescore", action="store_true",
                   help="score the runs again even where crossval.json already holds them with the same folds, views "
                        "and bootstrap (e.g. to record the provenance of a row scored before it was recorded)")
    p.add_argument("--force", action="store_true",
                   help="write into an --output folder that holds other files than crossval's own")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def check(args: argparse.Namespace) -> None:
    """Everything that can fail without the heavy imports, first."""
    if args.gate and not args.compare:
        raise AmfError("--gate judges a --compare A B: give the incumbent A and the candidate B")
    if not args.runs and not args.compare and not args.blend:
        raise AmfError("give training run folders to score, --compare A B or --blend NAME ROW:MODE ROW:MODE")
    if args.blend and (len(args.blend) < 3 or ":" in args.blend[0]):
        raise AmfError("--blend NAME ROW:MODE ROW:MODE [...]: a name for the new row, then two rows or more")
    for run in args.runs:
        RunFolder(run).check_is_run(hint="train one with amf train --lodo-only")
    out = Path(args.output)
    if out.is_file():
        raise AmfError(f"--output {args.output} is a file; name a folder")
    if args.runs and out.is_dir() and any(out.iterdir()) and not (out / "crossval.json").is_file() and not args.force:
        raise AmfError(f"--output {out} holds other files and no crossval.json; name an empty or a crossval folder, "
                       "or pass --force to write crossval's files into it")
    if any(n < 1 for n in args.views):
        raise AmfError("--views must be >= 1")
    if args.bootstrap < 0:
        raise AmfError(f"--bootstrap must be 0 or more, got {args.bootstrap}")


def run(args: argparse.Namespace) -> int:
    check(args)
    if args.blend:
        return blend_rows(args)
    if args.compare:
        return compare_rows(args)
    from amf.evaluation.summary import num_text
    from amf.training.crossval import crossval

    previous = Path(args.output) / "crossval.json"
    if previous.is_file():
        import json

        kept = len(json.loads(previous.read_text()))
        print(f"amf crossval: adding to {previous} ({kept} row(s) there; a row is scored again when its folds, views "
              "or bootstrap changed)", file=sys.stderr)
    modes = {"on": ["tta"], "off": ["plain"], "both": ["plain", "tta"]}[args.tta]
    modes += [f"views{n}" for n in args.views if f"views{n}" not in modes]
    modes += [f"{mode}-bf16" for mode in modes] if args.bf16 else []
    results = crossval(args.runs, args.output, modes, args.bootstrap, args.threads,
                       progress=not args.no_progress and interactive(), rescore=args.rescore)
    for name, by_mode in results.items():
        for mode, r in by_mode.items():
            m = r["mean"]
            print(f"{name} [{mode}]: mean held-out BA {num_text(m['balanced_accuracy'])} at each domain's OOF "
                  f"threshold, {num_text(m.get('balanced_accuracy_at_transfer_nested'))} at the transfer threshold "
                  f"chosen on the other domains; AUC {num_text(m['roc_auc'])}")
    print(f"written: {args.output / 'crossval.md'}")
    return 0


def compare_rows(args: argparse.Namespace) -> int:
    """``--compare``: lever effects with paired intervals, appended to ``compare.json`` in ``--output``; with
    ``--gate``, each B judged as a replacement of its A, and status 1 when one fails (a verdict, as ``amf audit``'s
    failed checks: status 2 stays for a foreseen error)."""
    from amf.files import read_json, write_json
    from amf.training.crossval import compare, heldout_file, ship_gate

    out = Path(args.output)
    path = out / "compare.json"
    records = read_json(path, AmfError) if path.is_file() else []
    failed: list[str] = []  # the candidates the gate refused
    for a, b in args.compare:
        (a_csv, a_rule), (b_csv, b_rule) = heldout_file(out, a), heldout_file(out, b)
        thresholds = "a" if args.at_thresholds_of_a else "own"
        r = compare(a_csv, b_csv, n_resamples=args.bootstrap or 1000, thresholds=thresholds, rules=(a_rule, b_rule))
        r.update(a=a, b=b)
        same = [i for i, x in enumerate(records)
                if (x["a"], x["b"], x.get("thresholds", "own")) == (a, b, thresholds)]
        if args.gate or (same and "gate" in records[same[0]]):  # a verdict once recorded is kept up to date
            r["gate"] = ship_gate(r)
        if same:  # computed again: in its place, so the file's order (and its diff) stays
            records[same[0]] = r
        else:
            records.append(r)
        at = " at the thresholds of A" if thresholds == "a" else ""
        print(f"{b}{at} - {a} ({len(r['domains'])} domain(s)): "
              f"mean held-out BA {r['balanced_accuracy_difference']:+.3f} "
              f"[{r['balanced_accuracy_ci95'][0]:+.3f}, {r['balanced_accuracy_ci95'][1]:+.3f}], "
              f"AUC {r['auc_difference']:+.3f} [{r['auc_ci95'][0]:+.3f}, {r['auc_ci95'][1]:+.3f}]")
        for domain, d in r["per_domain"].items():
            print(f"    {domain}: BA {d['balanced_accuracy_difference']:+.3f} "
                  f"[{d['balanced_accuracy_ci95'][0]:+.3f}, {d['balanced_accuracy_ci95'][1]:+.3f}], "
                  f"AUC {d['auc_difference']:+.3f} [{d['auc_ci95'][0]:+.3f}, {d['auc_ci95'][1]:+.3f}]")
        if args.gate:
            say_gate(a, b, r["gate"])
            if not r["gate"]["passed"]:
                failed.append(b)
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, records)
    return 1 if failed else 0


def say_gate(a: str, b: str, gate: dict) -> None:
    """The gate's verdict on B in place of A, one line per held-out domain (TUPAC16 first)."""
    print(f"gate: {b} in place of {a}: {'PASS' if gate['passed'] else 'FAIL'}")
    for domain, d in gate["domains"].items():
        lows = ", ".join(f"{what} low {'n/a' if d[key] is None else format(d[key], '+.3f')}"
                         for what, key in (("BA", "balanced_accuracy_low"), ("AUC", "auc_low")))
        print(f"    {domain}: {'pass' if d['passed'] else 'FAIL'} ({lows})")


def blend_rows(args: argparse.Namespace) -> int:
    """``--blend``: a row of other rows' models together, from their committed scores (:mod:`amf.training.blend`)."""
    from amf.evaluation.summary import num_text
    from amf.training.blend import blend

    name, *specs = args.blend
    results = blend(args.output, name, specs, args.bootstrap)
    for mode, r in results[name].items():
        m = r["mean"]
        print(f"{name} [{mode}] = {' + '.join(r['blend'])}: mean held-out BA {num_text(m['balanced_accuracy'])} at "
              f"each domain's OOF threshold, {num_text(m['balanced_accuracy_at_otsu'])} at Otsu's; AUC "
              f"{num_text(m['roc_auc'])}")
    print(f"written: {args.output / 'crossval.md'}")
    return 0

