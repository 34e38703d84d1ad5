"""Data-parallel training under torchrun (amf.training.distributed): two gloo processes give one process's weights."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic_data import amibr_style_dataset

import amf.training.distributed
from amf.cli import main
from amf.training.run_folder import CHECKPOINT
from amf.training.train import TrainConfig, TrainOptions, train_run

pytestmark = pytest.mark.slow  # torchrun training

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.toml"
FOLDS = ("all/fold0", "all/fold1")
# The smoke configuration, with batches of 5 (shares of 3 and 2; the last batch of 2, shares of 1 and 1), mixup
# (partners drawn across the shares) and float64: in float32, Adam turns rounding noise in gradients that are
# zero in exact arithmetic (a BatchNorm bias feeding another BatchNorm) into steps of +-lr, so no two
# summation orders agree to 1e-5 there (docs/scaling.md); in float64 that noise stays below Adam's eps.
SETTINGS = {"batch_size": 5, "mixup_alpha": 0.4, "dtype": "float64", "keep_checkpoints": True, "lodo": False}


def _options(labels: Path, output: Path) -> list[str]:
    sets = [f"--set={k}={json.dumps(v) if isinstance(v, str) else str(v).lower()}"
            for k, v in SETTINGS.items() if k != "lodo"]
    return ["train", "--config", str(SMOKE), "--labels", str(labels), "--output", str(output), "--no-lodo",
            "--no-progress", *sets]


def _torchrun(args: list[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "amf", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _weights(run: Path, fold: str) -> dict[str, torch.Tensor]:
    return torch.load(run / fold / CHECKPOINT, weights_only=True)["model"]


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


def _logits(path: Path) -> np.ndarray:
    with open(path, newline="") as f:
        return np.array([float(r["logit"]) for r in csv.DictReader(f)])


def test_share_splits_every_batch_without_gaps():
    for size in (1, 2, 3, 4):
        for n in range(0, 12):
            shares = [amf.training.distributed.World(r, size).share(n) for r in range(size)]
            assert [i for s in shares for i in range(n)[s]] == list(range(n))
            assert max(s.stop - s.start for s in shares) - min(s.stop - s.start for s in shares) <= 1


def test_two_processes_train_the_weights_of_one(tmp_path, capsys):
    """torchrun with 2 gloo processes == 1 process, within 1e-5 (measured: ~1e-8); only rank 0 writes; a run
    that one process started and left mid-fold is finished by two."""
    labels = amibr_style_dataset(tmp_path / "data")
    assert main(_options(labels, tmp_path / "one")) == 0
    out = _torchrun(_options(labels, tmp_path / "two")).stdout
    assert out.count("summary:") == 1  # rank 0 alone reports

    for fold in FOLDS:
        assert _max_difference(_weights(tmp_path / "one", fold), _weights(tmp_path / "two", fold)) < 1e-5
        for name in ("oof.csv",):
            np.testing.assert_allclose(_logits(tmp_path / "one" / fold / name),
                                       _logits(tmp_path / "two" / fold / name), atol=1e-5)
    log = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    assert log[0]["event"] == "start" and log[0]["processes"] == 2
    assert sum(r["event"] == "epoch" for r in log) == len(FOLDS) * 2  # one line per epoch, not one per rank
    one, two = (json.loads((tmp_path / r / "summary.json").read_text()) for r in ("one", "two"))
    assert one["all"]["thresholds"].keys() == two["all"]["thresholds"].keys()

    # Resume: fold 0 finished and fold 1 stopped after its first epoch in one process; two processes finish it.
    class Stop(Exception):
        pass

    def stop_in_fold1(fold: str, epoch: int) -> None:
        if fold == "all/fold1" and epoch == 0:
            raise Stop

    cfg = TrainConfig.from_toml(SMOKE).replace(**SETTINGS)
    with pytest.raises(Stop):
        train_run(cfg, labels, tmp_path / "resumed", options=TrainOptions(on_epoch_end=stop_in_fold1))
    assert (tmp_path / "resumed" / "all" / "fold1" / CHECKPOINT).is_file()
    _torchrun([*_options(labels, tmp_path / "resumed"), "--resume"])
    for fold in FOLDS:
        assert _max_difference(_weights(tmp_path / "one", fold), _weights(tmp_path / "resumed", fold)) < 1e-5
    log = [json.loads(line) for line in (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log if r["event"] == "fold_resume"] == [1]
