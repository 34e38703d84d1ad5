"""The inference engine: K ensemble members x V test-time views, as few large forward passes as possible.

P(atypical) of a patch is the mean, over members and views, of ``sigmoid(logit)``. Four strategies
compute that same number (equal to within 1e-5 in fp32; ``tests/test_engine.py``):

``loop``
    The reference definition: each member, each view, batches of 16, the members as given. Slow; kept
    for tests and ``python -m amf bench``.
``graph`` (CPU default)
    Per member, one TorchScript graph, traced once for the architecture and then frozen with that
    member's weights (``torch.jit.freeze``: batch norm folded into the convolutions) and passed through
    ``torch.jit.optimize_for_inference`` (oneDNN convolutions with the activation fused in, weights
    pre-packed). Built in memory from the verified weights when the engine is made (about 2 s for five
    efficientvit_b0 on two cores), or read back from :func:`load_engine`'s cache of frozen graphs.
    On 2 cores, 5 x efficientvit_b0 x 8 views, 16 patches: 1.97x faster than ``loop`` with one thread,
    2.18x with two (``docs/benchmark.md``).
``batched``
    Per member, eager PyTorch, batch norm folded into the convolutions, channels_last, all views of
    a few patches per forward pass. No trace; 1.55x (one thread) and 1.74x (two) faster than ``loop``.
``fused`` (CUDA default)
    All members in one forward: ``torch.func.stack_module_state`` + ``functional_call`` + ``vmap``, all
    views in the same batch, channels_last, fp32 (bf16 autocast only when asked for; timm's LiteMLA keeps
    its attention in fp32 by itself). On CPU, vmap turns the members
    into grouped convolutions and measured slower than the loop itself (0.74x with one thread, 0.92x with
    two), so it is never the CPU default.

Determinism: a test-time view depends on the view index only (``amf.tta``). Every forward pass holds the
views of ``k = sub_batch // views`` consecutive patches of the stack, patch-major, the last group padded
with black patches, and chunks are whole multiples of ``k``. So each patch is computed in the same
forward pass, at the same place, whatever the chunk size, and its probability is bit-identical run after
run and at any chunk size. (CPU kernels choose their blocking by batch size and place in the batch, so
the same patch in another stack, at another place, may differ in the 8th digit: within 1e-6.)

Patches go through in chunks of ``chunk_size``, so memory stays bounded however long the stack is.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from amf.errors import OutputError
from amf.tta import TTAConfig, make_view, make_views

Strategy = Literal["loop", "batched", "graph", "fused"]
STRATEGIES: tuple[str, ...] = ("loop", "batched", "graph", "fused")

#: Images per forward pass (``views x patches`` flattened). 32 was fastest on 2 CPU cores (16: -10%,
#: 64: -10%, 128: -40%: larger batches fall out of the caches). On CUDA the fused forward holds K x 128
#: images of activations: 8 views x 16 patches per member keeps 5 efficientvit_l2 at 256 px near 6 GiB.
CPU_SUB_BATCH = 32
CUDA_SUB_BATCH = 128


def to_tensor(patches: np.ndarray) -> torch.Tensor:
    """``(N, H, W, 3)`` uint8 -> ``(N, 3, H, W)`` float32 in ``[0, 1]``."""
    return torch.from_numpy(np.ascontiguousarray(patches)).permute(0, 3, 1, 2).float().div_(255.0)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def start_device(requested: torch.device | str | None = None) -> tuple[torch.device, str | None]:
    """The device to run on, and one line to report when a CUDA build of torch cannot use a GPU.

    A requested device is taken as given. Otherwise CUDA is started for real (a first allocation), not
    only asked about: an old driver, a missing device or a failing start all end on the CPU, with the
    reason in one line, and the same probabilities (the CPU path is the reference). A CPU build of torch
    says nothing: it never meant to use a GPU.
    """
    if requested is not None:
        return torch.device(requested), None
    if torch.version.cuda is None:
        return torch.device("cpu"), None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if torch.cuda.is_available():
                torch.zeros(1, device="cuda")
                return torch.device("cuda"), None
            warned = next((str(w.message) for w in caught), "")  # e.g. "The NVIDIA driver ... is too old"
            if not warned:
                return torch.device("cpu"), "no CUDA device; running on the CPU"
            reason = warned
        except Exception as exc:  # noqa: BLE001 - any failure to start CUDA means: run on the CPU
            reason = str(exc) or type(exc).__name__
    reason = " ".join(reason.split())[:200]
    return torch.device("cpu"), f"CUDA could not start ({reason}); running on the CPU"


def default_strategy(device: torch.device | str) -> Strategy:
    return "fused" if torch.device(device).type == "cuda" else "graph"


class Engine:
    """Runs an ensemble with test-time augmentation over batches of uint8 patches.

    Args:
        members: the ensemble, all ``(B, 3, H, W)`` in ``[0, 1]`` -> ``(B,)`` logits. They are not
            modified; strategies other than ``loop`` work on their own copies.
        tta: the test-time views.
        device: default CUDA when available, else CPU.
        strategy: see the module docstring; default ``fused`` on CUDA, ``graph`` on CPU.
        chunk_size: patches read and augmented at a time.
        bf16: bf16 autocast (default off everywhere: emulated bf16 moved confidences by up to 1.2e-3,
            more than the 1e-4 that ``test.sh`` holds the container to, and a class near the threshold
            could flip; these members are small enough that fp32 costs little on a GPU). On CUDA, TF32 is
            turned off too, so the GPU computes what the CPU computes, to float rounding.
        sub_batch: images per forward pass and member (default 32 on CPU, 128 on CUDA).
        num_threads: ``torch.set_num_threads`` for this process (default: leave torch's setting; on a
            machine whose cores are shared, 1 thread was 10x faster than 2, see ``docs/benchmark.md``).
    """

    def __init__(
        self,
        members: list[nn.Module],
        tta: TTAConfig,
        device: torch.device | str | None = None,
        strategy: Strategy | None = None,
        chunk_size: int = 64,
        bf16: bool | None = None,
        sub_batch: int | None = None,
        num_threads: int | None = None,
    ):
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self._configure(tta, device, strategy, chunk_size, bf16, sub_batch, num_threads, len(members))
        members = [m.to(self.device).eval() for m in members]
        if self.strategy == "loop":
            self._members = members
        elif self.strategy == "graph":
            self._graphs = build_graphs(members, example_input(self.device))
        else:
            fast = [fold_batchnorm(m, example_input(self.device)).to(memory_format=self.memory_format)
                    for m in members]
            if self.strategy == "batched":
                self._members = fast
            else:
                from torch.func import stack_module_state

                self._params, self._buffers = stack_module_state(fast)
                # A parameter-less skeleton of one member; functional_call fills in each member's tensors.
                self._skeleton = copy.deepcopy(fast[0]).to("meta")

    @classmethod
    def from_graphs(
        cls,
        graphs: list[torch.jit.ScriptModule],
        tta: TTAConfig,
        chunk_size: int = 64,
        sub_batch: int | None = None,
        num_threads: int | None = None,
    ) -> Engine:
        """An engine of the ``graph`` strategy over already optimised graphs (see :func:`load_engine`)."""
        if not graphs:
            raise ValueError("an ensemble needs at least one member")
        self = cls.__new__(cls)
        self._configure(tta, "cpu", "graph", chunk_size, False, sub_batch, num_threads, len(graphs))
        self._graphs = list(graphs)
        return self

    def _configure(self, tta, device, strategy, chunk_size, bf16, sub_batch, num_threads, n_members) -> None:
        self.device = torch.device(device) if device is not None else default_device()
        on_cuda = self.device.type == "cuda"
        self.strategy = strategy or default_strategy(self.device)
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if self.strategy == "graph" and on_cuda:
            raise ValueError("the graph strategy is for CPUs; on CUDA use fused or batched")
        if chunk_size < 1 or (sub_batch is not None and sub_batch < 1):
            raise ValueError(f"chunk_size and sub_batch must be positive, not {chunk_size} and {sub_batch}")
        if num_threads is not None:
            torch.set_num_threads(int(num_threads))
        self.bf16 = bool(bf16)
        if on_cuda:  # TF32 convolutions and matmuls keep 10 mantissa bits: as far from the CPU as bf16 autocast
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.tta = tta
        # A forward pass holds all views of k patches, patch-major, so a patch sits at the same place in
        # the same forward whatever the chunk size: chunks are whole multiples of k patches.
        wanted = int(sub_batch or (CUDA_SUB_BATCH if on_cuda else CPU_SUB_BATCH))
        self.patches_per_forward = max(1, wanted // tta.views)
        self.sub_batch = self.patches_per_forward * tta.views
        self.chunk_size = chunk_size
        self.memory_format = torch.channels_last if self.strategy != "graph" else torch.contiguous_format
        self.n_members = n_members

    @property
    def chunk_size(self) -> int:
        """Patches read and augmented at a time: rounded up to a whole number of forward passes."""
        return self._chunk_size

    @chunk_size.setter
    def chunk_size(self, value: int) -> None:
        k = self.patches_per_forward
        self._chunk_size = -(-int(value) // k) * k

    def describe(self) -> dict:
        """The settings that decide speed, for logs and the benchmark's JSON."""
        return {
            "strategy": self.strategy,
            "device": str(self.device),
            "members": self.n_members,
            "views": self.tta.views,
            "sub_batch": self.sub_batch,
            "chunk_size": self.chunk_size,
            "bf16": self.bf16,
            "threads": torch.get_num_threads(),
        }

    @torch.inference_mode()
    def predict_proba(self, patches: np.ndarray | Iterable[np.ndarray]) -> np.ndarray:
        """P(atypical) for ``(N, 128, 128, 3)`` uint8 patches (an array, or an iterable of single patches)."""
        out = [self._chunk_proba(chunk) for chunk in _chunks(patches, self.chunk_size)]
        probs = np.concatenate(out) if out else np.zeros(0)
        if not np.all(np.isfinite(probs)):
            bad = np.flatnonzero(~np.isfinite(probs))[:5].tolist()
            raise OutputError(f"the model produced NaN or inf for patches {bad}: refusing to write it")
        return probs

    def _chunk_proba(self, chunk: np.ndarray) -> np.ndarray:
        images = to_tensor(chunk).to(self.device)
        if self.strategy == "loop":
            return self._loop(images)
        k, v = self.patches_per_forward, self.tta.views
        out = []
        for group, n in _padded(images, k):  # k patches (the last group padded with black ones)
            views = make_views(group, self.tta)  # (V * k, 3, H, W), view-major
            views = views.view(v, k, *views.shape[1:]).transpose(0, 1).reshape(k * v, *views.shape[1:])
            probs = torch.sigmoid(self._forward(views)).double()  # (K, k * V), patch-major
            out.append(probs.view(self.n_members, k, v)[:, :n].mean(dim=(0, 2)))
        return torch.cat(out).cpu().numpy()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(sub_batch, 3, H, W)`` -> ``(K, sub_batch)`` logits."""
        if self.strategy == "graph":
            with torch.jit.optimized_execution(False):  # already optimised; skip the profiling runs
                return torch.stack([g(x) for g in self._graphs])
        x = x.contiguous(memory_format=self.memory_format)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            if self.strategy == "fused":
                with warnings.catch_warnings():  # "no batching rule for aten::as_strided_" (pooling): known, slow
                    warnings.filterwarnings("ignore", message=".*batching rule", category=UserWarning)
                    logits = torch.vmap(self._call_member, in_dims=(0, 0, None))(self._params, self._buffers, x)
            else:
                logits = torch.stack([m(x) for m in self._members])
        return logits.float()

    def _call_member(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        from torch.func import functional_call

        return functional_call(self._skeleton, (params, buffers), (x,))

    def _loop(self, images: torch.Tensor, batch_size: int = 16) -> np.ndarray:
        """The reference: every member, every view, every batch of 16 separately."""
        total = torch.zeros(images.shape[0], dtype=torch.float64, device=images.device)
        for member in self._members:
            for v in range(self.tta.views):
                for start in range(0, images.shape[0], batch_size):
                    batch = images[start : start + batch_size]
                    view = make_view(batch, self.tta, v)
                    with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                        logits = member(view)
                    total[start : start + batch_size] += torch.sigmoid(logits.float()).double()
        return (total / (self.n_members * self.tta.views)).cpu().numpy()


def example_input(device: torch.device | str = "cpu") -> torch.Tensor:
    """The fixed input that graphs are traced with and folded members checked on: one 128 px patch."""
    return torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0)).to(device)


def _padded(x: torch.Tensor, size: int) -> Iterator[tuple[torch.Tensor, int]]:
    """Groups of ``size`` rows, the last one padded with zeros to ``size``: ``(group, real rows)``."""
    for start in range(0, x.shape[0], size):
        part = x[start : start + size]
        n = part.shape[0]
        if n < size:
            part = torch.cat([part, part.new_zeros((size - n, *part.shape[1:]))])
        yield part, n


def _chunks(patches: np.ndarray | Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    if isinstance(patches, np.ndarray):
        for start in range(0, len(patches), size):
            yield patches[start : start + size]
        return
    buf: list[np.ndarray] = []
    for p in patches:
        buf.append(p)
        if len(buf) == size:
            yield np.stack(buf)
            buf = []
    if buf:
        yield np.stack(buf)


# --- model preparation -------------------------------------------------------------------------------------


def fold_batchnorm(member: nn.Module, example: torch.Tensor | None = None) -> nn.Module:
    """A copy of ``member`` with each eval-mode ``BatchNorm2d`` folded into the convolution before it.

    Only timm's ``conv -> norm -> act`` blocks (a module with ``conv``, an ``nn.Conv2d``, and ``norm``,
    exactly an ``nn.BatchNorm2d``, as EfficientViT's ``ConvNormAct``) are folded. With ``example``, the
    copy is checked against the original on it, and the unfolded copy is returned if they differ (a
    block whose forward is not ``norm(conv(x))``).
    """
    folded = copy.deepcopy(member).eval()
    n = 0
    with torch.no_grad():
        for module in folded.modules():
            conv, bn = getattr(module, "conv", None), getattr(module, "norm", None)
            if type(module).__name__ != "ConvNormAct" or type(conv) is not nn.Conv2d or type(bn) is not nn.BatchNorm2d:
                continue
            if bn.running_mean is None or bn.running_var is None:
                continue
            scale = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var + bn.eps)
            shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            conv.weight = nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1), requires_grad=False)
            conv.bias = nn.Parameter((bias - bn.running_mean) * scale + shift, requires_grad=False)
            module.norm = nn.Identity()
            n += 1
    if n and example is not None:
        with torch.inference_mode():
            want, got = member(example), folded(example)
        if not torch.allclose(want, got, rtol=1e-4, atol=1e-4, equal_nan=True):
            warnings.warn("batch-norm folding changed this member's output; using it unfolded", stacklevel=2)
            return copy.deepcopy(member).eval()
    return folded


def freeze_members(members: list[nn.Module], example: torch.Tensor) -> list[torch.jit.ScriptModule]:
    """One frozen TorchScript graph per member (CPU): weights are constants, batch norm folded in.

    Tracing is the slow part (about a second for efficientvit_b0), so it is done once per architecture:
    members whose parameters and buffers have the same names and shapes as a traced one get their own
    tensors put into that trace before freezing.
    """
    frozen: list[torch.jit.ScriptModule] = []
    traced: dict[tuple, torch.jit.ScriptModule] = {}
    with _quiet_jit():
        for member in members:
            tensors = [*member.named_parameters(), *member.named_buffers()]
            key = (type(member).__qualname__, tuple((k, tuple(v.shape), v.dtype) for k, v in tensors))
            if key not in traced:
                with torch.no_grad():
                    traced[key] = torch.jit.trace(member.eval(), example, check_trace=False).eval()
            script = traced[key]
            for name, tensor in tensors:
                prefix, _, leaf = name.rpartition(".")
                # New tensor objects, not copies into the old ones: earlier frozen graphs keep their own.
                setattr(script.get_submodule(prefix) if prefix else script, leaf, tensor.detach().clone())
            frozen.append(torch.jit.freeze(script))
    return frozen


def optimize_graphs(frozen: list[torch.jit.ScriptModule]) -> list[torch.jit.ScriptModule]:
    """``torch.jit.optimize_for_inference``, in place: oneDNN convolutions with the activation fused in.

    Its result cannot be saved and loaded again (torch 2.14), so caches hold the frozen graphs."""
    with _quiet_jit():
        return [torch.jit.optimize_for_inference(g) for g in frozen]


def build_graphs(members: list[nn.Module], example: torch.Tensor) -> list[torch.jit.ScriptModule]:
    """Frozen, inference-optimised TorchScript graphs of ``members`` (the ``graph`` strategy)."""
    return optimize_graphs(freeze_members(members, example))


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    # The trace warns about Python-level shape checks (the input is always 128 px: fine), and TorchScript
    # about its deprecation in favour of torch.export/torch.compile (neither starts fast enough on a CPU).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


# --- loading from a weights folder, with a cache of frozen graphs ---------------------------------------------

#: Bump when what a cached graph holds changes.
GRAPH_CACHE_FORMAT = 1


@dataclass
class LoadedEngine:
    """An engine ready for a weights folder, the decision threshold, and where its graphs came from."""

    engine: Engine
    threshold: float
    manifest: dict
    source: str  # "graph-cache" (no timm imported, no trace) or "built"


def graph_cache_dir() -> Path | None:
    """``$AMF_GRAPH_CACHE`` (``off`` disables), else ``$XDG_CACHE_HOME/amf/graphs`` or ``~/.cache/amf/graphs``."""
    value = os.environ.get("AMF_GRAPH_CACHE", "")
    if value.lower() in ("0", "off", "no", "false", "none"):
        return None
    if value:
        return Path(value)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "amf" / "graphs"


def graph_cache_key(manifest: dict) -> str:
    """Changes with anything that changes a frozen graph: the member files (by sha256), the model spec, the
    versions of torch and timm, and the source of ``amf.model`` (found without importing it, or timm)."""
    model_source = importlib.util.find_spec("amf.model").origin
    inputs = {
        "format": GRAPH_CACHE_FORMAT,
        "members": [entry["sha256"] for entry in manifest["members"]],
        "model": manifest["model"],
        "storage_dtype": manifest.get("storage_dtype"),
        "torch": torch.__version__,
        "timm": importlib.metadata.version("timm"),
        "amf_model_py": hashlib.sha256(Path(model_source).read_bytes()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:32]


_DEFAULT = object()


def load_engine(
    weights_dir: Path,
    device: torch.device | str | None = None,
    strategy: Strategy | None = None,
    *,
    manifest: dict | None = None,
    cache_dir: Path | None | object = _DEFAULT,
    chunk_size: int = 64,
    sub_batch: int | None = None,
    num_threads: int | None = None,
    bf16: bool | None = None,
    tta: TTAConfig | None = None,
) -> LoadedEngine:
    """Verify a weights folder and make its engine; on CPU, reuse frozen graphs from an earlier run.

    The weights are always verified first (:func:`amf.weights.read_manifest`: manifest, every sha256,
    safetensors headers). For the ``graph`` strategy the frozen graphs of these exact member files are
    then looked up in ``cache_dir`` (default :func:`graph_cache_dir`; ``None`` disables). On a hit, no
    model is built: timm is not even imported and nothing is traced, which is most of a cold start. On a
    miss the members are loaded and checked as usual (:func:`amf.weights.load_ensemble`: shapes, NaN),
    frozen, and written to the cache for the next run. A cache entry is used only if every file's sha256
    matches the entry's index; an unreadable or unwritable cache is a warning, never an error.

    The cached files are TorchScript archives written by this function from the verified safetensors;
    the safetensors files stay the only weights that are shipped. ``tta`` replaces the manifest's views
    (``amf predict --views``); the graphs do not depend on it.
    """
    from amf.errors import WeightsError
    from amf.weights import MANIFEST, load_ensemble, read_manifest

    weights_dir = Path(weights_dir)
    manifest = read_manifest(weights_dir) if manifest is None else manifest
    dev = torch.device(device) if device is not None else default_device()
    strategy = strategy or default_strategy(dev)
    cache = graph_cache_dir() if cache_dir is _DEFAULT else cache_dir
    use_cache = strategy == "graph" and cache is not None
    if use_cache:
        try:
            tta = tta or TTAConfig(**manifest["tta"])
            threshold = float(manifest["threshold"]["value"])
        except (KeyError, TypeError, ValueError) as exc:
            raise WeightsError(f"{weights_dir / MANIFEST} is malformed: {type(exc).__name__}: {exc}") from exc
        entry = Path(cache) / graph_cache_key(manifest)
        frozen = _read_cache_entry(entry, len(manifest["members"]))
        if frozen is not None:
            engine = Engine.from_graphs(optimize_graphs(frozen), tta, chunk_size, sub_batch, num_threads)
            return LoadedEngine(engine, threshold, manifest, "graph-cache")
    ensemble = load_ensemble(weights_dir, device=dev, manifest=manifest)
    if use_cache:
        frozen = freeze_members(ensemble.members, example_input())
        _write_cache_entry(entry, frozen)
        graphs = optimize_graphs(frozen)
        engine = Engine.from_graphs(graphs, tta or ensemble.tta, chunk_size, sub_batch, num_threads)
    else:
        engine = Engine(ensemble.members, tta or ensemble.tta, device=dev, strategy=strategy,
                        chunk_size=chunk_size, bf16=bf16, sub_batch=sub_batch, num_threads=num_threads)
    return LoadedEngine(engine, ensemble.threshold.value, manifest, "built")


def _read_cache_entry(entry: Path, n_members: int) -> list[torch.jit.ScriptModule] | None:
    from amf.files import sha256_file

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
            with _quiet_jit():
                graphs.append(torch.jit.load(str(entry / name), map_location="cpu"))
        return graphs
    except Exception as exc:  # a damaged cache costs a rebuild, never the run
        warnings.warn(f"ignoring graph cache {entry}: {type(exc).__name__}: {exc}", stacklevel=3)
        return None


def _write_cache_entry(entry: Path, frozen: list[torch.jit.ScriptModule]) -> None:
    """Write into a temporary folder beside ``entry``, then rename it into place (readers see all or nothing)."""
    from amf.files import sha256_file

    tmp: Path | None = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
        files = []
        for i, graph in enumerate(frozen):
            path = tmp / f"member_{i}.pt"
            with _quiet_jit():
                torch.jit.save(graph, str(path))
            files.append({"file": path.name, "sha256": sha256_file(path)})
        (tmp / "index.json").write_text(json.dumps({"format": GRAPH_CACHE_FORMAT, "files": files}, indent=2))
        if entry.exists():
            shutil.rmtree(entry, ignore_errors=True)
        os.replace(tmp, entry)
        tmp = None
    except Exception as exc:
        warnings.warn(f"graph cache not written to {entry}: {type(exc).__name__}: {exc}", stacklevel=3)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
