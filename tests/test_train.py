"""Training runs: layout, resume == uninterrupted (bit for bit), config handling, and a real-data epoch."""

import csv
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from synthetic_data import amibr_style_dataset

from amf.cli import main
from amf.errors import AmfError
from amf.training.run_folder import CHECKPOINT
from amf.training.train import TrainConfig, TrainOptions, train_run

pytestmark = pytest.mark.slow  # training runs

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.toml"
AMIBR = ROOT.parent / "shared" / "data" / "ami-br-midog21" / "labels.csv"


def smoke(**changes) -> TrainConfig:
    return TrainConfig.from_toml(SMOKE).replace(**changes)


class Interrupt(Exception):
    pass


def test_resume_reaches_identical_weights(tmp_path):
    labels = amibr_style_dataset(tmp_path / "data")
    cfg = smoke(epochs=2, lodo=False)
    train_run(cfg, labels, tmp_path / "straight")

    def kill_after_first_epoch(fold, epoch):
        if fold == "all/fold0" and epoch == 0:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_run(cfg, labels, tmp_path / "resumed", options=TrainOptions(on_epoch_end=kill_after_first_epoch))
    ckpt = torch.load(tmp_path / "resumed" / "all" / "fold0" / CHECKPOINT, weights_only=True)
    assert ckpt["epoch"] == 1 and not (tmp_path / "resumed" / "all" / "fold1").exists()
    with pytest.raises(AmfError, match="--resume"):
        train_run(cfg, labels, tmp_path / "resumed")
    with pytest.raises(AmfError, match="differs in: lr"):
        train_run(cfg.replace(lr=0.1), labels, tmp_path / "resumed", options=TrainOptions(resume=True))
    train_run(cfg, labels, tmp_path / "resumed", options=TrainOptions(resume=True))

    for fold in ("all/fold0", "all/fold1"):
        a = torch.load(tmp_path / "straight" / fold / CHECKPOINT, weights_only=True)
        b = torch.load(tmp_path / "resumed" / fold / CHECKPOINT, weights_only=True)
        assert a["epoch"] == b["epoch"] == 2
        assert a["model"].keys() == b["model"].keys()
        for k in a["model"]:
            assert torch.equal(a["model"][k], b["model"][k]), (fold, k)
        best_a = load_file(tmp_path / "straight" / fold / "best.safetensors")
        best_b = load_file(tmp_path / "resumed" / fold / "best.safetensors")
        assert all(torch.equal(best_a[k], best_b[k]) for k in best_a)
        oof_a, oof_b = (tmp_path / run / fold / "oof.csv" for run in ("straight", "resumed"))
        assert oof_a.read_bytes() == oof_b.read_bytes()
    events = [json.loads(x)["event"] for x in (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()]
    assert events.count("resume") == 1 and "fold_resume" in events


def test_lodo_run_layout_via_cli(tmp_path, capsys):
    labels = amibr_style_dataset(tmp_path / "data")
    out = tmp_path / "run"
    rc = main(["train", "--config", str(SMOKE), "--labels", str(labels), "--output", str(out),
               "--epochs", "1", "--no-progress"])
    assert rc == 0
    assert "held out 'scanner0'" in capsys.readouterr().out
    record = json.loads((out / "config.json").read_text())
    assert record["config"]["epochs"] == 1 and record["data"]["n"] == 24 and "--epochs" in record["arguments"]
    for d in ("scanner0", "scanner1", "scanner2"):
        for k in (0, 1):
            fold = out / "lodo" / d / f"fold{k}"
            for name in ("checkpoint.pt", "best.safetensors", "oof.csv", "heldout.csv", "result.json"):
                assert (fold / name).is_file(), fold / name
            held = list(csv.DictReader(open(fold / "heldout.csv")))
            assert {r["domain"] for r in held} == {d} and len(held) == 8
            oof = list(csv.DictReader(open(fold / "oof.csv")))
            assert d not in {r["domain"] for r in oof}
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["lodo"]) == {"scanner0", "scanner1", "scanner2"}
    assert set(summary["all"]["thresholds"]) == {"balanced_accuracy", "youden", "otsu"}
    assert summary["all"]["oof"]["n"] == 24
    epochs = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "epoch" for e in epochs) == 8 and all(
        "val_balanced_accuracy" in e for e in epochs if e["event"] == "epoch")
    # Resuming a finished run retrains nothing.
    assert main(["train", "--resume", "--labels", str(labels), "--output", str(out), "--no-progress"]) == 0
    assert sum(json.loads(x)["event"] == "epoch" for x in (out / "log.jsonl").read_text().splitlines()) == 8


def test_config_files_and_overrides():
    configs = {p.stem: TrainConfig.from_toml(p) for p in sorted((ROOT / "configs").glob("*.toml"))}
    assert {"cpu", "paper", "smoke", "lite0", "lite0-crop80", "b0-scratch"} <= set(configs)
    # The shipped recipe is the plain lite0 recipe plus the levers measured leave-one-domain-out, nothing else.
    plain, shipped = configs["lite0"].to_dict(), configs["lite0-crop80"].to_dict()
    assert {k for k in plain if plain[k] != shipped[k]} == {"stain_sigma", "stain_delta", "crop"}
    assert (shipped["stain_sigma"], shipped["stain_delta"], shipped["crop"]) == (0.4, 0.15, 80)
    paper = TrainConfig.from_toml(ROOT / "configs" / "paper.toml")
    assert (paper.arch, paper.input_size, paper.folds, paper.lodo) == ("efficientvit_l2", 256, 5, True)
    cfg = smoke().replace(preset="cpu")
    assert (cfg.arch, cfg.input_size) == ("efficientvit_b0", 128)
    assert smoke().replace(arch="resnet10t").model_spec().arch == "resnet10t"
    assert smoke(crop=96).model_spec().crop == 96 and smoke().model_spec().crop == 128  # the model's centre crop
    with pytest.raises(AmfError, match="crop"):
        smoke(crop=0)
    with pytest.raises(AmfError, match="unknown config key"):
        TrainConfig.from_dict({"epochz": 3})
    with pytest.raises(AmfError, match="preset"):
        TrainConfig.from_dict({"preset": "gpu"})


def test_bad_data_fails_before_training(tmp_path):
    labels = amibr_style_dataset(tmp_path / "data", n=12)
    (tmp_path / "data" / "patches" / "3.png").unlink()
    out = tmp_path / "r"
    rc = main(["train", "--config", str(SMOKE), "--labels", str(labels), "--output", str(out), "--no-progress"])
    assert rc == 2 and not out.exists()


def test_real_data_one_tiny_epoch(tmp_path):
    if not AMIBR.is_file():
        pytest.skip(f"AMi-Br data not found at {AMIBR}; see ../shared/data/SOURCES.md")
    summary = train_run(smoke(epochs=1, limit=64, lodo=False), AMIBR, tmp_path / "real")
    assert summary["data"]["n"] == 64 and summary["all"]["oof"]["n"] == 64
    assert summary["all"]["oof"]["n_atypical"] >= 16  # --limit spreads over classes and scanners
    assert 0.0 <= summary["all"]["chosen"]["value"] <= 1.0


def test_one_fold_ablation_grows_into_the_full_kfold(tmp_path, capsys):
    """--lodo-only --fold-limit 1 trains fold 0 of each held-out domain; resuming without the limit adds the
    other folds and keeps fold 0 as it was (the splits are always made with the full k)."""
    labels = amibr_style_dataset(tmp_path / "data")
    out = tmp_path / "run"
    base = ["train", "--config", str(SMOKE), "--labels", str(labels), "--output", str(out), "--epochs", "1",
            "--no-progress", "--lodo-only"]
    assert main([*base, "--fold-limit", "1", "--set", "stain_sigma=0.2"]) == 0
    done = sorted(p.parent.relative_to(out).as_posix() for p in out.glob("**/result.json"))
    assert done == [f"lodo/scanner{d}/fold0" for d in range(3)]
    summary = json.loads((out / "summary.json").read_text())
    assert "all" not in summary and set(summary["lodo"]) == {"scanner0", "scanner1", "scanner2"}
    fold0 = (out / "lodo" / "scanner0" / "fold0" / "best.safetensors").read_bytes()
    assert main([*base, "--resume", "--set", "stain_sigma=0.3"]) == 2  # a different stain strength: another run
    assert "differs in: stain_sigma" in capsys.readouterr().err
    assert main([*base, "--resume", "--set", "stain_sigma=0.2"]) == 0
    done = sorted(p.parent.relative_to(out).as_posix() for p in out.glob("**/result.json"))
    assert done == [f"lodo/scanner{d}/fold{k}" for d in range(3) for k in (0, 1)]
    assert (out / "lodo" / "scanner0" / "fold0" / "best.safetensors").read_bytes() == fold0
    record = json.loads((out / "config.json").read_text())
    assert record["config"]["fold_limit"] == 0
    assert "--fold-limit" in record["arguments"]  # the run's original command is kept


def test_set_overrides_and_their_errors():
    from amf.training.train_cli import parse_overrides

    assert parse_overrides(["stain_sigma=0", "d4=false", "arch=efficientvit_b1", "note='a = b'"]) == {
        "stain_sigma": 0, "d4": False, "arch": "efficientvit_b1", "note": "a = b"}
    with pytest.raises(AmfError, match="unknown config key"):
        parse_overrides(["stain=0.1"])
    with pytest.raises(AmfError, match="KEY=VALUE"):
        parse_overrides(["stain_sigma"])
    with pytest.raises(AmfError, match="fold_limit"):
        smoke(fold_limit=5)
    with pytest.raises(AmfError, match="nothing to train"):
        smoke(lodo=False, ensemble=False)


def test_cli_trains_on_two_labels_files_with_their_domains_apart(tmp_path, capsys):
    from synthetic_data import midog25_style_dataset

    a = amibr_style_dataset(tmp_path / "amibr", n=12)
    b = midog25_style_dataset(tmp_path / "midog25", n=8)
    out = tmp_path / "run"
    args = ["train", "--config", str(SMOKE), "--labels", str(a), "--labels", str(b), "--output", str(out),
            "--lodo-only", "--fold-limit", "1", "--epochs", "1", "--no-progress"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["lodo"]) == {"scanner0", "scanner1", "scanner2", "tumour0", "tumour1"}
    record = json.loads((out / "config.json").read_text())
    assert record["data"]["labels_file"] == [str(a), str(b)] and record["image_dirs"] == [None, None]
    assert record["arguments"].count("--labels") == 2
    assert main(args[:-6] + ["--resume", "--lodo-only", "--fold-limit", "1", "--epochs", "1", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["train", "--config", str(SMOKE), "--labels", str(a), "--labels", str(b), "--images", str(a.parent),
                 "--output", str(tmp_path / "other")]) == 2
    assert "one --images per --labels" in capsys.readouterr().err


def test_mixup_trains_reproducibly_and_a_run_from_before_a_new_key_still_resumes(tmp_path):
    labels = amibr_style_dataset(tmp_path / "data")
    cfg = smoke(epochs=1, lodo=False, fold_limit=1, mixup_alpha=0.4)
    train_run(cfg, labels, tmp_path / "a")
    train_run(cfg, labels, tmp_path / "b")
    a, b = (load_file(tmp_path / r / "all" / "fold0" / "best.safetensors") for r in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    plain = load_file(train_run(smoke(epochs=1, lodo=False, fold_limit=1), labels, tmp_path / "c") and
                      tmp_path / "c" / "all" / "fold0" / "best.safetensors")
    assert any(not torch.equal(a[k], plain[k]) for k in a if a[k].is_floating_point())
    record = json.loads((tmp_path / "c" / "config.json").read_text())
    del record["config"]["mixup_alpha"]  # as written before the key existed
    (tmp_path / "c" / "config.json").write_text(json.dumps(record))
    train_run(smoke(epochs=1, lodo=False, fold_limit=1), labels, tmp_path / "c", options=TrainOptions(resume=True))
    with pytest.raises(AmfError, match="TrainConfig|mixup_alpha must"):
        smoke(mixup_alpha=-1)


def test_weight_ema_is_what_gets_validated_and_kept_and_resumes_bit_for_bit(tmp_path):
    labels = amibr_style_dataset(tmp_path / "data")
    cfg = smoke(epochs=2, lodo=False, fold_limit=1, ema_decay=0.9)
    train_run(cfg, labels, tmp_path / "straight")
    fold = Path("all") / "fold0"
    ckpt = torch.load(tmp_path / "straight" / fold / CHECKPOINT, weights_only=True)
    kept = load_file(tmp_path / "straight" / fold / "best.safetensors")
    floats = [k for k in ckpt["model"] if ckpt["model"][k].is_floating_point()]
    assert any(not torch.equal(ckpt["ema"][k], ckpt["model"][k]) for k in floats)  # an average, not a copy
    train_run(cfg.replace(epochs=1, batch_size=4), labels, tmp_path / "one")  # one epoch, the best: its EMA kept
    one = torch.load(tmp_path / "one" / fold / CHECKPOINT, weights_only=True)
    one_kept = load_file(tmp_path / "one" / fold / "best.safetensors")
    assert all(torch.equal(one_kept[k], one["ema"][k]) for k in floats)
    assert any(not torch.equal(one_kept[k], one["model"][k]) for k in floats)

    def kill_after_first_epoch(fold_name, epoch):
        if epoch == 0:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_run(cfg, labels, tmp_path / "resumed", options=TrainOptions(on_epoch_end=kill_after_first_epoch))
    train_run(cfg, labels, tmp_path / "resumed", options=TrainOptions(resume=True))
    resumed = load_file(tmp_path / "resumed" / fold / "best.safetensors")
    assert all(torch.equal(kept[k], resumed[k]) for k in kept)
    plain = torch.load(train_run(smoke(epochs=2, lodo=False, fold_limit=1), labels, tmp_path / "plain") and
                       tmp_path / "plain" / fold / CHECKPOINT, weights_only=True)
    assert plain["ema"] is None
    assert all(torch.equal(plain["model"][k], ckpt["model"][k]) for k in floats)  # EMA never steers training
    with pytest.raises(AmfError, match="ema_decay"):
        smoke(ema_decay=1.0)


def write_teacher(path: Path, labels: Path, score, domains=(None,)) -> Path:
    """A teacher CSV scoring every patch of ``labels`` with ``score(label)``, once per held-out domain given."""
    from amf.training.data import read_labels

    table = read_labels(labels)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["heldout_domain", "image", "p_atypical"])
        for domain in domains:
            w.writerows([domain or "", image, score(int(y))]
                        for image, y in zip(table.paths, table.labels, strict=True))
    return path


def test_distillation_learns_the_teachers_scores_and_is_recorded(tmp_path):
    """Soft targets (1 - w) * label + w * P_teacher: a teacher that repeats the labels changes no bit, one that
    does not changes the weights; the teacher file's sha256 is recorded and a missing patch stops the run early."""
    labels = amibr_style_dataset(tmp_path / "data")
    base = smoke(epochs=1, lodo=False, fold_limit=1)
    train_run(base, labels, tmp_path / "plain")
    echo = write_teacher(tmp_path / "echo.csv", labels, float)
    train_run(base.replace(teacher_scores=str(echo), distill_weight=1.0), labels, tmp_path / "echo")
    fold = Path("all") / "fold0" / "best.safetensors"
    plain, same = (load_file(tmp_path / r / fold) for r in ("plain", "echo"))
    assert all(torch.equal(plain[k], same[k]) for k in plain)
    unsure = write_teacher(tmp_path / "unsure.csv", labels, lambda y: 0.5)
    train_run(base.replace(teacher_scores=str(unsure), distill_weight=0.5), labels, tmp_path / "unsure")
    soft = load_file(tmp_path / "unsure" / fold)
    assert any(not torch.equal(plain[k], soft[k]) for k in plain if plain[k].is_floating_point())
    record = json.loads((tmp_path / "unsure" / "config.json").read_text())
    assert record["config"]["distill_weight"] == 0.5 and len(record["teacher_scores_sha256"]) == 64

    lodo = smoke(epochs=1, ensemble=False, fold_limit=1, teacher_scores=str(unsure), distill_weight=0.5)
    with pytest.raises(AmfError, match="no rows for held-out domain"):  # an all-domains teacher for LODO folds
        train_run(lodo, labels, tmp_path / "lodo")
    rows = (tmp_path / "unsure.csv").read_text().splitlines()
    (tmp_path / "short.csv").write_text("\n".join(rows[:-1]) + "\n")
    with pytest.raises(AmfError, match="lack 1 of its"):
        train_run(base.replace(teacher_scores=str(tmp_path / "short.csv"), distill_weight=0.5), labels,
                  tmp_path / "short")
    with pytest.raises(AmfError, match="needs teacher_scores"):
        smoke(distill_weight=0.5)


def test_folds_as_independent_parallel_jobs_equal_the_sequential_run(tmp_path, capsys):
    """--list-folds prints the plan; two jobs with --fold, run at once, give the sequential run's bytes."""
    import subprocess
    import sys

    labels = amibr_style_dataset(tmp_path / "data")
    base = ["train", "--config", str(SMOKE), "--labels", str(labels), "--no-lodo", "--epochs", "1", "--no-progress"]
    assert main([*base, "--list-folds"]) == 0
    folds = capsys.readouterr().out.split()
    assert folds == ["all/fold0", "all/fold1"]
    assert main([*base, "--output", str(tmp_path / "seq")]) == 0
    cli = [sys.executable, "-m", "amf", *base, "--output", str(tmp_path / "par")]
    jobs = [subprocess.Popen([*cli, "--fold", f], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for f in folds]
    for job in jobs:
        out, err = job.communicate(timeout=600)
        assert job.returncode == 0, err
    for fold in folds:
        seq_files = sorted(p.relative_to(tmp_path / "seq") for p in (tmp_path / "seq" / fold).rglob("*"))
        par_files = sorted(p.relative_to(tmp_path / "par") for p in (tmp_path / "par" / fold).rglob("*"))
        assert seq_files == par_files and seq_files
        for f in seq_files:
            assert (tmp_path / "seq" / f).read_bytes() == (tmp_path / "par" / f).read_bytes(), f
    seq, par = (json.loads((tmp_path / r / "summary.json").read_text()) for r in ("seq", "par"))
    assert seq == par  # written by whichever job finished last
    assert main([*base, "--output", str(tmp_path / "one"), "--fold", "all/fold7"]) == 2
    assert "amf train --list-folds" in capsys.readouterr().err
