"""What a new user trips over first: each of these once gave a traceback, a wrong hint or silence."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from flat_data import amibr_labels, predictions
from synthetic_data import amibr_style_dataset

from amf.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", [["predict", "x.png", "--output", "p.csv"], ["bench", "--quick"],
                                     ["train", "--labels", "l.csv", "--output", "r"]])
@pytest.mark.parametrize("device", ["gpu", "mps", "meta", "cuda:x"])
def test_an_unknown_device_is_a_usage_error_naming_the_choices(command, device, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*command, "--device", device])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "is not a device" in err and "auto, cpu, cuda or cuda:N" in err and "Traceback" not in err
    if device == "gpu":
        assert "a GPU is 'cuda'" in err


def test_evaluate_scores_the_labelled_part_of_a_larger_prediction_set(tmp_path, capsys):
    labels = amibr_labels(tmp_path / "data")
    names = ["patches/atypical/a1.png", "patches/normal/n1.png", "patches/normal/n2.png", "patches/atypical/a2.png"]
    preds = predictions(tmp_path / "p.csv", [str(tmp_path / "data" / n) for n in names])
    with open(preds, "a") as f:  # two more figures predicted, with no label
        f.write(f"{tmp_path / 'other' / 'x.png'},0,0.9,atypical\n{tmp_path / 'other' / 'y.png'},0,0.1,normal\n")
    args = ["evaluate", "--predictions", str(preds), "--labels", str(labels), "--output", str(tmp_path / "m.json"),
            "--bootstrap", "0"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "2 prediction(s) match no label" in err and "--allow-unlabelled" in err
    assert main([*args, "--allow-missing"]) == 2  # the other direction: still refused, with the way out named
    assert "--allow-unlabelled" in capsys.readouterr().err
    assert main([*args, "--allow-unlabelled"]) == 0
    out = capsys.readouterr().out
    assert "4 figures" in out and "2 prediction(s) match no label and were left out" in out


def test_evaluate_without_arguments_says_what_to_give(capsys):
    assert main(["evaluate"]) == 2
    err = capsys.readouterr().err
    assert "nothing to evaluate" in err and "--predictions" in err and "--input" in err


def test_evaluate_explains_the_best_threshold_and_warns_once_on_stderr(tmp_path, capsys):
    labels = amibr_labels(tmp_path / "data")
    names = ["patches/atypical/a1.png", "patches/normal/n1.png", "patches/normal/n2.png", "patches/atypical/a2.png"]
    preds = predictions(tmp_path / "p.csv", [str(tmp_path / "data" / n) for n in names])
    assert main(["evaluate", "--predictions", str(preds), "--labels", str(labels), "--output",
                 str(tmp_path / "m.json"), "--bootstrap", "0"]) == 0
    out = capsys.readouterr().out
    assert "best-threshold BA" in out and "chosen on these very figures" in out


def test_export_onto_a_file_says_it_is_a_file_even_with_force(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    target = tmp_path / "weights.txt"
    target.write_text("not a folder")
    assert main(["export", str(run), "--output", str(target), "--force"]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "pass --force" not in err


def test_version_and_a_closed_pipe(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "amf", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.strip().endswith(__import__("amf").__version__)
    labels = amibr_style_dataset(tmp_path / "data")
    proc = subprocess.run(f"{sys.executable} -m amf train --config configs/smoke.toml --labels {labels} --list-folds"
                          " | head -1", shell=True, capture_output=True, text=True, cwd=ROOT)
    assert proc.stdout.count("\n") == 1 and "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


def test_crossval_refuses_a_folder_of_other_files_without_force(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    out = tmp_path / "docs"
    out.mkdir()
    (out / "notes.md").write_text("mine")
    assert main(["crossval", str(run), "--output", str(out)]) == 2
    assert "--force" in capsys.readouterr().err


def test_predict_help_names_the_weights_and_the_default(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--weights" in out and "AMF_WEIGHTS" in out


def test_a_missing_weights_folder_names_the_option(tmp_path, capsys):
    (tmp_path / "x.png").write_bytes(b"")
    assert main(["predict", str(tmp_path / "x.png"), "--output", str(tmp_path / "p.csv"), "--weights",
                 str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "--weights DIR" in err and "AMF_WEIGHTS" in err


def test_progress_in_a_log_is_a_line_per_tenth_with_rate_time_left_and_a_total(capsys):
    import re

    from amf.progress import Progress

    progress = Progress(20, "amf predict", "patch")
    for _ in range(20):
        progress.update()
    progress.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 11 and lines[0].startswith("amf predict: 2 of 20 patches (10%), ")
    assert lines[9].startswith("amf predict: 20 of 20 patches (100%), ")
    for line in lines[:10]:
        assert re.search(r", [\d,.]+ patch/s, [\d.]+ s so far, [\d.]+ s left$", line), line
    assert re.fullmatch(r"amf predict: 20 patches in \d+\.\d s", lines[10]), lines[10]


def test_amf_alone_lists_the_commands(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert all(name in out for name in ("train", "predict", "evaluate", "audit"))


def test_an_unknown_flag_is_said_by_its_subcommand(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["predict", "x.png", "--output", "p.csv", "--frobnicate"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "usage: " in err and " predict " in err.splitlines()[0] and "unrecognized arguments: --frobnicate" in err


def test_predict_help_gives_examples(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "--output -" in out and "--threads" in out


@pytest.mark.parametrize("value", ["on", "1", "yes"])
def test_a_graph_cache_switch_word_is_refused_not_made_a_folder(tmp_path, monkeypatch, value):
    from amf.errors import InputError
    from amf.inference.loading import graph_cache_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AMF_GRAPH_CACHE", value)
    with pytest.raises(InputError, match=f"AMF_GRAPH_CACHE={value}: name the cache folder, or 'off'"):
        graph_cache_dir()
    assert not (tmp_path / value).exists()
