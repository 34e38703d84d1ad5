"""Export a training run into a weights folder, load it back, and refuse a tampered member."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from synthetic_data import write_csv

from amf.cli import main
from amf.errors import AmfError, WeightsError
from amf.files import sha256_file
from amf.inference.model import build_classifier
from amf.inference.weights import load_ensemble
from amf.training.export import ExportOptions, export_run
from amf.training.run_folder import load_best_state
from amf.training.train import TrainConfig, train_run

pytestmark = pytest.mark.slow  # trains and exports

ROOT = Path(__file__).resolve().parents[1]


def synthetic_dataset(root: Path, n: int = 24) -> Path:
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n):
        p = root / f"{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (128, 128, 3)).astype(np.uint8)).save(p)
        rows.append([f"{i}.png", f"{i % 8}.tiff", f"tumour {i % 8 % 2}", ["NMF", "AMF"][i % 3 == 0]])
    return write_csv(root / "labels.csv", ["image_id", "filename", "Tumor", "majority"], rows)


@pytest.fixture(autouse=True)
def clean_checkout(monkeypatch):
    """Export refuses a checkout with uncommitted changes; these tests run in one that may have some."""
    import amf.provenance
    import amf.training.export

    def clean(cwd=None):
        return {"commit": amf.provenance.git_commit(cwd), "dirty": False, "changes": []}

    monkeypatch.setattr(amf.provenance, "git_state", clean)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    labels = synthetic_dataset(root / "data")
    assert main(["train", "--config", str(ROOT / "configs" / "smoke.toml"), "--labels", str(labels), "--output",
                 str(root / "run"), "--epochs", "1", "--no-lodo", "--no-progress"]) == 0
    return root / "run"


def test_export_then_load(run_dir, tmp_path, capsys):
    out = tmp_path / "weights"
    rc = main(["export", str(run_dir), "--output", str(out), "--threshold-method", "youden", "--tta-views", "4",
               "--note", "unit test"])
    assert rc == 0 and "wrote 2 members" in capsys.readouterr().out
    ens = load_ensemble(out)
    m = ens.manifest.provenance
    assert len(ens.members) == 2 and ens.tta.views == 4 and ens.threshold.method == "oof_youden"
    assert ens.threshold.value == pytest.approx(m.threshold_candidates["youden"].value)
    assert set(m.threshold_candidates) == {"balanced_accuracy", "youden", "otsu"}
    assert m.data.n == 24 and len(m.data.labels_sha256) == 64 and len(m.data.files_sha256) == 64
    assert m.training.config["arch"] == "test_efficientnet" and m.training.command
    assert m.export.arguments[-1] == "unit test" and m.export.git_commit
    assert m.note.startswith("unit test; short schedule")
    assert (out / "manifest.json").read_bytes() == ens.manifest.text().encode()  # written as the type writes it
    # Members reproduce the trained best weights (stored in fp16).
    x = torch.rand(3, 3, 128, 128)
    ref = build_classifier(ens.spec)
    ref.load_state_dict(load_best_state(run_dir / "all" / "fold1" / "best.safetensors"))
    with torch.no_grad():
        assert torch.allclose(ens.members[1](x), ref.eval()(x), atol=5e-2)


def test_threshold_is_chosen_on_oof_scored_like_the_container(run_dir, tmp_path):
    """views=1 in fp32: the engine's OOF scores are training's oof.csv; views=8: the threshold fits the TTA scores
    of the members as stored (fp16), which the weights folder's oof.csv holds exactly."""
    import csv

    from amf.inference.spec import TTAConfig
    from amf.training.rescore import PatchCache, oof_scores
    from amf.training.run_folder import RunFolder, collect_oof, load_fold_model
    from amf.training.threshold import max_balanced_accuracy_threshold, threshold_candidates

    plain = export_run(run_dir, tmp_path / "plain", ExportOptions(tta=TTAConfig(views=1), dtype=torch.float32))
    single_view = collect_oof(run_dir, ["all/fold0", "all/fold1"])
    expected = threshold_candidates(single_view["prob"], single_view["label"])
    for method, c in plain.provenance.threshold_candidates.items():
        assert c.to_dict() == pytest.approx(expected[method], abs=1e-6), method
    tta = export_run(run_dir, tmp_path / "tta", ExportOptions(tta=TTAConfig(views=8)))
    cfg, record = RunFolder(run_dir).config()
    dirs = [run_dir / "all" / f"fold{k}" for k in (0, 1)]
    oof = oof_scores([load_fold_model(cfg.model_spec(), d) for d in dirs], dirs, PatchCache(record["images_dir"]),
                     TTAConfig(views=8))
    assert tta.threshold.value == pytest.approx(
        threshold_candidates(oof.probs, oof.labels)["balanced_accuracy"]["value"], abs=1e-3)
    rows = list(csv.DictReader(open(tmp_path / "tta" / "oof.csv")))
    assert len(rows) == 24 and {r["fold"] for r in rows} == {"all/fold0", "all/fold1"}
    scores = np.array([float(r["p_atypical"]) for r in rows])
    labels = np.array([int(r["label"]) for r in rows])
    assert max_balanced_accuracy_threshold(scores, labels) == tta.threshold.value  # exactly, from the file
    assert "8 TTA view(s)" in tta.provenance.oof.note


def test_tampered_member_is_refused(run_dir, tmp_path):
    out = tmp_path / "weights"
    manifest = export_run(run_dir, out)
    assert manifest.threshold.method == "oof_balanced_accuracy"
    member = out / manifest.members[0].file
    data = bytearray(member.read_bytes())
    data[-1] ^= 0x01
    member.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        load_ensemble(out)


def test_unfinished_run_is_refused(run_dir, tmp_path):
    import shutil

    partial = tmp_path / "partial"
    shutil.copytree(run_dir, partial)
    (partial / "all" / "fold1" / "result.json").unlink()
    with pytest.raises(AmfError, match="not finished"):
        export_run(partial, tmp_path / "w")
    assert json.loads((run_dir / "config.json").read_text())["config"]["folds"] == 2


def test_threshold_from_a_lodo_run_transfers_and_refuses_another_recipe(run_dir, tmp_path):
    """The shipped cut maximises the mean held-out balanced accuracy of the LODO run, scored with the shipped TTA."""
    from amf.inference.spec import TTAConfig
    from amf.training.rescore import PatchCache, score_run
    from amf.training.threshold import transfer_threshold

    data = run_dir.parent / "data" / "labels.csv"
    cfg = TrainConfig.from_toml(ROOT / "configs" / "smoke.toml").replace(epochs=1, ensemble=False, fold_limit=1)
    lodo = tmp_path / "lodo"
    train_run(cfg, data, lodo)
    manifest = export_run(run_dir, tmp_path / "w", ExportOptions(tta=TTAConfig(views=2), threshold_from=lodo))
    heldout = score_run(lodo, TTAConfig(views=2), PatchCache(data.parent))
    assert manifest.threshold.value == transfer_threshold([(h.probs, h.labels) for h in heldout])
    assert manifest.threshold.method == "lodo_transfer_mean_balanced_accuracy"
    record = manifest.provenance.threshold_transfer
    assert set(record["domains"]) == {"tumour 0", "tumour 1"} and record["tta_views"] == 2
    for d in record["domains"].values():
        assert d["balanced_accuracy_at_hindsight_best"] >= d["balanced_accuracy_at_transfer"]
    other = tmp_path / "other"
    train_run(cfg.replace(lr=0.01), data, other)
    with pytest.raises(AmfError, match="differs in: lr"):
        export_run(run_dir, tmp_path / "w2", ExportOptions(threshold_from=other))


def test_export_refuses_a_full_folder_and_force_replaces_it_whole(run_dir, tmp_path, capsys):
    out = tmp_path / "weights"
    out.mkdir()
    for i in range(4):
        (out / f"member_{i}.safetensors").write_bytes(b"old")
    (out / "manifest.json").write_text("{}")
    assert main(["export", str(run_dir), "--output", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and (out / "member_3.safetensors").read_bytes() == b"old"
    assert main(["export", str(run_dir), "--output", str(out), "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "member_0.safetensors", "member_1.safetensors",
                                                     "membership.csv", "oof.csv"]
    assert [p.name for p in tmp_path.iterdir()] == ["weights"]  # no temporary folder left beside it
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # readable like any new folder, not private
    assert len(load_ensemble(out).members) == 2


def test_export_reports_oof_quality_portable_commands_and_training_patches(run_dir, tmp_path, capsys):
    from amf.inference.io import patch_digest, read_patches

    out = tmp_path / "weights"
    assert main(["export", str(run_dir), "--output", str(out)]) == 0
    captured = capsys.readouterr()
    m = json.loads((out / "manifest.json").read_text())
    assert f"AUC {m['oof']['auc']:.4f}" in captured.out and "out-of-fold: n=24" in captured.out
    assert "export: out-of-fold" not in captured.err  # no progress bar when stderr is not a terminal (a log)
    assert ("is below 0.6" in captured.err) == (m["oof"]["auc"] < 0.6)
    command = m["training"]["command"]
    assert command[:4] == ["python", "-m", "amf", "train"] and not any(str(ROOT) in c for c in command)
    assert m["export_command"][:4] == ["python", "-m", "amf", "export"]
    data = run_dir.parent / "data"
    digests = sorted(patch_digest(read_patches(p)[0]) for p in data.glob("*.png"))
    assert m["data"]["patch_sha256"] == digests and len(digests) == 24
    # predict says how many scored patches the weights trained on
    preds = tmp_path / "preds.csv"
    assert main(["predict", str(data / "0.png"), str(data / "1.png"), "--weights", str(out),
                 "--output", str(preds)]) == 0
    assert "2 of 2 patches are among the weights' training patches" in capsys.readouterr().err
    # and evaluate says so too, in its output and in metrics.json
    assert main(["evaluate", "--predictions", str(preds), "--labels", str(data / "labels.csv"), "--allow-missing",
                 "--weights", str(out), "--output", str(tmp_path / "m.json"), "--bootstrap", "0"]) == 0
    captured = capsys.readouterr()  # a warning: once, on stderr, like predict's
    assert ("amf evaluate: warning: 2 of the 2 scored images readable here are among the training patches"
            in captured.err)
    assert "training patches" not in captured.out
    notes = json.loads((tmp_path / "m.json").read_text())["extra"]["notes"]
    assert any("are among the training patches" in n for n in notes)


def test_a_fold_limited_run_ships_the_folds_it_planned(tmp_path):
    """One member (a distilled student, say): its out-of-fold scores and threshold come from its own fold alone."""
    import csv

    from amf.inference.spec import TTAConfig

    labels = synthetic_dataset(tmp_path / "data")
    run = tmp_path / "run"
    assert main(["train", "--config", str(ROOT / "configs" / "smoke.toml"), "--labels", str(labels), "--output",
                 str(run), "--epochs", "1", "--no-lodo", "--fold-limit", "1", "--no-progress"]) == 0
    assert not (run / "all" / "fold1").exists()
    manifest = export_run(run, tmp_path / "weights", ExportOptions(tta=TTAConfig(views=2)))
    assert len(manifest.members) == 1 and [m.fold for m in manifest.provenance.member_info] == ["all/fold0"]
    with open(tmp_path / "weights" / "oof.csv", newline="") as f:
        oof = list(csv.DictReader(f))
    val = json.loads((run / "all" / "fold0" / "result.json").read_text())["val"]
    assert len(oof) == manifest.provenance.oof.n == val["n"] < sum(1 for _ in open(labels)) - 1
    assert "first 1 of 2 folds" in manifest.provenance.note
    # what predict and evaluate count as in-sample: the member's training patches, not its validation fold
    with open(tmp_path / "weights" / "membership.csv", newline="") as f:
        membership = list(csv.DictReader(f))
    train = sorted(r["sha256"] for r in membership if r["member_0"] == "train")
    assert manifest.provenance.data.patch_sha256 == train and len(train) < len(membership)

    # a student of it: its teacher's scores cover every patch, so every patch's label reached the student
    teacher = tmp_path / "teacher.csv"
    teacher.write_text("image,p_atypical\n" + "".join(f"{r['image']},0.5\n" for r in membership))
    student = tmp_path / "student"
    assert main(["train", "--config", str(ROOT / "configs" / "smoke.toml"), "--labels", str(labels), "--output",
                 str(student), "--epochs", "1", "--no-lodo", "--fold-limit", "1", "--no-progress",
                 "--set", "distill_weight=0.5", "--set", f"teacher_scores='{teacher}'"]) == 0
    manifest = export_run(student, tmp_path / "student-weights", ExportOptions(tta=TTAConfig(views=2)))
    assert manifest.provenance.data.patch_sha256 == sorted(r["sha256"] for r in membership)
    assert manifest.provenance.training.teacher_scores_sha256 == sha256_file(teacher)
    teacher.write_text(teacher.read_text().replace(",0.5\n", ",0.4\n", 1))  # changed since the student learned
    with pytest.raises(AmfError, match="changed since the run learned from it"):
        export_run(student, tmp_path / "again", ExportOptions(tta=TTAConfig(views=2)))
