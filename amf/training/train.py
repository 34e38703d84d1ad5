"""Training: leave-one-domain-out x k-fold ensembles, resumable and bit-reproducible on CPU.

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

import datetime as _dt
import hashlib
import io
import math
import os
import random
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from timm.utils import ModelEmaV3

from amf.devices import resolve
from amf.errors import AmfError
from amf.files import atomic_write_bytes, json_safe, sha256_file, write_json
from amf.inference.io import patch_digest
from amf.inference.model import Classifier, build_classifier
from amf.inference.tta import train_augment
from amf.provenance import config_file, environment, git_state
from amf.training.config import TrainConfig
from amf.training.data import LabelTable, fingerprint, limit_table, load_images, read_datasets
from amf.training.distill import fold_targets, read_teacher, soft_labels
from amf.training.distributed import World, data_parallel, device_for, synced_batch_norm
from amf.training.losses import focal_loss
from amf.training.pretrained import init_backbone, init_head, provenance
from amf.training.run_folder import (
    BEST,
    CHECKPOINT,
    HELDOUT,
    MEMBERSHIP,
    OOF,
    RESULT,
    RunFolder,
    RunLog,
    collect_oof,
    finished,
    read_predictions,
    save_best_safetensors,
    sigmoid,
    write_membership,
    write_predictions,
)
from amf.training.sampling import epoch_indices
from amf.training.splits import Fold, domain_slugs, make_folds
from amf.training.threshold import choose_threshold, mean_class_recall, safe_auc, threshold_candidates

# --------------------------------------------------------------------------------------------- helpers


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts, stable across runs, platforms and Python hash seeds."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def atomic_torch_save(obj: dict, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or cfg.amp == "off":
        return None
    if cfg.amp == "fp16":
        return torch.float16
    if cfg.amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def make_batches(n: int, batch_size: int) -> list[slice]:
    """Consecutive slices of an epoch's order; a final batch of one is dropped (BatchNorm needs two)."""
    out = [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    if len(out) > 1 and out[-1].stop - out[-1].start < 2:
        out.pop()
    return out


def lr_lambda_factory(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total - 1)
    floor = cfg.min_lr / cfg.lr if cfg.lr > 0 else 0.0

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return f


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and normalisation parameters (1-D tensors)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def to_float(images_u8: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return images_u8.to(dtype).div_(255.0)


@torch.no_grad()
def predict_logits(
    model: Classifier,
    images: torch.Tensor,
    idx: np.ndarray,
    device: torch.device,
    batch_size: int,
    amp: torch.dtype | None,
) -> np.ndarray:
    """Logits of ``images[idx]`` (no augmentation), float32 numpy."""
    model.eval()
    dtype = next(model.parameters()).dtype
    out = []
    for s in range(0, len(idx), batch_size):
        x = to_float(images[torch.as_tensor(idx[s : s + batch_size])].to(device, non_blocking=True), dtype)
        ctx = torch.autocast("cuda", dtype=amp) if amp is not None else nullcontext()
        with ctx:
            out.append(model(x).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)


def metrics(labels: np.ndarray, probs: np.ndarray, loss: float | None = None) -> dict:
    labels = np.asarray(labels)
    out = {"n": int(labels.size), "n_atypical": int(labels.sum())}
    if labels.size:
        out["balanced_accuracy@0.5"] = mean_class_recall(probs, labels, 0.5)
        out["auc"] = safe_auc(probs, labels)
    if loss is not None:
        out["loss"] = loss
    return out


def _numpy_state_to(state: tuple) -> tuple:
    """numpy's RNG state with its array as a tensor, so checkpoints load with ``weights_only=True``."""
    name, keys, pos, has_gauss, gauss = state
    return (name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(gauss))


def _numpy_state_from(state: tuple) -> tuple:
    name, keys, pos, has_gauss, gauss = state
    return (name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss)


# ------------------------------------------------------------------------------------------ fold loop


EpochHook = Callable[[str, int], None]


#: How fast the weight EMA's decay rises to ``ema_decay``: ``1 - (1 + step) ** -EMA_WARMUP_POWER`` (timm's
#: ModelEmaV3 warm-up; 3/4 is its value for short runs). A fold has only 300-700 steps, so a fixed decay of
#: 0.99x would still carry the ImageNet start and the zero head at the last epoch; this one averages over
#: about the last 40-120 steps (one to two epochs) wherever the fold is.
EMA_WARMUP_POWER = 0.75


@dataclass
class FoldState:
    """What a fold's checkpoint holds: the model, its optimiser, LR schedule and grad scaler, the weight EMA
    (when ``ema_decay``), the best epoch so far (its weights and validation metrics) and how many epochs are
    complete."""

    model: Classifier
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    best: dict
    ema: ModelEmaV3 | None = None
    epoch: int = 0

    @property
    def scored_model(self) -> Classifier:
        """The weights that are validated and kept: the EMA when there is one (why average: flatter minima
        transfer better to unseen domains, Cha et al. 2021, Arpit et al. 2022), else the trained ones."""
        return self.ema.module if self.ema is not None else self.model


def new_fold_state(fold: Fold, cfg: TrainConfig, device: torch.device, steps_per_epoch: int) -> FoldState:
    """A fresh model (seeded by the fold: its initial weights do not depend on other folds) and optimiser."""
    torch.manual_seed(derive_seed(cfg.seed, fold.name, "init"))
    model = build_classifier(cfg.model_spec())
    if cfg.init_weights:
        init_backbone(model.backbone, cfg.init_weights)
    init_head(model.backbone, cfg.head_init)
    model = model.to(device=device, dtype=getattr(torch, cfg.dtype))
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda_factory(cfg, steps_per_epoch))
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype(cfg, device) == torch.float16)
    best = {"epoch": -1, "val_balanced_accuracy": -1.0, "val_auc": None, "state": None}
    ema = (ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True, warmup_power=EMA_WARMUP_POWER)
           if cfg.ema_decay > 0 else None)
    return FoldState(model, optimizer, scheduler, scaler, best, ema)


def resume_checkpoint(path: Path, fold: Fold, state: FoldState, device: torch.device) -> bool:
    """Restore ``state`` and the RNGs from ``path`` if it exists; a checkpoint of another fold plan is refused."""
    if not path.is_file():
        return False
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is reported the same way
        raise AmfError(f"cannot read checkpoint {path}: {exc}; delete it to restart this fold") from exc
    if ckpt.get("fold") != fold.name or ckpt.get("n_train") != len(fold.train):
        raise AmfError(f"{path} belongs to another fold plan; delete it to restart this fold")
    state.model.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.scheduler.load_state_dict(ckpt["scheduler"])
    state.scaler.load_state_dict(ckpt["scaler"])
    if state.ema is not None:
        state.ema.module.load_state_dict(ckpt["ema"])
    state.best = ckpt["best"]
    state.epoch = int(ckpt["epoch"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    np.random.set_state(_numpy_state_from(ckpt["rng"]["numpy"]))
    random.setstate(ckpt["rng"]["python"])
    if device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
        torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
    return True


def save_checkpoint(path: Path, fold: Fold, state: FoldState, cfg: TrainConfig, device: torch.device) -> None:
    """Everything :func:`resume_checkpoint` needs, written atomically (a kill leaves the old or the new file)."""
    atomic_torch_save({
        "fold": fold.name,
        "n_train": len(fold.train),
        "epoch": state.epoch,  # completed epochs
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict(),
        "ema": state.ema.module.state_dict() if state.ema is not None else None,
        "best": state.best,
        "rng": {
            "torch": torch.get_rng_state(),
            "numpy": _numpy_state_to(np.random.get_state()),
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
        },
        "config": cfg.to_dict(),
    }, path)


def seed_epoch(cfg: TrainConfig, fold: Fold, epoch: int) -> torch.Generator:
    """Seed every generator of an epoch from ``(seed, fold, epoch)``; returns the data generator (sampling
    order, D4, stain). Python's and numpy's global generators are not used by training, but the checkpoint
    saves their state: seeded here, a fold's files are the same bytes in any process (folds as parallel jobs)."""
    torch.manual_seed(derive_seed(cfg.seed, fold.name, epoch, "global"))  # dropout, drop-path
    random.seed(derive_seed(cfg.seed, fold.name, epoch, "python"))
    np.random.seed(derive_seed(cfg.seed, fold.name, epoch, "numpy") % 2**32)
    return torch.Generator().manual_seed(derive_seed(cfg.seed, fold.name, epoch, "data"))


def train_one_epoch(state: FoldState, fold: Fold, cfg: TrainConfig, table: LabelTable, images: torch.Tensor,
                    batches: list[slice], device: torch.device, epoch: int, progress: bool = False,
                    world: World = World(), net: torch.nn.Module | None = None,
                    teacher: np.ndarray | None = None) -> float:
    """One pass over a class-balanced draw of the training fold, augmented by :func:`amf.inference.tta.train_augment`
    (and mixup when ``cfg.mixup_alpha``); returns the mean training loss. ``teacher``: the teacher's P of each
    training patch (:func:`amf.training.distill.fold_targets`), mixed into the targets by ``cfg.distill_weight``.

    With several processes (:mod:`amf.training.distributed`), each draws and augments the whole global batch, keeps
    its share, and ``net`` (the model in DistributedDataParallel) averages the gradients."""
    from tqdm import tqdm

    amp = amp_dtype(cfg, device)
    g = seed_epoch(cfg, fold, epoch)
    order = epoch_indices(table.labels[fold.train], g, balanced=cfg.weighted_sampling)
    mix_rng = np.random.default_rng(derive_seed(cfg.seed, fold.name, epoch, "mixup"))
    model = state.model
    model.train()
    net = net if net is not None else model
    dtype = getattr(torch, cfg.dtype)
    reduction = "sum" if world.parallel else "mean"
    total_loss, seen = 0.0, 0
    batch_bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False,
                     disable=not progress, dynamic_ncols=True)
    for b in batch_bar:
        idx = fold.train[order[b].numpy()]
        x = to_float(images[torch.as_tensor(idx)].to(device, non_blocking=True), dtype)
        y = table.labels[idx] if teacher is None else soft_labels(table.labels[idx], teacher[idx], cfg.distill_weight)
        y = torch.as_tensor(y, dtype=torch.float32, device=device)
        x = train_augment(x, g, d4=cfg.d4, sigma=cfg.stain_sigma, delta=cfg.stain_delta)
        y_partner, lam = None, 1.0
        if cfg.mixup_alpha > 0:
            lam = float(mix_rng.beta(cfg.mixup_alpha, cfg.mixup_alpha))
            partner = torch.as_tensor(mix_rng.permutation(len(idx)), device=device)
            x = lam * x + (1 - lam) * x[partner]
            y_partner = y[partner]
        if world.parallel:  # this process's share of the global batch
            share = world.share(len(idx))
            x, y = x[share], y[share]
            y_partner = y_partner[share] if y_partner is not None else None
        with torch.autocast("cuda", dtype=amp) if amp is not None else nullcontext():
            logits = net(x).to(dtype)
        loss = focal_loss(logits, y, cfg.focal_alpha, cfg.focal_gamma, reduction)
        if y_partner is not None:
            loss = lam * loss + (1 - lam) * focal_loss(logits, y_partner, cfg.focal_alpha, cfg.focal_gamma, reduction)
        if world.parallel:
            loss = loss * (world.size / len(idx))  # DDP's average over processes -> the global batch's mean
        batch_loss = world.sum(loss.detach()).item() / world.size  # the global batch's mean loss, on every rank
        if not math.isfinite(batch_loss):
            raise AmfError(f"{fold.name} epoch {epoch + 1}: loss is {batch_loss}; lower the learning rate")
        state.optimizer.zero_grad(set_to_none=True)
        state.scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            state.scaler.unscale_(state.optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        state.scaler.step(state.optimizer)
        state.scaler.update()
        state.scheduler.step()
        if state.ema is not None:
            state.ema.update(model, step=state.scheduler.last_epoch)  # last_epoch counts optimiser steps
        total_loss += batch_loss * len(idx)
        seen += len(idx)
        batch_bar.set_postfix(loss=f"{batch_loss:.4f}")
    batch_bar.close()
    return total_loss / max(1, seen)


def validate(model: Classifier, fold: Fold, cfg: TrainConfig, table: LabelTable, images: torch.Tensor,
             device: torch.device) -> dict:
    """The validation fold, without augmentation: :func:`metrics` (balanced accuracy at 0.5, AUC, loss)."""
    labels = table.labels[fold.val]
    logits = predict_logits(model, images, fold.val, device, cfg.eval_batch_size, amp_dtype(cfg, device))
    loss = float(focal_loss(torch.from_numpy(logits), torch.from_numpy(labels).float(), cfg.focal_alpha,
                            cfg.focal_gamma))
    return metrics(labels, sigmoid(logits), loss)


def train_fold(
    fold: Fold,
    cfg: TrainConfig,
    table: LabelTable,
    images: torch.Tensor,
    fold_dir: Path,
    device: torch.device,
    log: RunLog,
    progress: bool = False,
    on_epoch_end: EpochHook | None = None,
    world: World = World(),
    teacher: np.ndarray | None = None,
) -> dict | None:
    """Train one fold (resuming from ``fold_dir/checkpoint.pt`` if present); return its ``result.json``.
    ``teacher``: distillation targets of its training patches (:mod:`amf.training.distill`), or None.

    Every epoch: train, validate, keep the weights if validation balanced accuracy at 0.5 improved,
    checkpoint, log. With several processes all of them train; rank 0 alone validates and writes (the
    others return None).
    """
    from tqdm import tqdm

    if world.main:
        fold_dir.mkdir(parents=True, exist_ok=True)
    batches = make_batches(len(fold.train), cfg.batch_size)
    state = new_fold_state(fold, cfg, device, len(batches))
    ckpt_path = fold_dir / CHECKPOINT
    if resume_checkpoint(ckpt_path, fold, state, device):
        log.write(event="fold_resume", fold=fold.name, epoch=state.epoch)
    epoch_bar = tqdm(range(state.epoch, cfg.epochs), desc=fold.name, unit="ep", disable=not progress,
                     initial=state.epoch, total=cfg.epochs, leave=True, dynamic_ncols=True)
    with synced_batch_norm(state.model, world):
        net = data_parallel(state.model, world)
        for epoch in epoch_bar:
            t0 = time.time()
            train_loss = train_one_epoch(state, fold, cfg, table, images, batches, device, epoch, progress, world,
                                         net, teacher)
            state.epoch = epoch + 1
            if world.main:
                end_epoch(state, fold, cfg, table, images, device, ckpt_path, log, train_loss, len(batches), t0,
                          epoch_bar)
            if on_epoch_end is not None:
                on_epoch_end(fold.name, epoch)
    epoch_bar.close()
    if not world.main:
        world.barrier()  # rank 0 writes the fold's files
        return None
    result = finish_fold(fold, cfg, table, images, fold_dir, device, state.model, state.best, log)
    world.barrier()
    return result


def end_epoch(state: FoldState, fold: Fold, cfg: TrainConfig, table: LabelTable, images: torch.Tensor,
              device: torch.device, ckpt_path: Path, log: RunLog, train_loss: float, steps: int, t0: float,
              epoch_bar) -> None:
    """After ``state.epoch`` epochs: validate, keep the best weights, checkpoint, log (rank 0's job)."""
    epoch = state.epoch - 1
    val = validate(state.scored_model, fold, cfg, table, images, device)
    if val["balanced_accuracy@0.5"] > state.best["val_balanced_accuracy"]:
        state.best = {
            "epoch": epoch,
            "val_balanced_accuracy": val["balanced_accuracy@0.5"],
            "val_auc": val["auc"],
            "val_loss": val["loss"],
            "state": {k: v.detach().to("cpu", copy=True) for k, v in state.scored_model.state_dict().items()},
        }
    save_checkpoint(ckpt_path, fold, state, cfg, device)
    best = state.best
    log.write(event="epoch", fold=fold.name, epoch=epoch + 1, epochs=cfg.epochs, train_loss=train_loss,
              val_loss=val["loss"], val_balanced_accuracy=val["balanced_accuracy@0.5"], val_auc=val["auc"],
              lr=state.scheduler.get_last_lr()[0], best_epoch=best["epoch"] + 1,
              seconds=round(time.time() - t0, 2), n_train=len(fold.train), steps=steps)
    epoch_bar.set_postfix(loss=f"{train_loss:.4f}", val_ba=f"{val['balanced_accuracy@0.5']:.3f}",
                          best=f"{best['val_balanced_accuracy']:.3f}@{best['epoch'] + 1}")


def finish_fold(fold: Fold, cfg: TrainConfig, table: LabelTable, images: torch.Tensor, fold_dir: Path,
                device: torch.device, model: Classifier, best: dict, log: RunLog) -> dict:
    """Best weights -> ``best.safetensors``, OOF and held-out predictions, ``result.json`` (last)."""
    amp = amp_dtype(cfg, device)
    model.load_state_dict(best["state"])
    save_best_safetensors(fold_dir / BEST, best["state"], {
        "fold": fold.name, "epoch": best["epoch"] + 1, "val_balanced_accuracy": best["val_balanced_accuracy"],
        "arch": cfg.arch, "input_size": cfg.input_size})
    val_logits = predict_logits(model, images, fold.val, device, cfg.eval_batch_size, amp)
    write_predictions(fold_dir / OOF, table, fold.val, val_logits)
    write_membership(fold_dir / MEMBERSHIP, table, {"train": fold.train, "val": fold.val, "heldout": fold.heldout},
                     _digests(images, np.concatenate([fold.train, fold.val, fold.heldout]), len(table)))
    result = {
        "fold": fold.name,
        "heldout_domain": fold.heldout_domain,
        "best_epoch": best["epoch"] + 1,
        "epochs": cfg.epochs,
        "n_train": len(fold.train),
        "n_train_atypical": int(table.labels[fold.train].sum()),
        "val": metrics(table.labels[fold.val], sigmoid(val_logits), best.get("val_loss")),
    }
    if len(fold.heldout):
        held_logits = predict_logits(model, images, fold.heldout, device, cfg.eval_batch_size, amp)
        write_predictions(fold_dir / HELDOUT, table, fold.heldout, held_logits)
        result["heldout"] = metrics(table.labels[fold.heldout], sigmoid(held_logits))
    write_json(fold_dir / RESULT, result)
    if not cfg.keep_checkpoints:
        (fold_dir / CHECKPOINT).unlink(missing_ok=True)
    log.write(event="fold_done", **{k: v for k, v in result.items() if k != "fold"}, fold=fold.name)
    return result


def _digests(images: torch.Tensor, idx: np.ndarray, n: int) -> list[str]:
    """:func:`amf.inference.io.patch_digest` of ``images[idx]`` (the pixels training used), at their places in a
    list of ``n``."""
    out = [""] * n
    for i in np.unique(idx).tolist():
        out[i] = patch_digest(images[i].permute(1, 2, 0).cpu().numpy())
    return out


# ------------------------------------------------------------------------------------------- the run


def _config_record(cfg: TrainConfig, fp: dict, command: list[str] | None, images_dir: Path, columns: dict,
                   arguments: list[str] | None = None, config_path: Path | None = None,
                   device: torch.device | None = None) -> dict:
    git = git_state()
    rec = {
        "config": cfg.to_dict(),
        "model": cfg.model_spec().to_dict(),
        "data": fp,
        "images_dir": str(images_dir),
        "column_overrides": {k: v for k, v in (columns or {}).items() if v},
        "command": command if command is not None else [sys.executable, *sys.argv],
        "arguments": arguments,
        "cwd": os.getcwd(),
        "git_commit": git["commit"],
        "git": git,
        "config_file": config_file(config_path),
        "environment": environment(cfg.threads, str(device) if device is not None else None),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
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


def train_run(
    cfg: TrainConfig,
    labels_file: Path | list[Path],
    output: Path,
    images_dir: Path | list[Path | None] | None = None,
    columns: dict[str, str | None] | None = None,
    resume: bool = False,
    device: str | None = "cpu",
    progress: bool = False,
    command: list[str] | None = None,
    on_epoch_end: EpochHook | None = None,
    arguments: list[str] | None = None,
    only: list[str] | None = None,
    world: World = World(),
    config_path: Path | None = None,
) -> dict | None:
    """Train every fold of a run into ``output`` and write ``summary.json``; returns the summary.

    ``labels_file`` may be a list of labels files trained together, with ``images_dir`` then a list of the
    same length (``None`` entries: the labels file's folder); see :func:`amf.training.data.read_datasets`.

    ``only`` (fold ids, as :func:`plan` lists them) trains just those folds, joining the run folder if another
    job made it already (its config must agree, as for a resume): folds as independent jobs, e.g. one
    per task of a cluster job array. Each fold's files are the same bytes as in a sequential run (its seeds
    depend on the fold, not on the order). ``summary.json`` is written, and returned, by whichever job
    finds every planned fold finished; the others return None.

    ``world`` (:func:`amf.training.distributed.start`) trains each fold data-parallel over the processes of a
    ``torchrun`` job; rank 0 writes everything and returns the summary, the other ranks return None.

    ``config_path``: the config file the settings came from; its sha256 and text are recorded. Every job
    (start, resume or ``--fold`` job) logs its command line, git state and environment in ``log.jsonl``,
    which is where the export reads the commands that produced the members.
    """
    output = Path(output)
    dev = device_for(world, resolve(device)[0])
    table = read_datasets(data_sources(labels_file, images_dir), columns)  # validates every row first
    table = limit_table(table, cfg.limit, cfg.seed)
    fp = fingerprint(table)
    record = _config_record(cfg, fp, command, table.image_dir, columns or {}, arguments, config_path, dev)
    record["image_dirs"] = [str(d) if d is not None else None for _, d in data_sources(labels_file, images_dir)]
    planned = select_folds(make_folds(table.labels, table.domains, table.groups, cfg.folds, cfg.seed, lodo=cfg.lodo),
                           cfg)
    if only is not None:
        unknown = sorted(set(only) - {f.name for f in planned})
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
    world.barrier()  # every process has checked the folder before rank 0 writes to it
    if world.main and joining:
        # Keep the recorded run (its command, creation time); only the fold selection may have grown.
        old = run.record()
        old["config"].update({k: record["config"][k] for k in FOLD_SELECTION})
        run.write_record(old)
    elif world.main:
        run.write_record(record)
    log = run.log(world.main)
    folds = planned if only is None else [f for f in planned if f.name in only]
    log.write(event="resume" if resume else "start", command=record["command"], arguments=arguments, device=str(dev),
              processes=world.size, n=len(table), folds=[f.name for f in folds], counts=table.summary(),
              git=record["git"], environment=record["environment"],
              config_file_sha256=(record["config_file"] or {}).get("sha256"))
    # distillation targets of every fold, before any decoding: a patch the teacher did not score fails in seconds
    teacher = read_teacher(Path(cfg.teacher_scores)) if cfg.distill_weight > 0 else None
    targets = {f.name: fold_targets(teacher, table, f) for f in folds} if teacher is not None else {}
    progress = progress and world.main
    images = load_images(table, progress=progress)  # every file decoded before training starts
    if dev.type == "cuda":
        images = images.to(dev)

    results: dict[str, dict] = {}
    with _Determinism(cfg):
        for fold in folds:
            fold_dir = run.fold(fold.name)
            if finished(fold_dir):
                results[fold.name] = run.result(fold_dir)
                continue
            results[fold.name] = train_fold(fold, cfg, table, images, fold_dir, dev, log, progress, on_epoch_end,
                                            world, targets.get(fold.name))
    if not world.main:
        return None
    if only is not None:
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


