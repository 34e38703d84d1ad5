"""A run's folds scored the way the container scores a stack: through :class:`amf.inference.engine.Engine`, with or
without test-time augmentation.

Training writes single-view predictions. The threshold that gets shipped, and the held-out figures that
``amf crossval`` reports, must come from scores made as ``process.py`` makes them, so both ``crossval`` and
``export`` rescore here: out-of-fold patches by the one member that never trained on them
(:func:`oof_scores`), held-out domains by their whole LODO ensemble (:func:`score_run`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from amf.inference.engine import Engine
from amf.inference.io import read_patches
from amf.inference.spec import TTAConfig
from amf.training.run_folder import HELDOUT, OOF, RunFolder, load_fold_model, read_predictions
from amf.training.threshold import threshold_candidates


@dataclass(frozen=True)
class OutOfFold:
    """Pooled out-of-fold scores: each patch (``images``) scored by the one model (``member``, its index in the
    list scored) that never trained on it."""

    images: np.ndarray
    member: np.ndarray
    labels: np.ndarray
    probs: np.ndarray


@dataclass(frozen=True)
class HeldOut:
    """One held-out domain of one run: ensemble scores on it, and the OOF scores its threshold comes from."""

    domain: str
    members: int
    images: list[str]
    labels: np.ndarray
    probs: np.ndarray
    oof: OutOfFold | None  # None where only their number is known (oof_count): a row read back from its results
    thresholds: dict  # amf.training.threshold.threshold_candidates on the OOF scores
    folds: list[str]  # the fold folders of its models, relative to the run
    oof_count: int | None = None

    @property
    def oof_n(self) -> int:
        """How many out-of-fold scores the threshold was chosen on."""
        return len(self.oof.labels) if self.oof is not None else int(self.oof_count or 0)


class PatchCache:
    """Patches of a run's image folder, decoded once, looked up by the ``image`` column of its CSVs."""

    def __init__(self, images_dir: Path):
        self.images_dir = Path(images_dir)
        self._patches: dict[str, np.ndarray] = {}

    def __call__(self, images) -> np.ndarray:
        for image in images:
            if image not in self._patches:
                self._patches[image] = read_patches(self.images_dir / image)[0]
        return np.stack([self._patches[image] for image in images])


def oof_scores(models: list, fold_dirs: list[Path], patches: PatchCache, tta: TTAConfig,
               threads: int | None = None, progress: bool = False, desc: str = "out-of-fold",
               bf16: bool = False) -> OutOfFold:
    """Pooled out-of-fold scores: each fold's validation patches scored by that fold's model alone (the only
    model that never trained on them), through the engine with ``tta``, so a threshold chosen on them fits
    scores made the way the container makes them."""

    images, member, labels, probs = [], [], [], []
    for k, (model, d) in enumerate(tqdm(list(zip(models, fold_dirs, strict=True)), desc=desc, unit="fold",
                                        disable=not progress, leave=False)):
        val = read_predictions(d / OOF)
        engine = Engine([model], tta, device="cpu", strategy="batched", num_threads=threads, bf16=bf16)
        probs.append(engine.predict_proba(patches(val["image"])))
        labels.append(val["label"])
        images.append(val["image"])
        member.append(np.full(len(val["label"]), k, dtype=np.int64))
    return OutOfFold(*(np.concatenate(x) for x in (images, member, labels, probs)))


def score_run(run_dir: Path, tta: TTAConfig, patches: PatchCache, threads: int | None = None,
              progress: bool = False, desc: str | None = None, bf16: bool = False) -> list[HeldOut]:
    """Score every held-out domain of ``run_dir`` with its own LODO ensemble and ``tta`` (in bf16 autocast with
    ``bf16``, out-of-fold scores too, so the threshold is what a bf16 engine would choose); ``patches`` reads
    the run's image folder."""

    run = RunFolder(run_dir)
    cfg = run.config()[0]
    out = []
    for domain, fold_dirs in tqdm(sorted(run.lodo_folds().items()), desc=desc or Path(run_dir).name,
                                  unit="domain", disable=not progress, leave=False):
        models = [load_fold_model(cfg.model_spec(), d) for d in fold_dirs]
        oof = oof_scores(models, fold_dirs, patches, tta, threads, bf16=bf16)
        held = read_predictions(fold_dirs[0] / HELDOUT)
        engine = Engine(models, tta, device="cpu", strategy="batched", num_threads=threads, bf16=bf16)
        probs = engine.predict_proba(patches(held["image"]))
        out.append(HeldOut(domain, len(models), held["image"].tolist(), held["label"], probs, oof,
                           threshold_candidates(oof.probs, oof.labels),
                           [str(d.relative_to(run_dir)) for d in fold_dirs]))
    return out
