"""Training: leave-one-domain-out x k-fold ensembles, resumable and bit-reproducible on CPU.

This module is the run: its record, its plan of folds, the jobs that train them and its summary. One fold's
epochs are :mod:`amf.training.loop`'s; what a fold carries between epochs, and its checkpoint,
:mod:`amf.training.checkpoint`'s.

What a run does
---------------
1. Reads and validates the whole dataset (:mod:`amf.training.data`), then preloads every patch as uint8.
2. Plans the folds (:mod:`amf.training.splits`): for each domain, a grouped stratified k-fold over the other
   domains with that domain held out (``lodo``), then a k-fold over all domains (``all``, the ensemble that
   :mod:`amf.training.export` ships). ``--no-lodo`` trains only the ``all`` folds.
3. Trains each fold: AdamW, linear warm-up then cosine LR per step, focal loss, class-balanced sampling
   with replacement (epoch length = training-set size), in-batch augmentation (random D4 element and H&E
   stain jitter, :mod:`amf.inference.tta` and :mod:`amf.inference.stain`; optionally mixup of image pairs and
   their losses).
   It validates every epoch and keeps the epoch with the best validation balanced accuracy at the fixed
   threshold 0.5 on the sigmoid (ties keep the earlier epoch). Threshold 0.5 is only for *selecting* the
   epoch; the shipped threshold is chosen afterwards (:mod:`amf.training.threshold`).
4. Writes the best model's OOF predictions on its validation fold and, for LODO folds, its predictions
   on the held-out domain; then ``summary.json`` with per-domain metrics and threshold candidates.

Run folder
----------
::

    runs/NAME/
      config.json          # resolved TrainConfig, data fingerprint, command line (exact process argv and
                           # canonical amf arguments), git commit, start time
      log.jsonl            # one JSON object per line: run start/resume, every epoch of every fold, fold end
      summary.json         # per held-out domain metrics, OOF metrics, threshold candidates (written last)
      lodo/<domain>/fold<k>/
        checkpoint.pt      # written atomically after every epoch (see "Resume")
        best.safetensors   # best epoch's Classifier state dict (fp32), metadata "amf": JSON of epoch, val BA
        oof.csv            # best model on its validation fold: line,image,domain,group,label,logit,prob
        heldout.csv        # best model on the held-out domain (LODO folds only), same columns
        membership.csv     # every patch's role in the fold (train, val, heldout) with its pixel sha256
        result.json        # fold metrics; its presence marks the fold as finished
      all/fold<k>/         # same files, no heldout.csv

Randomness and resume
---------------------
Every random draw comes from a generator seeded by ``(seed, fold name, epoch, purpose)`` (sha256-derived):
model initialisation, the epoch's sampling order, D4 and stain parameters, and the global torch RNG
(dropout, drop-path) which is re-seeded at the start of each epoch. ``checkpoint.pt`` holds the model,
optimizer, LR scheduler, grad scaler, epoch count, best-so-far weights and metrics, and the RNG states;
it is written to a temporary file and renamed (``os.replace``), so a kill at any moment leaves either the
previous or the new checkpoint. ``--resume`` skips finished folds and continues an unfinished one from
its last completed epoch; with ``deterministic = true`` and a fixed thread count, a resumed CPU run
reaches bit-identical weights to an uninterrupted one (tested). On CUDA, results are reproducible only
as far as cuDNN/cuBLAS kernels are deterministic. A kill between the checkpoint and the log write can
lose one log line (never a checkpoint).

Mixed precision (bf16 autocast, or fp16 autocast with a GradScaler) is used on CUDA only.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from amf.devices import resolve
from amf.errors import AmfError
from amf.files import json_safe, sha256_file
from amf.provenance import config_file, job_stamp
from amf.training.config import TrainConfig
from amf.training.data import LabelTable, fingerprint, limit_table, load_images, read_datasets
from amf.training.distill import fold_targets, read_teacher
from amf.training.distributed import World, device_for
from amf.training.loop import EpochHook, FoldContext, metrics, train_fold
from amf.training.pretrained import provenance
from amf.training.run_folder import HELDOUT, RunFolder, RunLog, collect_oof, finished, read_predictions
from amf.training.splits import Fold, domain_slugs, make_folds
from amf.training.threshold import choose_threshold, mean_class_recall, threshold_candidates


@dataclass(frozen=True)
class TrainOptions:
    """How a training job runs, none of which changes what a fold learns: resume a run (or join it: ``only``
    trains just those folds, as :func:`plan` names them), the device, progress bars, the ``torchrun`` world
    (:func:`amf.training.distributed.start`), a hook after every epoch, and the command line and config file to
    record (``command``: the process's argv; ``arguments``: the canonical ``amf`` arguments)."""

    resume: bool = False
    device: str | None = "cpu"
    progress: bool = False
    only: list[str] | None = None
    world: World = World()
    on_epoch_end: EpochHook | None = None
    command: list[str] | None = None
    arguments: list[str] | None = None
    config_path: Path | None = None


def _config_record(cfg: TrainConfig, fp: dict, images_dir: Path, columns: dict, options: TrainOptions,
                   device: torch.device | None = None) -> dict:
    stamp = job_stamp(cfg.threads, str(device) if device is not None else None)
    rec = {
        "config": cfg.to_dict(),
        "model": cfg.model_spec().to_dict(),
        "data": fp,
        "images_dir": str(images_dir),
        "column_overrides": {k: v for k, v in (columns or {}).items() if v},
        "command": options.command if options.command is not None else [sys.executable, *sys.argv],
        "arguments": options.arguments,
        "cwd": os.getcwd(),
        "git_commit": stamp["git"]["commit"],
        "git": stamp["git"],
        "config_file": config_file(options.config_path),
        "environment": stamp["environment"],
        "created": stamp["time"],
        "torch": torch.__version__,
    }
    if cfg.init_weights:
        rec["init"] = provenance(cfg.init_weights)
        rec["init_weights_sha256"] = rec["init"]["sha256"]
    if cfg.distill_weight > 0:
        if not Path(cfg.teacher_scores).is_file():
            raise AmfError(f"teacher scores not found: {cfg.teacher_scores}")
        rec["teacher_scores_sha256"] = sha256_file(Path(cfg.teacher_scores))
    return rec


# Settings that only choose which folds get trained: a resumed run may change them (e.g. grow a one-fold
# ablation into the full k-fold), because every fold's split, seeds and training stay the same.
FOLD_SELECTION = ("lodo", "ensemble", "fold_limit")


def _check_resume(run: RunFolder, record: dict) -> None:
    old = run.record()
    # Through TrainConfig, so a key added since the run started compares at its default (its old behaviour).
    old_cfg = {k: v for k, v in json_safe(TrainConfig.from_dict(old.get("config", {})).to_dict()).items()
               if k not in FOLD_SELECTION}
    new_cfg = {k: v for k, v in json_safe(record["config"]).items() if k not in FOLD_SELECTION}
    if old_cfg != new_cfg:
        diff = sorted(k for k in set(old_cfg) | set(new_cfg) if old_cfg.get(k) != new_cfg.get(k))
        raise AmfError(f"--resume with a different config than {run} (differs in: "
                       f"{', '.join(diff)}); use the same options or a new --output")
    for key in ("labels_sha256", "files_sha256", "n"):
        if old.get("data", {}).get(key) != record["data"][key]:
            raise AmfError(f"--resume with different data than {run} was started with ({key} differs)")


class _Determinism:
    """Fix threads and deterministic algorithms for the run; restore the previous settings after."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg

    def __enter__(self):
        self.threads = torch.get_num_threads()
        self.det = torch.are_deterministic_algorithms_enabled()
        self.det_warn = torch.is_deterministic_algorithms_warn_only_enabled()
        self.bench = torch.backends.cudnn.benchmark
        if self.cfg.threads > 0:
            torch.set_num_threads(self.cfg.threads)
        if self.cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        return self

    def __exit__(self, *exc):
        torch.set_num_threads(self.threads)
        torch.use_deterministic_algorithms(self.det, warn_only=self.det_warn)
        torch.backends.cudnn.benchmark = self.bench
        return False


def train_run(cfg: TrainConfig, labels_file: Path | list[Path], output: Path,
              images_dir: Path | list[Path | None] | None = None, columns: dict[str, str | None] | None = None,
              options: TrainOptions | None = None) -> dict | None:
    """Train every fold of a run into ``output`` and write ``summary.json``; returns the summary.

    ``labels_file`` may be a list of labels files trained together, with ``images_dir`` then a list of the
    same length (``None`` entries: the labels file's folder); see :func:`amf.training.data.read_datasets`.

    ``options.only`` (fold ids, as :func:`plan` lists them) trains just those folds, joining the run folder if
    another job made it already (its config must agree, as for a resume): folds as independent jobs, e.g. one
    per task of a cluster job array. Each fold's files are the same bytes as in a sequential run (its seeds
    depend on the fold, not on the order). ``summary.json`` is written, and returned, by whichever job
    finds every planned fold finished; the others return None.

    ``options.world`` (:func:`amf.training.distributed.start`) trains each fold data-parallel over the processes
    of a ``torchrun`` job; rank 0 writes everything and returns the summary, the other ranks return None.

    ``options.config_path``: the config file the settings came from; its sha256 and text are recorded. Every job
    (start, resume or ``--fold`` job) logs its command line, git state and environment in ``log.jsonl``,
    which is where the export reads the commands that produced the members.
    """
    options = options or TrainOptions()
    output, world = Path(output), options.world
    dev = device_for(world, resolve(options.device)[0])
    sources = data_sources(labels_file, images_dir)
    table = limit_table(read_datasets(sources, columns), cfg.limit, cfg.seed)  # validates every row first
    fp = fingerprint(table)
    record = _config_record(cfg, fp, table.image_dir, columns or {}, options, dev)
    record["image_dirs"] = [str(d) if d is not None else None for _, d in sources]
    planned = select_folds(make_folds(table.labels, table.domains, table.groups, cfg.folds, cfg.seed, lodo=cfg.lodo),
                           cfg)
    run, resume = _open_run(output, record, planned, options)
    log = run.log(world.main)
    folds = planned if options.only is None else [f for f in planned if f.name in options.only]
    log.write(event="resume" if resume else "start", command=record["command"], arguments=options.arguments,
              device=str(dev), processes=world.size, n=len(table), folds=[f.name for f in folds],
              counts=table.summary(), git=record["git"], environment=record["environment"],
              config_file_sha256=(record["config_file"] or {}).get("sha256"))
    results = _train_folds(run, folds, cfg, table, dev, log, options)
    if not world.main:
        return None
    if options.only is not None:
        missing = [f.name for f in planned if not finished(run.fold(f.name))]
        if missing:
            log.write(event="folds_done", folds=[f.name for f in folds], missing=missing)
            return None
        results = {f.name: run.result(run.fold(f.name)) for f in planned}
        folds = planned
    summary = summarize_run(output, cfg, folds, results, table, fp)
    run.write_summary(summary)
    log.write(event="done", all_thresholds=summary.get("all", {}).get("thresholds"))
    return summary


def _open_run(output: Path, record: dict, planned: list[Fold], options: TrainOptions) -> tuple[RunFolder, bool]:
    """The run folder, made or joined (a resume, or a fold job: its config and data must agree), with its record
    written by rank 0; and whether this job resumes."""
    resume = options.resume
    if options.only is not None:
        unknown = sorted(set(options.only) - {f.name for f in planned})
        if unknown:
            raise AmfError(f"no fold {', '.join(unknown)} in this run's plan; amf train --list-folds lists them")
        resume = True  # a fold job joins the run that another job (or this one) started
    run = RunFolder(output)
    joining = run.is_run()
    if joining:
        if not resume:
            raise AmfError(f"{output} already holds a run; pass --resume to continue it, or choose a new --output")
        _check_resume(run, record)
    elif output.exists() and any(output.iterdir()) and not resume:
        raise AmfError(f"{output} exists and is not empty; choose a new --output")
    options.world.barrier()  # every process has checked the folder before rank 0 writes to it
    if options.world.main and joining:
        # Keep the recorded run (its command, creation time); only the fold selection may have grown.
        old = run.record()
        old["config"].update({k: record["config"][k] for k in FOLD_SELECTION})
        run.write_record(old)
    elif options.world.main:
        run.write_record(record)
    return run, resume


def _train_folds(run: RunFolder, folds: list[Fold], cfg: TrainConfig, table: LabelTable, device: torch.device,
                 log: RunLog, options: TrainOptions) -> dict[str, dict]:
    """Train each of ``folds`` not finished yet (their results read back for the others), with the teacher's targets
    read and every patch decoded first, so that a bad file or an unscored patch fails before any training."""
    teacher = read_teacher(Path(cfg.teacher_scores)) if cfg.distill_weight > 0 else None
    targets = {f.name: fold_targets(teacher, table, f) for f in folds} if teacher is not None else {}
    progress = options.progress and options.world.main
    images = load_images(table, progress=progress)
    if device.type == "cuda":
        images = images.to(device)
    results: dict[str, dict] = {}
    with _Determinism(cfg):
        for fold in folds:
            fold_dir = run.fold(fold.name)
            if finished(fold_dir):
                results[fold.name] = run.result(fold_dir)
                continue
            ctx = FoldContext(fold, cfg, table, images, device, log, options.world, targets.get(fold.name), progress)
            results[fold.name] = train_fold(ctx, fold_dir, options.on_epoch_end)
    return results


def plan(cfg: TrainConfig, labels_file: Path | list[Path], images_dir: Path | list[Path | None] | None = None,
         columns: dict[str, str | None] | None = None) -> list[str]:
    """The ids of the folds a run trains, in order (``amf train --list-folds``): one job each with ``--fold``."""
    table = limit_table(read_datasets(data_sources(labels_file, images_dir), columns, check_files=False),
                        cfg.limit, cfg.seed)
    folds = make_folds(table.labels, table.domains, table.groups, cfg.folds, cfg.seed, lodo=cfg.lodo)
    return [f.name for f in select_folds(folds, cfg)]


def data_sources(labels: Path | list[Path], images: Path | list[Path | None] | None) -> list[tuple[Path, Path | None]]:
    """Pair labels files with image folders: one folder per labels file, or none (each CSV's own folder)."""
    labels = [Path(p) for p in (labels if isinstance(labels, (list, tuple)) else [labels])]
    if images is None:
        images = [None] * len(labels)
    elif not isinstance(images, (list, tuple)):
        images = [images]
    if len(images) != len(labels):
        raise AmfError(f"{len(labels)} --labels file(s) but {len(images)} --images folder(s): give one "
                       "--images per --labels, in the same order, or none")
    return [(lab, Path(img) if img is not None else None) for lab, img in zip(labels, images, strict=True)]


def select_folds(folds: list[Fold], cfg: TrainConfig) -> list[Fold]:
    """The folds this run trains: the splits are always made with the full ``k`` (so a fold is the same
    fold whatever is selected); ``fold_limit`` and ``ensemble`` only leave some out."""
    return [f for f in folds
            if (cfg.fold_limit == 0 or f.fold < cfg.fold_limit) and (f.kind == "lodo" or cfg.ensemble)]


# ------------------------------------------------------------------------------------------- summary


def summarize_run(run_dir: Path, cfg: TrainConfig, folds: list[Fold], results: dict, table: LabelTable,
                  fp: dict) -> dict:
    slugs = domain_slugs(table.domains)
    summary: dict = {"data": fp, "counts": table.summary(), "threshold_method": cfg.threshold_method,
                     "folds": results, "lodo": {}}
    by_domain: dict[str, list[Fold]] = {}
    for f in folds:
        if f.heldout_domain is not None:
            by_domain.setdefault(f.heldout_domain, []).append(f)
    for domain, dfolds in by_domain.items():
        names = [f.name for f in dfolds]
        oof = collect_oof(run_dir, names)
        cands = threshold_candidates(oof["prob"], oof["label"])
        held = [read_predictions(run_dir / n / HELDOUT) for n in names]
        y = held[0]["label"]
        mean_prob = np.mean([h["prob"] for h in held], axis=0)  # ensemble = mean of member probabilities
        ens = metrics(y, mean_prob)
        for m, c in cands.items():
            ens[f"balanced_accuracy@{m}"] = mean_class_recall(mean_prob, y, c["value"])
        summary["lodo"][domain] = {
            "slug": slugs[domain],
            "oof": metrics(oof["label"], oof["prob"]),
            "thresholds": cands,
            "heldout_folds": {n: results[n].get("heldout") for n in names},
            "heldout_ensemble": ens,
        }
    if summary["lodo"]:
        ens = [v["heldout_ensemble"] for v in summary["lodo"].values()]
        key = f"balanced_accuracy@{cfg.threshold_method}"
        aucs = [e["auc"] for e in ens if e.get("auc") is not None]
        summary["lodo_mean"] = {
            "heldout_ensemble_auc": float(np.mean(aucs)) if aucs else None,
            "heldout_ensemble_balanced_accuracy@0.5": float(np.mean([e["balanced_accuracy@0.5"] for e in ens])),
            f"heldout_ensemble_{key}": float(np.mean([e[key] for e in ens])),
        }
    all_names = [f.name for f in folds if f.heldout_domain is None]
    if not all_names:
        return summary
    oof = collect_oof(run_dir, all_names)
    cands = threshold_candidates(oof["prob"], oof["label"])
    summary["all"] = {
        "folds": all_names,
        "oof": metrics(oof["label"], oof["prob"]),
        "thresholds": cands,
        "chosen": {"method": cfg.threshold_method,
                   "value": choose_threshold(oof["prob"], oof["label"], cfg.threshold_method)},
    }
    return summary


