"""Reading labelled datasets: both CSV formats, label spellings, and errors that name every offender."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from synthetic_data import amibr_style_dataset, midog25_style_dataset

from amf.errors import DatasetError
from amf.training.data import fingerprint, limit_table, load_images, parse_label, read_datasets, read_labels

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
AMIBR = SHARED / "ami-br-midog21" / "labels.csv"
MIDOG25 = SHARED / "midog25-labels" / "MIDOG25_Atypical_Classification_Train_Set.csv"


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_png(path: Path, value: int = 128, size: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)


def amibr(tmp_path: Path, n: int = 6) -> Path:
    rows = []
    for i in range(n):
        write_png(tmp_path / "patches" / f"p{i}.png", 10 * i)
        rows.append([f"{i:03d}.tiff", f"patches/p{i}.png", ["False", "True"][i % 2], ["A", "B", "C"][i % 3]])
    return write_csv(tmp_path / "labels.csv", ["slide", "patch", "majority_atypical", "scanner"], rows)


def test_amibr_format_detected_and_loaded(tmp_path):
    table = read_labels(amibr(tmp_path))
    assert table.format == "amibr" and len(table) == 6
    assert table.labels.tolist() == [0, 1, 0, 1, 0, 1]
    assert table.domains[:3] == ["A", "B", "C"] and table.groups[0] == "000.tiff"
    images = load_images(table)
    assert images.shape == (6, 3, 128, 128) and images.dtype == torch.uint8
    assert images[2].unique().tolist() == [20]


def test_midog25_format_with_image_folder_and_label_spellings(tmp_path):
    img = tmp_path / "images"
    for i in range(4):
        write_png(img / f"{i}.png", size=100)  # smaller patches are padded to 128 by amf.inference.io
    write_csv(tmp_path / "m.csv", ["image_id", "filename", "Tumor", "majority"],
              [["0.png", "201.tiff", "lung", "AMF"], ["1.png", "201.tiff", "lung", "NMF"],
               ["2.png", "7.tiff", "skin", "amf"], ["3.png", "7.tiff", "skin", " nmf "]])
    table = read_labels(tmp_path / "m.csv", img)
    assert table.format == "midog25" and table.labels.tolist() == [1, 0, 1, 0]
    assert load_images(table).shape == (4, 3, 128, 128)
    for text, value in [("True", 1), ("false", 0), ("atypical", 1), ("Normal", 0), ("1", 1), ("0", 0), ("x", None)]:
        assert parse_label(text) == value


def test_column_overrides(tmp_path):
    write_png(tmp_path / "a.png")
    write_png(tmp_path / "b.png")
    rows = [["a.png", "1", "s1", "c1"], ["b.png", "0", "s2", "c2"]]
    write_csv(tmp_path / "c.csv", ["file", "y", "site", "case"], rows)
    with pytest.raises(DatasetError, match="lacks 4 column"):
        read_labels(tmp_path / "c.csv")
    table = read_labels(tmp_path / "c.csv", columns={"image": "file", "label": "y", "domain": "site", "group": "case"})
    assert table.labels.tolist() == [1, 0] and table.domains == ["s1", "s2"]


def test_missing_column_is_named(tmp_path):
    write_csv(tmp_path / "x.csv", ["patch", "majority_atypical", "slide"], [["a.png", "True", "1"]])
    with pytest.raises(DatasetError, match=r"domain column 'scanner'"):
        read_labels(tmp_path / "x.csv")


def test_all_row_problems_reported_together(tmp_path):
    path = amibr(tmp_path, n=9)
    rows = list(csv.reader(open(path)))
    for i in (1, 3, 5, 7, 8, 9):
        rows[i][1] = f"patches/missing{i}.png"  # 6 missing images
    rows[2][2] = "maybe"  # unknown label
    rows[4][3] = ""  # empty domain
    write_csv(path, rows[0], rows[1:])
    with pytest.raises(DatasetError) as err:
        read_labels(path)
    msg = str(err.value)
    assert "8 problem(s)" in msg and "nothing loaded" in msg
    assert "6 missing images" in msg and "missing1.png" in msg and "(1 more)" in msg
    assert "line 3: 'maybe'" in msg
    assert "empty 'scanner' (domain) values (line 5)" in msg


def test_unreadable_image_reported(tmp_path):
    path = amibr(tmp_path, n=3)
    (tmp_path / "patches" / "p1.png").write_bytes(b"not a png")
    table = read_labels(path)
    with pytest.raises(DatasetError, match=r"1 unreadable images \(line 3: .*p1.png"):
        load_images(table)


def test_limit_keeps_every_stratum_and_fingerprint_is_stable(tmp_path):
    table = read_labels(amibr(tmp_path, n=12))
    small = limit_table(table, 6, seed=0)
    assert len(small) == 6 and set(small.domains) == {"A", "B", "C"} and set(small.labels.tolist()) == {0, 1}
    assert small.paths == limit_table(table, 6, seed=0).paths
    fp = fingerprint(table)
    assert fp["n"] == 12 and len(fp["labels_sha256"]) == 64 and len(fp["files_sha256"]) == 64
    assert fingerprint(small)["files_sha256"] != fp["files_sha256"] and fingerprint(small)["limit"] == 6


def test_real_label_files_parse():
    if not AMIBR.is_file() or not MIDOG25.is_file():
        pytest.skip(f"shared data not found under {SHARED} (see SOURCES.md there)")
    ami = read_labels(AMIBR)
    assert len(ami) == 1721 and int(ami.labels.sum()) == 404 and len(set(ami.domains)) == 3
    m25 = read_labels(MIDOG25, check_files=False)  # no images shipped for this one
    assert m25.format == "midog25" and len(m25) == 11937 and len(set(m25.domains)) == 7
    assert int(m25.labels.sum()) == 1748


def test_several_labels_files_keep_their_own_format_domains_and_groups(tmp_path):
    a = amibr_style_dataset(tmp_path / "amibr", n=6)
    b = midog25_style_dataset(tmp_path / "midog25", n=4)
    table = read_datasets([(a, None), (b, None)])
    assert table.image_dir == tmp_path.resolve() and len(table) == 10
    assert table.paths[0] == "amibr/patches/0.png" and table.paths[6] == "midog25/images/0.png"
    assert set(table.domains) == {"scanner0", "scanner1", "scanner2", "tumour0", "tumour1"}
    assert table.groups[0] == "amibr/000.tiff" and table.groups[6] == "midog25/0.tiff"
    assert table.format == "amibr+midog25" and table.labels.tolist()[6:] == [1, 0, 0, 1]
    images = load_images(table)
    assert images.shape == (10, 3, 128, 128)
    fp = fingerprint(table)
    assert fp["labels_file"] == [str(a), str(b)] and fp["n"] == 10
    assert fingerprint(read_datasets([(b, None), (a, None)]))["labels_sha256"] != fp["labels_sha256"]
    assert read_datasets([(a, None)]).paths == read_labels(a).paths  # one file: exactly read_labels


def test_several_labels_files_report_every_problem_and_refuse_duplicates(tmp_path):
    a = amibr_style_dataset(tmp_path / "amibr", n=6)
    b = midog25_style_dataset(tmp_path / "midog25", n=4)
    (tmp_path / "amibr" / "patches" / "1.png").unlink()
    (tmp_path / "midog25" / "images" / "2.png").unlink()
    with pytest.raises(DatasetError) as err:
        read_datasets([(a, None), (b, None)])
    assert "patches/1.png" in str(err.value) and "images/2.png" in str(err.value)
    c = amibr_style_dataset(tmp_path / "again", n=6)
    with pytest.raises(DatasetError, match="more than one labels file"):
        read_datasets([(c, None), (c, None)])
