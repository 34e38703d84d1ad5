"""``amf audit``: check every claim of the repository from what it ships (:mod:`amf.audit.checks`).

One line per check (pass, fail, cannot check, and why); exit 0 when nothing failed, 1 when a check failed
(or, with ``--strict``, could not be checked), 2 for bad usage. Paths are checked here, before torch loads.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from amf.errors import AmfError

GROUPS = ("tree", "weights", "data", "bundled_stack", "threshold", "leakage", "provenance", "results")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from amf.audit.context import DEFAULT_DATA
    from amf.provenance import ROOT

    p.add_argument("--weights", type=Path, default=ROOT / "weights",
                   help="weights folder (default: the shipped weights/)")
    p.add_argument("--data", type=Path, action="append",
                   help=f"folder holding the training data's labels files and images, as recorded in the manifest "
                        f"(repeatable; default {DEFAULT_DATA})")
    p.add_argument("--results", type=Path, default=ROOT / "docs" / "results" / "lodo4",
                   help="the leave-one-domain-out results folder (crossval.json, per-figure CSVs)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write every finding as a JSON record")
    p.add_argument("--only", action="append", choices=GROUPS, help="run only these checks (repeatable)")
    p.add_argument("--full", action="store_true",
                   help="also the slow re-scoring: every out-of-fold patch through its shipped member, and every "
                        "bootstrap interval of the results recomputed (about 10 minutes on 2 cores; the default "
                        "audit takes about one: docs/audit.md)")
    p.add_argument("--retrain", metavar="FOLD",
                   help="also retrain this shipped member (e.g. all/fold0) from the manifest's own job command in a "
                        "temporary folder and compare its weights bit for bit (slow: minutes to an hour)")
    p.add_argument("--strict", action="store_true", help="a check that cannot run here counts as a failure")
    p.add_argument("--write-docs", action="store_true",
                   help="instead of auditing: re-render crossval.md and the generated tables of README.md and "
                        "docs/results.md from the JSON results (claims in prose are not rewritten: the audit names "
                        "those that differ)")


def check(args: argparse.Namespace) -> None:
    if not args.weights.is_dir():
        raise AmfError(f"--weights {args.weights} is not a folder (amf audit checks a clone of the repository, its "
                       "weights, docs and history: run it there, or name the weights with --weights)")
    for d in args.data or []:
        if not d.is_dir():
            raise AmfError(f"--data {d} is not a folder")
    if not args.results.is_dir():
        raise AmfError(f"--results {args.results} is not a folder")
    if args.json is not None and args.json.is_dir():
        raise AmfError(f"--json {args.json} is a folder; name a file")


def run(args: argparse.Namespace) -> int:
    check(args)
    from amf.audit.checks import retrain
    from amf.audit.context import CANNOT, DEFAULT_DATA, FAIL, Context
    from amf.audit.runner import run_audit
    from amf.files import write_json
    from amf.provenance import environment, git_state
    from amf.training.run_folder import args_to_argv, portable_command

    ctx = Context(args.weights, args.data or [DEFAULT_DATA], args.results)
    if args.write_docs:
        return write_docs(ctx)

    def report(finding) -> None:
        print(finding.line(), flush=True)

    seconds: dict[str, float] = {}
    findings = run_audit(ctx, args.only, full=args.full, report=report, seconds=seconds)
    if args.retrain:
        start = time.perf_counter()
        findings.append(retrain(ctx, args.retrain))
        seconds["retrain"] = round(time.perf_counter() - start, 1)
        report(findings[-1])
    failed = [f for f in findings if f.status == FAIL]
    cannot = [f for f in findings if f.status == CANNOT]
    scope = "" if args.full else " (--full also re-scores the out-of-fold patches and the bootstrap intervals)"
    print(f"amf audit: {len(findings) - len(failed) - len(cannot)} passed, {len(failed)} failed, "
          f"{len(cannot)} could not be checked here{scope}")
    if args.json is not None:
        write_json(args.json, {"findings": [f.to_dict() for f in findings], "passed": not failed, "full": args.full,
                               "cannot_check": len(cannot), "seconds": seconds,
                               "minutes_total": round(sum(seconds.values()) / 60, 1), "environment": environment(),
                               "git": git_state(), "command": portable_command(args_to_argv("audit", args))})
    return 1 if failed or (args.strict and cannot) else 0


def write_docs(ctx) -> int:
    """Re-render every generated file from the JSON it shows: crossval.md, and the tables of the docs."""
    from amf.audit.results import DOCS, render_docs
    from amf.files import atomic_write_bytes, read_json
    from amf.training.crossval import markdown

    table = ctx.results / "crossval.md"
    if (ctx.results / "crossval.json").is_file():
        new = markdown(read_json(ctx.results / "crossval.json", AmfError), ctx.results)
        if not table.is_file() or table.read_text() != new:
            atomic_write_bytes(table, new.encode())
            print(f"rewrote {table}")
    for doc in DOCS:
        path = ctx.root / doc
        if not path.is_file():
            continue
        text = path.read_text()
        new = render_docs(ctx, text)
        if new != text:
            atomic_write_bytes(path, new.encode())
            print(f"rewrote the generated tables of {doc}")
    return 0

