"""TrainConfig is the one schema of training settings: TOML files (with ``extends``), checks and CLI flags."""

import argparse
import dataclasses
from pathlib import Path

import pytest

from amf.errors import AmfError
from amf.inference.spec import PRESETS
from amf.training.config import TrainConfig
from amf.training.threshold import METHODS
from amf.training.train_cli import add_arguments, build_config

ROOT = Path(__file__).resolve().parents[1]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p


def test_every_setting_is_a_flag_with_its_help_and_its_registry():
    actions = {a.dest: a for a in parser()._actions}
    for f in dataclasses.fields(TrainConfig):
        if f.type == "dict":
            continue  # a table: --set only
        assert f.name in actions, f"--{f.name.replace('_', '-')} is missing"
        assert actions[f.name].help == f.metadata["help"] and f.metadata["help"]
    assert list(actions["preset"].choices) == list(PRESETS)
    assert list(actions["threshold_method"].choices) == list(METHODS)


def test_flags_override_the_file_and_bools_go_both_ways(tmp_path):
    args = parser().parse_args(["--config", str(ROOT / "configs" / "lite0-crop80.toml"), "--labels", "x.csv",
                                "--epochs", "3", "--no-lodo", "--focal-alpha", "0.25", "--no-d4"])
    cfg = build_config(args)
    assert (cfg.epochs, cfg.lodo, cfg.focal_alpha, cfg.d4, cfg.crop) == (3, False, 0.25, False, 80)
    args = parser().parse_args(["--config", str(ROOT / "configs" / "paper.toml"), "--labels", "x.csv",
                                "--focal-alpha", "none", "--lodo-only"])
    cfg = build_config(args)
    assert cfg.focal_alpha is None and cfg.ensemble is False and cfg.arch == "efficientvit_l2"


def test_extends_starts_from_the_base_and_a_circle_is_refused(tmp_path):
    crop80, plain = (TrainConfig.from_toml(ROOT / "configs" / n) for n in ("lite0-crop80.toml", "lite0.toml"))
    differ = {k for k, v in crop80.to_dict().items() if plain.to_dict()[k] != v}
    assert differ == {"crop", "stain_sigma", "stain_delta"}
    (tmp_path / "a.toml").write_text('extends = "b.toml"\nepochs = 2\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    with pytest.raises(AmfError, match="extends itself"):
        TrainConfig.from_toml(tmp_path / "a.toml")


@pytest.mark.parametrize("changes,message", [
    ({"epochs": 0}, "epochs must be >= 1, got 0"),
    ({"crop": 200}, "crop 200 must be an integer in [1, 128]"),
    ({"ema_decay": 1.0}, "ema_decay must be in [0, 1), got 1.0"),
    ({"focal_alpha": 2.0}, "focal_alpha must be in [0, 1], got 2.0"),
    ({"amp": "fp8"}, "amp must be one of auto, bf16, fp16, off, not 'fp8'"),
    ({"preset": "gpu"}, "preset must be one of paper, cpu, not 'gpu'"),
])
def test_bad_settings_are_one_line_each(changes, message):
    with pytest.raises(AmfError) as err:
        TrainConfig().replace(**changes)
    assert message in str(err.value)


def test_a_recorded_command_keeps_the_no_flags_and_rebuilds_the_same_config(tmp_path):
    """``--no-lodo`` (any ``--no-X`` setting) was dropped from the recorded arguments, so the audit rebuilt another
    config from them, and ``--retrain`` would have trained another run."""
    from amf.audit.checks import recorded_config
    from amf.files import json_safe
    from amf.training.run_folder import args_to_argv
    from amf.training.train_cli import negatable_settings

    argv = ["--config", "configs/lite0-crop80.toml", "--labels", "x.csv", "--output", str(tmp_path / "run"),
            "--no-lodo", "--no-d4", "--deterministic", "--fold-limit", "1"]
    args = parser().parse_args(argv)
    args.config = ROOT / args.config
    recorded = args_to_argv("train", args, negatable=negatable_settings())
    assert "--no-lodo" in recorded and "--no-d4" in recorded and "--deterministic" in recorded
    assert "--no-progress" not in recorded  # a plain store_true flag that was not given stays out
    assert recorded_config(recorded, ROOT) == json_safe(build_config(args).to_dict())
