"""Every failure mode of the container entrypoint, in-process (:func:`amf.inference.challenge.run`), with its
outcome. For every case of the corpus (tests/bad_inputs.py):

* an error is an :class:`AmfError` with a one-line message, and the output folder is exactly as before
  (no result, no partial file, no temporary file);
* a valid output is a JSON list of ``{"class", "confidence"}`` with float confidences, one per page, in page
  order (checked against the engine run directly on the same pages).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from bad_inputs import (
    CASES,
    OUT,
    Case,
    check_output,
    good,
    inputs_json,
    platform_input,
    raw,
    snapshot,
    tif,
    w_hash_mismatch,
)

from amf.errors import AmfError, InputError, OutputError, WeightsError
from amf.inference import challenge

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_corpus_is_large_enough():
    assert len(CASES) >= 25
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_corpus(case: Case, tmp_path, weights, engine_for):
    if case.weights is not None:
        weights = case.weights(Path(shutil.copytree(weights, tmp_path / "weights")))
    inp = case.build(tmp_path)
    out = case.output(tmp_path) if case.output else tmp_path / "output"
    before = snapshot(out)
    if case.expect == "ok":
        jobs = challenge.run(inp, out, weights, device="cpu", say=lambda s: None)
        pages = case.pages if isinstance(case.pages, tuple) else (case.pages,)
        assert len(jobs) == len(pages)
        for job, n in zip(jobs, pages):
            check_output(job.output, job.stack, engine_for, n)
        if len(jobs) > 1:  # several stacks: one sub-folder each, named by the stack
            assert [j.output.relative_to(out).parts for j in jobs] == [(j.stack.stem, OUT) for j in jobs]
        else:
            assert jobs[0].output == out / OUT
        leftovers = [p for p in out.rglob("*") if p.name.startswith(".")]
        assert not leftovers
        return
    with pytest.raises(AmfError) as info:
        challenge.run(inp, out, weights, device="cpu", say=lambda s: None)
    assert type(info.value) is case.error, info.value
    message = str(info.value)
    assert case.expect in message
    assert "\n" not in message and len(message) < 600
    assert snapshot(out) == before  # nothing written, nothing half-written, no temporary file


def test_weights_are_checked_before_the_input_is_touched(tmp_path, weights, monkeypatch):
    """With bad weights no input file is even opened."""
    import amf.inference.challenge

    inp = platform_input(tmp_path, {"s.tif": good()})
    touched = []
    monkeypatch.setattr(amf.inference.challenge, "find_jobs", lambda *a: touched.append(a) or [])
    weights = w_hash_mismatch(Path(shutil.copytree(weights, tmp_path / "w")))
    with pytest.raises(WeightsError):
        challenge.run(inp, tmp_path / "out", weights)
    assert touched == []


def test_nan_from_the_model_is_an_error_and_nothing_is_written(tmp_path, weights, monkeypatch):
    import torch

    import amf.inference.loading
    import amf.inference.weights
    from amf.inference.weights import load_ensemble

    real = load_ensemble

    def nan_ensemble(*args, **kwargs):
        ens = real(*args, **kwargs)
        member = ens.members[1]
        original = member.forward

        def forward(x):
            y = original(x)
            return torch.where(torch.arange(y.shape[0]) == 1, torch.full_like(y, float("nan")), y)

        member.forward = forward
        return ens

    monkeypatch.setattr(amf.inference.loading, "load_ensemble", nan_ensemble)
    # The reference strategy calls the members as given; the CPU default runs frozen graphs traced from them.
    monkeypatch.setattr(amf.inference.loading, "default_strategy", lambda device, bf16=False: "loop")
    inp = platform_input(tmp_path, {"s.tif": good()})
    with pytest.raises(AmfError, match=r"s\.tif: the model produced NaN or inf for patches \[1\]"):
        challenge.run(inp, tmp_path / "out", weights, device="cpu", say=lambda s: None)
    assert not (tmp_path / "out").exists()


def test_production_architecture_on_black_and_odd_pages(tmp_path, tiny_weights):
    """efficientvit_b0, 2 members x 2 stain-jittered views: all-black (padding-only) pages give valid floats."""
    from amf.inference.engine import Engine
    from amf.inference.weights import load_ensemble

    pages = [np.zeros((128, 128, 3), np.uint8), np.zeros((10, 10), np.uint8), np.full((300, 20, 3), 255, np.uint8)]
    inp = platform_input(tmp_path, {"s.tif": tif(pages)})
    (job,) = challenge.run(inp, tmp_path / "out", tiny_weights, device="cpu", say=lambda s: None)
    ens = load_ensemble(tiny_weights)
    check_output(job.output, job.stack, (Engine(ens.members, ens.tta, device="cpu"), ens.threshold.value), 3)


def test_stack_name_mismatch_is_a_note_not_an_error(tmp_path, weights, caplog):
    """The platform may store an upload under another name: never refuse a stack that is there over that."""
    inp = platform_input(tmp_path, {"uuid-1234.tiff": good()}, meta=inputs_json("stack_5.tiff"))
    with caplog.at_level("WARNING", logger="amf.inference.challenge"):
        (job,) = challenge.run(inp, tmp_path / "out", weights, device="cpu", say=lambda s: None)
    assert job.stack.name == "uuid-1234.tiff" and (tmp_path / "out" / OUT).is_file()
    assert "names the stack 'stack_5.tiff'" in caplog.text


def test_relative_path_from_inputs_json(tmp_path, weights):
    inp = tmp_path / "input"
    (inp / "elsewhere").mkdir(parents=True)
    good()(inp / "elsewhere" / "s.tif")
    meta = json.loads(inputs_json("s.tif"))
    meta[0]["interface"]["relative_path"] = "elsewhere"
    (inp / "inputs.json").write_text(json.dumps(meta))
    (job,) = challenge.run(inp, tmp_path / "out", weights, device="cpu", say=lambda s: None)
    assert job.stack == inp / "elsewhere" / "s.tif"


def test_existing_results_are_left_alone_on_error(tmp_path, weights):
    out = tmp_path / "out"
    out.mkdir()
    (out / OUT).write_text("previous run")
    inp = platform_input(tmp_path, {"s.tif": raw(b"junk")})
    with pytest.raises(InputError):
        challenge.run(inp, out, weights, device="cpu", say=lambda s: None)
    assert (out / OUT).read_text() == "previous run"


def test_results_are_world_readable(tmp_path, weights):
    inp = platform_input(tmp_path, {"s.tif": good()})
    challenge.run(inp, tmp_path / "out", weights, device="cpu", say=lambda s: None)
    assert (tmp_path / "out" / OUT).stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    """A signal (SIGTERM becomes SystemExit in process.py) in the middle of writing removes the temporaries."""
    from amf.inference import pipeline

    calls = []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise SystemExit(143)
        os.rename(src, dst)

    monkeypatch.setattr(pipeline.os, "replace", replace)
    results = [(tmp_path / "a" / OUT, [{"class": "normal", "confidence": 0.1}]),
               (tmp_path / "b" / OUT, [{"class": "normal", "confidence": 0.2}])]
    with pytest.raises(SystemExit):
        pipeline.write_files([(path, challenge.encode_records(records)) for path, records in results])
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]


def test_non_finite_confidence_is_never_written(tmp_path):
    with pytest.raises(OutputError, match="non-finite"):
        challenge.encode_records([{"class": "normal", "confidence": float("nan")}])
    assert list(tmp_path.iterdir()) == []
