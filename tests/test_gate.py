"""``amf crossval --compare A B --gate``: the ship gate, through the command as it is run, on committed-style
per-figure files of a weak and a strong row (no model is run, so this stays fast)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOMAINS = ("Aperio CS2", "TUPAC16")  # in file order; the gate names TUPAC16 first


def write_heldout(path: Path, scores: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> None:
    """A ``heldout_<row>_<mode>.csv`` as :func:`amf.training.crossval.write_heldout_csv` writes it, cut at 0.5."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["image", "domain", "label", "p_atypical", "threshold", "class"])
        for domain in DOMAINS:
            for i, (y, p) in enumerate(zip(labels[domain].tolist(), scores[domain].tolist(), strict=True)):
                w.writerow([f"{domain}/{i:03d}.png", domain, "atypical" if y else "normal", repr(p), "0.5",
                            "atypical" if p >= 0.5 else "normal"])


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """A crossval folder with two rows on the same figures: ``strong`` separates the classes on every domain,
    ``weak`` mixes them, so every resample has the strong row ahead on both metrics."""
    out = tmp_path_factory.mktemp("gate")
    rng = np.random.default_rng(0)
    labels = {d: (rng.random(120) < 0.3).astype(int) for d in DOMAINS}
    strong = {d: 0.2 + 0.6 * y + rng.uniform(-0.1, 0.1, y.size) for d, y in labels.items()}
    weak = {d: np.clip(0.35 + 0.2 * y + rng.normal(0, 0.2, y.size), 0, 1) for d, y in labels.items()}
    write_heldout(out / "heldout_strong_tta.csv", strong, labels)
    write_heldout(out / "heldout_weak_tta.csv", weak, labels)
    return out


def gate(results: Path, a: str, b: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "amf", "crossval", "--compare", a, b, "--gate", "--bootstrap", "200",
                           "--output", str(results)], cwd=ROOT, capture_output=True, text=True, timeout=300)


def recorded(results: Path, a: str, b: str) -> dict:
    return next(r for r in json.loads((results / "compare.json").read_text()) if (r["a"], r["b"]) == (a, b))


def verdict_lines(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("gate: "))
    return lines[start:start + 1 + len(DOMAINS)]


def test_a_candidate_better_on_every_domain_passes(results):
    proc = gate(results, "weak:tta", "strong:tta")
    assert proc.returncode == 0, proc.stderr
    head, *domains = verdict_lines(proc.stdout)
    assert head == "gate: strong:tta in place of weak:tta: PASS"
    assert [line.split(":")[0].strip() for line in domains] == ["TUPAC16", "Aperio CS2"]
    assert all(": pass (BA low +" in line for line in domains)
    g = recorded(results, "weak:tta", "strong:tta")["gate"]
    assert g["passed"] and list(g["domains"]) == ["TUPAC16", "Aperio CS2"]
    assert all(d["balanced_accuracy_low"] >= 0 and d["auc_low"] >= 0 for d in g["domains"].values())


def test_a_candidate_worse_on_every_domain_fails_with_status_1(results):
    proc = gate(results, "strong:tta", "weak:tta")
    assert proc.returncode == 1, proc.stderr
    head, *domains = verdict_lines(proc.stdout)
    assert head == "gate: weak:tta in place of strong:tta: FAIL"
    assert domains[0].startswith("    TUPAC16: FAIL (BA low -")
    r = recorded(results, "strong:tta", "weak:tta")
    assert not r["gate"]["passed"]
    for domain, d in r["gate"]["domains"].items():  # the verdict is the recorded interval's lower bound
        low = r["per_domain"][domain]["balanced_accuracy_ci95"][0]
        assert not d["passed"] and d["balanced_accuracy_low"] == low < 0


def test_a_candidate_against_itself_passes_and_gate_needs_compare(results):
    """A row in its own place differs by zero in every resample: the bound is 0, not below, so it passes (the
    incumbent itself always may stay). ``--gate`` alone is refused with one line and status 2."""
    assert gate(results, "weak:tta", "weak:tta").returncode == 0
    proc = subprocess.run([sys.executable, "-m", "amf", "crossval", "--gate", "--output", str(results)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--gate judges a --compare A B" in proc.stderr


def test_the_docs_block_renders_the_recorded_verdict(results):
    """``<!-- amf:table gate A B -->`` in the docs: each domain's paired differences and verdict, TUPAC16 first."""
    from amf.audit.context import Context
    from amf.audit.results import render_block
    from amf.errors import AmfError

    assert gate(results, "strong:tta", "weak:tta").returncode == 1
    ctx = Context(results / "weights", [], results, root=results)
    lines = render_block("gate strong:tta weak:tta", ctx, {}).splitlines()
    assert [line.split(" | ")[2] for line in lines[2:]] == ["TUPAC16", "Aperio CS2", "**every domain**"]
    assert lines[2].endswith("| fail |") and lines[-1].endswith("| **fails** |")
    with pytest.raises(AmfError, match="no gate verdict on strong:tta in place of strong:tta"):  # never gated
        render_block("gate strong:tta strong:tta", ctx, {})
