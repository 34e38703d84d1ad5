"""Every malformed evaluation input is refused with its own message, and no metrics.json is left."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from amf.cli import main
from amf.inference.challenge import INTERFACE

GROUND_TRUTH = [
    {"image": "stack_a.tiff", "labels": ["normal", "atypical", "normal"], "tumordomains": [1, 1, 1]},
    {"image": "stack_b.tiff", "labels": ["atypical", "normal"], "tumordomains": [2, 2]},
]
RESULTS = {
    "pk-a": [
        {"class": "normal", "confidence": 0.2},
        {"class": "atypical", "confidence": 0.7},
        {"class": "normal", "confidence": 0.4},
    ],
    "pk-b": [{"class": "atypical", "confidence": 0.9}, {"class": "atypical", "confidence": 0.6}],
}


def job(pk: str, stack: str) -> dict:
    return {
        "pk": pk,
        "inputs": [{"image": {"name": stack}, "interface": {"slug": INTERFACE}}],
        "outputs": [
            {
                "interface": {
                    "slug": "multiple-mitotic-figure-classification",
                    "relative_path": "multiple-mitotic-figure-classification.json",
                }
            }
        ],
    }


def result_path(root: Path, pk: str) -> Path:
    return root / "input" / pk / "output" / "multiple-mitotic-figure-classification.json"


def make_layout(root: Path) -> None:
    """A valid two-job platform layout: stack_a (pk-a) and stack_b (pk-b)."""
    (root / "input").mkdir()
    jobs = [job("pk-a", "stack_a.tiff"), job("pk-b", "stack_b.tiff")]
    (root / "input" / "predictions.json").write_text(json.dumps(jobs))
    for pk, result in RESULTS.items():
        result_path(root, pk).parent.mkdir(parents=True)
        result_path(root, pk).write_text(json.dumps(result))
    (root / "gt.json").write_text(json.dumps(GROUND_TRUTH))


def run_cli(root: Path) -> int:
    return main(
        ["evaluate", "--input", str(root / "input"), "--ground-truth", str(root / "gt.json"),
         "--output", str(root / "out" / "metrics.json"), "--bootstrap", "20"]
    )


def set_entry(pk: str, index: int, **changes) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        result = json.loads(result_path(root, pk).read_text())
        for key, value in changes.items():
            if value is DELETE:
                del result[index][key]
            else:
                result[index][key] = value
        result_path(root, pk).write_text(json.dumps(result))

    return mutate


def write_result(pk: str, text: str) -> Callable[[Path], None]:
    return lambda root: result_path(root, pk).write_text(text)


def write_file(name: str, text: str) -> Callable[[Path], None]:
    return lambda root: (root / name).write_text(text)


def edit_ground_truth(edit: Callable[[list], None]) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        truth = json.loads((root / "gt.json").read_text())
        edit(truth)
        (root / "gt.json").write_text(json.dumps(truth))

    return mutate


DELETE = object()
ENTRIES_A = json.dumps(RESULTS["pk-a"])

CASES = [
    ("missing result file", lambda root: result_path(root, "pk-b").unlink(), ["pk-b", "stack_b.tiff", "missing"]),
    ("length differs", write_result("pk-a", json.dumps(RESULTS["pk-a"][:2])), ["pk-a", "stack_a.tiff", "2 entries"]),
    ("result not a list", write_result("pk-a", json.dumps({"class": "normal"})), ["pk-a", "stack_a.tiff", "list"]),
    ("entry not an object", write_result("pk-b", json.dumps([["atypical", 0.9], RESULTS["pk-b"][1]])),
     ["pk-b", "stack_b.tiff", "entry 0", "object"]),
    ("missing class", set_entry("pk-a", 1, **{"class": DELETE}), ["pk-a", "stack_a.tiff", "entry 1", "class"]),
    ("missing confidence", set_entry("pk-a", 2, confidence=DELETE), ["pk-a", "stack_a.tiff", "entry 2", "confidence"]),
    ("unknown class", set_entry("pk-b", 1, **{"class": "mitosis"}), ["pk-b", "stack_b.tiff", "entry 1", "'mitosis'"]),
    ("int confidence", set_entry("pk-a", 0, confidence=1), ["pk-a", "stack_a.tiff", "entry 0", "float", "int"]),
    ("bool confidence", set_entry("pk-a", 1, confidence=True), ["pk-a", "stack_a.tiff", "entry 1", "float", "bool"]),
    ("string confidence", set_entry("pk-b", 0, confidence="0.9"), ["pk-b", "stack_b.tiff", "entry 0", "float", "str"]),
    ("NaN confidence", write_result("pk-a", ENTRIES_A.replace("0.4", "NaN")),
     ["pk-a", "stack_a.tiff", "entry 2", "finite"]),
    ("infinite confidence", write_result("pk-a", ENTRIES_A.replace("0.7", "-Infinity")),
     ["pk-a", "stack_a.tiff", "entry 1", "finite"]),
    ("ground-truth image missing", edit_ground_truth(lambda gt: gt.pop(1)),
     ["pk-b", "stack_b.tiff", "no ground truth"]),
    ("ground-truth image duplicated", edit_ground_truth(lambda gt: gt.append(gt[0])),
     ["stack_a.tiff", "entry 2", "duplicated", "entry 0"]),
    ("ground-truth lengths differ", edit_ground_truth(lambda gt: gt[1]["tumordomains"].pop()),
     ["stack_b.tiff", "entry 1", "tumordomains"]),
    ("unreadable result JSON", write_result("pk-b", "[{"), ["pk-b", "stack_b.tiff", "JSON"]),
    ("unreadable predictions.json", write_file("input/predictions.json", "not json"), ["predictions.json", "JSON"]),
    ("unreadable ground truth", write_file("gt.json", "{]"), ["ground truth", "JSON"]),
    ("two jobs for one stack", write_file("input/predictions.json",
                                          json.dumps([job("pk-a", "stack_a.tiff"), job("pk-b", "stack_a.tiff")])),
     ["pk-b", "stack_a.tiff", "pk-a"]),
    ("job without the output interface", write_file("input/predictions.json",
                                                    json.dumps([{**job("pk-a", "stack_a.tiff"), "outputs": []}])),
     ["pk-a", "stack_a.tiff", "multiple-mitotic-figure-classification"]),
]


def test_valid_layout_is_accepted(tmp_path):
    make_layout(tmp_path)
    assert run_cli(tmp_path) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(metrics["aggregates"]) >= {"overall_balanced_accuracy", "domain_1", "domain_2"}
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["metrics.json"]


@pytest.mark.parametrize("mutate, fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_input_is_refused(tmp_path, capsys, mutate, fragments):
    make_layout(tmp_path)
    mutate(tmp_path)
    assert run_cli(tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("amf evaluate: error: ") and "\n" not in err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    out = tmp_path / "out"
    assert not out.exists() or not any(out.iterdir()), "no metrics.json (nor a temporary file) may be written"


def test_failure_keeps_an_earlier_metrics_json_intact(tmp_path):
    make_layout(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "metrics.json").write_text("earlier")
    result_path(tmp_path, "pk-a").unlink()
    assert run_cli(tmp_path) == 2
    assert (tmp_path / "out" / "metrics.json").read_text() == "earlier"
    assert len(list((tmp_path / "out").iterdir())) == 1
