"""``process.py`` and ``python -m amf ...`` as subprocesses: exit status 2 and one line on stderr for every
foreseen failure, signals that stop cleanly, and messages that name the fix."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from bad_inputs import (
    ROOT,
    ZERO_PAGES,
    assert_one_line_error,
    good,
    one_page,
    platform_input,
    raw,
    rgb_stack,
    run_cmd,
    tif,
    truncated_pagelist,
    valid_stack,
    w_hash_mismatch,
    w_newer_format,
)
from PIL import Image

from amf.errors import InputError
from amf.inference.io import count_pages

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name,build,spoil,expect", [
    ("missing input", lambda t: t / "nope", None, "does not exist"),
    ("truncated stack", truncated_pagelist, None, "damaged TIFF"),
    ("zero-page stack", one_page(raw(ZERO_PAGES)), None, "TIFF has no pages"),
    ("hash mismatch", valid_stack, w_hash_mismatch, "sha256 mismatch"),
    ("newer weights format", valid_stack, w_newer_format, "format_version"),
])
def test_process_py_fails_with_one_line(tmp_path, weights, name, build, spoil, expect):
    w = weights if spoil is None else spoil(Path(shutil.copytree(weights, tmp_path / "w")))
    inp = build(tmp_path)
    proc = run_cmd(["process.py", "--input", str(inp), "--output", str(tmp_path / "out"), "--weights", str(w)])
    assert_one_line_error(proc, "process.py: error: ", expect)
    assert not (tmp_path / "out").exists()


def test_amf_predict_fails_with_one_line(tmp_path, weights):
    tif(rgb_stack(2))(tmp_path / "a.tif")
    (tmp_path / "b.tif").write_bytes(b"junk")
    proc = run_cmd(["-m", "amf", "predict", str(tmp_path), "--output", str(tmp_path / "o" / "p.csv"),
                    "--weights", str(weights)])
    assert_one_line_error(proc, "amf predict: error: ", "b.tif")
    assert not (tmp_path / "o").exists()


def signal_once_started(proc: subprocess.Popen, stream, sig: int) -> str:
    """Send ``sig`` as soon as the run says which device it runs on (amf.devices.resolve's line): past the imports
    and the checks, before the model has scored anything, however fast the machine. Returns what it read."""
    read = ""
    for line in stream:
        read += line
        if "running on" in line:
            break
    proc.send_signal(sig)
    return read


def test_sigterm_stops_cleanly(tmp_path, weights):
    """SIGTERM (the platform's stop) mid-run: exit 143, one line, nothing in the output folder."""
    import signal

    inp = platform_input(tmp_path, {"s.tif": good()})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "process.py", "--input", str(inp), "--output", str(tmp_path / "out"),
                             "--weights", str(weights)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    signal_once_started(proc, proc.stdout, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, (proc.returncode, stderr)
    assert stderr.splitlines() == ["process.py: error: stopped by SIGTERM; no result was written"]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.slow  # predict over 150 files
def test_predict_checks_every_file_first_and_skip_bad_lists_the_bad_ones(tmp_path):
    """300 patches with one corrupt PNG: one line naming it, within seconds; --skip-bad predicts the other 299."""
    import time

    folder = tmp_path / "patches"
    folder.mkdir()
    for i in range(300):
        Image.fromarray(rgb_stack(1)[0]).save(folder / f"p{i:03d}.png")
    data = (folder / "p150.png").read_bytes()
    (folder / "p150.png").write_bytes(data[: len(data) // 2])  # a header that parses, pixel data cut short
    started = time.monotonic()
    proc = run_cmd(["-m", "amf", "predict", str(folder), "--output", str(tmp_path / "o" / "p.csv")])
    assert time.monotonic() - started < 10
    assert_one_line_error(proc, "amf predict: error: ", "p150.png")
    assert not (tmp_path / "o").exists()
    proc = run_cmd(["-m", "amf", "predict", str(folder), "--output", str(tmp_path / "o" / "p.csv"), "--skip-bad",
                    "--views", "1"])
    assert proc.returncode == 0, proc.stderr
    rows = (tmp_path / "o" / "p.csv").read_text().splitlines()
    assert len(rows) == 300 and not any("p150.png" in r for r in rows)  # header + 299
    bad = (tmp_path / "o" / "p.bad.tsv").read_text().splitlines()
    assert len(bad) == 1 and bad[0].startswith(str(folder / "p150.png") + "\t")


@pytest.mark.slow  # process.py and predict runs
def test_ctrl_c_stops_process_py_and_predict_with_one_line(tmp_path):
    """SIGINT mid-run: exit 130, one line on stderr, no traceback, nothing in the output folder."""
    import signal

    # ten stacks: with the one-member student a single 16-page stack can finish before the signal arrives
    inp = platform_input(tmp_path, {f"s{i}.tif": tif(rgb_stack(16)) for i in range(10)})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    commands = {
        "process.py": [sys.executable, "process.py", "--input", str(inp), "--output", str(tmp_path / "out")],
        "amf predict": [sys.executable, "-m", "amf", "predict", str(inp), "--output", str(tmp_path / "out" / "p.csv")],
    }
    for name, cmd in commands.items():
        # SIGINT at its default in the child, as at a terminal: a suite started in the background (nohup, `cmd &`)
        # passes SIGINT on ignored, and Python then never raises KeyboardInterrupt
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        said = signal_once_started(proc, proc.stdout if name == "process.py" else proc.stderr, signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
        stderr = said + stderr if name == "amf predict" else stderr
        assert proc.returncode == 130, (name, proc.returncode, stderr)
        lines = [ln for ln in stderr.splitlines() if not ln.startswith("amf predict: ") or "interrupted" in ln]
        assert len(lines) == 1 and "interrupted" in lines[0] and "Traceback" not in stderr, stderr  # beside the
        # information line predict prints once the model is loaded (members, views, device)
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_messages_name_the_fix(tmp_path, capsys):
    """Fast failures (no torch import) and errors that say what to do."""
    import time

    from amf.cli import main

    for args, expect in [
        (["train", "--config", "configs/lite0.toml", "--labels", str(tmp_path / "no.csv"), "--output", "x"],
         "labels file not found"),
        (["export", str(tmp_path), "--output", str(tmp_path / "w")], "is not a training run"),
        (["crossval", str(tmp_path), "--output", str(tmp_path / "c")], "is not a training run"),
    ]:
        started = time.monotonic()
        proc = run_cmd(["-m", "amf", *args])
        assert time.monotonic() - started < 3, args  # before torch is imported
        assert_one_line_error(proc, f"amf {args[0]}: error: ", expect)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}")
    (tmp_path / "img.gif").write_bytes(b"GIF89a")
    for args, expect in [
        (["predict", str(tmp_path / "img.gif"), "--output", str(tmp_path / "p.csv")], ".png, .jpg, .jpeg, .tif"),
        (["predict", str(tmp_path / "img.gif"), "--output", str(tmp_path / "p.csv"), "--weights", str(run_dir)],
         f"amf export {run_dir} --output"),
        (["evaluate", "--predictions", "p.csv", "--labels", "l.csv", "--output", str(tmp_path)], "is a folder"),
        (["evaluate", "--predictions", "p.csv", "--labels", "l.csv", "--output", str(tmp_path / "m.json"),
          "--report", str(tmp_path / "img.gif")], "is a file"),
    ]:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert expect in err and ".tmp" not in err, err
    truncated = tmp_path / "cut.tif"
    truncated.write_bytes(b"II*\x00" + struct.pack("<I", 8))
    with pytest.raises(InputError, match="truncated"):
        count_pages(truncated)


def test_small_things_help_texts_and_counts(tmp_path, capsys):
    from amf.cli import main

    proc = run_cmd(["-m", "amf", "--help"])
    assert proc.returncode == 0 and "``" not in proc.stdout and "Each command has its own --help" in proc.stdout
    proc = run_cmd(["process.py", "--help"])
    assert "(default: /input)" in proc.stdout and "(default: /output)" in proc.stdout
    Image.fromarray(rgb_stack(1)[0]).save(tmp_path / "one.png")
    assert main(["predict", str(tmp_path / "one.png"), "--output", str(tmp_path / "p.csv"), "--views", "1"]) == 0
    assert "1 patch from 1 file ->" in capsys.readouterr().out


def test_bench_prints_a_table_and_writes_json_only_when_asked(tmp_path):
    proc = run_cmd(["-m", "amf", "bench", "--skip", "speed,latency,throughput,predict", "--json",
                    str(tmp_path / "b.json")], timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "Largest efficientvit_l2" in proc.stdout and '"machine"' not in proc.stdout
    assert "paper_ensemble_fit" in json.loads((tmp_path / "b.json").read_text())


@pytest.mark.slow  # benchmarks an ensemble
def test_bench_counts_flops_and_times_predict_on_a_folder(tmp_path, weights):
    """The engine rows carry GFLOP/s per thread and the fraction of a matmul's rate; the predict row, figures/s."""
    proc = run_cmd(["-m", "amf", "bench", "--weights", str(weights), "--quick", "--repeats", "1", "--skip",
                    "latency,throughput,fit", "--predict-patches", "8", "--json", str(tmp_path / "b.json")],
                   timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "b.json").read_text())
    speed = result["engine_speed"]
    assert speed["gflop_per_patch"] > 0
    for row in (v for v in speed["by_threads"]["1"].values() if isinstance(v, dict)):
        assert row["gflops_per_s_per_thread"] > 0 and 0 < row["fraction_of_matmul_peak"]
    assert result["predict"]["patches"] == 8 and result["predict"]["figures_per_s"] > 0
    assert "GFLOP/s/thread" in proc.stdout and "figures/s" in proc.stdout

