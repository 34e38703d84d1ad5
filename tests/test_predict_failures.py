"""``amf predict`` in-process: every page in order, and errors that write nothing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from bad_inputs import raw, rgb_stack, tif, tiff_bytes
from PIL import Image

from amf.errors import InputError, OutputError
from amf.inference.api import RunSettings
from amf.inference.io import read_patches

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def predict(paths, output, weights, **kw) -> int:
    from amf.inference.predict import predict_files

    settings = RunSettings(views=kw.get("views"), chunk_size=kw.get("chunk_size", 64))
    return predict_files([Path(p) for p in paths], Path(output), Path(weights), device="cpu", settings=settings,
                         threshold=kw.get("threshold"))


def test_predict_writes_every_page_in_order(tmp_path, weights, engine_for):
    (tmp_path / "in").mkdir()
    tif(rgb_stack(3))(tmp_path / "in" / "a.tif")
    Image.fromarray(rgb_stack(1, 90, 150)[0]).save(tmp_path / "in" / "b.png")
    assert predict([tmp_path / "in"], tmp_path / "p.csv", weights, chunk_size=2) == 4
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert rows[0] == "path,page,p_atypical,class,view_sd" and len(rows) == 5
    assert [r.split(",")[1] for r in rows[1:]] == ["0", "1", "2", "0"]
    engine, _ = engine_for
    expected = engine.predict_proba(read_patches(tmp_path / "in" / "a.tif"))
    assert np.allclose([float(r.split(",")[2]) for r in rows[1:4]], expected, atol=1e-6)


@pytest.mark.parametrize("name,setup,expect,error", [
    ("bad file among good", lambda d: (tif(rgb_stack(2))(d / "a.tif"), raw(b"junk")(d / "b.tif")), "b.tif",
     InputError),
    ("empty folder", lambda d: None, "no image files", InputError),
    ("truncated page list", lambda d: raw(tiff_bytes(rgb_stack(5))[:120000])(d / "t.tif"), "damaged TIFF", InputError),
])
def test_predict_errors_write_nothing(tmp_path, weights, name, setup, expect, error):
    d = tmp_path / "in"
    d.mkdir()
    setup(d)
    with pytest.raises(error, match=expect):
        predict([d], tmp_path / "out" / "p.csv", weights)
    assert not (tmp_path / "out").exists()


def test_predict_output_is_a_folder(tmp_path, weights):
    tif(rgb_stack(1))(tmp_path / "a.tif")
    with pytest.raises(OutputError, match="is a folder"):
        predict([tmp_path / "a.tif"], tmp_path, weights)


def test_files_decoded_ahead_come_in_order_and_a_bad_one_fails_in_its_turn(tmp_path):
    from amf.inference.pipeline import decoded

    files = []
    for i in range(7):
        files.append(tmp_path / f"{i}.tif")
        tif(rgb_stack(i % 3 + 1))(files[-1])
    raw(b"not a tiff")(files[5])
    seen = []
    with pytest.raises(InputError, match="5.tif"):
        for path, page, patch in decoded(files, ahead=2):
            assert patch.shape == (128, 128, 3)
            seen.append((path.name, page))
    assert seen == [("0.tif", 0), ("1.tif", 0), ("1.tif", 1), ("2.tif", 0), ("2.tif", 1), ("2.tif", 2),
                    ("3.tif", 0), ("4.tif", 0), ("4.tif", 1)]
    stream = decoded(files[:3], ahead=1)  # a reader that stops early stops the thread too
    next(stream)
    stream.close()


def test_predict_threshold_sets_the_cut_of_the_class_column_and_otsu_uses_the_patches_own_scores(tmp_path, weights,
                                                                                                  capsys):
    from skimage.filters import threshold_otsu

    tif(rgb_stack(6))(tmp_path / "a.tif")
    predict([tmp_path / "a.tif"], tmp_path / "shipped.csv", weights)
    rows = [r.split(",") for r in (tmp_path / "shipped.csv").read_text().splitlines()[1:]]
    p = np.array([float(r[2]) for r in rows])
    for threshold, cut in ((float(np.median(p)), float(np.median(p))), ("otsu", threshold_otsu(p, nbins=256))):
        predict([tmp_path / "a.tif"], tmp_path / "cut.csv", weights, threshold=threshold)
        cut_rows = [r.split(",") for r in (tmp_path / "cut.csv").read_text().splitlines()[1:]]
        assert [r[2] for r in cut_rows] == [r[2] for r in rows]  # the scores do not move, only the classes
        assert [r[3] for r in cut_rows] == ["atypical" if x >= cut else "normal" for x in p]
    err = capsys.readouterr().err
    assert f"cut {float(threshold_otsu(p, nbins=256)):.4f}, chosen by Otsu on the scores of these 6 patches" in err
    assert "warning: Otsu's cut on fewer than 64 patches is noisy" in err


def test_predict_otsu_needs_no_training_package(tmp_path, weights):
    """``pip install .`` installs the runtime and the evaluator, not scikit-image: Otsu's cut is amf's own numpy."""
    import subprocess
    import sys

    tif(rgb_stack(3))(tmp_path / "a.tif")
    blocked = ("import sys; sys.modules.update(skimage=None); from amf.cli import main; "
               f"sys.exit(main(['predict', {str(tmp_path / 'a.tif')!r}, '--weights', {str(weights)!r}, '--output', "
               f"{str(tmp_path / 'p.csv')!r}, '--threshold', 'otsu', '--device', 'cpu']))")
    proc = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "AMF_GRAPH_CACHE": "off"})
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert "chosen by Otsu on the scores of these 3 patches" in proc.stderr
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 4


@pytest.mark.parametrize("value,says", [("1.5", "not a cut between 0 and 1"), ("auto", "neither 'otsu' nor a number")])
def test_predict_refuses_a_threshold_that_is_no_cut(tmp_path, value, says, capsys):
    from amf.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["predict", str(tmp_path), "--output", str(tmp_path / "p.csv"), "--threshold", value])
    assert exit_.value.code == 2 and says in capsys.readouterr().err


@pytest.mark.parametrize("flags,warns", [({"avx2", "avx512f"}, True), ({"avx512f", "avx512_bf16"}, False),
                                         (set(), False)])
def test_bf16_warns_on_a_cpu_without_bf16_units(tmp_path, weights, monkeypatch, capsys, flags, warns):
    """On a CPU without bf16 units oneDNN emulates bf16, slower than fp32: --bf16 says so (not where unknown)."""
    import amf.inference.predict as predict_module

    monkeypatch.setattr(predict_module, "cpu_model_and_flags", lambda: ("a CPU", flags))
    tif(rgb_stack(1))(tmp_path / "a.tif")
    predict_module.predict_files([tmp_path / "a.tif"], tmp_path / "p.csv", Path(weights), device="cpu",
                                 settings=RunSettings(bf16=True))
    assert ("bf16 runs emulated, slower than the fp32 default" in capsys.readouterr().err) == warns


def test_the_output_format_follows_the_suffix_and_a_folder_skips_non_images_aloud(tmp_path, weights, capsys):
    import csv
    import json

    (tmp_path / "in").mkdir()
    tif(rgb_stack(3))(tmp_path / "in" / "a.tif")
    (tmp_path / "in" / "notes.txt").write_text("not an image\n")
    predict([tmp_path / "in"], tmp_path / "p.csv", weights)
    assert "skipped 1 file that is not an image: notes.txt" in capsys.readouterr().out
    with open(tmp_path / "p.csv", newline="") as f:
        table = list(csv.DictReader(f))
    predict([tmp_path / "in"], tmp_path / "p.jsonl", weights)
    lines = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    predict([tmp_path / "in"], tmp_path / "p.json", weights)
    listed = json.loads((tmp_path / "p.json").read_text())
    assert lines == listed and len(listed) == 3
    assert [float(r["p_atypical"]) for r in table] == [r["p_atypical"] for r in listed]
    assert all(r["view_sd"] >= 0 and set(r) == {"path", "page", "p_atypical", "class", "view_sd"} for r in listed)
    with pytest.raises(OutputError, match=r"unknown format '\.txt'.*\.csv.*\.jsonl.*\.json.*- for CSV on stdout"):
        predict([tmp_path / "in"], tmp_path / "p.txt", weights)
    assert not (tmp_path / "p.txt").exists()


def test_output_dash_writes_csv_to_stdout_and_the_summary_to_stderr(tmp_path, weights, capsysbinary):
    tif(rgb_stack(2))(tmp_path / "a.tif")
    predict([tmp_path / "a.tif"], "-", weights)
    out, err = capsysbinary.readouterr()
    rows = out.decode().splitlines()
    assert rows[0] == "path,page,p_atypical,class,view_sd" and len(rows) == 3
    assert b"2 patches from 1 file -> stdout" in err


def test_the_view_spread_is_the_standard_deviation_of_the_member_and_view_scores(weights):
    """What the engine reports beside the mean, against the scores computed one member and one view at a time."""
    import torch

    from amf.inference.engine import Engine
    from amf.inference.tta import make_view
    from amf.inference.weights import load_ensemble

    ens = load_ensemble(weights)
    patches = rgb_stack(5)
    for strategy in ("loop", "batched", "graph"):
        mean, spread = Engine(ens.members, ens.tta, device="cpu", strategy=strategy).predict(patches)
        images = torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 255
        with torch.inference_mode():
            each = torch.stack([torch.sigmoid(m(make_view(images, ens.tta, v))).double()
                                for m in ens.members for v in range(ens.tta.views)])
        assert np.allclose(mean, each.mean(0).numpy(), atol=1e-6), strategy
        assert np.allclose(spread, each.std(0, correction=0).numpy(), atol=1e-6), strategy


def test_patches_that_are_not_128_rgb_are_counted_in_one_warning(tmp_path, weights, capsys):
    (tmp_path / "in").mkdir()
    Image.fromarray(np.full((512, 512, 3), 120, np.uint8)).save(tmp_path / "in" / "big.png")
    Image.fromarray(np.full((64, 64), 90, np.uint8)).save(tmp_path / "in" / "small_gray.png")
    Image.fromarray(rgb_stack(1)[0]).save(tmp_path / "in" / "fine.png")
    predict([tmp_path / "in"], tmp_path / "p.csv", weights)
    err = capsys.readouterr().err
    assert ("warning: 2 of 3 patches are not 128 x 128 RGB: 1 cropped to their centre (larger), 1 padded with black "
            "(smaller), 1 converted to RGB; nothing is rescaled") in err
    predict([tmp_path / "in" / "fine.png"], tmp_path / "q.csv", weights)
    assert "not 128 x 128" not in capsys.readouterr().err
