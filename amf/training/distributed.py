"""Data-parallel training of one fold across the processes ``torchrun`` starts (gloo on CPU, nccl on GPU).

The aim is that the number of processes changes the speed and nothing else: ``torchrun --nproc_per_node 2``
gives the weights one process gives, within float rounding. Three things make that hold:

- **one global batch**: every process draws the same class-balanced order and the same augmentation for the
  whole global batch (``batch_size`` in the config), then keeps only its own contiguous share
  (:meth:`World.share`). So a global batch holds the same patches, augmented the same way, whatever the number
  of processes; augmenting the whole batch on every rank costs a few milliseconds a step.
- **one loss** (in :func:`amf.training.loop.train_one_epoch`): each process sums its share's per-patch losses and
  scales by ``world size / global batch``; DDP averages gradients over processes, which gives the single
  process's mean over the global batch.
- **one set of BatchNorm statistics**: in training, BatchNorm layers normalise with the mean and variance of
  the global batch, gathered with autograd (:func:`global_batch_norm`), and update their running
  statistics from them. ``torch.nn.SyncBatchNorm`` does this on CUDA only; this works on any backend.

Only rank 0 writes (run folder, checkpoints, predictions, logs) and validates; the others train in lockstep.
Started without ``torchrun``, :func:`start` returns a one-process :class:`World` and nothing here is used.
"""

from __future__ import annotations

import os
import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (``rank`` of ``size``; ``local_rank`` on its node)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that validates and writes."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1

    def share(self, n: int) -> slice:
        """This rank's contiguous part of a global batch of ``n`` (sizes differ by at most one; may be empty).

        >>> [World(r, 2).share(5) for r in range(2)]
        [slice(0, 3, None), slice(3, 5, None)]
        """
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def barrier(self) -> None:
        if self.parallel:
            dist.barrier()

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """The sum of a (detached) tensor over all processes, e.g. the global batch's loss for the log."""
        if not self.parallel:
            return value
        value = value.detach().clone()
        dist.all_reduce(value)
        return value


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start(device: str | None) -> World:
    """Join the process group ``torchrun`` describes in the environment; one process: ``World()``.

    The backend follows the device: nccl for CUDA (each process on ``cuda:LOCAL_RANK``), gloo otherwise.
    """
    if not launched_by_torchrun():
        return World()
    cuda = (device or "").startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), local_rank)


def stop(world: World) -> None:
    if world.parallel and dist.is_initialized():
        dist.destroy_process_group()


def device_for(world: World, device: torch.device) -> torch.device:
    """Each process on its own GPU (``cuda:LOCAL_RANK``); CPU processes share the CPU."""
    if world.parallel and device.type == "cuda":
        return torch.device("cuda", world.local_rank)
    return device


class _GatherFromProcesses(torch.autograd.Function):
    """``(W, ...)``: every rank's ``x``, stacked in rank order, with gradients. Every rank's loss depends on
    every rank's ``x``, so the backward sums the ranks' upstream gradients and keeps this rank's slot."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: ARG004 - autograd's signature
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.stack(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[dist.get_rank()]


def global_batch_norm(bn: torch.nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """``bn`` in training mode, with the statistics of the global batch instead of this process's share.

    Each rank computes its share's count, mean and sum of squared deviations (two passes, as one process
    would); one all-gather brings every rank's three, which are combined as Chan et al. do (exact, and as
    stable as the two-pass variance). One collective each way per layer: on gloo a small collective costs
    about a millisecond, and a network has dozens of BatchNorms. The gather carries gradients
    (:class:`_GatherFromProcesses`), so the backward pass is the global batch's too. Running statistics
    are updated as ``torch.nn.BatchNorm2d`` does (unbiased variance, momentum or cumulative average).
    """
    channels = x.shape[1]
    dims = [d for d in range(x.ndim) if d != 1]
    shape = [1, -1] + [1] * (x.ndim - 2)
    count = x.numel() // max(1, channels)
    if count:
        mean = x.mean(dims)
        m2 = ((x - mean.view(shape)) ** 2).sum(dims)
    else:  # an empty share (a last batch smaller than the number of processes)
        mean = m2 = x.new_zeros(channels)
    local = torch.cat([x.new_full((1,), float(count)), mean, m2])
    every = _GatherFromProcesses.apply(local)  # (W, 1 + 2C)
    counts, means, m2s = every[:, :1], every[:, 1 : 1 + channels], every[:, 1 + channels :]
    n = counts.sum()
    mean = (counts * means).sum(0) / n
    var = (m2s + counts * (means - mean) ** 2).sum(0) / n
    y = (x - mean.view(shape)) * torch.rsqrt(var + bn.eps).view(shape)
    if bn.affine:
        y = y * bn.weight.view(shape) + bn.bias.view(shape)
    if bn.track_running_stats:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            factor = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            bn.running_mean.lerp_(mean.detach(), factor)
            bn.running_var.lerp_(var.detach() * n / (n - 1).clamp_min(1), factor)
    return y


def _synced_forward(self: torch.nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    if not self.training:
        return type(self).forward(self, x)
    y = global_batch_norm(self, x)
    # timm's BatchNormAct2d: the same normalisation followed by its dropout and activation, in its order.
    if hasattr(self, "act") and hasattr(self, "drop"):
        y = self.act(self.drop(y))
    return y


@contextmanager
def synced_batch_norm(model: torch.nn.Module, world: World) -> Iterator[torch.nn.Module]:
    """Every BatchNorm in ``model`` normalises with global-batch statistics while in the block (several
    processes only). The modules stay the same objects, so state-dict keys and checkpoints do not change."""
    if not world.parallel:
        yield model
        return
    patched = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in patched:
        m.forward = types.MethodType(_synced_forward, m)
    try:
        yield model
    finally:
        for m in patched:
            del m.forward


def data_parallel(model: torch.nn.Module, world: World) -> torch.nn.Module:
    """``model`` wrapped in DistributedDataParallel (gradients averaged over processes), or itself alone."""
    if not world.parallel:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [world.local_rank] if next(model.parameters()).is_cuda else None
    # Buffers are synchronised once at the start; after that global_batch_norm gives every rank the same running
    # statistics, so no broadcast before each forward (``broadcast_buffers``: torch 2.10's name for the switch).
    return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)
