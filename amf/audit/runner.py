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
    check_weights,
)
from amf.audit.context import FAIL, Check, Context, Finding
from amf.errors import AmfError


def checks(rescore: bool = True) -> list[tuple[str, Check]]:
    return [
        ("weights", check_weights),
        ("data", check_data),
        ("bundled_stack", check_bundled_stack),
        ("threshold", lambda ctx: check_threshold(ctx, rescore)),
        ("leakage", check_leakage),
        ("provenance", check_provenance),
        ("results", audit_results.check_results),
    ]


def run_audit(ctx: Context, only: list[str] | None = None, rescore: bool = True,
              report: Callable[[Finding], None] = lambda f: None,
              seconds: dict[str, float] | None = None) -> list[Finding]:
    """Run every check (or those named in ``only``); ``report`` sees each finding as it comes, ``seconds``
    (when given) gets each group's wall time."""
    findings = []
    for name, check in checks(rescore):
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
