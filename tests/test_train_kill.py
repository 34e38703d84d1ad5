"""Training killed mid-epoch (SIGKILL, SIGTERM) resumes to the same final weights as a run never stopped.

`python -m amf train` runs as a subprocess on a small synthetic dataset (smoke config: test_efficientnet
at 32 px, one thread, deterministic). As soon as its log shows fold 0's first epoch, it is killed, so the
kill lands in epoch 2 (checked afterwards: the last checkpoint says 1 completed epoch). Then:

* every file left under its final name loads (checkpoints, weights, JSON): atomic writes mean a kill never
  leaves a half-written file that later loads; only hidden ``.*.tmp`` files may remain;
* ``--resume`` (through the same CLI, in-process to save a start-up) finishes the run;
* every fold's final checkpoint, best weights, out-of-fold predictions and the summary's thresholds are
  identical to an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from synthetic_data import amibr_style_dataset

from amf.cli import main

pytestmark = pytest.mark.slow  # kills and resumes training

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.toml"
FOLDS = ("all/fold0", "all/fold1")
EPOCHS = 3


def train_args(labels: Path, out: Path) -> list[str]:
    return ["train", "--config", str(SMOKE), "--labels", str(labels), "--output", str(out), "--no-lodo",
            "--epochs", str(EPOCHS), "--no-progress"]


def start(labels: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "amf", *train_args(labels, out)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def kill_in_second_epoch(proc: subprocess.Popen, out: Path, sig: int, timeout: float = 240) -> None:
    """Send ``sig`` as soon as fold 0's first epoch is logged (its checkpoint is written just before)."""
    log = out / "log.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training ended (rc {proc.returncode}) before it could be killed: "
                                 f"{proc.stderr.read()[-2000:]}")
        lines = log.read_text().splitlines() if log.is_file() else []
        if any('"event": "epoch"' in ln and '"epoch": 1,' in ln for ln in lines):
            proc.send_signal(sig)
            proc.wait(timeout=60)
            return
        time.sleep(0.005)
    proc.kill()
    raise AssertionError("training did not reach its first epoch in time")


def check_loadable(run: Path) -> list[str]:
    """Every file under its final name loads; returns the hidden temporary files left behind."""
    leftovers = []
    for p in run.rglob("*"):
        if not p.is_file():
            continue
        if p.name.startswith("."):
            leftovers.append(p.name)
        elif p.suffix == ".pt":
            torch.load(p, map_location="cpu", weights_only=True)
        elif p.suffix == ".safetensors":
            load_file(p)
        elif p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".jsonl":
            lines = p.read_text().splitlines()
            for ln in lines[:-1]:
                json.loads(ln)  # a kill may cut the last line short, never an earlier one
    assert all(name.endswith(".tmp") for name in leftovers), leftovers
    return leftovers


def assert_same_run(a: Path, b: Path) -> None:
    for fold in FOLDS:
        ca = torch.load(a / fold / "checkpoint.pt", map_location="cpu", weights_only=True)
        cb = torch.load(b / fold / "checkpoint.pt", map_location="cpu", weights_only=True)
        assert ca["epoch"] == cb["epoch"] == EPOCHS
        assert ca["model"].keys() == cb["model"].keys()
        for k in ca["model"]:
            assert torch.equal(ca["model"][k], cb["model"][k]), (fold, k)
        wa, wb = load_file(a / fold / "best.safetensors"), load_file(b / fold / "best.safetensors")
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), fold
        assert (a / fold / "oof.csv").read_bytes() == (b / fold / "oof.csv").read_bytes(), fold
    sa, sb = (json.loads((r / "summary.json").read_text()) for r in (a, b))
    assert sa["all"]["thresholds"] == sb["all"]["thresholds"]


@pytest.fixture(scope="module")
def labels(tmp_path_factory) -> Path:
    return amibr_style_dataset(tmp_path_factory.mktemp("data"), n=96)


@pytest.fixture(scope="module")
def runs(labels, tmp_path_factory) -> dict[str, Path]:
    """Two training subprocesses, one killed with SIGKILL, one with SIGTERM, in epoch 2; meanwhile, in this
    process, the same run uninterrupted (``straight``)."""
    import threading

    runs = {name: tmp_path_factory.mktemp(name) / "run" for name in ("sigkill", "sigterm", "straight")}
    failures: list[BaseException] = []

    def victim(name: str, sig: int) -> None:
        try:
            proc = start(labels, runs[name])
            kill_in_second_epoch(proc, runs[name], sig)
            assert proc.returncode == -sig, (name, proc.returncode)
        except BaseException as exc:  # noqa: BLE001 - reported in the main thread
            failures.append(exc)

    victims = (("sigkill", signal.SIGKILL), ("sigterm", signal.SIGTERM))
    threads = [threading.Thread(target=victim, args=a) for a in victims]
    for t in threads:
        t.start()
    try:
        assert main(train_args(labels, runs["straight"])) == 0
    finally:
        for t in threads:
            t.join()
    if failures:
        raise failures[0]
    return runs


@pytest.mark.parametrize("name", ["sigkill", "sigterm"])
def test_kill_mid_epoch_then_resume_matches_an_uninterrupted_run(name, runs, labels):
    run, straight = runs[name], runs["straight"]
    ckpt = torch.load(run / "all" / "fold0" / "checkpoint.pt", map_location="cpu", weights_only=True)
    print(f"{name}: killed with {ckpt['epoch']} epoch(s) of fold 0 complete")
    assert ckpt["epoch"] in (1, 2)  # killed after epoch 1's checkpoint, normally within epoch 2
    assert not (run / "all" / "fold0" / "result.json").exists() and not (run / "summary.json").exists()
    check_loadable(run)
    assert main([*train_args(labels, run), "--resume"]) == 0
    check_loadable(run)
    assert_same_run(straight, run)
