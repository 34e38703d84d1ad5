"""Threshold selection on out-of-fold scores: max balanced accuracy, Youden's J, Otsu."""

import numpy as np
import pytest

from amf.training.threshold import (
    choose_threshold,
    max_balanced_accuracy_threshold,
    mean_class_recall,
    otsu_threshold,
    safe_auc,
    threshold_candidates,
    youden_threshold,
)


def test_separable_scores_give_perfect_cut_between_classes():
    s = np.array([0.1, 0.2, 0.3, 0.6, 0.7])
    y = np.array([0, 0, 0, 1, 1])
    for t in (max_balanced_accuracy_threshold(s, y), youden_threshold(s, y)):
        assert 0.3 < t < 0.6
        assert mean_class_recall(s, y, t) == 1.0


def test_balanced_accuracy_rule_is_greater_or_equal():
    s, y = np.array([0.5, 0.4]), np.array([1, 0])
    assert mean_class_recall(s, y, 0.5) == 1.0
    assert mean_class_recall(s, y, 0.50001) == 0.5


def test_max_ba_matches_brute_force_and_prefers_cut_near_half():
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.2).astype(int)
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.15), 0, 1)
    t = max_balanced_accuracy_threshold(s, y)
    brute = max(mean_class_recall(s, y, c) for c in np.unique(s))
    assert mean_class_recall(s, y, t) == pytest.approx(brute)
    assert mean_class_recall(s, y, youden_threshold(s, y)) == pytest.approx(brute)  # J = 2 BA - 1
    # plateau: any cut between 0.2 and 0.8 is perfect; the one nearest 0.5 is chosen
    assert max_balanced_accuracy_threshold(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 0.5


def test_otsu_splits_two_modes():
    rng = np.random.default_rng(1)
    s = np.concatenate([rng.normal(0.2, 0.03, 200), rng.normal(0.8, 0.03, 50)])
    t = otsu_threshold(s)
    assert np.mean(s[:200] >= t) < 0.02 and np.all(s[200:] >= t)  # the two modes fall on either side
    assert otsu_threshold(np.full(4, 0.3)) == 0.3


def test_one_class_and_candidates():
    s, y = np.array([0.2, 0.9]), np.array([0, 0])
    assert choose_threshold(s, y, "balanced_accuracy") == 0.5
    assert choose_threshold(s, y, "youden") == 0.5
    assert safe_auc(s, y) is None
    c = threshold_candidates(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    assert set(c) == {"balanced_accuracy", "youden", "otsu"}
    assert all(0 <= v["oof_balanced_accuracy"] <= 1 for v in c.values())
    with pytest.raises(ValueError):
        choose_threshold(s, y, "median")
    with pytest.raises(ValueError):
        threshold_candidates(np.array([np.nan, 0.1]), np.array([0, 1]))


def test_transfer_threshold_maximises_the_mean_over_domains_and_nested_never_sees_its_domain():
    from amf.training.threshold import mean_class_recall, nested_transfer_thresholds, transfer_threshold

    rng = np.random.default_rng(0)
    domains = []
    for shift in (0.0, 0.1, -0.1):  # the same separation, the score scale shifted per domain
        y = (rng.random(200) < 0.25).astype(int)
        domains.append((np.clip(0.5 + shift + (y - 0.5) * 0.4 + rng.normal(0, 0.12, 200), 0, 1), y))
    t = transfer_threshold(domains)
    mean_at = lambda c: np.mean([mean_class_recall(s, y, c) for s, y in domains])  # noqa: E731
    grid = np.linspace(0, 1, 201)
    assert mean_at(t) >= max(mean_at(c) for c in grid) - 1e-9
    nested = nested_transfer_thresholds(domains)
    assert nested[1] == transfer_threshold([domains[0], domains[2]]) and len(nested) == 3
    # a big domain does not outweigh a small one: each counts once
    big = (np.repeat(domains[1][0], 10), np.repeat(domains[1][1], 10))
    assert transfer_threshold([domains[0], big, domains[2]]) == t


def test_light_copies_match_their_sources():
    """The CLI modules keep torch- and scikit-learn-free copies of two lists: they must not drift."""
    from amf.evaluation.flat import ANY_SPELLING
    from amf.training.data import NEGATIVE, POSITIVE
    from amf.training.export_cli import METHODS as CLI_METHODS
    from amf.training.threshold import METHODS

    assert CLI_METHODS == METHODS
    assert ANY_SPELLING == {**{v: "atypical" for v in POSITIVE}, **{v: "normal" for v in NEGATIVE}}


def test_threshold_rules_table_names_each_rules_widest_miss_and_counts_rows_within_the_target():
    from amf.training.crossval import THRESHOLD_RULES, threshold_rules_table

    def domain(best: float, **at: float) -> dict:
        keys = dict(zip(("oof", "otsu", "half", "nested"), THRESHOLD_RULES.values(), strict=True))
        return {"best_threshold_balanced_accuracy": best, **{keys[k]: v for k, v in at.items()}}

    results = {"row": {"tta": {"domains": {
        "A": domain(0.90, oof=0.89, otsu=0.85, half=0.90, nested=0.88),
        "B": domain(0.80, oof=0.75, otsu=0.79, half=0.78, nested=None),  # nested: no other domain chose a cut
    }}}, "one-domain": {"tta": {"domains": {"A": domain(0.9, oof=0.9, otsu=0.9, half=0.9, nested=None)}}}}
    header, _, row, total = threshold_rules_table(results)
    assert header.count("widest miss") == len(THRESHOLD_RULES)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:2] == ["row", "on"]
    assert cells[2:] == ["0.8200", "0.050 (B)", "0.8200", "0.050 (A)", "0.8400", "0.020 (B)", "0.8800", "0.020 (A)"]
    assert [c.strip() for c in total.strip("|").split("|")][3::2] == ["0 of 1", "0 of 1", "1 of 1", "1 of 1"]


def test_threshold_rules_table_adds_otsu_on_each_domains_own_scores_from_the_per_figure_file(tmp_path):
    from amf.training.crossval import OWN_OTSU, threshold_rules_table

    rows, by_domain = ["image,domain,label,p_atypical,threshold,class"], {}
    for domain, shift in (("A", 0.0), ("B", -0.28)):  # B scores lower: only a cut of its own separates it
        s = np.array([0.3 + shift + i / 100 for i in range(8)] + [0.8 + shift + i / 100 for i in range(4)])
        y = np.array([0] * 8 + [1] * 4)
        rows += [f"{domain}{i},{domain},{'atypical' if c else 'normal'},{p},0.5,normal" for i, (p, c) in
                 enumerate(zip(s, y, strict=True))]
        by_domain[domain] = mean_class_recall(s, y, otsu_threshold(s))
    (tmp_path / "heldout_row_tta.csv").write_text("\n".join(rows) + "\n")
    domain = {"best_threshold_balanced_accuracy": 1.0, "balanced_accuracy": 0.5, "balanced_accuracy_at_otsu": 0.5,
              "balanced_accuracy_at_0.5": 0.5, "balanced_accuracy_at_transfer_nested": 0.5}
    results = {"row": {"tta": {"domains": {"A": domain, "B": domain}}}}
    header, _, row, _ = threshold_rules_table(results, tmp_path)
    assert header.endswith(f"| {OWN_OTSU}: mean BA | {OWN_OTSU}: widest miss |")
    mean_ba, miss = row.strip("| ").split(" | ")[-2:]
    assert min(by_domain.values()) > 0.9
    assert float(mean_ba) == pytest.approx(np.mean(list(by_domain.values())), abs=1e-4)
    worst = min(by_domain, key=by_domain.get)
    assert miss == f"{1 - by_domain[worst]:.3f} ({worst})"
    assert "n/a | n/a" in threshold_rules_table({"other": results["row"]}, tmp_path)[2]  # no per-figure file


def test_otsu_in_numpy_is_scikit_images_on_every_committed_set_of_out_of_fold_scores():
    """amf.inference.otsu (no scikit-image needed) gives threshold_otsu(scores, nbins=256) exactly: the shipped
    weights' oof.csv, the teacher's, and every held-out domain's OOF scores of every LODO row."""
    import csv
    from pathlib import Path

    from skimage.filters import threshold_otsu

    from amf.inference.otsu import otsu_cut

    root = Path(__file__).resolve().parents[1]
    files = [root / "weights" / "oof.csv", root / "docs" / "results" / "teachers" / "lite0-crop80-ens5_oof.csv",
             *sorted((root / "docs" / "results" / "lodo4").glob("oof_*.csv"))]
    sets = 0
    for path in files:
        rows = list(csv.DictReader(open(path, newline="")))
        for domain in sorted({r.get("heldout_domain") for r in rows}, key=str):
            p = np.array([float(r["p_atypical"]) for r in rows if r.get("heldout_domain") == domain])
            assert otsu_cut(p) == float(threshold_otsu(p, nbins=256)), (path.name, domain)
            sets += 1
    assert sets > 100
