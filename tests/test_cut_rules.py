"""The four cut rules of :mod:`amf.training.cut_rules`, measured on a crossval folder written in the committed files'
formats (held-out and out-of-fold scores, membership), and ``tools/cut_rules.py``'s record of them."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from amf.training.cut_rules import RULES, cut_gaps
from amf.training.threshold import (
    domain_otsu_threshold,
    max_balanced_accuracy_threshold,
    mean_class_recall,
    otsu_threshold,
    transfer_threshold,
)

ROOT = Path(__file__).resolve().parents[1]
DOMAINS = ("A", "B", "C")
SHIFT = {"A": 0.0, "B": 0.1, "C": -0.1}  # each lab's scores sit elsewhere, so the cuts differ


def _scores(rng, y: np.ndarray, domain: str) -> np.ndarray:
    return np.clip(0.3 + 0.4 * y + SHIFT[domain] + rng.normal(0, 0.12, y.size), 0, 1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Row ``row:tta``: each domain held out once; its model's out-of-fold scores are the other domains' patches."""
    out = tmp_path_factory.mktemp("cuts")
    rng = np.random.default_rng(1)
    labels = {d: (rng.random(80) < 0.3).astype(int) for d in DOMAINS}
    with open(out / "membership_row.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["image", "sha256", "domain", "group", "label"])
        w.writerows([f"{d}/{i}.png", "0" * 64, d, d, y] for d in DOMAINS for i, y in enumerate(labels[d]))
    with open(out / "heldout_row_tta.csv", "w", newline="") as f, open(out / "oof_row_tta.csv", "w", newline="") as g:
        held, oof = csv.writer(f, lineterminator="\n"), csv.writer(g, lineterminator="\n")
        held.writerow(["image", "domain", "label", "p_atypical", "threshold", "class"])
        oof.writerow(["heldout_domain", "image", "label", "fold", "p_atypical"])
        for d in DOMAINS:
            for i, (y, p) in enumerate(zip(labels[d], _scores(rng, labels[d], d), strict=True)):
                held.writerow([f"{d}/{i}.png", d, "atypical" if y else "normal", repr(float(p)), "0.5", ""])
            for t in (t for t in DOMAINS if t != d):
                for i, (y, p) in enumerate(zip(labels[t], _scores(rng, labels[t], t), strict=True)):
                    oof.writerow([d, f"{t}/{i}.png", "atypical" if y else "normal", f"lodo/{d}/fold0", repr(float(p))])
    return out


def _read(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_each_rule_sees_only_what_an_export_would(folder):
    r = cut_gaps(folder, "row:tta")
    held, oof = _read(folder / "heldout_row_tta.csv"), _read(folder / "oof_row_tta.csv")
    figures = {d: (np.array([float(x["p_atypical"]) for x in held if x["domain"] == d]),
                   np.array([int(x["label"] == "atypical") for x in held if x["domain"] == d])) for d in DOMAINS}
    for d in DOMAINS:
        rows = [x for x in oof if x["heldout_domain"] == d]
        s = np.array([float(x["p_atypical"]) for x in rows])
        of = np.array([x["image"].split("/")[0] for x in rows])
        cuts = {"otsu": otsu_threshold(s), "lodo_transfer": transfer_threshold([figures[t] for t in DOMAINS if t != d]),
                "otsu_domain_mean": domain_otsu_threshold(s, of, "mean"),
                "otsu_domain_median": domain_otsu_threshold(s, of, "median")}
        hs, hy = figures[d]
        best = mean_class_recall(hs, hy, max_balanced_accuracy_threshold(hs, hy))
        got = r["domains"][d]
        assert got["hindsight_best_balanced_accuracy"] == best
        for rule, cut in cuts.items():
            assert got["rules"][rule]["threshold"] == cut
            assert got["rules"][rule]["gap"] == best - mean_class_recall(hs, hy, cut) >= 0
    assert cuts["otsu_domain_mean"] == pytest.approx(np.mean([otsu_threshold(s[of == t]) for t in set(of)]))
    for rule in RULES:
        assert r["worst"][rule]["gap"] == max(d["rules"][rule]["gap"] for d in r["domains"].values())
    assert r["worst"][r["chosen"]]["gap"] == min(w["gap"] for w in r["worst"].values())


def test_a_tie_keeps_the_rule_shipped_today(folder, monkeypatch):
    """Equal worst gaps choose the first of RULES (Otsu's, the rule the weights ship with): no change without a gain."""
    import amf.training.cut_rules as cut_rules

    monkeypatch.setattr(cut_rules, "domain_otsu_threshold", lambda s, d, how: otsu_threshold(s))
    monkeypatch.setattr(cut_rules, "nested_transfer_thresholds", lambda figures: [2.0] * len(figures))  # all normal
    r = cut_gaps(folder, "row:tta")
    assert r["worst"]["otsu_domain_mean"] == r["worst"]["otsu_domain_median"] == r["worst"]["otsu"]
    assert r["worst"]["lodo_transfer"]["gap"] > r["worst"]["otsu"]["gap"] and r["chosen"] == "otsu"


def test_the_tool_records_its_command_and_git_state(folder, tmp_path):
    out = tmp_path / "cuts.json"
    proc = subprocess.run([sys.executable, "tools/cut_rules.py", "row:tta", "--results", str(folder), "--json",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    assert record["command"][:3] == ["python", "tools/cut_rules.py", "row:tta"] and "commit" in record["git"]
    assert record["rules"] == list(RULES) and record["rows"]["row:tta"] == cut_gaps(folder, "row:tta")
    assert "smallest worst-domain gap: " + record["rows"]["row:tta"]["chosen"] in proc.stdout


def test_the_audit_recomputes_the_record_and_renders_its_table(folder, tmp_path):
    from amf.audit.context import FAIL, PASS, Context
    from amf.audit.results import CUT_RULES, check_cut_rules, render_block

    results = tmp_path / "results"
    shutil.copytree(folder, results)
    assert subprocess.run([sys.executable, "tools/cut_rules.py", "row:tta", "--results", str(results), "--json",
                           str(results / CUT_RULES)], cwd=ROOT, capture_output=True, timeout=120).returncode == 0
    ctx = Context(tmp_path / "weights", [], results, root=tmp_path)
    assert check_cut_rules(ctx).status == PASS
    table = render_block("cuts row:tta", ctx, {}).splitlines()
    record = json.loads((results / CUT_RULES).read_text())
    chosen = record["rows"]["row:tta"]["chosen"]
    assert table[0] == "| row | cut rule | A | B | C | worst domain |" and len(table) == 2 + len(RULES)
    assert [line for line in table if "**" in line] == [next(x for x in table if f"| **{chosen}** |" in x)]
    record["rows"]["row:tta"]["domains"]["B"]["rules"]["otsu"]["gap"] += 0.001
    (results / CUT_RULES).write_text(json.dumps(record))
    finding = check_cut_rules(ctx)
    assert finding.status == FAIL and "rows.row:tta.domains.B.rules.otsu.gap" in finding.detail
