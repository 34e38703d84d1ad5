"""``amf audit`` on a small repository made here (a trained, exported and cross-validated synthetic run), then
on copies of it with one thing tampered: each must fail with one line naming what and where."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from synthetic_data import amibr_style_dataset

from amf.audit import expected
from amf.audit.context import CANNOT, FAIL, PASS, Context
from amf.audit.runner import run_audit
from amf.cli import main
from amf.files import sha256_file

pytestmark = pytest.mark.slow  # trains, exports and cross-validates a miniature repository

ROOT = Path(__file__).resolve().parents[1]
ROW = "run"


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A repository in miniature: configs/, data/, weights/, docs/results/lodo4/, test/, README and claims."""
    import amf.provenance
    import amf.training.export

    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(ROOT / "configs", root / "configs")
    shutil.copytree(ROOT / "test" / "input", root / "test" / "input")
    shutil.copy(ROOT / "process.py", root / "process.py")
    labels = amibr_style_dataset(root / "data", n=30)
    rows = list(csv.reader(open(labels)))  # three scanners of two slides each, both classes in every scanner
    for i, row in enumerate(rows[1:]):
        row[0], row[3] = f"{i // 5:03d}.tiff", f"scanner{(i // 5) % 3}"
    with open(labels, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    run = root / "runs" / ROW
    assert main(["train", "--config", str(root / "configs" / "smoke.toml"), "--labels", str(labels), "--output",
                 str(run), "--epochs", "1", "--no-progress"]) == 0
    clean = {"commit": amf.provenance.git_commit(), "dirty": False, "changes": []}
    saved = amf.provenance.git_state
    # export records the tree's state; this checkout may have changes
    amf.provenance.git_state = lambda cwd=None: clean
    try:
        assert main(["export", str(run), "--output", str(root / "weights"), "--tta-views", "2", "--no-progress",
                     "--allow-dirty"]) == 0
    finally:
        amf.provenance.git_state = saved
    results = root / "docs" / "results" / "lodo4"
    assert main(["crossval", str(run), "--output", str(results), "--tta", "on", "--bootstrap", "20",
                 "--no-progress"]) == 0
    assert main(["crossval", "--output", str(results), "--compare", f"{ROW}:tta", f"{ROW}:tta", "--bootstrap",
                 "20"]) == 0
    expected.record(root, root / "weights", ["test_audit"])
    (root / "README.md").write_text("The row scores a mean balanced accuracy of 0.000 here.\n")
    (root / "docs" / "results.md").write_text(f"# Results\n\n<!-- amf:table crossval {ROW} tta -->\n<!-- amf:end -->\n")
    (root / "docs" / "claims.toml").write_text(
        '[[claim]]\nid = "ba"\nfile = "README.md"\ntext = "scores a mean balanced accuracy of {} here"\n'
        f'source = "docs/results/lodo4/crossval.json"\nkeys = [["{ROW}", "tta", "mean", "balanced_accuracy"]]\n')
    ctx = context(root)
    from amf.audit.results import claim_value, render_docs

    ba = claim_value(ctx, "docs/results/lodo4/crossval.json", [ROW, "tta", "mean", "balanced_accuracy"])
    (root / "README.md").write_text(f"The row scores a mean balanced accuracy of {ba:.3f} here.\n")
    (root / "docs" / "results.md").write_text(render_docs(ctx, (root / "docs" / "results.md").read_text()))
    return root


def context(root: Path) -> Context:
    return Context(root / "weights", [root], root / "docs" / "results" / "lodo4", root=root)


@pytest.fixture
def copy(repo, tmp_path) -> Path:
    """A copy of the miniature repository, free to tamper with."""
    shutil.copytree(repo, tmp_path / "repo")
    return tmp_path / "repo"


def audit(root: Path, *only: str, full: bool = False) -> dict[str, tuple[str, str]]:
    findings = run_audit(context(root), list(only) or None, full=full)
    return {f.check: (f.status, f.detail) for f in findings}


def failures(found: dict[str, tuple[str, str]]) -> dict[str, str]:
    return {k: d for k, (s, d) in found.items() if s == FAIL}


def test_the_untouched_repository_passes_every_check(repo):
    found = audit(repo, "weights", "data", "bundled_stack", "threshold", "leakage", "results")
    assert not failures(found), failures(found)
    assert found["threshold.rule"][0] == PASS and "exactly" in found["threshold.rule"][1]
    assert found["leakage.weights"][0] == PASS and found[f"leakage.lodo.{ROW}"][0] == PASS
    assert found["bundled_stack"][0] == PASS and "bit-identical on the recording machine" in found["bundled_stack"][1]
    assert found["bundled_stack.record"][0] == PASS
    assert found[f"results.crossval.{ROW}.tta"][0] == PASS and "re-derived" in found[f"results.crossval.{ROW}.tta"][1]
    assert found["results.docs.README.md"][0] == PASS and "1 claim" in found["results.docs.README.md"][1]
    assert found["results.docs.docs/results.md"][0] == PASS and "1 generated table" in found[
        "results.docs.docs/results.md"][1]


def test_one_byte_changed_in_a_member(copy):
    member = copy / "weights" / "member_1.safetensors"
    data = bytearray(member.read_bytes())
    data[-3] ^= 0x01
    member.write_bytes(bytes(data))
    detail = failures(audit(copy, "weights"))["weights.members"]
    assert "sha256 mismatch" in detail and "member_1.safetensors" in detail


def test_a_labels_row_changed(copy):
    path = copy / "data" / "labels.csv"
    rows = list(csv.reader(open(path)))
    rows[5][2] = "False" if rows[5][2] == "True" else "True"  # majority_atypical of the fifth patch
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    detail = failures(audit(copy, "data"))["data.fingerprint"]
    assert "labels_sha256" in detail and f"{rows[5][1]}: label differs" in detail


def test_a_number_in_the_results_changed(copy):
    path = copy / "docs" / "results.md"
    text = path.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| pooled"))
    cell = row.split("|")[3].split()[0]
    path.write_text(text.replace(row, row.replace(cell, f"{float(cell) + 0.001:.4f}", 1)))
    detail = failures(audit(copy, "results"))["results.docs.docs/results.md"]
    assert "docs/results.md:" in detail and f"amf:table crossval {ROW} tta" in detail
    (copy / "README.md").write_text((copy / "README.md").read_text().replace("accuracy of 0", "accuracy of 1"))
    assert "claim 'ba' should read" in failures(audit(copy, "results"))["results.docs.README.md"]


def test_a_ship_gate_verdict_changed(copy):
    """compare.json's gate verdict is recomputed with the comparison, so a verdict edited by hand fails the check. The
    row in its own place fails here: scanner2 holds one class, so its AUC interval is undefined and cannot show
    that the candidate did not lose."""
    results = copy / "docs" / "results" / "lodo4"
    assert main(["crossval", "--output", str(results), "--compare", f"{ROW}:tta", f"{ROW}:tta", "--bootstrap", "20",
                 "--gate"]) == 1
    records = json.loads((results / "compare.json").read_text())
    gate = records[0]["gate"]["domains"]
    assert gate["scanner0"]["passed"] and not gate["scanner2"]["passed"] and gate["scanner2"]["auc_low"] is None
    assert not failures(audit(copy, "results"))
    gate["scanner2"]["passed"] = True
    (results / "compare.json").write_text(json.dumps(records))
    detail = failures(audit(copy, "results"))["results.compare"]
    assert "gate.domains.scanner2.passed: recorded True, recomputed False" in detail


def test_one_out_of_fold_score_changed(copy):
    path = copy / "weights" / "oof.csv"
    rows = list(csv.DictReader(open(path)))
    rows[0]["p_atypical"] = repr(1.0 - float(rows[0]["p_atypical"]))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    found = failures(audit(copy, "weights", "threshold"))
    assert "oof.csv has sha256" in found["weights.oof_scores"] and "oof.csv" in found["threshold.rule"]
    manifest = json.loads((copy / "weights" / "manifest.json").read_text())  # a forger updates the hash too
    manifest["files"]["oof_scores"]["sha256"] = sha256_file(path)
    (copy / "weights" / "manifest.json").write_text(json.dumps(manifest))
    assert "threshold.oof_scores" not in audit(copy, "threshold")  # the rescoring is --full's
    assert "DIFFERENT" in failures(audit(copy, "threshold", full=True))["threshold.oof_scores"]


def test_the_manifest_threshold_changed(copy):
    path = copy / "weights" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["threshold"]["value"] = round(manifest["threshold"]["value"] + 0.01, 6)
    path.write_text(json.dumps(manifest))
    detail = failures(audit(copy, "threshold"))["threshold.rule"]
    assert "the manifest says" in detail and repr(manifest["threshold"]["value"]) in detail


def test_a_held_out_image_in_a_models_recorded_training_membership(copy):
    results = copy / "docs" / "results" / "lodo4"
    path = results / f"membership_{ROW}.csv"
    rows = list(csv.DictReader(open(path)))
    column = next(c for c in rows[0] if c.startswith("lodo/"))
    victim = next(r for r in rows if r[column] == "heldout")
    victim[column] = "train"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    crossval = json.loads((results / "crossval.json").read_text())  # with its recorded hash updated too
    crossval[ROW]["tta"]["provenance"]["membership"]["sha256"] = sha256_file(path)
    (results / "crossval.json").write_text(json.dumps(crossval))
    detail = failures(audit(copy, "leakage"))[f"leakage.lodo.{ROW}"]
    assert column in detail and "heldout patches among its training patches" in detail and victim["image"] in detail


def test_the_expected_output_edited(copy):
    """Caught twice: the file is not what its record hashed (on any machine), and a run here differs from it."""
    path = copy / "test" / "expected_output.json"
    entries = json.loads(path.read_text())
    entries[2]["confidence"] = round(entries[2]["confidence"] + 1e-6, 9)
    path.write_text(json.dumps(entries))
    found = failures(audit(copy, "bundled_stack"))
    assert "expected_output.json has sha256" in found["bundled_stack.record"]
    assert "DIFFERENT on the recording machine" in found["bundled_stack"] and "expected_output.json" in found[
        "bundled_stack"]


def test_the_expected_output_on_another_machine_passes_within_the_tolerance_and_fails_beyond(copy):
    """A record from another machine: a run here is held to the tolerance, not to the bits; a changed class or a
    difference beyond the tolerance still fails."""
    from amf.reproducibility import TOLERANCE

    record = json.loads((copy / expected.RECORD).read_text())
    record["machine"] = {**record["machine"], "cpu": "Another CPU", "threads": 64}
    path = copy / expected.EXPECTED
    entries = json.loads(path.read_text())
    entries[0]["confidence"] += TOLERANCE / 2
    path.write_text(json.dumps(entries))
    record["sha256"] = sha256_file(path)
    (copy / expected.RECORD).write_text(json.dumps(record))
    found = audit(copy, "bundled_stack")
    assert found["bundled_stack"][0] == PASS, found["bundled_stack"]
    assert "within 1e-05 on another machine (cpu: " in found["bundled_stack"][1] and "Another CPU recorded" in found[
        "bundled_stack"][1] and "max |difference| 5.00e-06" in found["bundled_stack"][1]
    entries[0]["confidence"] += TOLERANCE
    path.write_text(json.dumps(entries))
    record["sha256"] = sha256_file(path)
    (copy / expected.RECORD).write_text(json.dumps(record))
    assert "DIFFERENT on another machine" in failures(audit(copy, "bundled_stack"))["bundled_stack"]


def test_five_tampers_at_once_are_each_named_in_one_run(copy):
    """A member byte, a labels row, a number in docs/results.md, test/expected_output.json and the manifest's
    threshold, all changed: one audit names each of the five files."""
    member = copy / "weights" / "member_1.safetensors"
    data = bytearray(member.read_bytes())
    data[-3] ^= 0x01
    member.write_bytes(bytes(data))
    labels = copy / "data" / "labels.csv"
    rows = list(csv.reader(open(labels)))
    rows[5][2] = "False" if rows[5][2] == "True" else "True"
    with open(labels, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    results_md = copy / "docs" / "results.md"
    text = results_md.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| pooled"))
    cell = row.split("|")[3].split()[0]
    results_md.write_text(text.replace(row, row.replace(cell, f"{float(cell) + 0.001:.4f}", 1)))
    out = copy / "test" / "expected_output.json"
    entries = json.loads(out.read_text())
    entries[0]["confidence"] = round(entries[0]["confidence"] + 1e-3, 9)
    out.write_text(json.dumps(entries))
    manifest_path = copy / "weights" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["threshold"]["value"] = round(manifest["threshold"]["value"] + 0.01, 6)
    manifest_path.write_text(json.dumps(manifest))

    failed = " | ".join(failures(audit(copy)).values())
    for name in ("member_1.safetensors", "labels.csv", "docs/results.md", "expected_output.json", "manifest.json"):
        assert name in failed, (name, failed)


def test_the_tree_check_lists_every_tracked_file_that_differs(copy):
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=copy, check=True, capture_output=True)

    assert audit(copy, "tree")["tree"][0] == CANNOT  # not a git checkout yet
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "miniature")
    assert audit(copy, "tree")["tree"][0] == PASS
    (copy / "README.md").write_text("edited\n")
    (copy / "weights" / "manifest.json").write_text("{}")
    (copy / "notes.txt").write_text("untracked\n")
    detail = failures(audit(copy, "tree"))["tree"]
    assert "2 tracked file(s) differ" in detail and "README.md" in detail and "weights/manifest.json" in detail
    assert "1 untracked file(s)" in detail


def test_a_dirty_training_job_and_a_foreign_commit_are_reported(copy):
    path = copy / "weights" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["training"]["jobs"][0]["git"] = {"commit": "0" * 40, "dirty": True, "changes": ["amf/training/train.py"]}
    path.write_text(json.dumps(manifest))
    detail = failures(audit(copy, "provenance"))["provenance.weights"]
    assert "is not in this repository" in detail


def test_the_config_file_changed_since_training(copy):
    manifest = json.loads((copy / "weights" / "manifest.json").read_text())
    config = Path(manifest["training"]["config_file"]["path"])
    saved = config.read_bytes()
    try:
        config.write_bytes(saved + b"\n# a comment changes no setting\n")
        assert "weights.config" not in failures(audit(copy, "weights"))
        config.write_bytes(saved + b"\nseed = 1\n")
        detail = failures(audit(copy, "weights"))["weights.config"]
        assert "gives other settings than the manifest's training.config: seed" in detail
    finally:
        config.write_bytes(saved)


def test_retrain_rebuilds_a_member_bit_for_bit_from_its_recorded_command(repo):
    from amf.audit.checks import retrain

    finding = retrain(context(repo), "all/fold1")
    assert finding.status == PASS and "bit for bit" in finding.detail and "member_1" in finding.detail


def test_missing_data_cannot_be_checked_and_bad_paths_exit_2(repo, tmp_path, capsys):
    ctx = Context(repo / "weights", [tmp_path], repo / "docs" / "results" / "lodo4", root=repo)
    found = {f.check: f for f in run_audit(ctx, ["data"])}
    assert found["data.fingerprint"].status == CANNOT and "--data" in found["data.fingerprint"].detail
    assert main(["audit", "--weights", str(tmp_path / "nope")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["audit", "--data", str(tmp_path / "nope")]) == 2


def test_the_command_prints_a_line_per_check_and_writes_json(repo, tmp_path, capsys):
    out = tmp_path / "audit.json"
    rc = main(["audit", "--weights", str(repo / "weights"), "--data", str(repo), "--results",
               str(repo / "docs" / "results" / "lodo4"), "--only", "weights", "--only", "threshold",
               "--json", str(out)])
    printed = capsys.readouterr().out
    record = json.loads(out.read_text())
    assert [f["check"] for f in record["findings"]] == [line.split()[1].rstrip(":") for line in
                                                        printed.splitlines()[:-1]]
    assert record["seconds"].keys() == {"weights", "threshold"} and record["command"][:4] == ["python", "-m", "amf",
                                                                                             "audit"]
    # weights.config compares with the real repository's configs/ (the CLI's root), which holds smoke.toml
    assert rc == (0 if record["passed"] else 1)


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data" / "ami-br-midog21").is_dir(),
                    reason="needs ../shared/data (AMi-Br), the shipped weights' training data")
def test_the_shipped_weights_pass_the_fast_checks():
    """The real weights/: hashes, schema, config, threshold from oof.csv, leakage, provenance, data, docs."""
    ctx = Context(ROOT / "weights", [ROOT.parent / "shared" / "data"], ROOT / "docs" / "results" / "lodo4")
    findings = run_audit(ctx, ["weights", "data", "threshold", "leakage", "provenance"])
    from amf.audit.results import check_docs, lodo_rows

    findings += list(check_docs(ctx, lodo_rows(ctx)))
    failed = [f.line() for f in findings if f.status == FAIL]
    assert not failed, failed


def test_jobs_are_told_apart_and_a_dirty_job_that_trained_nothing_is_no_fault(tmp_path, copy):
    from amf.training.run_folder import job_commands

    log = tmp_path / "log.jsonl"
    lines = [{"event": "resume", "job": "a", "git": {"dirty": False}}, {"event": "resume", "job": "b",
             "git": {"dirty": True}}, {"event": "epoch", "job": "a"}, {"event": "epoch", "job": "a"},
             {"event": "resume", "git": {"dirty": True}}, {"event": "epoch"}]  # the last two: a log without ids
    log.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert [j["epochs"] for j in job_commands(tmp_path)] == [2, 0, 1]
    path = copy / "weights" / "manifest.json"
    manifest = json.loads(path.read_text())
    for job in manifest["training"]["jobs"]:  # this checkout may have had changes when the fixture trained
        job["git"] = {**job["git"], "dirty": False, "changes": []}
    clean = manifest["training"]["jobs"][0]
    manifest["training"]["jobs"].append({**clean, "epochs": 0, "folds": [],
                                         "git": {**clean["git"], "dirty": True, "changes": ["notes.txt"]}})
    path.write_text(json.dumps(manifest))
    found = audit(copy, "provenance")
    assert "dirty tree" not in found["provenance.weights"][1]  # stopped before its first epoch: no weights changed
    manifest["training"]["jobs"][-1]["epochs"] = 3
    path.write_text(json.dumps(manifest))
    assert "ran on a dirty tree (notes.txt)" in failures(audit(copy, "provenance"))["provenance.weights"]
