"""Exporting a training run's all-domains folds into a weights folder (``amf export``, :mod:`amf.export_cli`).

The members are the best epochs of ``RUN/all/fold*/best.safetensors`` (the k-fold over all domains; the
LODO folds only measure generalisation). The decision threshold is ONE number, chosen on the pooled
all-domains out-of-fold (OOF) predictions with ``--threshold-method`` (default: the run's config, itself
defaulting to maximum balanced accuracy); all three candidates (balanced accuracy, Youden's J, Otsu)
go into the manifest. The OOF patches are rescored through the inference engine with the TTA the manifest
ships (each by the one member that never trained on it), so the threshold is chosen on scores made the way
the container makes them; only the averaging over five members is left out, which no OOF score can have.

Provenance in the manifest: the training config and model spec, the training and export command lines,
the data fingerprint (labels sha256, sorted file-list sha256, n), git commit of the training and of the
export, the threshold candidates and OOF metrics, per-member best epoch and validation metrics, and a
``note`` (automatic for short or subset runs, plus ``--note``).
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import torch

from amf.errors import AmfError
from amf.files import check_replaceable, replace_folder
from amf.provenance import git_commit
from amf.rescore import PatchCache, oof_scores, score_run
from amf.run_folder import (BEST, RESULT, SUMMARY, finished, load_fold_model, load_run_config,
                            portable_command)
from amf.threshold import (METHODS, choose_threshold, max_balanced_accuracy_threshold, mean_class_recall, safe_auc,
                           threshold_candidates, transfer_thresholds)
from amf.tta import TTAConfig
from amf.weights import Threshold, save_ensemble

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
    bits.append(f"{cfg.arch}@{cfg.input_size}px, {cfg.folds}-fold, data n={record['data']['n']}")
    return "; ".join(bits)


def export_run(
    run_dir: Path,
    out_dir: Path,
    threshold_method: str | None = None,
    tta: TTAConfig | None = None,
    dtype: torch.dtype = torch.float16,
    note: str = "",
    command: list[str] | None = None,
    arguments: list[str] | None = None,
    threshold_from: Path | None = None,
    force: bool = False,
    progress: bool = False,
) -> dict:
    """Write ``out_dir`` (members + manifest) from ``run_dir``; returns the manifest.

    With ``threshold_from`` (a leave-one-domain-out run of the same configuration and data), the shipped
    threshold is :func:`amf.threshold.transfer_threshold` of its held-out domains, rescored with the shipped
    TTA; the OOF candidates are still recorded next to it.
    """
    run_dir = Path(run_dir)
    out_dir = Path(out_dir)
    check_replaceable(out_dir, force)
    cfg, record = load_run_config(run_dir)
    method = threshold_method or cfg.threshold_method
    if method not in METHODS:
        raise AmfError(f"unknown threshold method {method!r}; use one of {', '.join(METHODS)}")
    fold_dirs = [run_dir / "all" / f"fold{k}" for k in range(cfg.folds)]
    unfinished = [str(d.relative_to(run_dir)) for d in fold_dirs if not finished(d)]
    if unfinished:
        raise AmfError(f"{run_dir} is not finished: {', '.join(unfinished)} lack {RESULT}/{BEST}; "
                       "finish it with python -m amf train --resume")
    tta = tta or TTAConfig()
    members = [load_fold_model(cfg.model_spec(), d) for d in fold_dirs]
    member_info = []
    for d in fold_dirs:
        result = json.loads((d / RESULT).read_text())
        member_info.append({"fold": result["fold"], "best_epoch": result["best_epoch"], "val": result["val"]})

    patches = PatchCache(Path(record["images_dir"]))
    # every training patch, once: the k folds' validation sets cover them
    labels, probs = oof_scores(members, fold_dirs, patches, tta, progress=progress, desc="export: out-of-fold")
    candidates = threshold_candidates(probs, labels)
    value = choose_threshold(probs, labels, method)
    threshold = Threshold(value=float(value), method=f"oof_{method}")
    transfer = None
    if threshold_from is not None:
        transfer = transfer_record(Path(threshold_from), cfg, record, tta, progress)
        threshold = Threshold(value=transfer["value"], method="lodo_transfer_mean_balanced_accuracy")
    summary_path = run_dir / SUMMARY
    lodo = json.loads(summary_path.read_text()).get("lodo_mean") if summary_path.is_file() else None
    provenance = {
        "training": {
            "config": record["config"],
            # None when the run was started from Python (amf.train.train_run) rather than the command line
            "command": portable_command(record["arguments"], record.get("cwd")) if record.get("arguments") else None,
            "arguments": record.get("arguments"),
            "git_commit": record.get("git_commit", "unknown"),
            "created": record.get("created"),
            "run": str(run_dir),
            "torch": record.get("torch"),
            "init_weights_sha256": record.get("init_weights_sha256"),
            "init": record.get("init"),
        },
        "data": {**record["data"], "patch_sha256": patches.digests(),
                 "patch_sha256_note": "sha256 of each training patch's decoded pixels (amf.io.patch_digest), "
                                      "sorted: predict says how many of the patches it scores are among them"},
        "git_commit": git_commit(),
        "export_command": portable_command(arguments) if arguments else command,
        "export_arguments": arguments,
        "exported": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "threshold_candidates": candidates,
        "oof": {
            "n": int(labels.size),
            "n_atypical": int(labels.sum()),
            "auc": safe_auc(probs, labels),
            "balanced_accuracy": mean_class_recall(probs, labels, threshold.value),
            "note": f"pooled out-of-fold probabilities of the all-domains members, {tta.views} TTA view(s) as "
                    "shipped, each patch scored by the one member that did not train on it",
        },
        "lodo_mean": lodo,
        "threshold_transfer": transfer,
        "member_info": member_info,
        "note": "; ".join(x for x in (note, auto_note(cfg, record)) if x),
    }
    return replace_folder(out_dir, lambda tmp: save_ensemble(members, tmp, threshold, tta, provenance, dtype=dtype))


#: Settings that may differ between the shipped run and the LODO run its threshold comes from.
NOT_THE_RECIPE = ("lodo", "ensemble", "fold_limit", "threads", "keep_checkpoints", "note")


def transfer_record(lodo_run: Path, cfg, record: dict, tta: TTAConfig, progress: bool = False) -> dict:
    """The transfer threshold from ``lodo_run``'s held-out domains, and each domain's balanced accuracy at it,
    at the cut chosen on the other domains alone, and at its hindsight-best cut."""
    lodo_cfg, lodo_record = load_run_config(lodo_run)
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
