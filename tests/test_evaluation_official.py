"""The organisers' own sample: our metrics.json must equal official-metrics.json; the report exists."""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path

import pytest

from amf.cli import main
from amf.evaluation.analysis import evaluate
from amf.evaluation.platform import read_platform
from amf.evaluation.report import write_report

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "midog25-t2-samples"


@pytest.fixture(scope="module")
def samples() -> Path:
    if not (SAMPLES / "official-metrics.json").is_file():
        pytest.skip(f"missing ../shared/data/midog25-t2-samples (looked in {SAMPLES}); it holds the organisers' sample")
    return SAMPLES


def assert_official_equal(ours: dict, official: dict, where: str = "") -> None:
    """Same keys; numbers within 1e-12; the official bare NaN must be our null."""
    assert set(ours) == set(official), where
    for key, expected in official.items():
        got = ours[key]
        if isinstance(expected, dict):
            assert_official_equal(got, expected, f"{where}/{key}")
        elif isinstance(expected, float) and math.isnan(expected):
            assert got is None, f"{where}/{key}: {got!r}, expected null for the official NaN"
        else:
            assert got == pytest.approx(expected, abs=1e-12, rel=0), f"{where}/{key}"


def test_official_sample_reproduced(samples, tmp_path, capsys):
    output = tmp_path / "metrics.json"
    code = main(
        ["evaluate", "--input", str(samples / "evaluation-input"), "--ground-truth", str(samples / "ground_truth.json"),
         "--output", str(output), "--bootstrap", "50"]
    )
    assert code == 0
    text = output.read_text()
    ours = json.loads(text, parse_constant=lambda token: pytest.fail(f"invalid JSON token {token}"))
    official = json.loads((samples / "official-metrics.json").read_text())  # Python accepts its bare NaN
    assert ours["results"] == official["results"] == {}
    assert_official_equal(ours["aggregates"], official["aggregates"])
    # The headline number is bit-identical, not merely close.
    assert ours["aggregates"]["domain_1"]["balanced_accuracy"] == 0.7243589743589745
    assert ours["extra"]["overall"]["confusion"] == {"tp": 5, "fp": 10, "fn": 1, "tn": 17}
    assert "domain_6" in " ".join(ours["extra"]["notes"]) and "stack_3.tiff" in " ".join(ours["extra"]["notes"])
    stdout = capsys.readouterr().out
    assert "33 figures" in stdout and "BA 0.7315" in stdout


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_report_files(samples, tmp_path):
    ev = evaluate(read_platform(samples / "evaluation-input", samples / "ground_truth.json"), n_resamples=50, seed=0)
    report = write_report(ev, tmp_path / "report")
    folder = report.parent
    names = {"report.md", "roc.png", "domains.csv", "confusion_overall.png", "confusion_domain_1.png",
             "confusion_domain_6.png", "reliability.png"}
    assert names <= {p.name for p in folder.iterdir()}
    width, height = png_size(folder / "roc.png")
    assert 400 <= width <= 2000 and 400 <= height <= 2000
    assert 20_000 < (folder / "roc.png").stat().st_size < 1_000_000  # a curve, a band, a legend: not blank
    for name in names - {"report.md", "domains.csv", "roc.png"}:
        assert 5_000 < (folder / name).stat().st_size < 500_000
    md = report.read_text()
    for name in names - {"report.md"}:
        assert f"({name})" in md, f"report.md does not link {name}"
    assert "0.7315" in md and "best threshold" in md.lower() and "not valid JSON" in md
    assert re.search(r"Expected calibration error \(ECE, 10 equal-width bins of P\(atypical\)\): \*\*0\.\d{3}\*\* "
                     r"\[0\.\d{3}, 0\.\d{3}\]", md)
    assert "Which calls to look at twice" not in md  # the platform's JSON carries no view spread
    rows = (folder / "domains.csv").read_text().splitlines()
    assert rows[0].startswith("domain,figures,atypical") and len(rows) == 4
