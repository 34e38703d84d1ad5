"""Flat mode: a predictions CSV from ``amf predict`` plus an AMi-Br or MIDOG25 labels CSV."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from flat_data import PREDICTED, amibr_labels, predictions, write_csv

from amf.cli import main
from amf.errors import EvaluationError
from amf.evaluation.flat import read_flat

AMIBR_LABELS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ami-br-midog21" / "labels.csv"


def test_amibr_by_resolved_path(tmp_path):
    labels = amibr_labels(tmp_path / "data")
    names = ["patches/normal/n2.png", "patches/atypical/a1.png", "patches/atypical/a2.png", "patches/normal/n1.png"]
    preds = predictions(tmp_path / "p.csv", [str(tmp_path / "data" / n) for n in names])
    figs = read_flat(preds, labels)
    assert figs.y_true.tolist() == [1, 0, 0, 1]  # labels order
    assert figs.y_pred.tolist() == [1, 0, 1, 0]
    assert figs.score.tolist() == [0.8, 0.3, 0.6, 0.4]
    assert figs.domain.tolist() == ["Hamamatsu XR", "Hamamatsu XR", "Aperio CS2", "Aperio CS2"]


def test_suffix_and_file_name_fallbacks(tmp_path):
    labels = amibr_labels(tmp_path / "data")
    # Copied elsewhere: two keep their folders (suffix match), two were flattened (file-name match).
    paths = ["/mnt/copy/patches/atypical/a1.png", "/mnt/copy/patches/normal/n1.png", "flat/n2.png", "flat/a2.png"]
    figs = read_flat(predictions(tmp_path / "p.csv", paths), labels)
    assert figs.score.tolist() == [0.8, 0.3, 0.6, 0.4]


def test_midog25_style_and_cli(tmp_path, capsys):
    labels = write_csv(
        tmp_path / "midog25.csv",
        ["image_id", "filename", "Tumor", "majority"],
        [["a1.png", "201.tiff", "canine lung cancer", "AMF"], ["n1.png", "201.tiff", "canine lung cancer", "NMF"],
         ["n2.png", "044.tiff", "human melanoma", "NMF"], ["a2.png", "044.tiff", "human melanoma", "AMF"]],
    )
    preds = predictions(tmp_path / "p.csv", [f"/images/{n}" for n in PREDICTED])
    out = tmp_path / "out" / "metrics.json"
    assert main(["evaluate", "--predictions", str(preds), "--labels", str(labels), "--output", str(out),
                 "--bootstrap", "0"]) == 0
    agg = json.loads(out.read_text())["aggregates"]
    # TP a1, FN a2, FP n2, TN n1.
    assert (agg["overall_sensitivity"], agg["overall_specificity"], agg["overall_accuracy"]) == (0.5, 0.5, 0.5)
    assert agg["overall_roc_auc"] == 0.75  # a1 beats both normals, a2 beats n1 only
    assert set(agg) >= {"domain_canine lung cancer", "domain_human melanoma"}
    assert agg["domain_canine lung cancer"]["balanced_accuracy"] == 1.0
    assert "4 figures" in capsys.readouterr().out


@pytest.mark.parametrize(
    "paths, overrides, message",
    [
        (["/x/a1.png", "/x/n1.png", "/x/n2.png"], {}, "1 label(s) have no prediction"),
        (["/x/a1.png", "/x/n1.png", "/x/n2.png", "/x/a2.png", "/x/other.png"], {"other.png": (0.1, "normal")},
         "match no label"),
        (["/x/a1.png", "/x/n1.png", "/x/n2.png", "/x/a2.png"], {"n1.png": (float("nan"), "normal")}, "finite"),
        (["/x/a1.png", "/x/n1.png", "/x/n2.png", "/x/a2.png"], {"n1.png": (0.2, "AMF")}, "class must be"),
        (["/x/a1.png", "/y/a1.png", "/x/n1.png", "/x/n2.png", "/x/a2.png"], {}, "matches two predictions"),
    ],
    ids=["label without prediction", "prediction without label", "NaN score", "bad class", "ambiguous"],
)
def test_flat_refusals(tmp_path, paths, overrides, message):
    labels = amibr_labels(tmp_path / "data")
    with pytest.raises(EvaluationError, match=re.escape(message)):
        read_flat(predictions(tmp_path / "p.csv", paths, **overrides), labels)


def test_unknown_labels_format(tmp_path):
    labels = write_csv(tmp_path / "l.csv", ["file", "label"], [["a1.png", "1"]])
    with pytest.raises(EvaluationError, match="unknown format.*patch, majority_atypical, scanner"):
        read_flat(predictions(tmp_path / "p.csv", ["a1.png"]), labels)


def test_modes_exclude_each_other(tmp_path, capsys):
    assert main(["evaluate", "--predictions", "p.csv", "--output", str(tmp_path / "m.json")]) == 2
    assert "--predictions and --labels go together" in capsys.readouterr().err
    assert main(["evaluate", "--predictions", "p.csv", "--labels", "l.csv", "--input", "x"]) == 2
    assert "not both" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()


def test_real_amibr_labels(tmp_path):
    if not AMIBR_LABELS.is_file():
        pytest.skip(f"missing ../shared/data/ami-br-midog21/labels.csv (looked in {AMIBR_LABELS})")
    with open(AMIBR_LABELS, newline="") as f:
        rows = list(csv.DictReader(f))
    preds = write_csv(
        tmp_path / "p.csv",
        ["path", "page", "p_atypical", "class"],
        [[str(AMIBR_LABELS.parent / r["patch"]), 0, 0.9 if r["majority_atypical"] == "True" else 0.1,
          "atypical" if r["majority_atypical"] == "True" else "normal"] for r in rows],
    )
    figs = read_flat(preds, AMIBR_LABELS)
    assert len(figs) == len(rows) and int(figs.y_true.sum()) == sum(r["majority_atypical"] == "True" for r in rows)
    assert sorted(set(figs.domain.tolist())) == ["Aperio CS2", "Hamamatsu S360", "Hamamatsu XR"]
    assert (figs.y_true == figs.y_pred).all()


def test_allow_missing_scores_the_labelled_subset_and_says_how_many_were_left_out(tmp_path, capsys):
    labels = amibr_labels(tmp_path / "data")
    preds = predictions(tmp_path / "p.csv", ["/x/a1.png", "/x/n1.png", "/x/n2.png"])
    assert main(["evaluate", "--predictions", str(preds), "--labels", str(labels), "--output",
                 str(tmp_path / "m.json"), "--bootstrap", "0"]) == 2
    assert "pass --allow-missing" in capsys.readouterr().err and not (tmp_path / "m.json").exists()
    assert main(["evaluate", "--predictions", str(preds), "--labels", str(labels), "--output",
                 str(tmp_path / "m.json"), "--bootstrap", "0", "--allow-missing"]) == 0
    note = "1 of 4 labelled figures had no prediction and were left out (--allow-missing): scored 3"
    assert note in capsys.readouterr().out
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert note in metrics["extra"]["notes"] and metrics["extra"]["overall"]["n_figures"] == 3


def test_named_columns_and_any_label_spelling(tmp_path, capsys):
    labels = write_csv(tmp_path / "data" / "l.csv", ["file", "y", "site"],
                       [["a1.png", "1", "s1"], ["n1.png", "normal", "s1"], ["n2.png", "NMF", "s2"],
                        ["a2.png", "atypical", "s2"]])
    preds = predictions(tmp_path / "p.csv", ["/x/a1.png", "/x/n1.png", "/x/n2.png", "/x/a2.png"])
    figs = read_flat(preds, labels, columns={"image": "file", "label": "y", "domain": "site"})
    assert figs.y_true.tolist() == [1, 0, 0, 1] and sorted(set(figs.domain.tolist())) == ["s1", "s2"]
    assert main(["evaluate", "--predictions", str(preds), "--labels", str(labels), "--image-column", "file",
                 "--label-column", "y", "--domain-column", "site", "--output", str(tmp_path / "m.json"),
                 "--bootstrap", "0"]) == 0
    with pytest.raises(EvaluationError, match=r"no column\(s\) \['nope'\]"):
        read_flat(preds, labels, columns={"image": "nope", "label": "y", "domain": "site"})


def test_a_labels_file_without_a_domain_column_is_one_domain_and_says_so(tmp_path, capsys):
    """A plain filename,label CSV: the columns named, no domain: every figure in one domain, 'all', said once."""
    names = ["patches/atypical/a1.png", "patches/normal/n1.png", "patches/normal/n2.png", "patches/atypical/a2.png"]
    labels = write_csv(tmp_path / "plain.csv", ["filename", "label"],
                       [[n, "atypical" if "atypical" in n else "normal"] for n in names])
    preds = predictions(tmp_path / "p.csv", [str(tmp_path / n) for n in names])
    assert main(["evaluate", "--predictions", str(preds), "--labels", str(labels), "--image-column", "filename",
                 "--label-column", "label", "--output", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "has no domain column: every figure is scored as one domain, 'all' (--domain-column names one)" in out
    figs = read_flat(preds, labels, columns={"image": "filename", "label": "label"})
    assert set(figs.domain) == {"all"} and len(figs) == 4
    ami = write_csv(tmp_path / "ami.csv", ["patch", "majority_atypical"],
                    [[n, str("atypical" in n)] for n in names])  # AMi-Br's columns, less the scanner
    assert set(read_flat(preds, ami).domain) == {"all"}


def test_without_weights_the_in_sample_check_is_said_to_be_skipped(tmp_path, capsys):
    labels = amibr_labels(tmp_path / "data")
    names = ["patches/normal/n2.png", "patches/atypical/a1.png", "patches/atypical/a2.png", "patches/normal/n1.png"]
    preds = predictions(tmp_path / "p.csv", [str(tmp_path / "data" / n) for n in names])
    assert main(["evaluate", "--predictions", str(preds), "--labels", str(labels), "--weights",
                 str(tmp_path / "nowhere"), "--output", str(tmp_path / "m.json"), "--bootstrap", "0"]) == 0
    assert "note: no weights at " in capsys.readouterr().err


def test_the_report_gives_calibration_and_the_error_rate_by_view_spread(tmp_path):
    """amf predict's view_sd reaches the report: the error rate per quarter of the spread, calmest first."""
    import csv

    labels = amibr_labels(tmp_path / "data")
    names = ["patches/normal/n2.png", "patches/atypical/a1.png", "patches/atypical/a2.png", "patches/normal/n1.png"]
    preds = predictions(tmp_path / "p.csv", [str(tmp_path / "data" / n) for n in names])
    rows = list(csv.reader(open(preds)))
    rows[0].append("view_sd")
    for row, sd in zip(rows[1:], ["0.01", "0.02", "0.30", "0.04"], strict=True):
        row.append(sd)
    with open(preds, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    assert sorted(read_flat(preds, labels).spread.tolist()) == [0.01, 0.02, 0.04, 0.3]  # in the labels order
    assert main(["evaluate", "--predictions", str(preds), "--labels", str(labels), "--output",
                 str(tmp_path / "m.json"), "--report", str(tmp_path / "report"), "--bootstrap", "20"]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "Expected calibration error" in md and (tmp_path / "report" / "reliability.png").is_file()
    assert "## Which calls to look at twice" in md and md.count("| 1 |") + md.count("| 0 |") >= 4
