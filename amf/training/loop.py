"""The fold loop: one fold's training, epoch by epoch, from a fresh or resumed :class:`FoldState` to its files.

A :class:`FoldContext` holds what every step of a fold reads (the fold, the config, the data on its device, the
distributed world, the teacher's targets, the log), built once by :mod:`amf.training.train` and handed on;
the :class:`~amf.training.checkpoint.FoldState` holds what changes (model, optimiser, schedule, best epoch).
:func:`train_fold` runs the epochs (:func:`train_one_epoch`, then :func:`end_epoch`: validate, keep the best,
checkpoint, log) and :func:`finish_fold` writes the fold's files. The run around the folds, its record and its
summary are :mod:`amf.training.train`'s.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from timm.utils import ModelEmaV3

from amf.errors import AmfError
from amf.files import write_json
from amf.inference.io import patch_digest
from amf.inference.model import Classifier, build_classifier
from amf.inference.tta import train_augment
from amf.training.checkpoint import FoldState, resume_checkpoint, save_checkpoint
from amf.training.config import TrainConfig
from amf.training.data import LabelTable
from amf.training.distill import soft_labels
from amf.training.distributed import World, data_parallel, synced_batch_norm
from amf.training.losses import focal_loss
from amf.training.pretrained import init_backbone, init_head
from amf.training.run_folder import (
    BEST,
    CHECKPOINT,
    HELDOUT,
    MEMBERSHIP,
    OOF,
    RESULT,
    RunLog,
    save_best_safetensors,
    sigmoid,
    write_membership,
    write_predictions,
)
from amf.training.sampling import epoch_indices
from amf.training.splits import Fold
from amf.training.threshold import mean_class_recall, safe_auc

EpochHook = Callable[[str, int], None]


@dataclass(frozen=True)
class FoldContext:
    """What every step of one fold's training reads, built once per fold: the fold and the run's config, the
    labels and the decoded patches on ``device``, the run's log, the distributed ``world``, the teacher's target
    for every patch (or None), and whether to draw progress bars."""

    fold: Fold
    cfg: TrainConfig
    table: LabelTable
    images: torch.Tensor
    device: torch.device
    log: RunLog
    world: World = World()
    teacher: np.ndarray | None = None
    progress: bool = False


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts, stable across runs, platforms and Python hash seeds."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


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


#: How fast the weight EMA's decay rises to ``ema_decay``: ``1 - (1 + step) ** -EMA_WARMUP_POWER`` (timm's
#: ModelEmaV3 warm-up; 3/4 is its value for short runs). A fold has only 300-700 steps, so a fixed decay of
#: 0.99x would still carry the ImageNet start and the zero head at the last epoch; this one averages over
#: about the last 40-120 steps (one to two epochs) wherever the fold is.
EMA_WARMUP_POWER = 0.75


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


def seed_epoch(cfg: TrainConfig, fold: Fold, epoch: int) -> torch.Generator:
    """Seed every generator of an epoch from ``(seed, fold, epoch)``; returns the data generator (sampling
    order, D4, stain). Python's and numpy's global generators are not used by training, but the checkpoint
    saves their state: seeded here, a fold's files are the same bytes in any process (folds as parallel jobs)."""
    torch.manual_seed(derive_seed(cfg.seed, fold.name, epoch, "global"))  # dropout, drop-path
    random.seed(derive_seed(cfg.seed, fold.name, epoch, "python"))
    np.random.seed(derive_seed(cfg.seed, fold.name, epoch, "numpy") % 2**32)
    return torch.Generator().manual_seed(derive_seed(cfg.seed, fold.name, epoch, "data"))


def train_one_epoch(ctx: FoldContext, state: FoldState, batches: list[slice], epoch: int,
                    net: torch.nn.Module | None = None) -> float:
    """One pass over a class-balanced draw of the training fold, augmented by :func:`amf.inference.tta.train_augment`
    (and mixup when ``cfg.mixup_alpha``); returns the mean training loss. ``ctx.teacher``: the teacher's P of
    each training patch (:func:`amf.training.distill.fold_targets`), mixed into the targets by ``cfg.distill_weight``.

    With several processes (:mod:`amf.training.distributed`), each draws and augments the whole global batch, keeps
    its share, and ``net`` (the model in DistributedDataParallel) averages the gradients."""
    from tqdm import tqdm

    fold, cfg, table, images, device, world, teacher = (ctx.fold, ctx.cfg, ctx.table, ctx.images, ctx.device,
                                                        ctx.world, ctx.teacher)
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
                     disable=not ctx.progress, dynamic_ncols=True)
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


def validate(ctx: FoldContext, model: Classifier) -> dict:
    """The validation fold, without augmentation: :func:`metrics` (balanced accuracy at 0.5, AUC, loss)."""
    cfg, val = ctx.cfg, ctx.fold.val
    labels = ctx.table.labels[val]
    logits = predict_logits(model, ctx.images, val, ctx.device, cfg.eval_batch_size, amp_dtype(cfg, ctx.device))
    loss = float(focal_loss(torch.from_numpy(logits), torch.from_numpy(labels).float(), cfg.focal_alpha,
                            cfg.focal_gamma))
    return metrics(labels, sigmoid(logits), loss)


def train_fold(ctx: FoldContext, fold_dir: Path, on_epoch_end: EpochHook | None = None) -> dict | None:
    """Train one fold (resuming from ``fold_dir/checkpoint.pt`` if present); return its ``result.json``.

    Every epoch: train, validate, keep the weights if validation balanced accuracy at 0.5 improved,
    checkpoint, log. With several processes all of them train; rank 0 alone validates and writes (the
    others return None).
    """
    from tqdm import tqdm

    fold, cfg, world = ctx.fold, ctx.cfg, ctx.world
    if world.main:
        fold_dir.mkdir(parents=True, exist_ok=True)
    batches = make_batches(len(fold.train), cfg.batch_size)
    state = new_fold_state(fold, cfg, ctx.device, len(batches))
    ckpt_path = fold_dir / CHECKPOINT
    if resume_checkpoint(ckpt_path, fold, state, ctx.device):
        ctx.log.write(event="fold_resume", fold=fold.name, epoch=state.epoch)
    epoch_bar = tqdm(range(state.epoch, cfg.epochs), desc=fold.name, unit="ep", disable=not ctx.progress,
                     initial=state.epoch, total=cfg.epochs, leave=True, dynamic_ncols=True)
    with synced_batch_norm(state.model, world):
        net = data_parallel(state.model, world)
        for epoch in epoch_bar:
            t0 = time.time()
            train_loss = train_one_epoch(ctx, state, batches, epoch, net)
            state.epoch = epoch + 1
            if world.main:
                end_epoch(ctx, state, ckpt_path, train_loss, len(batches), t0, epoch_bar)
            if on_epoch_end is not None:
                on_epoch_end(fold.name, epoch)
    epoch_bar.close()
    if not world.main:
        world.barrier()  # rank 0 writes the fold's files
        return None
    result = finish_fold(ctx, fold_dir, state.model, state.best)
    world.barrier()
    return result


def end_epoch(ctx: FoldContext, state: FoldState, ckpt_path: Path, train_loss: float, steps: int, t0: float,
              epoch_bar) -> None:
    """After ``state.epoch`` epochs: validate, keep the best weights, checkpoint, log (rank 0's job)."""
    fold, cfg = ctx.fold, ctx.cfg
    epoch = state.epoch - 1
    val = validate(ctx, state.scored_model)
    if val["balanced_accuracy@0.5"] > state.best["val_balanced_accuracy"]:
        state.best = {
            "epoch": epoch,
            "val_balanced_accuracy": val["balanced_accuracy@0.5"],
            "val_auc": val["auc"],
            "val_loss": val["loss"],
            "state": {k: v.detach().to("cpu", copy=True) for k, v in state.scored_model.state_dict().items()},
        }
    save_checkpoint(ckpt_path, fold, state, cfg, ctx.device)
    best = state.best
    ctx.log.write(event="epoch", fold=fold.name, epoch=epoch + 1, epochs=cfg.epochs, train_loss=train_loss,
              val_loss=val["loss"], val_balanced_accuracy=val["balanced_accuracy@0.5"], val_auc=val["auc"],
              lr=state.scheduler.get_last_lr()[0], best_epoch=best["epoch"] + 1,
              seconds=round(time.time() - t0, 2), n_train=len(fold.train), steps=steps)
    epoch_bar.set_postfix(loss=f"{train_loss:.4f}", val_ba=f"{val['balanced_accuracy@0.5']:.3f}",
                          best=f"{best['val_balanced_accuracy']:.3f}@{best['epoch'] + 1}")


def finish_fold(ctx: FoldContext, fold_dir: Path, model: Classifier, best: dict) -> dict:
    """Best weights -> ``best.safetensors``, OOF and held-out predictions, ``result.json`` (last)."""
    fold, cfg, table, images, device = ctx.fold, ctx.cfg, ctx.table, ctx.images, ctx.device
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
    ctx.log.write(event="fold_done", **{k: v for k, v in result.items() if k != "fold"}, fold=fold.name)
    return result


def _digests(images: torch.Tensor, idx: np.ndarray, n: int) -> list[str]:
    """:func:`amf.inference.io.patch_digest` of ``images[idx]`` (the pixels training used), at their places in a
    list of ``n``."""
    out = [""] * n
    for i in np.unique(idx).tolist():
        out[i] = patch_digest(images[i].permute(1, 2, 0).cpu().numpy())
    return out


