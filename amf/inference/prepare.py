"""Members made fast for inference: batch norm folded into convolutions, frozen and optimised TorchScript graphs.

The engine's strategies (:mod:`amf.inference.engine`) run members prepared here; :mod:`amf.inference.loading` caches the
frozen graphs between runs. Every preparation computes the same function as the member it came from,
to float rounding (``tests/test_engine.py``).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator

import torch
from torch import nn

from amf.inference.io import PATCH_SIZE


def example_input(device: torch.device | str = "cpu") -> torch.Tensor:
    """The fixed input that graphs are traced with and folded members checked on: one 128 px patch."""
    return torch.rand(1, 3, PATCH_SIZE, PATCH_SIZE, generator=torch.Generator().manual_seed(0)).to(device)


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
    with quiet_jit():
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
    with quiet_jit():
        return [torch.jit.optimize_for_inference(g) for g in frozen]


def build_graphs(members: list[nn.Module], example: torch.Tensor) -> list[torch.jit.ScriptModule]:
    """Frozen, inference-optimised TorchScript graphs of ``members`` (the ``graph`` strategy)."""
    return optimize_graphs(freeze_members(members, example))


@contextlib.contextmanager
def quiet_jit() -> Iterator[None]:
    """TorchScript without its expected warnings."""
    # The trace warns about Python-level shape checks (the input is always 128 px: fine), and TorchScript
    # about its deprecation in favour of torch.export/torch.compile (neither starts fast enough on a CPU).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield
