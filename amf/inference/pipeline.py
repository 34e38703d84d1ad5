"""The one inference pipeline, from files of patches to thresholded P(atypical), for every caller.

``process.py`` (:mod:`amf.inference.challenge`) and ``amf predict`` (:mod:`amf.inference.predict`) differ only
in where their inputs are and what they write; what lies between is here, written once, so the README's promise
that ``amf predict`` gives the container's numbers holds by construction:

1. :func:`open_weights`: verify the weights folder without torch (about a second), before any input is read;
2. :func:`check_output_dir`: refuse an output folder that cannot be written, before any model work;
3. :func:`load`: start the device (:func:`amf.devices.resolve`: a CUDA that cannot start means the CPU, with one
   line) and the engine (one that cannot be built on the GPU means the CPU's, with one line);
4. :func:`predict`: every page of the given files through the engine, the next pages decoded by a thread while
   the model runs (:func:`decoded`, a bounded number of patches ahead), the count checked against the pages
   counted beforehand (a partial result is an error). A GPU that fails while scoring costs time, never the job:
   out of memory halves the forward passes, anything else scores the files again on the CPU, with one line;
5. :func:`class_of`: the class rule, ``P(atypical) >= threshold`` is atypical;
6. :func:`write_files`: every output or none, each through a temporary file renamed into place; the folders
   this call made are removed again when it fails.
"""

from __future__ import annotations

import os
import queue
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from amf.errors import AmfError, InputError, OutputError
from amf.files import fsync_dir, write_temp
from amf.inference.io import iter_patches
from amf.inference.manifest import Manifest
from amf.inference.weights import read_manifest

if TYPE_CHECKING:  # torch loads only in load(), once every check that needs no model has passed
    from amf.inference.engine import Engine
    from amf.inference.loading import LoadedEngine

ATYPICAL, NORMAL = "atypical", "normal"


def open_weights(weights_dir: Path) -> Manifest:
    """The verified manifest of ``weights_dir`` (hashes, format, values), without importing torch."""
    return read_manifest(weights_dir)


def check_output_dir(output_dir: Path) -> None:
    """Refuse an output folder we could not write to, before any work is spent (a file is made and removed)."""
    output_dir = Path(output_dir)
    nearest = output_dir
    while not nearest.exists():
        if nearest.is_symlink():
            raise OutputError(f"cannot write to {output_dir}: {nearest} is a broken link")
        if nearest.parent == nearest:
            break
        nearest = nearest.parent
    if not nearest.is_dir():
        raise OutputError(f"cannot write to output folder {output_dir}: {nearest} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".amf-write-check.", dir=nearest)
        try:
            os.close(fd)
        finally:
            os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"cannot write to output folder {output_dir}: {exc.strerror or exc}") from exc


@dataclass
class Model:
    """The engine a command runs, its threshold, and how to build the CPU's engine instead when the device fails:
    ``cpu`` is None when the engine is the CPU's already (nothing to fall back to). ``warn`` gets the one line
    that says a fallback happened, and why."""

    engine: Engine
    threshold: float
    cpu: Callable[[], LoadedEngine] | None
    warn: Callable[[str], None]

    def fall_back(self, what: str, exc: BaseException) -> None:
        """Replace the engine with the CPU's, saying so in one line that names the error."""
        self.warn(fallback_line(what, self.engine.device, exc))
        self.engine, self.cpu = self.cpu().engine, None


def fallback_line(what: str, device: object, exc: BaseException) -> str:
    error = " ".join(f"{type(exc).__name__}: {exc}".split())[:240]
    return f"{what} failed on {device} ({error}); running on the CPU instead"


def load(weights_dir: Path, manifest: Manifest, device: str | None, say: Callable[[str], None],
         warn: Callable[[str], None] | None = None, **engine_options) -> Model:
    """Start ``device`` (:func:`amf.devices.resolve`, whose line goes to ``say``), then the engine of the verified
    weights. If the engine cannot be built there (any error but a foreseen :class:`AmfError`), the CPU's engine is
    built instead, with one line to ``warn`` (default ``say``). ``engine_options``:
    :func:`amf.inference.loading.load_engine`'s."""
    from amf.devices import resolve
    from amf.inference.loading import load_engine

    warn = warn or say
    dev, line = resolve(device)
    say(line)
    cpu_options = {k: v for k, v in engine_options.items() if k != "strategy"}
    on_cpu = dev.type == "cpu" and engine_options.get("strategy") is None
    cpu = None if on_cpu else (lambda: load_engine(weights_dir, device="cpu", manifest=manifest, **cpu_options))
    try:
        engine = load_engine(weights_dir, device=dev, manifest=manifest, **engine_options).engine
    except AmfError:
        raise
    except Exception as exc:  # noqa: BLE001 - a device that fails costs the speed, never the job
        if cpu is None:
            raise
        warn(fallback_line("building the engine", dev, exc))
        engine, cpu = cpu().engine, None
    return Model(engine, manifest.threshold.value, cpu, warn)


def predict(model: Model, files: Sequence[Path], pages: int,
            on_patch: Callable[[Path, int, np.ndarray], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """P(atypical) of every page of ``files``, in order, as one stream (small files still fill large batches), and
    the spread of the scores each was averaged from (:meth:`amf.inference.engine.Engine.predict`).

    ``pages``: how many the files were counted to hold; any other number of results is an :class:`InputError`.
    ``on_patch(path, page, patch)`` sees each patch once, as the engine pulls it (a progress bar, the row keys).
    A device failure (any error but a foreseen :class:`AmfError`) costs time, not the job: out of memory first
    halves the patches per forward pass, then, as any other failure, the files are read and scored again by the
    CPU's engine, with one line to the model's ``warn``.
    """
    from amf.inference.engine import out_of_memory

    reported = 0

    def stream() -> Iterator[np.ndarray]:
        nonlocal reported
        for i, (path, page, patch) in enumerate(decoded(files)):
            if on_patch is not None and i >= reported:  # a second pass (after a fallback) reports nothing twice
                on_patch(path, page, patch)
                reported = i + 1
            yield patch

    while True:
        try:
            probs, spread = model.engine.predict(stream())
            break
        except AmfError:
            raise
        except Exception as exc:  # noqa: BLE001 - a device that fails costs the speed, never the job
            if model.cpu is None:
                raise
            if out_of_memory(exc) and model.engine.halve_batch():
                model.warn(f"out of memory on {model.engine.device}; scoring again with "
                           f"{model.engine.patches_per_forward} patch(es) per forward pass")
                continue
            model.fall_back("scoring", exc)
    if probs.shape != (pages,):
        where = f"{files[0]}: " if len(files) == 1 else ""
        raise InputError(f"{where}{probs.size} pages decoded but {pages} counted: refusing a partial result")
    return probs, spread


def decoded(files: Sequence[Path], ahead: int = 256) -> Iterator[tuple[Path, int, np.ndarray]]:
    """``(path, page, patch)`` of every page of ``files`` in order, decoded by a thread up to ``ahead`` patches
    before the model needs them, so reading overlaps the forward passes while memory stays bounded however long a
    stack is. A file that fails raises its error in its turn; what was decoded ahead of it is dropped."""
    pages: queue.Queue = queue.Queue(maxsize=ahead)
    stop = threading.Event()
    done = object()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                pages.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for path in files:
                for page, patch in enumerate(iter_patches(path)):
                    if not put((path, page, patch)):
                        return
            put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the reader, raised there in its turn
            put(exc)

    thread = threading.Thread(target=work, name="amf-decode", daemon=True)
    thread.start()
    try:
        while (item := pages.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def class_of(p: float, threshold: float) -> str:
    """The class rule of every output: at or above the threshold is atypical."""
    return ATYPICAL if p >= threshold else NORMAL


def write_files(payloads: Sequence[tuple[Path, bytes]]) -> None:
    """Write every ``(path, data)`` or none: all go to temporary files first, then are renamed into place.

    On any failure the temporary files and the folders this call made are removed again.
    """
    made: list[Path] = []
    temps: list[tuple[Path, Path]] = []
    try:
        for path, data in payloads:
            path = Path(path)
            for parent in reversed([path.parent, *path.parent.parents]):
                if not parent.exists():
                    parent.mkdir()
                    made.append(parent)
            temps.append((write_temp(path, data), path))
        for tmp, path in temps:
            os.replace(tmp, path)
        for path in {p.parent for _, p in temps}:
            fsync_dir(path)
        temps, made = [], []
    except OSError as exc:
        raise OutputError(f"cannot write {exc.filename or 'output'}: {exc.strerror or exc}") from exc
    finally:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        for folder in reversed(made):
            try:
                folder.rmdir()
            except OSError:
                pass
