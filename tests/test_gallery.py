"""The error gallery: the figures a model got wrong, shown per domain, bounded, in evaluate's report and crossval's."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from amf.cli import main
from amf.evaluation.gallery import Calls, infer_threshold, select, write_gallery

pytestmark = pytest.mark.slow  # trains and cross-validates


def test_errors_come_most_confident_first_and_correct_calls_nearest_the_threshold():
    labels = np.array([0, 0, 1, 1, 0, 1])
    calls = np.array([1, 1, 0, 1, 0, 1])
    scores = np.array([0.55, 0.95, 0.10, 0.52, 0.45, 0.90])
    wrong, near = select(labels, calls, scores, np.full(6, 0.5), errors=10, near=2)
    assert wrong.tolist() == [1, 2, 0]  # 0.95 and 0.10 are the surest mistakes, 0.55 the least sure
    assert near.tolist() == [3, 4]  # 0.52 and 0.45: the correct calls that nearly went the other way
    assert select(labels, calls, scores, np.full(6, 0.5), errors=1, near=0)[0].tolist() == [1]  # bounded


def test_the_threshold_the_calls_follow_is_inferred_or_declared_unknown():
    assert infer_threshold(np.array([0.2, 0.6, 0.7]), np.array([0, 1, 1])) == 0.6
    assert infer_threshold(np.array([0.2, 0.6, 0.7]), np.array([0, 1, 0])) is None  # no single cut explains them


def test_a_sheet_per_domain_bounded_and_a_page_linking_them(tmp_path):
    rng = np.random.default_rng(0)
    n = 400
    labels = rng.integers(0, 2, n)
    scores = np.clip(labels * 0.3 + rng.random(n) * 0.7, 0, 1)
    calls = (scores >= 0.5).astype(int)
    domains = np.array(["scanner A", "scanner B"])[rng.integers(0, 2, n)]
    loaded = []

    def load(i: int) -> np.ndarray:
        loaded.append(i)
        return np.full((128, 128, 3), i % 255, dtype=np.uint8)

    figures = Calls([f"img{i}.png" for i in range(n)], labels, calls, scores, domains, np.full(n, 0.5))
    page = write_gallery(tmp_path, figures, load, errors=6, near=3)
    text = page.read_text()
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["gallery_scanner_A.png", "gallery_scanner_B.png"]
    assert "![scanner A](gallery_scanner_A.png)" in text and text.count("| error |") == 12
    assert text.count("| near the threshold |") == 6 and len(loaded) == 18  # only the figures shown are read
    sheet = Image.open(tmp_path / "gallery_scanner_A.png")
    assert sheet.width < 1400 and sheet.height < 1600  # three tiles a row: readable at its own size


def test_evaluate_report_shows_the_misclassified_figures(tmp_path, capsys):
    rows, preds = [], []
    for i in range(12):
        path = tmp_path / "patches" / f"p{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.full((128, 128, 3), 20 * i, dtype=np.uint8)).save(path)
        label = i % 2 == 0
        score = 0.9 if i in (1, 4) else (0.8 if label else 0.2)  # p1 a false positive, p4 a true positive
        rows.append([f"patches/p{i}.png", str(label), f"scanner{i % 2}", "s.tiff"])
        preds.append([str(path), 0, score, "atypical" if score >= 0.5 else "normal"])
    for name, header, body in (("labels.csv", ["patch", "majority_atypical", "scanner", "slide"], rows),
                               ("preds.csv", ["path", "page", "p_atypical", "class"], preds)):
        with open(tmp_path / name, "w", newline="") as f:
            csv.writer(f).writerows([header, *body])
    report = tmp_path / "report"
    assert main(["evaluate", "--predictions", str(tmp_path / "preds.csv"), "--labels", str(tmp_path / "labels.csv"),
                 "--output", str(tmp_path / "m.json"), "--report", str(report), "--bootstrap", "0"]) == 0
    gallery = (report / "gallery" / "gallery.md").read_text()
    assert "gallery/gallery.md" in (report / "report.md").read_text()
    assert "| error |" in gallery and "p1.png" in gallery.split("| error |")[1].split("\n")[0]
    assert (report / "gallery" / "gallery_scanner1.png").is_file()


def test_the_platform_layout_needs_the_stacks_to_show_figures(tmp_path):
    from amf.evaluation.analysis import evaluate
    from amf.evaluation.figures import Figures
    from amf.evaluation.report import write_report

    figures = Figures.from_lists(["normal", "atypical"], ["atypical", "atypical"], [0.7, 0.8], [1, 1], "test",
                                 where=[("s.tiff", 0), ("s.tiff", 1)])
    report = write_report(evaluate(figures, n_resamples=0), tmp_path, None, "give --stacks DIR")
    assert "give --stacks DIR" in report.read_text() and not (tmp_path / "gallery").exists()


def test_crossval_writes_a_gallery_per_row_with_the_shipped_views(tmp_path):
    from synthetic_data import amibr_style_dataset

    labels = amibr_style_dataset(tmp_path / "data")
    root = Path(__file__).resolve().parents[1]
    assert main(["train", "--config", str(root / "configs" / "smoke.toml"), "--labels", str(labels), "--output",
                 str(tmp_path / "run"), "--epochs", "1", "--lodo-only", "--fold-limit", "1", "--no-progress"]) == 0
    assert main(["crossval", str(tmp_path / "run"), "--output", str(tmp_path / "cv"), "--bootstrap", "0",
                 "--no-progress"]) == 0
    assert not (tmp_path / "cv" / "gallery_run_plain").exists()  # the shipped scoring (TTA on) only
    page = tmp_path / "cv" / "gallery_run_tta" / "gallery.md"
    assert page.is_file() and "## scanner0" in page.read_text()
    assert len(list(page.parent.glob("gallery_*.png"))) == 3
