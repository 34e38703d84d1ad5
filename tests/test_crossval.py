"""``amf crossval``: held-out domains rescored through the inference engine, thresholds from OOF only."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from synthetic_data import amibr_style_dataset

from amf.cli import main
from amf.errors import AmfError
from amf.training.run_folder import RunFolder, read_predictions
from amf.training.threshold import threshold_candidates
from amf.training.train import TrainConfig, train_run

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.toml"

pytestmark = pytest.mark.slow  # trains and cross-validates


@pytest.fixture(scope="module")
def lodo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("crossval")
    labels = amibr_style_dataset(root / "data")
    cfg = TrainConfig.from_toml(SMOKE).replace(epochs=1, ensemble=False)
    train_run(cfg, labels, root / "run")
    return root / "run"


def test_plain_mode_equals_training_heldout_and_oof_thresholds(lodo_run, tmp_path, capsys):
    out = tmp_path / "cv"
    assert main(["crossval", str(lodo_run), "--output", str(out), "--bootstrap", "50", "--threads", "1"]) == 0
    assert "mean held-out BA" in capsys.readouterr().out
    results = json.loads((out / "crossval.json").read_text())["run"]
    assert set(results) == {"plain", "tta"} and results["tta"]["tta"]["views"] == 8
    plain = results["plain"]
    rows = list(csv.DictReader(open(out / "heldout_run_plain.csv")))
    assert len(rows) == 24 and {r["domain"] for r in rows} == {"scanner0", "scanner1", "scanner2"}
    for domain, fold_dirs in RunFolder(lodo_run).lodo_folds().items():
        held = [read_predictions(d / "heldout.csv") for d in fold_dirs]
        ensemble = np.mean([h["prob"] for h in held], axis=0)  # training's single-view held-out scores
        ours = np.array([float(r["p_atypical"]) for r in rows if r["domain"] == domain])
        np.testing.assert_allclose(ours, ensemble, atol=1e-6)
        # The threshold comes from the domain's own OOF predictions, never from the held-out figures.
        oof = [read_predictions(d / "oof.csv") for d in fold_dirs]
        cands = threshold_candidates(np.concatenate([o["prob"] for o in oof]),
                                     np.concatenate([o["label"] for o in oof]))
        t = plain["domains"][domain]["threshold"]
        assert t["value"] == pytest.approx(cands["balanced_accuracy"]["value"], abs=1e-6)
        assert t["otsu"] == pytest.approx(cands["otsu"]["value"], abs=1e-6)
        assert {r["threshold"] for r in rows if r["domain"] == domain} == {repr(t["value"])}
    bas = [d["balanced_accuracy"] for d in plain["domains"].values()]
    assert plain["mean"]["balanced_accuracy"] == pytest.approx(np.mean(bas))
    assert plain["pooled"]["n"] == 24
    for name in ("crossval.md", "roc_run_plain.png", "roc_run_tta.png", "heldout_run_tta.csv"):
        assert (out / name).stat().st_size > 0
    assert "| run | on | 3 | 2 |" in (out / "crossval.md").read_text()
    # Scoring again into the same folder reuses what is there: same results, no new files written.
    before = (out / "roc_run_tta.png").stat().st_mtime_ns
    assert main(["crossval", str(lodo_run), "--output", str(out), "--bootstrap", "50", "--tta", "on"]) == 0
    assert json.loads((out / "crossval.json").read_text())["run"] == results
    assert (out / "roc_run_tta.png").stat().st_mtime_ns == before


def test_a_run_without_lodo_folds_is_refused(tmp_path):
    with pytest.raises(AmfError, match="no finished leave-one-domain-out folds"):
        RunFolder(tmp_path).lodo_folds()


def test_views_modes_and_transfer_thresholds(lodo_run, tmp_path):
    """--views N scores with the first N shipped views; every mode carries the transfer thresholds."""
    from amf.training.threshold import mean_class_recall, nested_transfer_thresholds, transfer_threshold

    out = tmp_path / "cv"
    assert main(["crossval", str(lodo_run), "--output", str(out), "--bootstrap", "0", "--tta", "off",
                 "--views", "2", "--no-progress"]) == 0
    results = json.loads((out / "crossval.json").read_text())["run"]
    assert set(results) == {"plain", "views2"} and results["views2"]["tta"]["views"] == 2
    rows = list(csv.DictReader(open(out / "heldout_run_views2.csv")))
    by_domain = {}
    for r in rows:
        by_domain.setdefault(r["domain"], ([], []))
        by_domain[r["domain"]][0].append(float(r["p_atypical"]))
        by_domain[r["domain"]][1].append(int(r["label"] == "atypical"))
    domains = sorted(by_domain)
    pairs = [(np.array(by_domain[d][0]), np.array(by_domain[d][1])) for d in domains]
    r = results["views2"]
    assert r["transfer_threshold"] == transfer_threshold(pairs)
    for d, t, (s, y) in zip(domains, nested_transfer_thresholds(pairs), pairs, strict=True):
        assert r["domains"][d]["transfer_nested_threshold"] == t
        assert r["domains"][d]["balanced_accuracy_at_transfer_nested"] == mean_class_recall(s, y, t)
    assert "| 2 views |" in (out / "crossval.md").read_text()


def test_bf16_modes_score_the_same_figures_in_bf16(lodo_run, tmp_path, capsys):
    """--bf16 adds <mode>-bf16 next to each mode: the same views and figures, scored in bf16 autocast, so
    --compare gives what bf16 costs with a paired interval."""
    from amf.training.crossval import at_otsu, compare, mode_bf16, mode_tta, read_heldout_csv

    assert mode_tta("views3-bf16") == mode_tta("views3") and mode_bf16("tta-bf16") and not mode_bf16("tta")
    with pytest.raises(AmfError, match="unknown TTA mode"):
        mode_tta("bf16")
    out = tmp_path / "cv"
    assert main(["crossval", str(lodo_run), "--output", str(out), "--bootstrap", "0", "--tta", "off", "--bf16",
                 "--no-progress"]) == 0
    results = json.loads((out / "crossval.json").read_text())["run"]
    assert set(results) == {"plain", "plain-bf16"}
    assert results["plain-bf16"]["precision"] == "bf16" and "precision" not in results["plain"]
    fp32, bf16 = ({r["image"]: float(r["p_atypical"]) for r in csv.DictReader(open(out / f"heldout_run_{m}.csv"))}
                  for m in ("plain", "plain-bf16"))
    assert fp32.keys() == bf16.keys()
    diff = np.abs(np.array([fp32[k] - bf16[k] for k in fp32]))
    assert 0 < diff.max() < 5e-2
    assert "| off, bf16 |" in (out / "crossval.md").read_text()
    assert main(["crossval", "--output", str(out), "--bootstrap", "50",
                 "--compare", "run:plain", "run:plain-bf16"]) == 0
    # at the fp32 thresholds (what predict --bf16 does with shipped weights): a second entry, kept beside the first
    assert main(["crossval", "--output", str(out), "--bootstrap", "50", "--at-thresholds-of-a", "--compare",
                 "run:plain", "run:plain-bf16"]) == 0
    own, at_a = json.loads((out / "compare.json").read_text())
    assert "thresholds" not in own and at_a["thresholds"] == "a"
    same = compare(out / "heldout_run_plain.csv", out / "heldout_run_plain.csv", 50, thresholds="a")
    assert same["balanced_accuracy_difference"] == 0 and same["balanced_accuracy_ci95"] == [0, 0]
    # a row at Otsu's cut on its own out-of-fold scores (what a one-member export ships) against its OOF cut:
    # each domain's cut is the Otsu threshold crossval.json records, re-derived from the committed per-figure files
    assert main(["crossval", "--output", str(out), "--bootstrap", "50",
                 "--compare", "run:plain", "run:plain@otsu"]) == 0
    at_otsu_record = json.loads((out / "compare.json").read_text())[-1]
    assert (at_otsu_record["a"], at_otsu_record["b"]) == ("run:plain", "run:plain@otsu")
    assert not at_otsu_record["auc_difference"]  # the same scores: AUC does not depend on the cut (nan: one class)
    cut = at_otsu(read_heldout_csv(out / "heldout_run_plain.csv"), out / "oof_run_plain.csv")
    for domain, d in results["plain"]["domains"].items():
        assert np.allclose(cut["threshold"][cut["domain"] == domain], d["threshold"]["otsu"], rtol=0, atol=1e-12)
    assert main(["crossval", "--output", str(out), "--compare", "run:plain", "run:plain@youden"]) == 2
    assert "RUN_NAME:MODE@RULE" in capsys.readouterr().err


def test_two_jobs_into_one_folder_keep_each_others_rows(lodo_run, tmp_path):
    """A job that read crossval.json before another finished merges its own entries into the file as it is now."""
    from amf.training.crossval import merge_results

    out = tmp_path / "cv"
    assert main(["crossval", str(lodo_run), "--output", str(out), "--bootstrap", "0", "--tta", "off",
                 "--no-progress"]) == 0
    first = json.loads((out / "crossval.json").read_text())["run"]["plain"]
    merged = merge_results(out, {"other": {"tta": {**first, "run": "other"}}})  # as if a job started earlier
    assert list(merged) == ["run", "other"] and merged["run"]["plain"] == first
    assert json.loads((out / "crossval.json").read_text()) == json.loads(json.dumps(merged))
    assert "| other | on |" in (out / "crossval.md").read_text()


def test_crossval_names_the_folds_a_run_has_not_finished(lodo_run, tmp_path, capsys):
    import shutil

    partial = tmp_path / "partial"
    shutil.copytree(lodo_run, partial)
    gone = sorted(partial.glob("lodo/*/fold1"))[0]
    shutil.rmtree(gone)
    assert main(["crossval", str(partial), "--output", str(tmp_path / "cv"), "--bootstrap", "0", "--tta", "off",
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "has 1 of 2 folds finished (missing fold1)" in err and err.count("note:") == 1


def test_crossval_shows_progress_on_a_terminal_unless_told_not_to(lodo_run, tmp_path, capsys, monkeypatch):
    import amf.training.crossval_cli

    assert main(["crossval", str(lodo_run), "--output", str(tmp_path / "cv0"), "--bootstrap", "0", "--tta", "off"]) == 0
    assert "run [plain]" not in capsys.readouterr().err  # stderr is not a terminal here: a log gets no bar
    monkeypatch.setattr(amf.training.crossval_cli, "interactive", lambda: True)
    assert main(["crossval", str(lodo_run), "--output", str(tmp_path / "cv"), "--bootstrap", "0", "--tta", "off"]) == 0
    assert "run [plain]" in capsys.readouterr().err
    assert main(["crossval", str(lodo_run), "--output", str(tmp_path / "cv2"), "--bootstrap", "0", "--tta", "off",
                 "--no-progress"]) == 0
    assert "run [plain]" not in capsys.readouterr().err


def test_compare_gives_the_difference_of_the_tables_with_a_paired_interval(lodo_run, tmp_path, capsys):
    out = tmp_path / "cv"
    assert main(["crossval", str(lodo_run), "--output", str(out), "--bootstrap", "0", "--views", "2",
                 "--no-progress"]) == 0
    assert main(["crossval", "--output", str(out), "--compare", "run:plain", "run:views2", "--bootstrap", "200"]) == 0
    assert "run:views2 - run:plain (3 domain(s)): mean held-out BA" in capsys.readouterr().out
    record = json.loads((out / "compare.json").read_text())[0]
    results = json.loads((out / "crossval.json").read_text())["run"]
    expected_ba = results["views2"]["mean"]["balanced_accuracy"] - results["plain"]["mean"]["balanced_accuracy"]
    assert record["balanced_accuracy_difference"] == pytest.approx(expected_ba, abs=1e-9)
    low, high = record["balanced_accuracy_ci95"]
    assert low <= record["balanced_accuracy_difference"] <= high and record["resamples"] == 200
    assert main(["crossval", "--output", str(out), "--compare", "run:plain", "run:views4"]) == 2  # not scored

    # A row that has scored only some domains (still training) is compared on those alone.
    lines = (out / "heldout_run_views2.csv").read_text().splitlines()
    kept_domain = record["domains"][0]
    (out / "heldout_part_views2.csv").write_text(
        "\n".join([lines[0]] + [x for x in lines[1:] if f",{kept_domain}," in x]))
    assert main(["crossval", "--output", str(out), "--compare", "run:plain", "part:views2", "--bootstrap", "0"]) == 0
    partial = json.loads((out / "compare.json").read_text())[-1]
    assert partial["domains"] == [kept_domain]
    domain_ba = {m: results[m]["domains"][kept_domain]["balanced_accuracy"] for m in ("plain", "views2")}
    assert partial["balanced_accuracy_difference"] == pytest.approx(domain_ba["views2"] - domain_ba["plain"], abs=1e-9)


def test_compare_gives_each_domain_its_own_difference_from_the_same_draws(lodo_run, tmp_path):
    out = tmp_path / "cv"
    assert main(["crossval", str(lodo_run), "--output", str(out), "--bootstrap", "0", "--views", "2",
                 "--no-progress"]) == 0
    assert main(["crossval", "--output", str(out), "--compare", "run:plain", "run:views2", "--bootstrap", "100"]) == 0
    record = json.loads((out / "compare.json").read_text())[0]
    results = json.loads((out / "crossval.json").read_text())["run"]
    assert list(record["per_domain"]) == record["domains"]
    for domain, d in record["per_domain"].items():
        ba = {m: results[m]["domains"][domain]["balanced_accuracy"] for m in ("plain", "views2")}
        assert d["balanced_accuracy_difference"] == pytest.approx(ba["views2"] - ba["plain"], abs=1e-9)
        if d["auc_difference"] is not None:  # a domain of one class in the draws has no AUC
            assert d["auc_ci95"][0] <= d["auc_difference"] <= d["auc_ci95"][1]


def test_a_blend_averages_its_rows_models_and_chooses_its_thresholds_again(lodo_run, tmp_path):
    """A blend weighs each row by its models, re-derives the thresholds from the averaged out-of-fold scores, and
    the audit's check gives its files again from its sources, or names the source that changed."""
    from amf.training.blend import verify

    out = tmp_path / "cv"
    assert main(["crossval", str(lodo_run), "--output", str(out), "--bootstrap", "0", "--tta", "off",
                 "--no-progress"]) == 0
    results = json.loads((out / "crossval.json").read_text())
    twin = json.loads(json.dumps(results["run"]))  # a second row of twice the models, its scores squared
    for d in twin["plain"]["domains"].values():
        d["members"] *= 2
    results["twin"] = twin
    (out / "crossval.json").write_text(json.dumps(results))
    for kind in ("heldout", "oof"):
        rows = list(csv.DictReader(open(out / f"{kind}_run_plain.csv")))
        with open(out / f"{kind}_twin_plain.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
            w.writeheader()
            w.writerows({**r, "p_atypical": repr(float(r["p_atypical"]) ** 2)} for r in rows)
    assert main(["crossval", "--output", str(out), "--blend", "both", "run:plain", "twin:plain",
                 "--bootstrap", "0"]) == 0
    single = {r["image"]: float(r["p_atypical"]) for r in csv.DictReader(open(out / "heldout_run_plain.csv"))}
    blended = list(csv.DictReader(open(out / "heldout_both_plain.csv")))
    assert len(blended) == len(single)
    for r in blended:
        p = single[r["image"]]
        assert float(r["p_atypical"]) == pytest.approx((p + 2 * p * p) / 3, abs=1e-12)
    entry = json.loads((out / "crossval.json").read_text())["both"]["plain"]
    oof = list(csv.DictReader(open(out / "oof_both_plain.csv")))
    for domain, d in entry["domains"].items():
        mine = [r for r in oof if r["heldout_domain"] == domain]
        probs = np.array([float(r["p_atypical"]) for r in mine])
        labels = np.array([r["label"] == "atypical" for r in mine], dtype=np.int64)
        assert d["members"] == 3 * results["run"]["plain"]["domains"][domain]["members"]
        assert d["threshold"]["value"] == threshold_candidates(probs, labels)["balanced_accuracy"]["value"]
    assert verify(out, "both", "plain", entry) == []
    (out / "heldout_twin_plain.csv").write_text((out / "heldout_run_plain.csv").read_text())
    assert any("not the file the blend was made of" in p for p in verify(out, "both", "plain", entry))
    with pytest.raises(AmfError, match="share a mode"):
        from amf.training.blend import blend

        blend(out, "mixed", ["run:plain", "twin:tta"], 0)
