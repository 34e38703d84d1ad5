"""Runs the audit's checks in order, group by group, and collects their findings (``amf audit``)."""

from __future__ import annotations

import time
from collections.abc import Callable

from amf.audit import results as audit_results
from amf.audit.checks import (
    check_bundled_stack,
    check_data,
    check_leakage,
    check_provenance,
    check_threshold,
    check_tree,
    check_weights,
)
from amf.audit.context import FAIL, Check, Context, Finding
from amf.errors import AmfError


def checks(full: bool = False) -> list[tuple[str, Check]]:
    """The groups in order. ``full`` adds the slow re-scoring: the out-of-fold patches through the shipped members,
    and every bootstrap interval of the results recomputed (docs/audit.md gives both costs)."""
    return [
        ("tree", check_tree),
        ("weights", check_weights),
        ("data", check_data),
        ("bundled_stack", check_bundled_stack),
        ("threshold", lambda ctx: check_threshold(ctx, full)),
        ("leakage", check_leakage),
        ("provenance", check_provenance),
        ("results", lambda ctx: audit_results.check_results(ctx, full)),
    ]


def run_audit(ctx: Context, only: list[str] | None = None, full: bool = False,
              report: Callable[[Finding], None] = lambda f: None,
              seconds: dict[str, float] | None = None) -> list[Finding]:
    """Run every check (or those named in ``only``); ``report`` sees each finding as it comes, ``seconds``
    (when given) gets each group's wall time."""
    findings = []
    for name, check in checks(full):
        if only and name not in only:
            continue
        start = time.perf_counter()
        try:
            for finding in check(ctx):
                findings.append(finding)
                report(finding)
        except (AmfError, OSError, KeyError, ValueError, TypeError) as exc:
            finding = Finding(name, FAIL, f"the check itself stopped: {type(exc).__name__}: {exc}")
            findings.append(finding)
            report(finding)
        if seconds is not None:
            seconds[name] = round(time.perf_counter() - start, 1)
    return findings
