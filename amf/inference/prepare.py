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
    """A copy of ``member`` with every eval-mode batch norm folded into the convolution that feeds it.

    Which convolution feeds which norm is seen, not guessed from names: one forward on ``example`` (default
    :func:`example_input`) records each ``BatchNorm2d`` (timm's ``BatchNormAct2d`` too) whose input is the very
    tensor a ``Conv2d`` returned. The convolution takes the norm's scale and shift; the norm becomes what it did
    after normalising (``BatchNormAct2d``: its dropout, identity in eval, and activation), or nothing. The copy is
    then checked against the original on ``example``; if they differ (a convolution's output also used
    elsewhere), the unfolded copy is returned with a warning.
    """
    example = example_input(next(member.parameters()).device) if example is None else example
    folded = copy.deepcopy(member).eval()
    pairs = _conv_norm_pairs(folded, example)
    with torch.no_grad():
        for conv, (parent, name, bn) in pairs:
            scale = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var + bn.eps)
            shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            conv.weight = nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1), requires_grad=False)
            conv.bias = nn.Parameter((bias - bn.running_mean) * scale + shift, requires_grad=False)
            after = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if m is not None]
            setattr(parent, name, nn.Sequential(*after) if after else nn.Identity())
    if pairs:
        with torch.inference_mode():
            want, got = member(example), folded(example)
        if not torch.allclose(want, got, rtol=1e-4, atol=1e-4, equal_nan=True):
            warnings.warn("batch-norm folding changed this member's output; using it unfolded", stacklevel=2)
            return copy.deepcopy(member).eval()
    return folded


def _conv_norm_pairs(model: nn.Module, example: torch.Tensor
                     ) -> list[tuple[nn.Conv2d, tuple[nn.Module, str, nn.Module]]]:
    """``(conv, (parent, attribute, norm))`` for each eval-mode norm whose input was a convolution's output."""
    outputs: dict[int, nn.Conv2d] = {}
    pairs: dict[int, tuple[nn.Conv2d, nn.Module]] = {}

    def conv_hook(conv, args, out):
        outputs[id(out)] = conv

    def norm_hook(bn, args, out):
        conv = outputs.get(id(args[0]))
        if conv is not None and bn.running_mean is not None and bn.running_var is not None and not bn.training:
            pairs.setdefault(id(bn), (conv, bn))

    hooks = [m.register_forward_hook(conv_hook if isinstance(m, nn.Conv2d) else norm_hook)
             for m in model.modules() if type(m) is nn.Conv2d or isinstance(m, nn.BatchNorm2d)]
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    where = {id(child): (parent, name) for parent in model.modules() for name, child in parent.named_children()}
    used: set[int] = set()
    out = []
    for conv, bn in pairs.values():
        if id(conv) in used:  # a convolution feeding two norms keeps its own weights
            continue
        used.add(id(conv))
        out.append((conv, (*where[id(bn)], bn)))
    return out


def unfolded_batchnorms(prepared: nn.Module | torch.jit.ScriptModule) -> int:
    """Batch norms a prepared member still computes: ``BatchNorm2d`` modules, or ``aten::batch_norm`` nodes of a
    frozen graph. Each costs a pass over its feature map that folding would have saved."""
    if isinstance(prepared, torch.jit.ScriptModule):
        return len(prepared.graph.findAllNodes("aten::batch_norm", recurse=True))
    return sum(isinstance(m, nn.BatchNorm2d) for m in prepared.modules())


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
