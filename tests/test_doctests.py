"""The Examples sections of the pure functions' docstrings run as tests (scikit-image's habit)."""

import doctest
import importlib

import pytest

MODULES = ["amf.inference.tta", "amf.inference.stain", "amf.training.threshold", "amf.inference.io",
           "amf.training.splits", "amf.training.distributed", "amf.inference.api", "amf.evaluation.gallery",
           "amf.evaluation.reliability"]


@pytest.mark.parametrize("name", MODULES)
def test_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
