"""The results half of ``amf audit`` (:mod:`amf.audit.checks`): the committed tables recomputed from the committed
per-figure files, and the numbers of README.md and docs/results.md held against them.

- ``crossval.json``: every row and mode recomputed from its ``heldout_<row>_<mode>.csv`` (scores, labels and
  each domain's threshold) with the same evaluator code and bootstrap seed; each domain's threshold and Otsu
  cut re-derived from ``oof_<row>_<mode>.csv`` where the row committed one.
- ``crossval.md``: re-rendered from ``crossval.json``, byte for byte.
- ``compare.json``: every paired comparison recomputed from the two rows' per-figure files, and the ship gate's
  verdict where one is recorded.
- ``cut_rules.json`` (``tools/cut_rules.py``): every cut rule's cut, balanced accuracy and gap on every held-out
  domain recomputed from the rows' per-figure and membership files.
- the docs: every generated block (``<!-- amf:table ... -->`` ... ``<!-- amf:end -->``) re-rendered from the
  JSON, and every claim of ``docs/claims.toml`` (a number in a sentence, with its source and key) found in
  its file with the value the source holds. Numbers in prose outside both are not checked (docs/audit.md).
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from amf.audit.context import CANNOT, FAIL, PASS, Context, Finding, lodo_rows, read_csv
from amf.errors import AmfError
from amf.files import read_json

#: Keys of a crossval.json entry that record how it was made, not what it measured.
NOT_MEASURED = ("run", "blend", "folds", "tta", "precision", "bootstrap", "provenance")  # how a row was scored
CLAIMS = Path("docs") / "claims.toml"
DOCS = (Path("README.md"), Path("docs") / "results.md", Path("docs") / "results-log.md", Path("docs") / "benchmark.md",
        Path("docs") / "audit.md")
CUT_RULES = "cut_rules.json"  # tools/cut_rules.py's record in the results folder
BLOCK = re.compile(r"<!-- amf:table (?P<args>[^>]*?) -->\n(?P<body>.*?)<!-- amf:end -->", re.S)


def check_results(ctx: Context, intervals: bool = False) -> Iterator[Finding]:
    """``intervals``: also recompute every bootstrap interval (``amf audit --full``: minutes); without it every
    other number is recomputed and the intervals are taken as recorded."""
    rows = lodo_rows(ctx)
    if not rows:
        yield Finding("results", CANNOT, f"no {ctx.results / 'crossval.json'}")
        return
    yield from check_crossval(ctx, rows, intervals)
    yield check_markdown(ctx, rows)
    yield check_compare(ctx, intervals)
    yield check_cut_rules(ctx)
    yield from check_docs(ctx, rows)


# ------------------------------------------------------------------------------------------ crossval.json


def recompute(ctx: Context, row: str, mode: str, record: dict, intervals: bool = True) -> tuple[dict, list[str]]:
    """``record`` recomputed from the row's committed files (its bootstrap intervals only with ``intervals``); and
    what could not be (kept as recorded)."""
    from amf.training.crossval import evaluate_heldout, summarize_heldout
    from amf.training.rescore import HeldOut, OutOfFold
    from amf.training.threshold import threshold_candidates

    figures = read_csv(ctx.results / f"heldout_{row}_{mode}.csv")
    oof_path = ctx.results / f"oof_{row}_{mode}.csv"
    oof_rows = read_csv(oof_path) if oof_path.is_file() else None
    method = next(iter(record["domains"].values()))["threshold"]["method"]
    heldout, kept = [], []
    for domain in dict.fromkeys(f["domain"] for f in figures):
        mine = [f for f in figures if f["domain"] == domain]
        labels = np.array([f["label"] == "atypical" for f in mine], dtype=np.int64)
        probs = np.array([float(f["p_atypical"]) for f in mine])
        recorded = record["domains"][domain]["threshold"]
        thresholds = {method: {"value": float(mine[0]["threshold"])}, "otsu": {"value": recorded["otsu"]}}
        oof, folds = None, []
        if oof_rows is not None:
            rows = [r for r in oof_rows if r["heldout_domain"] == domain]
            folds = list(dict.fromkeys(r["fold"] for r in rows))
            oof_p = np.array([float(r["p_atypical"]) for r in rows])
            oof_y = np.array([r["label"] == "atypical" for r in rows], dtype=np.int64)
            oof = OutOfFold(np.array([r["image"] for r in rows]), np.array([folds.index(r["fold"]) for r in rows]),
                            oof_y, oof_p)
            thresholds = threshold_candidates(oof_p, oof_y)
        heldout.append(HeldOut(domain, record["domains"][domain]["members"], [f["image"] for f in mine], labels,
                               probs, oof, thresholds, folds, oof_count=recorded.get("oof_n", 0)))
    if oof_rows is None:
        kept = ["threshold", "otsu"]
    ev = evaluate_heldout(heldout, method, "audit", record["bootstrap"] if intervals else 0)
    return summarize_heldout(heldout, ev, method), kept


def differences(a: object, b: object, path: str = "", intervals: bool = True) -> Iterator[str]:
    """Paths where two JSON values differ (numbers by more than 1e-12); without ``intervals``, the bootstrap
    intervals (``*_ci95``) are left out."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if intervals or not str(k).endswith("_ci95"):
                yield from differences(a.get(k), b.get(k), f"{path}.{k}" if path else str(k), intervals)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from differences(x, y, f"{path}[{i}]", intervals)
    elif a is None and isinstance(b, float) and math.isnan(b):
        return  # an undefined number: null in the JSON, NaN when recomputed
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        if not (a == b or (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-12):
            yield f"{path}: recorded {a!r}, recomputed {b!r}"
    elif a != b:
        yield f"{path}: recorded {a!r}, recomputed {b!r}"


def _points(x: object) -> object:
    """``x`` without its bootstrap intervals (``*_ci95``)."""
    if isinstance(x, dict):
        return {k: _points(v) for k, v in x.items() if not str(k).endswith("_ci95")}
    return [_points(v) for v in x] if isinstance(x, list) else x


def _count_numbers(x: object) -> int:
    if isinstance(x, dict):
        return sum(_count_numbers(v) for v in x.values())
    if isinstance(x, list):
        return sum(_count_numbers(v) for v in x)
    return int(isinstance(x, (int, float)) and not isinstance(x, bool))


def audit_row(ctx: Context, row: str, mode: str, record: dict, intervals: bool = True) -> Finding:
    """One row and mode of crossval.json against its recomputation."""
    name = f"results.crossval.{row}.{mode}"
    if not (ctx.results / f"heldout_{row}_{mode}.csv").is_file():
        return Finding(name, FAIL, f"heldout_{row}_{mode}.csv, its per-figure file, is missing")
    fresh, kept = recompute(ctx, row, mode, record, intervals)
    measured = {k: v for k, v in record.items() if k not in NOT_MEASURED}
    diff = list(differences(measured, fresh, intervals=intervals))
    n = _count_numbers(measured if intervals else _points(measured))
    if diff:
        return Finding(name, FAIL, f"{len(diff)} number(s) differ from the per-figure file, first {diff[0]}")
    bounds = "" if intervals else " (bootstrap intervals as recorded: --full recomputes them)"
    if kept:
        return Finding(name, PASS, f"{n} numbers recomputed from heldout_{row}_{mode}.csv; the OOF and Otsu "
                                   f"thresholds as recorded (no committed oof file to re-derive them){bounds}")
    return Finding(name, PASS, f"{n} numbers recomputed, each domain's thresholds re-derived from "
                               f"oof_{row}_{mode}.csv{bounds}")


def check_crossval(ctx: Context, rows: dict, intervals: bool) -> Iterator[Finding]:
    """Every row and mode; with ``intervals`` in parallel over the cores (each bootstrap takes seconds)."""
    jobs = [(ctx, row, mode, record, intervals) for row, modes in rows.items() for mode, record in modes.items()]
    if not intervals:
        yield from (audit_row(*job) for job in jobs)
        return
    with _pool() as pool:
        yield from pool.map(audit_row, *zip(*jobs, strict=True))


def _pool():
    import os
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    return ProcessPoolExecutor(max_workers=len(os.sched_getaffinity(0)), mp_context=get_context("spawn"))


def check_markdown(ctx: Context, rows: dict) -> Finding:
    from amf.training.crossval import markdown

    path = ctx.results / "crossval.md"
    have = path.read_text() if path.is_file() else ""
    want = markdown(rows, ctx.results)
    if have == want:
        return Finding("results.crossval_md", PASS, f"{path} is crossval.json rendered, byte for byte")
    line = next(i for i, (a, b) in enumerate(zip([*have.splitlines(), ""], [*want.splitlines(), ""])) if a != b)
    return Finding("results.crossval_md", FAIL, f"{path} line {line + 1} differs from crossval.json rendered")


def _compare_one(ctx: Context, r: dict, intervals: bool = True) -> str | None:
    from amf.training.crossval import compare, heldout_file, ship_gate

    (a_csv, a_rule), (b_csv, b_rule) = (heldout_file(ctx.results, x) for x in (r["a"], r["b"]))
    fresh = compare(a_csv, b_csv, n_resamples=r["resamples"] if intervals else 0, seed=r["seed"],
                    thresholds=r.get("thresholds", "own"), rules=(a_rule, b_rule))
    if "gate" in r:  # the ship gate's verdict: from the recomputed intervals, or without them from the recorded ones
        fresh["gate"] = ship_gate(fresh if intervals else r)
    keys = [k for k in r if k not in ("a", "b", "resamples")]
    diff = list(differences({k: r[k] for k in keys}, {k: fresh[k] for k in keys}, intervals=intervals))
    return f"{r['b']} - {r['a']}: {diff[0]}" if diff else None


def check_compare(ctx: Context, intervals: bool) -> Finding:
    path = ctx.results / "compare.json"
    if not path.is_file():
        return Finding("results.compare", CANNOT, f"no {path}")
    records = read_json(path, AmfError)
    if intervals:
        with _pool() as pool:
            problems = [p for p in pool.map(_compare_one, [ctx] * len(records), records) if p]
    else:
        problems = [p for p in (_compare_one(ctx, r, False) for r in records) if p]
    if problems:
        return Finding("results.compare", FAIL, f"{path}: {problems[0]}")
    what = "with their paired bootstrap intervals" if intervals else "(their intervals as recorded: --full)"
    return Finding("results.compare", PASS,
                   f"all {len(records)} paired comparisons recompute from the per-figure files {what}")


def check_cut_rules(ctx: Context) -> Finding:
    from amf.training.cut_rules import RULES, cut_gaps

    path = ctx.results / CUT_RULES
    if not path.is_file():
        return Finding("results.cut_rules", CANNOT, f"no {path}")
    record = read_json(path, AmfError)
    fresh = {"rules": list(RULES), "rows": {spec: cut_gaps(ctx.results, spec) for spec in record["rows"]}}
    diff = list(differences({k: record[k] for k in fresh}, fresh))
    if diff:
        return Finding("results.cut_rules", FAIL, f"{path}: {diff[0]}")
    return Finding("results.cut_rules", PASS, f"{len(fresh['rows'])} row(s) x {len(RULES)} cut rules recompute from "
                                              "the per-figure and membership files")


# ------------------------------------------------------------------------------------------------- docs


def render_block(args: str, ctx: Context, rows: dict) -> str:
    """The text of a generated block: ``crossval ROW MODE`` (its per-domain table), ``headline ROW MODE`` (the short
    table of the README: each held-out domain's balanced accuracy at Otsu's cut, the shipped rule, and AUC),
    ``ablation`` (every row),
    ``thresholds`` (every row's threshold rules), ``compare A B`` (a paired comparison of two ``ROW:MODE``),
    ``domains A B`` (the same comparison on each held-out domain), ``gate A B`` (the ship gate's verdict on B in
    place of A, domain by domain) or ``cuts ROW:MODE...`` (each cut rule's gap on every held-out domain)."""
    from amf.training.crossval import ablation_table, domain_table, threshold_rules_table

    kind, *rest = args.split()
    if kind == "crossval" and len(rest) == 2:
        return "\n".join(domain_table(rows[rest[0]][rest[1]])) + "\n"
    if kind == "headline" and len(rest) == 2:
        return "\n".join(headline_table(rows[rest[0]][rest[1]])) + "\n"
    if kind == "ablation" and not rest:
        return "\n".join(ablation_table(rows)) + "\n"
    if kind == "thresholds" and not rest:
        return "\n".join(threshold_rules_table(rows, ctx.results)) + "\n"
    if kind == "domains" and len(rest) >= 2 and len(rest) % 2 == 0:
        return "\n".join(per_domain_table(read_json(ctx.results / "compare.json", AmfError), rest)) + "\n"
    if kind == "cuts" and rest:
        return "\n".join(cuts_table(read_json(ctx.results / CUT_RULES, AmfError), rest)) + "\n"
    if kind == "gate" and len(rest) >= 2 and len(rest) % 2 == 0:
        return "\n".join(gate_table(read_json(ctx.results / "compare.json", AmfError), rest)) + "\n"
    if kind == "compare" and len(rest) >= 2 and len(rest) % 2 == 0:
        records = read_json(ctx.results / "compare.json", AmfError)
        lines = ["| A | B | Δ mean BA [95% CI] | Δ mean AUC [95% CI] |", "|---|---|---|---|"]
        for a, b in zip(rest[::2], rest[1::2], strict=True):
            r = next((r for r in records if (r["a"], r["b"], r.get("thresholds", "own")) == (a, b, "own")), None)
            if r is None:
                raise AmfError(f"compare.json has no {b} - {a}")
            lines.append(f"| {a} | {b} | {_signed(r['balanced_accuracy_difference'], r['balanced_accuracy_ci95'])} "
                         f"| {_signed(r['auc_difference'], r['auc_ci95'])} |")
        return "\n".join(lines) + "\n"
    raise AmfError(f"unknown generated block 'amf:table {args}'")


def per_domain_table(records: list[dict], pairs: list[str]) -> list[str]:
    """B minus A on each held-out domain, for each pair ``A B`` of ``pairs`` (``compare.json`` records that hold
    ``per_domain``), TUPAC16 (the only other lab) among them."""
    lines = ["| A | B | held-out domain | Δ BA [95% CI] | Δ AUC [95% CI] |", "|---|---|---|---|---|"]
    for a, b in zip(pairs[::2], pairs[1::2], strict=True):
        r = next((r for r in records if (r["a"], r["b"], r.get("thresholds", "own")) == (a, b, "own")), None)
        if r is None or "per_domain" not in r:
            raise AmfError(f"compare.json has no per-domain {b} - {a}: run amf crossval --compare {a} {b}")
        for domain, d in r["per_domain"].items():
            ba = _signed(d["balanced_accuracy_difference"], d["balanced_accuracy_ci95"])
            lines.append(f"| {a} | {b} | {domain} | {ba} | {_signed(d['auc_difference'], d['auc_ci95'])} |")
    return lines


def gate_table(records: list[dict], pairs: list[str]) -> list[str]:
    """The ship gate's verdict (``amf crossval --compare A B --gate``) on each candidate B in place of its incumbent
    A, one line per held-out domain in the gate's order (TUPAC16 first) and one for the candidate."""
    lines = ["| incumbent A | candidate B | held-out domain | Δ BA [95% CI] | Δ AUC [95% CI] | verdict |",
             "|---|---|---|---|---|---|"]
    for a, b in zip(pairs[::2], pairs[1::2], strict=True):
        r = next((r for r in records if (r["a"], r["b"], r.get("thresholds", "own")) == (a, b, "own")), None)
        if r is None or "gate" not in r:
            raise AmfError(f"compare.json has no gate verdict on {b} in place of {a}: run amf crossval --compare "
                           f"{a} {b} --gate")
        for domain, g in r["gate"]["domains"].items():
            d = r["per_domain"][domain]
            ba = _signed(d["balanced_accuracy_difference"], d["balanced_accuracy_ci95"])
            lines.append(f"| {a} | {b} | {domain} | {ba} | {_signed(d['auc_difference'], d['auc_ci95'])} "
                         f"| {'pass' if g['passed'] else 'fail'} |")
        lines.append(f"| {a} | {b} | **every domain** | | | **{'passes' if r['gate']['passed'] else 'fails'}** |")
    return lines


def cuts_table(record: dict, specs: list[str]) -> list[str]:
    """``tools/cut_rules.py``'s record for the rows ``specs``: each rule's balanced-accuracy gap to the hindsight-best
    on every held-out domain, its worst, and the rule the worst gaps choose (marked)."""
    lines = []
    for spec in specs:
        if spec not in record["rows"]:
            raise AmfError(f"{CUT_RULES} has no row {spec}: run python tools/cut_rules.py {spec} --json ...")
        r = record["rows"][spec]
        if not lines:
            lines = [f"| row | cut rule | {' | '.join(r['domains'])} | worst domain |",
                     "|---|---|" + "---|" * (len(r["domains"]) + 1)]
        for rule in record["rules"]:
            gaps = " | ".join(f"{d['rules'][rule]['gap']:.3f}" for d in r["domains"].values())
            worst = r["worst"][rule]
            mark = "**" if rule == r["chosen"] else ""
            lines.append(f"| {spec} | {mark}{rule}{mark} | {gaps} "
                         f"| {mark}{worst['gap']:.3f}{mark} ({worst['domain']}) |")
    return lines


def headline_table(record: dict) -> list[str]:
    lines = ["| held-out domain | figures (atypical) | balanced accuracy | ROC AUC |", "|---|---|---|---|"]
    for domain, d in record["domains"].items():
        lines.append(f"| {domain} | {d['n']} ({d['atypical']}) | {d['balanced_accuracy_at_otsu']:.3f} | "
                     f"{d['roc_auc']:.3f} |")
    m = record["mean"]
    lines.append(f"| **mean of the {len(record['domains'])} domains** | | **{m['balanced_accuracy_at_otsu']:.3f}** | "
                 f"**{m['roc_auc']:.3f}** |")
    return lines


def _signed(x: float, ci: list[float]) -> str:
    return f"{x:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]".replace("-", "−")


def render_docs(ctx: Context, text: str) -> str:
    rows = lodo_rows(ctx)
    return BLOCK.sub(lambda m: f"<!-- amf:table {m['args']} -->\n{render_block(m['args'], ctx, rows)}<!-- amf:end -->",
                     text)


def claim_value(ctx: Context, source: str, key: list) -> object:
    data = read_json(ctx.root / source, AmfError)
    for k in key:  # a key, a list index, or a table selecting the list entry whose fields match it
        data = next(x for x in data if all(x.get(f) == v for f, v in k.items())) if isinstance(k, dict) else data[k]
    return data


def claim_number(ctx: Context, claim: dict, key: list) -> object:
    """One placeholder's value: the source's value at ``key``; with ``op = "difference"`` or ``"ratio"``,
    ``key`` is a pair of keys and the value their difference (e.g. a threshold's gap to the hindsight-best) or
    quotient (e.g. a speed-up measured side by side)."""
    op = claim.get("op")
    if op in ("difference", "ratio"):
        a, b = (claim_value(ctx, claim["source"], k) for k in key)
        return a - b if op == "difference" else a / b
    if op is not None:
        raise AmfError(f"claim '{claim['id']}': unknown op {op!r} (difference or ratio)")
    return claim_value(ctx, claim["source"], key)


def format_claim(value: object, fmt: str) -> str:
    text = format(value, fmt)
    return text.replace("-", "−") if fmt.startswith("+") else text


def claims(ctx: Context) -> list[dict]:
    path = ctx.root / CLAIMS
    return tomllib.loads(path.read_text())["claim"] if path.is_file() else []


def check_docs(ctx: Context, rows: dict) -> Iterator[Finding]:
    for doc in DOCS:
        path = ctx.root / doc
        if not path.is_file():
            yield Finding(f"results.docs.{doc}", CANNOT, f"no {path}")
            continue
        text = path.read_text()
        blocks = list(BLOCK.finditer(text))
        bad = []
        for m in blocks:
            want = render_block(m["args"], ctx, rows)
            if m["body"] != want:
                line = text[:m.start()].count("\n") + 2
                got_lines, want_lines = m["body"].splitlines(), want.splitlines()
                i = next((i for i, (a, b) in enumerate(zip(got_lines, want_lines)) if a != b),
                         min(len(got_lines), len(want_lines)))
                bad.append(f"{doc}:{line + i} (block 'amf:table {m['args']}') differs from the JSON it renders")
        for c in (c for c in claims(ctx) if Path(c["file"]) == doc):
            formats = c.get("formats") or [c.get("format", ".3f")] * len(c["keys"])
            values = [format_claim(claim_number(ctx, c, k), f) for k, f in zip(c["keys"], formats, strict=True)]
            sentence = c["text"].format(*values)
            if sentence not in text:
                bad.append(f"{doc}: claim '{c['id']}' should read \"{sentence}\" ({c['source']})")
        n = len([c for c in claims(ctx) if Path(c["file"]) == doc])
        yield Finding(f"results.docs.{doc}", FAIL if bad else PASS, "; ".join(bad[:3]) if bad else
                      f"{len(blocks)} generated table(s) and {n} claim(s) match their sources")
