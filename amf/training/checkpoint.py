"""A fold's checkpoint: what training needs to go on after a kill, written atomically and read back exactly.

:class:`FoldState` is what a fold carries from epoch to epoch (the model, its optimiser, schedule, grad scaler,
weight EMA, best epoch so far, and the epochs done). :func:`save_checkpoint` writes it with every random
generator's state after each epoch, to a temporary file renamed into place, so a kill at any moment leaves the
previous checkpoint or the new one; :func:`resume_checkpoint` restores it, so that a resumed CPU run reaches the
same bits as an uninterrupted one (:mod:`amf.training.train`, "Randomness and resume").
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from amf.errors import AmfError
from amf.files import atomic_write_bytes

if TYPE_CHECKING:
    from timm.utils import ModelEmaV3

    from amf.inference.model import Classifier
    from amf.training.config import TrainConfig
    from amf.training.splits import Fold


def atomic_torch_save(obj: dict, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def _numpy_state_to(state: tuple) -> tuple:
    """numpy's RNG state with its array as a tensor, so checkpoints load with ``weights_only=True``."""
    name, keys, pos, has_gauss, gauss = state
    return (name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(gauss))


def _numpy_state_from(state: tuple) -> tuple:
    name, keys, pos, has_gauss, gauss = state
    return (name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss)


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
