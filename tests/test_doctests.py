"""The Examples sections of the pure functions' docstrings run as tests (scikit-image's habit)."""

import doctest
import importlib

import pytest

MODULES = ["amf.inference.tta", "amf.inference.stain", "amf.training.threshold", "amf.inference.io",
           "amf.training.splits", "amf.training.distributed", "amf.inference.api", "amf.evaluation.gallery",
           "amf.evaluation.reliability", "amf.inference.otsu"]


@pytest.mark.parametrize("name", MODULES)
def test_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0


def test_the_readme_example_runs(monkeypatch):
    """README's Python example, as printed there (from the repository root, where it says to run)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    result = doctest.testfile(str(root / "README.md"), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 4 and result.failed == 0


def test_the_readme_opens_with_the_commands():
    """Within its first 40 lines: both everyday commands and how to score a folder of one's own."""
    from pathlib import Path

    top = "\n".join((Path(__file__).resolve().parents[1] / "README.md").read_text().splitlines()[:40])
    assert "make run" in top and "make test" in top and "amf predict my_patches/ --output" in top
