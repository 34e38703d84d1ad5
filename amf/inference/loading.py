"""An engine for a weights folder: verified weights in, :class:`amf.inference.engine.Engine` out, with a cache of frozen
graphs so that a second run on the CPU starts without timm or a trace (:func:`load_engine`).

Its own module because loading is a different job from computing: it touches the disk, the manifest and
the cache; :mod:`amf.inference.engine` computes from members in memory.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from amf.errors import InputError
from amf.files import sha256_file, write_json
from amf.inference.engine import Engine, default_device, default_strategy
from amf.inference.manifest import Manifest
from amf.inference.prepare import example_input, freeze_members, optimize_graphs, quiet_jit
from amf.inference.spec import TTAConfig
from amf.inference.weights import load_ensemble, read_manifest

#: One line on stderr for a cache that cannot be used or written (Python's last-resort handler prints the
#: message alone, no source line, when the program configured no logging): it costs a rebuild, never the run.
log = logging.getLogger("amf.inference.loading")

#: Bump when what a cached graph holds changes.
GRAPH_CACHE_FORMAT = 1


@dataclass
class LoadedEngine:
    """An engine ready for a weights folder, the decision threshold, and where its graphs came from."""

    engine: Engine
    threshold: float
    manifest: Manifest
    source: str  # "graph-cache" (no timm imported, no trace) or "built"


def graph_cache_dir() -> Path | None:
    """``$AMF_GRAPH_CACHE`` (a folder; ``off`` disables), else ``$XDG_CACHE_HOME/amf/graphs`` or
    ``~/.cache/amf/graphs``. A switch word that is not a folder (``on``, ``yes``, ``1``) is refused: it would
    otherwise make a folder of that name."""
    value = os.environ.get("AMF_GRAPH_CACHE", "")
    if value.lower() in ("0", "off", "no", "false", "none"):
        return None
    if value.lower() in ("1", "on", "yes", "true"):
        raise InputError(f"AMF_GRAPH_CACHE={value}: name the cache folder, or 'off' (unset: "
                         f"{default_graph_cache()})")
    return Path(value) if value else default_graph_cache()


def default_graph_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "amf" / "graphs"


def graph_cache_key(manifest: Manifest) -> str:
    """Changes with anything that changes a frozen graph: the member files (by sha256), the model spec, the
    versions of torch and timm, and the source of ``amf.inference.model`` (found without importing it, or timm)."""
    model_source = importlib.util.find_spec("amf.inference.model").origin
    inputs = {
        "format": GRAPH_CACHE_FORMAT,
        "members": [entry.sha256 for entry in manifest.members],
        "model": manifest.model.to_dict(),
        "storage_dtype": manifest.storage_dtype,
        "torch": torch.__version__,
        "timm": importlib.metadata.version("timm"),
        "amf_model_py": hashlib.sha256(Path(model_source).read_bytes()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:32]


_DEFAULT = object()


def load_engine(
    weights_dir: Path,
    device: torch.device | str | None = None,
    *,
    manifest: Manifest | None = None,
    cache_dir: Path | None | object = _DEFAULT,
    tta: TTAConfig | None = None,
    **options,
) -> LoadedEngine:
    """Verify a weights folder and make its engine; on CPU, reuse frozen graphs from an earlier run.

    The weights are always verified first (:func:`amf.inference.weights.read_manifest`: manifest, every sha256,
    safetensors headers). For the ``graph`` strategy the frozen graphs of these exact member files are
    then looked up in ``cache_dir`` (default :func:`graph_cache_dir`; ``None`` disables). On a hit, no
    model is built: timm is not even imported and nothing is traced, which is most of a cold start. On a
    miss the members are loaded and checked as usual (:func:`amf.inference.weights.load_ensemble`: shapes, NaN),
    frozen, and written to the cache for the next run. A cache entry is used only if every file's sha256
    matches the entry's index; an unreadable or unwritable cache is a warning, never an error.

    The cached files are TorchScript archives written by this function from the verified safetensors;
    the safetensors files stay the only weights that are shipped. ``tta`` replaces the manifest's views
    (``amf predict --views``); the graphs do not depend on it. ``options``: the :class:`Engine`'s ``strategy``,
    ``chunk_size``, ``bf16``, ``sub_batch`` and ``num_threads``.
    """
    weights_dir = Path(weights_dir)
    manifest = read_manifest(weights_dir) if manifest is None else manifest
    dev = torch.device(device) if device is not None else default_device()
    strategy = options.pop("strategy", None) or default_strategy(dev, bool(options.get("bf16")))
    batching = {k: options[k] for k in ("chunk_size", "sub_batch", "num_threads") if k in options}
    cache = graph_cache_dir() if cache_dir is _DEFAULT else cache_dir
    use_cache = strategy == "graph" and cache is not None
    tta = tta or manifest.tta
    if use_cache:
        entry = Path(cache) / graph_cache_key(manifest)
        frozen = _read_cache_entry(entry, len(manifest.members))
        if frozen is not None:
            engine = Engine.from_graphs(optimize_graphs(frozen), tta, **batching)
            return LoadedEngine(engine, manifest.threshold.value, manifest, "graph-cache")
    ensemble = load_ensemble(weights_dir, device=dev, manifest=manifest)
    if use_cache:
        frozen = freeze_members(ensemble.members, example_input())
        _write_cache_entry(entry, frozen)
        graphs = optimize_graphs(frozen)
        engine = Engine.from_graphs(graphs, tta, **batching)
    else:
        engine = Engine(ensemble.members, tta, device=dev, strategy=strategy, **options)
    return LoadedEngine(engine, manifest.threshold.value, manifest, "built")


def _read_cache_entry(entry: Path, n_members: int) -> list[torch.jit.ScriptModule] | None:
    index = entry / "index.json"
    if not index.is_file():
        return None
    try:
        files = json.loads(index.read_text())["files"]
        if len(files) != n_members:
            raise ValueError(f"{len(files)} graphs for {n_members} members")
        graphs = []
        for item in files:
            name = item["file"]
            if Path(name).name != name:
                raise ValueError(f"bad file name {name!r}")
            if sha256_file(entry / name) != item["sha256"]:
                raise ValueError(f"{name} does not match its sha256")
            with quiet_jit():
                graphs.append(torch.jit.load(str(entry / name), map_location="cpu"))
        return graphs
    except Exception as exc:  # a damaged cache costs a rebuild, never the run
        log.warning(f"amf: ignoring graph cache {entry} ({type(exc).__name__}: {exc}); building the graphs again")
        return None


def _write_cache_entry(entry: Path, frozen: list[torch.jit.ScriptModule]) -> None:
    """Write into a temporary folder beside ``entry``, then rename it into place (readers see all or nothing)."""
    tmp: Path | None = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
        files = []
        for i, graph in enumerate(frozen):
            path = tmp / f"member_{i}.pt"
            with quiet_jit():
                torch.jit.save(graph, str(path))
            files.append({"file": path.name, "sha256": sha256_file(path)})
        write_json(tmp / "index.json", {"format": GRAPH_CACHE_FORMAT, "files": files})
        if entry.exists():
            shutil.rmtree(entry, ignore_errors=True)
        os.replace(tmp, entry)
        tmp = None
    except Exception as exc:
        if isinstance(exc, OSError) and entry.parent == default_graph_cache() and not os.environ.get("AMF_GRAPH_CACHE"):
            # nobody asked for a cache here (a read-only home, a container's user): the run is simply uncached
            log.debug(f"amf: no graph cache ({entry.parent} is not writable: {exc.strerror or exc})")
        else:
            log.warning(f"amf: graph cache not written to {entry} ({type(exc).__name__}: {exc}); the next start "
                        "builds the graphs again")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
