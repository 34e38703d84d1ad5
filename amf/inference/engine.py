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
    pre-packed). Built in memory from the verified weights when the engine is made, or read back from
    :func:`amf.inference.loading.load_engine`'s cache of frozen graphs. The fastest on CPUs (docs/benchmark.md,
    "Engine speed", measured against ``loop`` side by side).
``batched``
    Per member, eager PyTorch, batch norm folded into the convolutions, channels_last, all views of
    a few patches per forward pass. No trace; faster than ``loop``, slower than ``graph`` (docs/benchmark.md).
``fused`` (CUDA default)
    All members in one forward: ``torch.func.stack_module_state`` + ``functional_call`` + ``vmap``, all
    views in the same batch, channels_last, fp32 (bf16 autocast only when asked for; timm's LiteMLA keeps
    its attention in fp32 by itself). On CPU, vmap turns the members
    into grouped convolutions and measured slower than the loop itself (docs/benchmark.md), so it is never the CPU
    default.

Determinism: a test-time view depends on the view index only (``amf.inference.tta``). Every forward pass holds the
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
import warnings
from collections.abc import Iterable, Iterator
from typing import Literal

import numpy as np
import torch
from torch import nn

from amf.errors import OutputError
from amf.inference.prepare import build_graphs, example_input, fold_batchnorm, unfolded_batchnorms
from amf.inference.spec import TTAConfig
from amf.inference.tta import make_view, make_views

Strategy = Literal["loop", "batched", "graph", "fused"]
STRATEGIES: tuple[str, ...] = ("loop", "batched", "graph", "fused")

#: Images per forward pass (``views x patches`` flattened): on CPUs the size that measured fastest (larger batches
#: fall out of the caches), on CUDA one that keeps the paper's largest ensemble within a 16 GB GPU (docs/benchmark.md,
#: "Engine speed" and "Largest paper ensemble on a 16 GB GPU").
CPU_SUB_BATCH = 32
CUDA_SUB_BATCH = 128


def to_tensor(patches: np.ndarray) -> torch.Tensor:
    """``(N, H, W, 3)`` uint8 -> ``(N, 3, H, W)`` float32 in ``[0, 1]``."""
    return torch.from_numpy(np.ascontiguousarray(patches)).permute(0, 3, 1, 2).float().div_(255.0)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def out_of_memory(exc: BaseException) -> bool:
    """Whether a failure is the device running out of memory (which a smaller batch may avoid)."""
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def default_strategy(device: torch.device | str, bf16: bool = False) -> Strategy:
    """``fused`` on CUDA; on CPU ``graph``, or ``batched`` with bf16 (a frozen graph runs in fp32 only)."""
    if torch.device(device).type == "cuda":
        return "fused"
    return "batched" if bf16 else "graph"


class Engine:
    """Runs an ensemble with test-time augmentation over batches of uint8 patches.

    Args:
        members: the ensemble, all ``(B, 3, H, W)`` in ``[0, 1]`` -> ``(B,)`` logits. They are not
            modified; strategies other than ``loop`` work on their own copies.
        tta: the test-time views.
        device: default CUDA when available, else CPU.
        strategy: see the module docstring; default ``fused`` on CUDA, ``graph`` on CPU.
        chunk_size: patches read and augmented at a time.
        bf16: bf16 autocast, opt-in (default off everywhere). It moves confidences by far more than the tolerance
            ``test.sh`` holds the container to (:data:`amf.reproducibility.TOLERANCE`), so a class near the
            threshold can flip; its measured effect on the LODO figures and its speed are in
            ``docs/benchmark.md``. On a CPU it needs
            an eager strategy (default ``batched``), not ``graph``. In fp32 on CUDA, TF32 is turned off, so
            the GPU computes what the CPU computes, to float rounding.
        sub_batch: images per forward pass and member (default 32 on CPU, 128 on CUDA).
        num_threads: torch's thread count while the engine builds and predicts, restored after (default: leave
            torch's setting; on a machine whose cores are shared, 1 thread was 10x faster than 2, see
            ``docs/benchmark.md``).
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
        # TorchScript graphs given to the graph strategy are its own form already (from_graphs, the graph cache)
        prepared = self.strategy == "graph" and all(isinstance(m, torch.jit.ScriptModule) for m in members)
        members = members if prepared else [m.to(self.device).eval() for m in members]
        with self._torch_settings():
            self._runner = RUNNERS[self.strategy](members, self.device, prepared)

    @classmethod
    def from_graphs(
        cls,
        graphs: list[torch.jit.ScriptModule],
        tta: TTAConfig,
        chunk_size: int = 64,
        sub_batch: int | None = None,
        num_threads: int | None = None,
    ) -> Engine:
        """An engine of the ``graph`` strategy over already optimised graphs (see
        :func:`amf.inference.loading.load_engine`)."""
        return cls(graphs, tta, "cpu", "graph", chunk_size, False, sub_batch, num_threads)

    def _configure(self, tta, device, strategy, chunk_size, bf16, sub_batch, num_threads, n_members) -> None:
        self.device = torch.device(device) if device is not None else default_device()
        on_cuda = self.device.type == "cuda"
        self.strategy = strategy or default_strategy(self.device, bool(bf16))
        if self.strategy not in RUNNERS:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(RUNNERS)}")
        if self.strategy == "graph" and on_cuda:
            raise ValueError("the graph strategy is for CPUs; on CUDA use fused or batched")
        if self.strategy == "graph" and bf16:
            raise ValueError("the graph strategy runs frozen fp32 graphs; for bf16 use batched (the default with bf16)")
        if chunk_size < 1 or (sub_batch is not None and sub_batch < 1):
            raise ValueError(f"chunk_size and sub_batch must be positive, not {chunk_size} and {sub_batch}")
        self.num_threads = None if num_threads is None else int(num_threads)
        self.bf16 = bool(bf16)
        self.tta = tta
        # A forward pass holds all views of k patches, patch-major, so a patch sits at the same place in
        # the same forward whatever the chunk size: chunks are whole multiples of k patches.
        wanted = int(sub_batch or (CUDA_SUB_BATCH if on_cuda else CPU_SUB_BATCH))
        self.patches_per_forward = max(1, wanted // tta.views)
        self.sub_batch = self.patches_per_forward * tta.views
        self.chunk_size = chunk_size
        self.n_members = n_members

    @property
    def chunk_size(self) -> int:
        """Patches read and augmented at a time: rounded up to a whole number of forward passes."""
        return self._chunk_size

    @chunk_size.setter
    def chunk_size(self, value: int) -> None:
        k = self.patches_per_forward
        self._chunk_size = -(-int(value) // k) * k

    def halve_batch(self) -> bool:
        """Half the patches per forward pass (after the device ran out of memory), down to one; False when it is one
        already. The scores then move by float rounding only: a patch's forward pass holds fewer others."""
        if self.patches_per_forward == 1:
            return False
        self.patches_per_forward //= 2
        self.sub_batch = self.patches_per_forward * self.tta.views
        self.chunk_size = self.chunk_size  # whole forward passes again
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return True

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
            "threads": self.num_threads or torch.get_num_threads(),
        }

    @contextlib.contextmanager
    def _torch_settings(self) -> Iterator[None]:
        """The engine's thread count and, on CUDA, TF32 off (TF32 convolutions and matmuls keep 10 mantissa bits:
        as far from the CPU as bf16 autocast), for the engine's own work only: the caller's settings are back
        afterwards, so building or running an engine changes nothing process-wide."""
        threads = torch.get_num_threads()
        tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        try:
            if self.num_threads is not None:
                torch.set_num_threads(self.num_threads)
            if self.device.type == "cuda":
                torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
            yield
        finally:
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32

    def predict_proba(self, patches: np.ndarray | Iterable[np.ndarray]) -> np.ndarray:
        """P(atypical) for ``(N, 128, 128, 3)`` uint8 patches (an array, or an iterable of single patches)."""
        return self.predict(patches)[0]

    @torch.inference_mode()
    def predict(self, patches: np.ndarray | Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """P(atypical) of each patch, and the standard deviation of the scores it was averaged from (every member's
        every view): a patch the views disagree on is one to look at twice."""
        with self._torch_settings():
            out = [self._runner.proba(to_tensor(chunk).to(self.device), self)
                   for chunk in _chunks(patches, self.chunk_size)]
        probs, spread = (np.concatenate(x) for x in zip(*out)) if out else (np.zeros(0), np.zeros(0))
        if not np.all(np.isfinite(probs)):
            bad = np.flatnonzero(~np.isfinite(probs))[:5].tolist()
            raise OutputError(f"the model produced NaN or inf for patches {bad}: refusing to write it")
        return probs, spread


# --- the strategies: members in memory -> (K, B) logits of a batch of views ----------------------------------


class _Runner:
    """One strategy's members and its forward pass: ``(B, 3, H, W)`` views -> ``(K, B)`` logits.

    ``prepared``: the members are already in the strategy's own form (only ``graph`` has one: frozen graphs
    from the cache of :mod:`amf.inference.loading`).
    """

    memory_format = torch.channels_last

    def __init__(self, members: list[nn.Module], device: torch.device, prepared: bool = False):
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def proba(self, images: torch.Tensor, engine: Engine) -> tuple[np.ndarray, np.ndarray]:
        """P(atypical) of a chunk of patches and the spread of its members' and views' scores: all views of ``k``
        patches per forward pass, patch-major, so a patch sits at the same place in the same forward whatever the
        chunk size."""
        k, v = engine.patches_per_forward, engine.tta.views
        out, spread = [], []
        for group, n in _padded(images, k):  # k patches (the last group padded with black ones)
            views = make_views(group, engine.tta)  # (V * k, 3, H, W), view-major
            views = views.view(v, k, *views.shape[1:]).transpose(0, 1).reshape(k * v, *views.shape[1:])
            x = views.contiguous(memory_format=self.memory_format)
            with torch.autocast(engine.device.type, dtype=torch.bfloat16, enabled=engine.bf16):
                logits = self.forward(x).float()  # (K, k * V), patch-major
            probs = torch.sigmoid(logits).double().view(engine.n_members, k, v)[:, :n]
            out.append(probs.mean(dim=(0, 2)))
            spread.append(probs.permute(1, 0, 2).reshape(n, -1).std(dim=1, correction=0))
        return torch.cat(out).cpu().numpy(), torch.cat(spread).cpu().numpy()


class _Loop(_Runner):
    """``loop``: the reference definition, every member, view and batch of 16 on its own."""

    batch_size = 16

    def __init__(self, members: list[nn.Module], device: torch.device, prepared: bool = False):
        self.members = members

    def proba(self, images: torch.Tensor, engine: Engine) -> tuple[np.ndarray, np.ndarray]:
        total = torch.zeros(images.shape[0], dtype=torch.float64, device=images.device)
        squares = torch.zeros_like(total)
        step = self.batch_size
        for member in self.members:
            for v in range(engine.tta.views):
                for start in range(0, images.shape[0], step):
                    view = make_view(images[start : start + step], engine.tta, v)
                    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=engine.bf16):
                        logits = member(view)
                    p = torch.sigmoid(logits.float()).double()
                    total[start : start + step] += p
                    squares[start : start + step] += p * p
        n = len(self.members) * engine.tta.views
        mean = total / n
        return mean.cpu().numpy(), (squares / n - mean * mean).clamp(min=0).sqrt().cpu().numpy()


class _Batched(_Runner):
    """``batched``: eager members with batch norm folded in, channels_last, all views in one batch."""

    def __init__(self, members: list[nn.Module], device: torch.device, prepared: bool = False):
        self.members = [fold_batchnorm(m, example_input(device)).to(memory_format=self.memory_format)
                        for m in members]
        warn_unfolded(self.members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members])


class _Graphs(_Runner):
    """``graph``: one frozen, inference-optimised TorchScript graph per member (CPU)."""

    memory_format = torch.contiguous_format

    def __init__(self, members: list[nn.Module], device: torch.device, prepared: bool = False):
        self.graphs = list(members) if prepared else build_graphs(members, example_input(device))
        warn_unfolded(self.graphs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.jit.optimized_execution(False):  # already optimised; skip the profiling runs
            return torch.stack([g(x) for g in self.graphs])


class _Fused(_Runner):
    """``fused``: all members in one forward, their weights stacked, ``vmap`` over them (CUDA)."""

    def __init__(self, members: list[nn.Module], device: torch.device, prepared: bool = False):
        from torch.func import stack_module_state

        fast = [fold_batchnorm(m, example_input(device)).to(memory_format=self.memory_format) for m in members]
        warn_unfolded(fast)
        self.params, self.buffers = stack_module_state(fast)
        # A parameter-less skeleton of one member; functional_call fills in each member's tensors.
        self.skeleton = copy.deepcopy(fast[0]).to("meta")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():  # "no batching rule for aten::as_strided_" (pooling): known, slow
            warnings.filterwarnings("ignore", message=".*batching rule", category=UserWarning)
            return torch.vmap(self._call_member, in_dims=(0, 0, None))(self.params, self.buffers, x)

    def _call_member(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        from torch.func import functional_call

        return functional_call(self.skeleton, (params, buffers), (x,))


def warn_unfolded(prepared: list) -> None:
    """One line when preparation left batch norms to compute: the numbers are right, the speed is not."""
    left = [unfolded_batchnorms(m) for m in prepared]
    if any(left):
        warnings.warn(f"{sum(left)} batch-norm layer(s) of the prepared members could not be folded into their "
                      "convolutions (per member: " + ", ".join(map(str, left)) + "); they run as they are, slower",
                      stacklevel=3)


#: Strategy name -> its implementation (the module docstring says when each is used): the engine's one registry of
#: strategies, where a test can put a runner that fails on purpose (tests/faults.py).
RUNNERS: dict[str, type[_Runner]] = {"loop": _Loop, "batched": _Batched, "graph": _Graphs, "fused": _Fused}


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
