"""``amf audit``: every claim the repository makes, checked from what it ships (:mod:`amf.audit.audit_cli`).

Each check yields one :class:`Finding` per thing it looked at: ``pass``, ``fail`` or ``cannot`` (it could not
be checked here, and why: missing data, a result recorded before its provenance was). The checks read only
committed files, the data folders given, and git; what each needs and costs is in docs/audit.md.

- weights: member hashes, the manifest against ``amf/inference/manifest.schema.json``, the recorded config against the
  committed config file;
- data: the fingerprint and every patch's pixel sha256, recomputed from the data folders;
- tree: every tracked file that differs from the commit being audited;
- bundled stack: ``test/expected_output.json`` against the sha256 its machine record holds, and ``process.py`` on
  ``test/input`` against it: bit for bit on the recording machine, within the measured tolerance elsewhere;
- threshold: re-derived from ``weights/oof.csv`` by the recorded rule, exactly; the OOF scores rescored with
  the shipped members (``--full``), under the same rule as the bundled stack;
- leakage: from recorded training memberships, for the weights and every leave-one-domain-out row;
- provenance: recorded commits exist and hold the config and code they name; dirty trees are reported;
- results (:mod:`amf.audit.results`): crossval.json, crossval.md and compare.json recomputed from the
  per-figure files, and the numbers in README.md and docs/results.md against them.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from amf.audit.context import CANNOT, FAIL, PASS, Context, Finding, lodo_rows, read_csv
from amf.errors import AmfError, WeightsError
from amf.files import sha256_file
from amf.inference.manifest import MANIFEST, SCHEMA, DataRecord, ExportRecord, Manifest, TrainingJob, TrainingRecord
from amf.provenance import ROOT, file_at

#: The code a recorded commit must hold, by job: today's path first, then where it lived before the wings.
CODE = {
    "train": ("amf/training/train.py", "amf/train.py"),
    "export": ("amf/training/export.py", "amf/export.py"),
    "crossval": ("amf/training/crossval.py", "amf/crossval.py"),
    "blend": ("amf/training/blend.py",),
}


def recorded_file(ctx: Context, key: str) -> tuple[Path | None, str]:
    """A file the manifest lists under ``files`` (``oof_scores``, ``membership``), checked against its sha256."""
    entry = ctx.manifest.provenance.files.get(key)
    if not entry or not entry.file:
        return None, f"the manifest lists no {key} file (exported before export recorded it: re-export)"
    path = ctx.weights / entry.file
    if not path.is_file():
        return None, f"{path} is missing"
    digest = sha256_file(path)
    if digest != entry.sha256:
        return None, f"{path} has sha256 {digest[:12]}..., the manifest says {(entry.sha256 or '')[:12]}..."
    return path, ""


# ----------------------------------------------------------------------------------------------- weights


def check_weights(ctx: Context) -> Iterator[Finding]:
    from amf.inference.weights import read_manifest

    try:
        manifest = read_manifest(ctx.weights)
        yield Finding("weights.members", PASS, f"{len(manifest.members)} member files match their sha256")
    except WeightsError as exc:
        yield Finding("weights.members", FAIL, str(exc))
        return
    yield check_schema(manifest, ctx.weights / MANIFEST)
    for key in ("oof_scores", "membership"):
        path, why = recorded_file(ctx, key)
        yield Finding(f"weights.{key}", PASS if path else FAIL, f"{path} matches its sha256" if path else why)
    yield check_config(ctx)


def check_schema(manifest: Manifest, path: Path) -> Finding:
    """The manifest as typed, against the JSON schema; and the file, byte for byte, against what the type writes
    back, so that a key the type does not know (which nothing reads) or an edit in place is still seen."""
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(manifest.to_dict()),
                    key=lambda e: list(e.path))
    if not errors and path.read_bytes() != manifest.text().encode():
        return Finding("weights.schema", FAIL, f"{path} is not what its typed manifest writes back (a key "
                                               "amf does not know, or an edit by hand): export it again")
    if errors:
        e = errors[0]
        where = "/".join(map(str, e.path)) or "(top)"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return Finding("weights.schema", FAIL, f"{path} at {where}: {e.message}{more}")
    return Finding("weights.schema", PASS, f"{path} is valid against {SCHEMA.relative_to(ROOT)}")


def recorded_config(arguments: list[str], root: Path) -> dict:
    """The config that ``amf train`` builds from ``arguments`` (its recorded canonical arguments), today."""
    import argparse

    from amf.files import json_safe
    from amf.training.train_cli import add_arguments, build_config

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(arguments[1:] if arguments and arguments[0] == "train" else arguments)
    if args.config is not None and not args.config.is_absolute():
        args.config = root / args.config
    args.resume = False
    return json_safe(build_config(args).to_dict())


def check_config(ctx: Context) -> Finding:
    from amf.files import json_safe
    from amf.training.config import TrainConfig

    training = ctx.manifest.provenance.training or TrainingRecord()
    record = training.config_file
    if not record:
        return Finding("weights.config", FAIL, "the manifest records no config file (training.config_file)")
    if hashlib.sha256(record["text"].encode()).hexdigest() != record["sha256"]:
        return Finding("weights.config", FAIL, "training.config_file.text does not hash to its recorded sha256")
    path = ctx.root / record["path"]
    if not path.is_file():
        return Finding("weights.config", FAIL,
                       f"{record['path']}, the config the weights were trained with, is missing")
    built = recorded_config(training.arguments or [], ctx.root)
    # through TrainConfig, so a setting added since the weights were trained compares at its default (its
    # behaviour then), as a resumed run's config does
    shipped = json_safe(TrainConfig.from_dict(training.config or {}).to_dict())
    differ = sorted(k for k in set(built) | set(shipped) if built.get(k) != shipped.get(k))
    if differ:
        return Finding("weights.config", FAIL,
                       f"{record['path']} with the recorded arguments gives other settings than "
                       f"the manifest's training.config: {', '.join(differ)}")
    # The file may have been rewritten since (comments, ``extends``) as long as it resolves to the same settings;
    # the text it had is checked against its commit by provenance.weights.
    same = sha256_file(path) == record["sha256"]
    how = f"sha256 {record['sha256'][:12]}..." if same else "rewritten since training"
    return Finding("weights.config", PASS, f"{record['path']} ({how}) with the recorded arguments gives the "
                                           f"manifest's {len(shipped)} settings")


# ------------------------------------------------------------------------------------------------- data


def check_data(ctx: Context) -> Iterator[Finding]:
    from amf.errors import DatasetError
    from amf.training.data import fingerprint

    files = ctx.labels_files()
    if isinstance(files, str):
        yield Finding("data.fingerprint", CANNOT, files)
        yield Finding("data.patches", CANNOT, files)
        return
    try:
        table = ctx.table()
    except DatasetError as exc:
        yield Finding("data.fingerprint", FAIL, str(exc))
        return
    recorded = (ctx.manifest.provenance.data or DataRecord()).to_dict()
    now = fingerprint(table)
    membership = _membership_rows(ctx)
    differ = [k for k in ("labels_sha256", "files_sha256", "n", "n_atypical") if now[k] != recorded[k]]
    if differ:
        yield Finding("data.fingerprint", FAIL, f"{', '.join(differ)} differ from the manifest's"
                                                f"{_first_label_change(table, membership, files)}")
    else:
        yield Finding("data.fingerprint", PASS, f"labels sha256 {now['labels_sha256'][:12]}..., file list sha256 "
                                                f"{now['files_sha256'][:12]}..., n {now['n']}, "
                                                f"{now['n_atypical']} atypical")
    yield check_patches(ctx, table, membership)


def _membership_rows(ctx: Context) -> dict[str, dict[str, str]]:
    path, _ = recorded_file(ctx, "membership")
    return {r["image"]: r for r in read_csv(path)} if path else {}


def _first_label_change(table, membership: dict, files: list[Path]) -> str:
    """Where the labels now differ from what training recorded for each patch (label, domain, group)."""
    if not membership:
        return ""
    changed = []
    for path, y, domain, group in zip(table.paths, table.labels.tolist(), table.domains, table.groups, strict=True):
        rec = membership.get(path)
        if rec is None:
            changed.append(f"{path} is new")
        elif (str(y), domain, group) != (rec["label"], rec["domain"], rec["group"]):
            field = "label" if str(y) != rec["label"] else "domain" if domain != rec["domain"] else "group"
            changed.append(f"{path}: {field} differs from what training recorded")
        if len(changed) == 3:
            break
    source = ", ".join(str(f) for f in files)
    return f"; first rows that differ ({source}): {'; '.join(changed)}" if changed else ""


def seen_digests(ctx: Context, membership: dict) -> list[str] | str:
    """What the manifest's ``patch_sha256`` must be (:func:`amf.training.export.seen_patches`), from the weights'
    ``membership.csv`` and, for a student, its teacher's scores file in the repository; or why it cannot be known."""
    from amf.training.export import seen_patches

    members = [c for c in next(iter(membership.values()), {}) if c.startswith("member_")]
    rows = [[{"image": r["image"], "sha256": r["sha256"], "role": r[c]} for r in membership.values() if r[c]]
            for c in members]
    training = ctx.manifest.provenance.training or TrainingRecord()
    config = training.config or {}
    teacher = None
    if config.get("distill_weight"):
        teacher = ctx.root / config["teacher_scores"]
        if not teacher.is_file() or sha256_file(teacher) != training.teacher_scores_sha256:
            return f"the student's teacher scores {config['teacher_scores']} are not in the repository as trained on"
    return seen_patches(rows, teacher)


def check_patches(ctx: Context, table, membership: dict) -> Finding:
    from amf.errors import InputError
    from amf.inference.io import patch_digest, read_patches

    if not membership:
        return Finding("data.patches", CANNOT, "no recorded membership.csv to hold the patches' sha256")
    differ, n = [], 0
    for path in table.paths:
        try:
            digest = patch_digest(read_patches(table.image_dir / path)[0])
        except InputError as exc:
            differ.append(f"{path} ({exc})")
            continue
        n += 1
        rec = membership.get(path)
        if rec is None or rec["sha256"] != digest:
            differ.append(path)
    listed = seen_digests(ctx, membership)
    if isinstance(listed, str):
        return Finding("data.patches", CANNOT, listed)
    data = ctx.manifest.provenance.data or DataRecord()
    if sorted(data.patch_sha256 or []) != listed:
        student = ((ctx.manifest.provenance.training or TrainingRecord()).config or {}).get("distill_weight")
        differ.append("the manifest's patch_sha256 list differs from membership.csv's training patches"
                      + (" and the teacher's" if student else ""))
    if differ:
        return Finding("data.patches", FAIL, f"{len(differ)} patch(es) differ from the recorded pixels: "
                                             f"{', '.join(differ[:3])}")
    return Finding("data.patches", PASS, f"all {n} patches' pixel sha256 match membership.csv and the manifest")


# -------------------------------------------------------------------------------------------- bundled stack


def check_bundled_stack(ctx: Context) -> Iterator[Finding]:
    """``bundled_stack.record``: the expected output is the one its machine record hashed (an edit is caught on any
    machine); ``bundled_stack``: process.py run here agrees with it, bit for bit on the recording machine and
    within the tolerance elsewhere (:func:`amf.reproducibility.agreement`)."""
    from amf.audit import expected

    path = ctx.root / expected.EXPECTED
    _, _, problem = expected.recorded(ctx.root)
    yield Finding("bundled_stack.record", FAIL if problem else PASS,
                  problem or f"{expected.EXPECTED} is the output {expected.RECORD} recorded (sha256)")
    if ctx.weights.resolve() != (ctx.root / "weights").resolve():
        yield Finding("bundled_stack", CANNOT, f"{path} belongs to the shipped weights/, not {ctx.weights}")
        return
    try:
        got, here = expected.run_process(ctx.root, ctx.weights)
    except AmfError as exc:
        yield Finding("bundled_stack", FAIL, f"{exc}; {expected.EXPECTED} left unchecked against a run")
        return
    verdict = expected.compare(ctx.root, json.loads(got), here)
    yield Finding("bundled_stack", PASS if verdict.ok else FAIL,
                  f"process.py on test/input against {expected.EXPECTED}: {verdict.line()}")


# -------------------------------------------------------------------------------------------------- tree


def check_tree(ctx: Context) -> Iterator[Finding]:
    """Every tracked file that differs from the commit being audited: what the other checks read is then not
    what the commit holds, whatever they find."""
    from amf.provenance import git_state, untracked_files

    state = git_state(ctx.root)
    if state["dirty"] is None:
        yield Finding("tree", CANNOT, f"{ctx.root} is not a git checkout: the files cannot be held against a commit")
        return
    untracked = untracked_files(ctx.root)
    changed = [c for c in state["changes"] if c not in untracked]
    also = f" ({len(untracked)} untracked file(s) beside them, not audited)" if untracked else ""
    if changed:
        yield Finding("tree", FAIL, f"{len(changed)} tracked file(s) differ from commit {state['commit'][:10]}: "
                                    f"{', '.join(changed)}{also}")
    else:
        yield Finding("tree", PASS, f"every tracked file is as commit {state['commit'][:10]} holds it{also}")


# ------------------------------------------------------------------------------------------------ threshold


def check_threshold(ctx: Context, rescore: bool = False) -> Iterator[Finding]:
    from amf.training.threshold import choose_threshold, mean_class_recall, safe_auc

    path, why = recorded_file(ctx, "oof_scores")
    if path is None:
        yield Finding("threshold.rule", FAIL, why)
        return
    rows = read_csv(path)
    scores = np.array([float(r["p_atypical"]) for r in rows])
    labels = np.array([int(r["label"]) for r in rows])
    threshold = ctx.manifest.threshold
    method = threshold.method.removeprefix("oof_")
    if threshold.method.startswith("oof_"):
        value = choose_threshold(scores, labels, method)
        if value != threshold.value:
            yield Finding("threshold.rule", FAIL, f"{threshold.method} on {path} gives {value!r}, the manifest says "
                                                  f"{threshold.value!r} ({ctx.weights / MANIFEST})")
        else:
            yield Finding("threshold.rule", PASS, f"{threshold.method} on the {len(rows)} scores of {path} gives "
                                                  f"{value!r}, the manifest's value, exactly")
    else:
        yield Finding("threshold.rule", CANNOT, f"method {threshold.method} is not chosen on oof.csv")
    candidates = ctx.manifest.provenance.threshold_candidates
    bad = [m for m, c in candidates.items()
           if choose_threshold(scores, labels, m) != c.value
           or not math.isclose(mean_class_recall(scores, labels, c.value), c.oof_balanced_accuracy, abs_tol=1e-12)]
    oof = ctx.manifest.provenance.oof
    if oof and oof.auc is not None and not math.isclose(safe_auc(scores, labels), oof.auc, abs_tol=1e-12):
        bad.append("oof.auc")
    yield Finding("threshold.candidates", FAIL if bad else PASS,
                  f"{', '.join(bad)} differ from their recomputation on {path}" if bad else
                  f"the {len(candidates)} candidates and the OOF AUC recompute exactly")
    if rescore:
        yield rescore_oof(ctx, rows)


def oof_patches(ctx: Context, rows: list[dict[str, str]]) -> np.ndarray:
    """The patches of ``weights/oof.csv`` rows, read from the training data."""
    from amf.inference.io import read_patches

    return np.stack([read_patches(ctx.table().image_dir / r["image"])[0] for r in rows])


def score_as_exported(member, tta, patches: np.ndarray) -> np.ndarray:
    """One member's P(atypical) with the shipped views, as export scored ``oof.csv`` (the ``batched`` strategy)."""
    from amf.inference.engine import Engine

    return Engine([member], tta, device="cpu", strategy="batched").predict_proba(patches)


def rescored_oof(ctx: Context, rows: list[dict[str, str]]) -> np.ndarray:
    """Each out-of-fold patch of ``rows`` (``weights/oof.csv``) scored again by its shipped member, in the rows'
    order."""
    from amf.inference.weights import load_ensemble

    ens = load_ensemble(ctx.weights)
    out = np.zeros(len(rows))
    for k, member in enumerate(ens.members):
        mine = [i for i, r in enumerate(rows) if int(r["member"]) == k]
        out[mine] = score_as_exported(member, ens.tta, oof_patches(ctx, [rows[i] for i in mine]))
    return out


def rescore_oof(ctx: Context, rows: list[dict[str, str]]) -> Finding:
    """The out-of-fold scores made again here against ``weights/oof.csv``: bit-identical on the machine that
    exported them, within :data:`amf.reproducibility.TOLERANCE` elsewhere."""
    from amf.reproducibility import agreement, machine, recorded_machine

    files = ctx.labels_files()
    if isinstance(files, str):
        return Finding("threshold.oof_scores", CANNOT, files)
    try:
        probs = rescored_oof(ctx, rows)
    except WeightsError as exc:
        return Finding("threshold.oof_scores", CANNOT, f"weights/oof.csv's scores left unchecked: the shipped members "
                                                       f"cannot be loaded ({' '.join(str(exc).split())[:200]})")
    recorded = recorded_machine((ctx.manifest.provenance.export or ExportRecord()).environment)
    verdict = agreement(probs, [float(r["p_atypical"]) for r in rows], machine(), recorded)
    return Finding("threshold.oof_scores", PASS if verdict.ok else FAIL,
                   f"{len(rows)} out-of-fold patches of weights/oof.csv rescored by their shipped member with "
                   f"{ctx.manifest.tta.views} views: {verdict.line()}")


# ------------------------------------------------------------------------------------------------- leakage


def leaks(rows: list[dict[str, str]], column: str, outside: str) -> list[str]:
    """What of the rows whose role in ``column`` is ``outside`` (val or heldout) reached training in it: the
    same image, the same pixels (sha256) or the same group (slide)."""
    train = [r for r in rows if r[column] == "train"]
    other = [r for r in rows if r[column] == outside]
    found = []
    for key, what in (("image", "image"), ("sha256", "pixel duplicate"), ("group", "slide")):
        shared = sorted({r[key] for r in train} & {r[key] for r in other})
        if shared:
            found.append(f"{len(shared)} {what}(s) of its {outside} patches among its training patches, "
                         f"e.g. {shared[0]}")
    return found


def check_leakage(ctx: Context) -> Iterator[Finding]:
    path, why = recorded_file(ctx, "membership")
    if path is None:
        yield Finding("leakage.weights", FAIL, why)
    else:
        rows = read_csv(path)
        columns = [c for c in rows[0] if c.startswith("member_")]
        problems = [f"{c}: {p}" for c in columns for p in leaks(rows, c, "val")]
        oof_path, _ = recorded_file(ctx, "oof_scores")
        if oof_path is not None:
            by_image = {r["image"]: r for r in rows}
            for r in read_csv(oof_path):
                role = by_image.get(r["image"], {}).get(f"member_{r['member']}")
                if role != "val":
                    problems.append(f"oof.csv scores {r['image']} by member {r['member']}, whose role for it is {role}")
                    break
        yield Finding("leakage.weights", FAIL if problems else PASS,
                      "; ".join(problems[:3]) if problems else
                      f"{len(columns)} members: no validation image, pixel duplicate or slide among their training "
                      f"patches; every out-of-fold score is by the member that validated on it")
    yield from check_lodo_leakage(ctx)


def _with_provenance(modes: dict[str, dict]) -> dict:
    """The first scored mode of a row that recorded its provenance (a row re-scored in one mode only), else
    its first mode."""
    return next((r for r in modes.values() if r.get("provenance")), next(iter(modes.values())))


def _code_changes(ctx: Context, git: dict | None) -> dict | None:
    """A recorded git state without the changes inside the results folder: blends written one after another into
    one folder see each other's files uncommitted, which are results, not the code that made them."""
    if not git or not git.get("dirty"):
        return git
    results = ctx.results.resolve().relative_to(ctx.root.resolve()).as_posix() + "/"
    changes = [c for c in git.get("changes", []) if not c.startswith(results)]
    return {**git, "dirty": bool(changes), "changes": changes}


def _blend_finding(ctx: Context, name: str, row: str, modes: dict[str, dict], problems: list[str]) -> Finding:
    """A blended row (:mod:`amf.training.blend`): its sources are the files it was made of, and give its files again
    byte for byte; what holds for its sources' models (their own findings) holds for it."""
    from amf.training.blend import verify

    for mode, entry in modes.items():
        problems += verify(ctx.results, row, mode, entry)
    sources = ", ".join(dict.fromkeys(s for e in modes.values() for s in e["blend"]))
    return Finding(name, FAIL if problems else PASS, "; ".join(problems[:3]) if problems else
                   f"the blend of {sources}: their files as recorded give its files again, byte for byte; its models "
                   "are theirs, checked in their own rows")


def check_lodo_leakage(ctx: Context) -> Iterator[Finding]:
    for row, modes in lodo_rows(ctx).items():
        record = _with_provenance(modes)
        name = f"leakage.lodo.{row}"
        if "blend" in (record.get("provenance") or {}):
            yield _blend_finding(ctx, name, row, modes, [])
            continue
        membership = (record.get("provenance") or {}).get("membership")
        if not membership:
            yield Finding(name, CANNOT, "scored before training recorded its membership; retrain the row "
                                        "(tools/lodo_ablation.sh) and score it with amf crossval to record it")
            continue
        path = ctx.results / membership["file"]
        if not path.is_file() or sha256_file(path) != membership["sha256"]:
            yield Finding(name, FAIL, f"{path} is missing or differs from its recorded sha256")
            continue
        rows = read_csv(path)
        columns = [c for c in rows[0] if c not in ("image", "sha256", "domain", "group", "label")]
        problems = []
        for c in columns:
            problems += [f"{c}: {p}" for p in leaks(rows, c, "heldout") + leaks(rows, c, "val")]
            train_domains = {r["domain"] for r in rows if r[c] == "train"}
            held_domains = {r["domain"] for r in rows if r[c] == "heldout"}
            if train_domains & held_domains:
                problems.append(f"{c}: trained on its held-out domain {sorted(train_domains & held_domains)[0]}")
        for mode, scored in modes.items():
            problems += _heldout_roles(ctx, row, mode, scored, rows)
        yield Finding(name, FAIL if problems else PASS, "; ".join(problems[:3]) if problems else
                      f"{len(columns)} models: no held-out or validation image, pixel duplicate or slide, and no "
                      f"held-out domain, among their training patches")


def _heldout_roles(ctx: Context, row: str, mode: str, record: dict, rows: list[dict[str, str]]) -> list[str]:
    """Every figure of the row's per-figure file is held out by each model of its domain's ensemble."""
    path = ctx.results / f"heldout_{row}_{mode}.csv"
    if not path.is_file():
        return [f"{path} is missing"]
    roles = {r["image"]: r for r in rows}
    folds_of = {}
    for c in (c for c in rows[0] if c not in ("image", "sha256", "domain", "group", "label")):
        held = {r["domain"] for r in rows if r[c] == "heldout"}
        for d in held:
            folds_of.setdefault(d, []).append(c)
    for fig in read_csv(path):
        for c in folds_of.get(fig["domain"], []):
            if roles.get(fig["image"], {}).get(c) != "heldout":
                return [f"{path.name}: {fig['image']} is not held out by {c}"]
    return []


# ---------------------------------------------------------------------------------------------- provenance


def _code_state(what: str, git: dict | None, needs: list[tuple[str | tuple[str, ...], str | None]],
                trained: bool = True) -> list[str]:
    """Problems with a recorded code state: a missing commit, a file it lacks or holds with another sha256, a
    dirty tree (unless the job ``trained`` nothing: stopped before its first epoch, it changed no weights).
    A needed file is a path or a tuple of the paths it had over time (today's first)."""
    if not git or not git.get("commit") or git["commit"] == "unknown":
        return [f"{what} recorded no commit"]
    commit = git["commit"]
    if not _commit_exists(commit):
        return [f"{what}'s commit {commit[:10]} is not in this repository"]
    problems = []
    for paths, sha in needs:
        paths = (paths,) if isinstance(paths, str) else paths
        data = next((d for d in (file_at(commit, p) for p in paths) if d is not None), None)
        path = paths[0]
        if data is None:
            problems.append(f"{what}'s commit {commit[:10]} does not hold {path}")
        elif sha is not None and hashlib.sha256(data).hexdigest() != sha:
            problems.append(f"{path} at {what}'s commit {commit[:10]} differs from the recorded sha256")
    if git.get("dirty") is None:
        problems.append(f"{what} recorded no dirty-tree state")
    elif git["dirty"] and trained:
        problems.append(f"{what} ran on a dirty tree ({', '.join(git.get('changes', [])[:3])})")
    return problems


def _commit_exists(commit: str) -> bool:
    return subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=ROOT,
                          capture_output=True).returncode == 0


def check_provenance(ctx: Context) -> Iterator[Finding]:
    prov = ctx.manifest.provenance
    config = (prov.training.config_file if prov.training else None) or {}
    needs = [(config["path"], config["sha256"])] if config else []
    jobs = prov.jobs
    problems = [] if jobs else ["the manifest records no training jobs (training.jobs)"]
    for i, job in enumerate(jobs):
        problems += _code_state(f"training job {i + 1} ({' '.join(job.folds or [])})", job.git,
                                needs + [(CODE["train"], None)], (1 if job.epochs is None else job.epochs) > 0)
        if not (job.environment or {}).get("packages"):
            problems.append(f"training job {i + 1} recorded no package versions")
    problems += _code_state("the export", (prov.export or ExportRecord()).git, [(CODE["export"], None)])
    trained = sorted({f for job in jobs for f in job.folds or []})
    members = sorted(prov.member_folds.values())
    if jobs and trained != members:
        problems.append(f"the jobs trained {', '.join(trained)}; the members are {', '.join(members)}")
    yield Finding("provenance.weights", FAIL if problems else PASS, "; ".join(problems[:3]) if problems else
                  f"{len(jobs)} training job(s) and the export ran on clean trees at commits that hold "
                  f"{', '.join(p for p, _ in needs)} as recorded; versions, CPU and threads recorded")
    for row, modes in lodo_rows(ctx).items():
        prov = _with_provenance(modes).get("provenance")
        name = f"provenance.lodo.{row}"
        if not prov:
            yield Finding(name, CANNOT, "scored before crossval recorded provenance (config, data, commits, jobs)")
            continue
        if "blend" in prov:
            code = _code_state("the blend", _code_changes(ctx, prov.get("scored_git")), [(CODE["blend"], None)])
            yield _blend_finding(ctx, name, row, modes, code)
            continue
        cfg = prov.get("config_file") or {}
        problems = []
        for i, job in enumerate(prov.get("jobs") or []):
            problems += _code_state(f"training job {i + 1}", job.get("git"),
                                    ([(cfg["path"], cfg["sha256"])] if cfg else []) + [(CODE["train"], None)],
                                    job.get("epochs", 1) > 0)
        if not prov.get("jobs"):
            problems.append("no training jobs recorded")
        problems += _code_state("the scoring", prov.get("scored_git"), [(CODE["crossval"], None)])
        data = prov.get("data", {})
        shipped = ctx.manifest.provenance.data or DataRecord()
        if data.get("files_sha256") != shipped.files_sha256 or data.get("labels_sha256") != shipped.labels_sha256:
            problems.append("trained on other data than the shipped weights (fingerprint differs)")
        yield Finding(name, FAIL if problems else PASS, "; ".join(problems[:3]) if problems else
                      f"{len(prov['jobs'])} training job(s) on clean trees holding {cfg.get('path', 'its config')}; "
                      "same data fingerprint as the weights")


# --------------------------------------------------------------------------------------------------- retrain


#: Bounds on a member rebuilt on another CPU, against the shipped one on the member's validation patches with the
#: shipped views: set from the spread measured between CPUs and oneDNN ISAs (docs/audit.md, "Exact where, and
#: within what").
RETRAIN_AUC_GAP = 0.03
RETRAIN_CLASS_AGREEMENT = 0.90


def retrain(ctx: Context, fold: str, keep: Path | None = None) -> Finding:
    """Train ``fold`` again from the manifest's own job command, in a temporary folder, and compare its weights
    (rounded to the storage dtype as export does) with the shipped member, tensor by tensor.

    On the machine that trained it (:func:`amf.reproducibility.machine` at the job's thread count) the bits must be
    the same. Elsewhere they cannot be: training carries the last-bit differences of another CPU's kernels through
    every step into another model. There the rebuilt member must be an equal draw of the recipe instead
    (:func:`rebuilt_against_shipped`, within :data:`RETRAIN_AUC_GAP` and :data:`RETRAIN_CLASS_AGREEMENT`)."""
    import torch
    from safetensors.torch import load_file

    from amf.reproducibility import describe, machine, machine_differences, recorded_machine
    from amf.training.run_folder import BEST, load_best_state

    member, job, argv = _retrain_job(ctx, fold)
    with tempfile.TemporaryDirectory(prefix="amf-retrain-") as tmp:
        out = Path(keep) if keep else Path(tmp) / "run"
        command = [sys.executable, "-m", "amf", "train", *argv, "--output", str(out), "--fold", fold, "--no-progress"]
        start = time.time()
        proc = subprocess.run(command, cwd=ctx.root, capture_output=True, text=True)
        minutes = f"retrained in {(time.time() - start) / 60:.1f} min"
        if proc.returncode != 0:
            return Finding(f"retrain.{fold}", FAIL, f"training exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
        state = stored_state(ctx, load_best_state(out / fold / BEST))
    shipped = load_file(str(ctx.weights / f"member_{member.removeprefix('member_')}.safetensors"))
    differ = sorted(k for k in shipped if k not in state or not torch.equal(shipped[k], state[k]))
    environment = job.environment or {}
    recorded = recorded_machine(environment)
    differs = machine_differences(machine(environment.get("threads")), recorded)
    where = (f"on another machine than the one that trained it ({'; '.join(differs)})" if differs else
             f"on the machine that trained it ({describe(recorded)})")
    if not differ and set(state) == set(shipped):
        return Finding(f"retrain.{fold}", PASS, f"{minutes} from the recorded job {where}; all {len(shipped)} "
                                                f"tensors equal {member}'s bit for bit")
    if not differs:
        return Finding(f"retrain.{fold}", FAIL, f"{minutes} {where}, yet {len(differ)} tensor(s) differ from "
                                                f"{member}, e.g. {differ[:1]}")
    found = rebuilt_against_shipped(ctx, int(member.removeprefix("member_")), state)
    ok = abs(found["auc_difference"]) <= RETRAIN_AUC_GAP and found["class_agreement"] >= RETRAIN_CLASS_AGREEMENT
    verdict = ("an equal draw of the recipe" if ok else "NOT an equal draw of the recipe") + (
        f" (bounds: |Δ AUC| <= {RETRAIN_AUC_GAP}, classes agree on >= {RETRAIN_CLASS_AGREEMENT:.0%})")
    return Finding(f"retrain.{fold}", PASS if ok else FAIL,
                   f"{minutes} {where}: bit-identity cannot hold there ({len(differ)} of {len(shipped)} tensors "
                   f"differ). Against {member} on its {found['n']} validation patches: AUC {found['auc_rebuilt']:.4f} "
                   f"vs {found['auc_shipped']:.4f}, classes agree on {found['class_agreement']:.1%}, max |difference| "
                   f"{found['max_abs_difference']:.3f}: {verdict}")


def _retrain_job(ctx: Context, fold: str) -> tuple[str, TrainingJob, list[str]]:
    """The shipped member trained as ``fold``, the job that trained it, and that job's arguments with this
    machine's data folders, without its output, fold and progress options."""
    columns = ctx.manifest.provenance.member_folds
    member = next((k for k, f in columns.items() if f == fold), None)
    if member is None:
        raise AmfError(f"--retrain {fold}: no shipped member was trained as {fold} (members: "
                       f"{', '.join(columns.values()) or 'none recorded'})")
    job = next((j for j in ctx.manifest.provenance.jobs if fold in (j.folds or [])), None)
    if job is None or not job.arguments:
        raise AmfError(f"--retrain {fold}: the manifest records no training job for it")
    files = ctx.labels_files()
    if isinstance(files, str):
        raise AmfError(f"--retrain needs the training data: {files}")
    argv, skip, labels = [], False, iter(files)
    for a in job.arguments[1:]:
        if skip:
            skip = False
            continue
        if a in ("--output", "--fold"):
            skip = True
            continue
        if a in ("--resume", "--no-progress"):
            continue
        argv.append(a)
    argv = [str(next(labels)) if prev == "--labels" else a for prev, a in zip(["", *argv[:-1]], argv, strict=True)]
    return member, job, argv


def stored_state(ctx: Context, state: dict) -> dict:
    """A trained model's state as export stores a member: the backbone's tensors, floats in the storage dtype."""
    import torch

    dtype = getattr(torch, ctx.manifest.storage_dtype)
    return {k.removeprefix("backbone."): v.to(dtype) if v.is_floating_point() else v
            for k, v in state.items() if k.startswith("backbone.")}


def rebuilt_against_shipped(ctx: Context, k: int, state: dict) -> dict:
    """Shipped member ``k`` and a rebuilt one (``state``, as :func:`stored_state` gives it) on member ``k``'s
    validation patches (its rows of ``weights/oof.csv``) with the shipped views: the largest and median |difference|
    of P(atypical), how often their classes at the shipped threshold agree, and each one's AUC."""
    import copy

    from amf.inference.weights import load_ensemble
    from amf.training.threshold import safe_auc

    rows = [r for r in read_csv(ctx.weights / "oof.csv") if int(r["member"]) == k]
    ens = load_ensemble(ctx.weights)
    rebuilt = copy.deepcopy(ens.members[k])
    rebuilt.backbone.load_state_dict({name: v.float() if v.is_floating_point() else v for name, v in state.items()})
    patches = oof_patches(ctx, rows)
    shipped_p, rebuilt_p = (score_as_exported(m.eval(), ens.tta, patches) for m in (ens.members[k], rebuilt))
    labels = np.array([int(r["label"]) for r in rows])
    gap = np.abs(rebuilt_p - shipped_p)
    t = ens.threshold.value
    auc_shipped, auc_rebuilt = safe_auc(shipped_p, labels), safe_auc(rebuilt_p, labels)
    return {"n": len(rows), "max_abs_difference": float(gap.max()), "median_abs_difference": float(np.median(gap)),
            "class_agreement": float(np.mean((rebuilt_p >= t) == (shipped_p >= t))), "auc_shipped": auc_shipped,
            "auc_rebuilt": auc_rebuilt, "auc_difference": auc_rebuilt - auc_shipped}
