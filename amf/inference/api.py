"""The Python API, for notebooks and scripts: the weights verified and loaded once, then arrays or files scored.

``amf.load()`` returns a :class:`Classifier`; its :meth:`Classifier.predict` takes an ``(N, 128, 128, 3)`` uint8
array, or image files, stacks and folders, and returns :class:`Predictions`: P(atypical), the class at the
weights' threshold and the spread of the scores each figure was averaged from (its members' views), per patch.
``amf predict`` and ``process.py`` score through the same :class:`Classifier` (:mod:`amf.inference.pipeline` below
it), so a notebook gets the container's numbers.

Example, with the shipped weights on the bundled stack (16 figures):

>>> import amf
>>> model = amf.load(device="cpu")
>>> result = model.predict("test/input")
>>> len(result), result.classes[:3]
(16, ['atypical', 'normal', 'normal'])
>>> result.rows()[0]["path"].endswith("stack_synthetic.tiff"), result.rows()[0]["page"]
(True, 0)
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from amf.errors import InputError
from amf.inference import pipeline
from amf.inference.io import IMAGE_SUFFIXES, count_pages, find_images
from amf.inference.manifest import Manifest


@dataclass(frozen=True)
class Predictions:
    """Scores of N patches: ``p_atypical`` (the ensemble's mean), ``view_sd`` (the standard deviation of the member
    and view scores it is the mean of), ``classes`` at ``threshold``, and for files, each patch's ``(path, page)``."""

    p_atypical: np.ndarray
    view_sd: np.ndarray
    classes: list[str]
    threshold: float
    sources: list[tuple[Path, int]] | None = None

    def __len__(self) -> int:
        return len(self.classes)

    def rows(self) -> list[dict]:
        """One record per patch: ``path`` and ``page`` (for files), ``p_atypical``, ``view_sd``, ``class``."""
        keys = self.sources or [(None, i) for i in range(len(self))]
        return [{**({"path": str(path)} if path is not None else {}), "page": page, "p_atypical": float(p),
                 "view_sd": float(sd), "class": c}
                for (path, page), p, sd, c in zip(keys, self.p_atypical, self.view_sd, self.classes, strict=True)]


class Classifier:
    """A weights folder, verified and loaded on a device once (:func:`load`)."""

    def __init__(self, model: pipeline.Model, manifest: Manifest):
        self.model = model
        self.manifest = manifest

    @property
    def threshold(self) -> float:
        return self.model.threshold

    def predict(self, patches: np.ndarray | str | Path | Sequence[str | Path], threshold: float | None = None
                ) -> Predictions:
        """Score an ``(N, 128, 128, 3)`` uint8 array, or files and folders (every page, in order); the classes at
        ``threshold`` (default: the weights' own)."""
        cut = self.threshold if threshold is None else float(threshold)
        if isinstance(patches, np.ndarray):
            if patches.ndim != 4 or patches.shape[1:] != (128, 128, 3) or patches.dtype != np.uint8:
                raise InputError(f"an array of patches must be (N, 128, 128, 3) uint8, not {patches.shape} "
                                 f"{patches.dtype}")
            probs, spread = self.model.engine.predict(patches)
            return Predictions(probs, spread, [pipeline.class_of(p, cut) for p in probs.tolist()], cut)
        paths = [patches] if isinstance(patches, (str, Path)) else list(patches)
        files = find_images([Path(p) for p in paths])
        if not files:
            raise InputError(f"no image files in {', '.join(map(str, paths))} (accepted: {', '.join(IMAGE_SUFFIXES)})")
        pages = sum(count_pages(f) for f in files)  # structure only: the pipeline decodes and checks the count
        return self.predict_files(files, pages, threshold=cut)

    def predict_files(self, files: Sequence[Path], pages: int, threshold: float | None = None,
                      on_patch: Callable[[Path, int, np.ndarray], None] | None = None) -> Predictions:
        """Every page of ``files`` (already checked: ``pages`` in all), in order; ``on_patch(path, page, patch)``
        sees each patch as the engine takes it (a progress bar). What ``amf predict`` and ``process.py`` call."""
        cut = self.threshold if threshold is None else float(threshold)
        sources: list[tuple[Path, int]] = []

        def seen(path: Path, page: int, patch: np.ndarray) -> None:
            sources.append((path, page))
            if on_patch is not None:
                on_patch(path, page, patch)

        probs, spread = pipeline.predict(self.model, list(files), pages, on_patch=seen)
        return Predictions(probs, spread, [pipeline.class_of(p, cut) for p in probs.tolist()], cut, sources)


@dataclass(frozen=True)
class RunSettings:
    """How the model runs, none of which changes its weights: test-time ``views`` (None: the weights' own), the CPU
    ``threads`` it uses (None: torch's setting), bf16 autocast, and the patches read and augmented at a time."""

    views: int | None = None
    threads: int | None = None
    bf16: bool = False
    chunk_size: int = 64


def load(weights: Path | str | None = None, device: str = "auto", *, views: int | None = None,
         threads: int | None = None, bf16: bool = False) -> Classifier:
    """Verify ``weights`` (default: ``$AMF_WEIGHTS``, else the checkout's ``weights/``) and load them on ``device``
    (``auto``: a GPU when one starts, else the CPU; the line saying which goes to stderr). ``views`` overrides the
    number of test-time views; ``threads`` sets the CPU threads the model uses."""
    from amf.inference.weights import default_weights

    weights = Path(weights) if weights is not None else default_weights()
    return open_classifier(weights, pipeline.open_weights(weights), device, RunSettings(views, threads, bf16))


def open_classifier(weights: Path, manifest: Manifest, device: str = "auto", settings: RunSettings = RunSettings(),
                    say: Callable[[str], None] | None = None, warn: Callable[[str], None] | None = None) -> Classifier:
    """The :class:`Classifier` of a weights folder verified a moment ago (``manifest``: what
    :func:`amf.inference.pipeline.open_weights` returned for it), as ``amf predict`` and ``process.py`` load it: the
    line saying which device goes to ``say`` (default stderr), a GPU that fails later is said to ``warn`` (default
    ``say``)."""
    import dataclasses

    say = say or (lambda note: print(f"amf: {note}", file=sys.stderr))
    tta = None if settings.views is None else dataclasses.replace(manifest.tta, views=settings.views)
    model = pipeline.load(weights, manifest, None if device == "auto" else device, say, warn=warn,
                          chunk_size=settings.chunk_size, tta=tta, bf16=settings.bf16, num_threads=settings.threads)
    return Classifier(model, manifest)
