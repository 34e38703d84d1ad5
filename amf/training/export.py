"""Exporting a training run's all-domains folds into a weights folder (``amf export``, :mod:`amf.training.export_cli`).

The members are the best epochs of ``RUN/all/fold*/best.safetensors`` (the k-fold over all domains; the LODO
folds only measure generalisation). A run trained with ``--fold-limit N`` ships the N folds it planned (one
distilled student, say): fewer members, and out-of-fold predictions of their N validation folds only. The
decision threshold is ONE number, chosen on the pooled all-domains out-of-fold (OOF) predictions with
``--threshold-method`` (default: the run's config, itself defaulting to maximum balanced accuracy); all three
candidates (balanced accuracy, Youden's J, Otsu) go into the manifest. The OOF patches are rescored through
the inference engine with the TTA the manifest ships (each by the one member that never trained on it), so the
threshold is chosen on scores made the way the container makes them; only the averaging over five members is
left out, which no OOF score can have.

Provenance in the manifest, all of it recorded when it happened (by training in the run folder, or here):
the training config and the config file's sha256 and text, every training job's command line with its git
state and environment (from the run's ``log.jsonl``), the data fingerprint (labels sha256, sorted file-list
sha256, n, every patch's pixel sha256), the git commit and dirty state of the training and of the export,
package versions, CPU and threads, the threshold, the rule that chose it and its candidates, OOF metrics,
per-member best epoch and validation metrics, and a ``note`` (automatic for short or subset runs, plus
``--note``). Beside the manifest, ``oof.csv`` (the out-of-fold scores of the members as shipped) and
``membership.csv`` (which patches each member trained and was validated on) let ``amf audit`` re-derive the
threshold and check for leakage.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from amf.errors import AmfError
from amf.files import atomic_write_bytes, check_replaceable, replace_folder, sha256_file
from amf.inference.manifest import (
    Candidate,
    DataRecord,
    ExportRecord,
    Manifest,
    MemberInfo,
    OOFSummary,
    Provenance,
    RecordedFile,
    Threshold,
    TrainingJob,
    TrainingRecord,
)
from amf.inference.spec import TTAConfig
from amf.inference.weights import save_ensemble
from amf.provenance import job_stamp
from amf.training.rescore import PatchCache, oof_scores, score_run
from amf.training.run_folder import (
    BEST,
    MEMBERSHIP,
    RESULT,
    RunFolder,
    finished,
    load_fold_model,
    portable_command,
    read_membership,
    write_membership_table,
)
from amf.training.threshold import (
    METHODS,
    choose_threshold,
    max_balanced_accuracy_threshold,
    mean_class_recall,
    safe_auc,
    threshold_candidates,
    transfer_thresholds,
)

#: The paper's schedule length; shorter runs get a note in the provenance.
PAPER_EPOCHS = 30

def auto_note(cfg, record: dict) -> str:
    bits = []
    if cfg.epochs < PAPER_EPOCHS:
        bits.append(f"short schedule ({cfg.epochs} epochs; the paper config uses {PAPER_EPOCHS})")
    if cfg.limit:
        bits.append(f"trained on a {cfg.limit}-patch subset")
    if not cfg.init_weights:
        bits.append("backbone trained from random initialisation (no pretrained weights)")
    if cfg.fold_limit:
        bits.append(f"the first {cfg.fold_limit} of {cfg.folds} folds (fold_limit): the out-of-fold scores and the "
                    "threshold cover their validation patches only")
    bits.append(f"{cfg.arch}@{cfg.input_size}px, {cfg.folds}-fold, data n={record['data']['n']}")
    return "; ".join(bits)


@dataclass(frozen=True)
class ExportOptions:
    """How to export: the threshold rule (default: the run's config) or a leave-one-domain-out run to transfer the
    cut from (``threshold_from``), the shipped views, the storage dtype, a note, the command that asked (recorded),
    whether to replace a folder (``force``), show progress, and allow a dirty tree (only recorded here: the command
    refuses a dirty tree without it)."""

    threshold_method: str | None = None
    tta: TTAConfig = field(default_factory=TTAConfig)
    dtype: torch.dtype = torch.float16
    note: str = ""
    command: list[str] | None = None
    arguments: list[str] | None = None
    threshold_from: Path | None = None
    force: bool = False
    progress: bool = False
    allow_dirty: bool = False


def export_run(run_dir: Path, out_dir: Path, options: ExportOptions | None = None) -> Manifest:
    """Write ``out_dir`` (members, manifest, out-of-fold scores, training membership) from ``run_dir``;
    returns the manifest.

    The members are rounded to their storage dtype before anything is scored, so the out-of-fold scores
    (``oof.csv``) and the threshold chosen on them are those of the members as shipped: ``amf audit``
    re-derives the threshold from ``oof.csv`` exactly. With ``options.threshold_from`` (a leave-one-domain-out run
    of the same configuration and data), the shipped threshold is :func:`amf.training.threshold.transfer_threshold`
    of its held-out domains, rescored with the shipped TTA; the OOF candidates are still recorded next to it.
    """
    options = options or ExportOptions()
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    check_replaceable(out_dir, options.force)
    run = RunFolder(run_dir)
    cfg, record = run.config()
    method = options.threshold_method or cfg.threshold_method
    if method not in METHODS:
        raise AmfError(f"unknown threshold method {method!r}; use one of {', '.join(METHODS)}")
    fold_dirs = finished_folds(run, cfg, record)
    members = [as_stored(load_fold_model(cfg.model_spec(), d), options.dtype) for d in fold_dirs]
    # every training patch once (the k folds' validation sets cover them), or those of the first fold_limit folds
    oof = oof_scores(members, fold_dirs, PatchCache(Path(record["images_dir"])), options.tta,
                     progress=options.progress, desc="export: out-of-fold")
    threshold = Threshold(value=float(choose_threshold(oof.probs, oof.labels, method)), method=f"oof_{method}")
    transfer = None
    if options.threshold_from is not None:
        transfer = transfer_record(Path(options.threshold_from), cfg, record, options.tta, options.progress)
        threshold = Threshold(value=transfer["value"], method="lodo_transfer_mean_balanced_accuracy")
    fold_names = [run.fold_name(d) for d in fold_dirs]
    memberships = [read_membership(d / MEMBERSHIP) for d in fold_dirs]
    provenance = Provenance(
        training=training_record(run, record),
        data=DataRecord.from_dict({**record["data"], "patch_sha256_note": SEEN_PATCHES_NOTE,
                                   "patch_sha256": seen_patches(memberships, teacher_file(cfg, record))},
                                  "the run's data"),
        export=export_record(options),
        threshold_rule=THRESHOLD_RULE.get(threshold.method),
        threshold_candidates={m: Candidate(**c) for m, c in threshold_candidates(oof.probs, oof.labels).items()},
        oof=oof_summary(oof, threshold, options),
        lodo_mean=(run.summary() or {}).get("lodo_mean"),
        threshold_transfer=transfer,
        member_info=tuple(MemberInfo(r["fold"], r["best_epoch"], r["val"]) for r in map(run.result, fold_dirs)),
        note="; ".join(x for x in (options.note, auto_note(cfg, record)) if x),
    )

    def write(tmp: Path) -> Manifest:
        files = {"oof_scores": write_oof_scores(tmp / OOF_SCORES, oof, fold_names, memberships),
                 "membership": write_ensemble_membership(tmp / MEMBERSHIP, fold_names, memberships)}
        return save_ensemble(members, tmp, threshold, options.tta, replace(provenance, files=files),
                             dtype=options.dtype)

    return replace_folder(out_dir, write)


def finished_folds(run: RunFolder, cfg, record: dict) -> list[Path]:
    """The all-domains folds the run planned, each refused unless finished and with its membership recorded."""
    fold_dirs = run.ensemble_folds(cfg.fold_limit or cfg.folds)
    unfinished = [run.fold_name(d) for d in fold_dirs if not finished(d)]
    if unfinished:
        labels = record["data"]["labels_file"]
        labels = " ".join(f"--labels {p}" for p in (labels if isinstance(labels, list) else [labels]))
        raise AmfError(f"{run.path} is not finished: {', '.join(unfinished)} lack {RESULT}/{BEST}; finish it with "
                       f"python -m amf train --resume --output {run.path} {labels}")
    unrecorded = [run.fold_name(d) for d in fold_dirs if not (d / MEMBERSHIP).is_file()]
    if unrecorded:
        raise AmfError(f"{run.path}: {', '.join(unrecorded)} lack {MEMBERSHIP} (trained before training recorded "
                       "which patches each fold used); retrain them to export with provenance")
    return fold_dirs


def training_record(run: RunFolder, record: dict) -> TrainingRecord:
    """The run's record (``config.json``) and its jobs (``log.jsonl``), with every command made portable."""
    cwd = record.get("cwd")
    return TrainingRecord(
        config=record["config"],
        config_file=record.get("config_file"),
        # None when the run was started from Python (amf.training.train.train_run) rather than the command line
        command=portable_command(record["arguments"], cwd) if record.get("arguments") else None,
        arguments=record.get("arguments"),
        jobs=tuple(TrainingJob.from_dict({**job, "command": portable_command(job["arguments"], cwd)
                                          if job.get("arguments") else None}, "the run's log") for job in run.jobs()),
        git_commit=record.get("git_commit", "unknown"), git=record.get("git"), environment=record.get("environment"),
        created=record.get("created"), run=str(run.path), torch=record.get("torch"),
        init_weights_sha256=record.get("init_weights_sha256"), init=record.get("init"),
        # a student's teacher scores file as training read it (the file is named in config.teacher_scores)
        teacher_scores_sha256=record.get("teacher_scores_sha256"),
    )


def export_record(options: ExportOptions) -> ExportRecord:
    """This export's commit, tree, environment and command (:func:`amf.provenance.job_stamp`)."""
    stamp = job_stamp(torch.get_num_threads())
    return ExportRecord(git_commit=stamp["git"]["commit"], git=stamp["git"], allow_dirty=options.allow_dirty,
                        environment=stamp["environment"],
                        command=portable_command(options.arguments) if options.arguments else options.command,
                        arguments=options.arguments, exported=stamp["time"])


def oof_summary(oof, threshold: Threshold, options: ExportOptions) -> OOFSummary:
    return OOFSummary(
        n=int(oof.labels.size), n_atypical=int(oof.labels.sum()), auc=safe_auc(oof.probs, oof.labels),
        balanced_accuracy=mean_class_recall(oof.probs, oof.labels, threshold.value),
        note=f"pooled out-of-fold probabilities of the all-domains members as stored ({dtype_name(options.dtype)}), "
             f"{options.tta.views} TTA view(s) as shipped, each patch scored by the one member that did not train "
             f"on it: {OOF_SCORES}")


#: What each threshold method means, in words an auditor can apply to ``oof.csv`` without this code.
THRESHOLD_RULE = {
    "oof_balanced_accuracy": (
        "the cut on p_atypical of oof.csv (atypical when p >= cut) that maximises balanced accuracy; cuts are the "
        "mid-points between consecutive distinct scores (and 1e-6 beyond the lowest and highest); among cuts "
        "within 1e-12 of the best, the one nearest 0.5 (amf.training.threshold.max_balanced_accuracy_threshold)"),
    "oof_youden": "the highest cut maximising Youden's J on oof.csv, half-way to the next lower distinct score "
                  "(amf.training.threshold.youden_threshold)",
    "oof_otsu": "skimage.filters.threshold_otsu(p_atypical of oof.csv, nbins=256) "
                "(amf.training.threshold.otsu_threshold)",
}
#: The weights folder's out-of-fold scores, one row per training patch.
OOF_SCORES = "oof.csv"


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def as_stored(member, dtype: torch.dtype):
    """``member`` with every floating tensor rounded to the storage ``dtype`` and back to fp32: exactly what
    :func:`amf.inference.weights.load_ensemble` will build from the shipped file."""
    state = member.backbone.state_dict()
    member.backbone.load_state_dict({k: v.to(dtype).float() if v.is_floating_point() else v for k, v in state.items()})
    return member


def _rows_by_image(membership: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {row["image"]: row for row in membership}


SEEN_PATCHES_NOTE = ("sha256 of the decoded pixels (amf.inference.io.patch_digest) of every patch whose label reached "
                     "the weights: each member's training patches and, for a student, every patch its teacher's scores "
                     "cover; sorted: predict says how many of the patches it scores are among them")


def teacher_file(cfg, record: dict) -> Path | None:
    """A student run's teacher scores file as training read it (relative paths from the run's working folder),
    refused if it changed since; None for a run without a teacher."""
    if not cfg.distill_weight:
        return None
    path = Path(cfg.teacher_scores)
    path = path if path.is_absolute() else Path(record.get("cwd") or ".") / path
    if not path.is_file():
        raise AmfError(f"the run learned from {cfg.teacher_scores}, which is not at {path} now")
    if record.get("teacher_scores_sha256") not in (None, sha256_file(path)):
        raise AmfError(f"{path} changed since the run learned from it (sha256 differs from the run's record)")
    return path


def seen_patches(memberships: list[list[dict[str, str]]], teacher_scores: str | Path | None) -> list[str]:
    """The manifest's ``patch_sha256``: the patches on which a score by these weights is in-sample, sorted.

    Each member's ``train`` rows, not its validation rows (a one-fold export holds both). For a student
    (``distill_weight``) also every patch of its teacher's scores file: a teacher's out-of-fold file scores each
    patch its ensemble trained on, and what the teacher learned from those labels reached the student through
    its soft targets, so a student's score on its own validation patches is not out-of-sample either.
    """
    from amf.training.distill import read_teacher

    by_image = {r["image"]: r["sha256"] for m in memberships for r in m}
    seen = {r["sha256"] for m in memberships for r in m if r["role"] == "train"}
    if teacher_scores is not None:
        images = {image for scores in read_teacher(Path(teacher_scores)).values() for image in scores}
        unknown = sorted(images - by_image.keys())
        if unknown:
            raise AmfError(f"{teacher_scores}: {len(unknown)} scored patch(es) are not in the run's data, e.g. "
                           f"{unknown[0]}: the teacher must have been trained on the student's patches")
        seen |= {by_image[image] for image in images}
    return sorted(seen)


def write_oof_scores(path: Path, oof, fold_names: list[str], memberships: list[list[dict]]) -> RecordedFile:
    """``oof.csv``: image, its pixel sha256, domain, group, label, member index and fold, and P(atypical)
    as shipped (the mean over the TTA views), written with ``repr`` so the file holds the exact floats."""
    rows = [_rows_by_image(m) for m in memberships]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "sha256", "domain", "group", "label", "member", "fold", "p_atypical"])
    for image, k, y, p in zip(oof.images.tolist(), oof.member.tolist(), oof.labels.tolist(), oof.probs.tolist(),
                              strict=True):
        row = rows[k][image]
        if row["role"] != "val":
            raise AmfError(f"{image} is scored out of fold by member {k} but its {MEMBERSHIP} role is {row['role']}")
        w.writerow([image, row["sha256"], row["domain"], row["group"], int(y), k, fold_names[k], repr(float(p))])
    atomic_write_bytes(path, buf.getvalue().encode())
    return RecordedFile(path.name, sha256_file(path))


def write_ensemble_membership(path: Path, fold_names: list[str], memberships: list[list[dict]]) -> RecordedFile:
    """``membership.csv`` of the weights: one row per patch (image, sha256, domain, group, label) and, per
    member, its role as training recorded it (``train``, ``val``, or empty), from the folds' own files."""
    write_membership_table(path, [f"member_{k}" for k in range(len(fold_names))], memberships)
    return RecordedFile(path.name, sha256_file(path), {f"member_{k}": n for k, n in enumerate(fold_names)})


#: Settings that may differ between the shipped run and the LODO run its threshold comes from.
NOT_THE_RECIPE = ("lodo", "ensemble", "fold_limit", "threads", "keep_checkpoints", "note")


def transfer_record(lodo_run: Path, cfg, record: dict, tta: TTAConfig, progress: bool = False) -> dict:
    """The transfer threshold from ``lodo_run``'s held-out domains, and each domain's balanced accuracy at it,
    at the cut chosen on the other domains alone, and at its hindsight-best cut."""
    lodo_cfg, lodo_record = RunFolder(lodo_run).config()
    ours = {k: v for k, v in cfg.to_dict().items() if k not in NOT_THE_RECIPE}
    theirs = {k: v for k, v in lodo_cfg.to_dict().items() if k not in NOT_THE_RECIPE}
    differ = sorted(k for k in ours if ours[k] != theirs.get(k))
    if differ:
        raise AmfError(f"--threshold-from {lodo_run} was trained with another recipe (differs in: {', '.join(differ)})")
    if lodo_record["data"]["files_sha256"] != record["data"]["files_sha256"]:
        raise AmfError(f"--threshold-from {lodo_run} was trained on other data (file list differs)")
    heldout = score_run(lodo_run, tta, PatchCache(Path(lodo_record["images_dir"])), progress=progress,
                        desc="export: held-out domains")
    value, nested = transfer_thresholds([(h.probs, h.labels) for h in heldout])
    domains = {}
    for h, t_nested in zip(heldout, nested, strict=True):
        best = max_balanced_accuracy_threshold(h.probs, h.labels)
        domains[h.domain] = {
            "n": int(h.labels.size), "members": h.members, "auc": safe_auc(h.probs, h.labels),
            "balanced_accuracy_at_transfer": mean_class_recall(h.probs, h.labels, value),
            "nested_threshold": t_nested,
            "balanced_accuracy_at_nested": None if t_nested is None else mean_class_recall(h.probs, h.labels, t_nested),
            "hindsight_best_threshold": best,
            "balanced_accuracy_at_hindsight_best": mean_class_recall(h.probs, h.labels, best),
        }
    return {"value": value, "run": str(lodo_run), "tta_views": tta.views, "domains": domains,
            "note": "the cut maximising the mean over held-out domains of balanced accuracy, each domain scored "
                    "by the models that never saw it, with the shipped TTA"}
