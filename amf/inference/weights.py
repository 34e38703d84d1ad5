"""The weights folder: safetensors members plus one manifest that says how to use them.

Layout::

    weights/
      manifest.json          # format, model spec, threshold, TTA, training provenance, hashes
      member_0.safetensors   # one file per ensemble member, no pickle
      ...

Loading checks everything (format version, every file present, every sha256) before a single input is
read, so a bad weights folder fails fast and loudly instead of producing quietly wrong answers.

:func:`read_manifest` does every check that needs no model (manifest format and values, member files,
hashes, safetensors headers) without importing torch, so a container with bad weights fails in about a
second; :func:`load_ensemble` adds what needs the model (architecture, tensor shapes, NaN values).
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from amf.errors import WeightsError
from amf.files import atomic_write_bytes, sha256_file, write_json
from amf.inference.manifest import MANIFEST, Manifest, MemberFile, Provenance, Threshold
from amf.inference.spec import ModelSpec, TTAConfig
from amf.provenance import ROOT

if TYPE_CHECKING:  # torch and the model code load only when a model is built
    import torch

    from amf.inference.model import Classifier


def default_weights() -> Path:
    """The weights used when none are named: ``$AMF_WEIGHTS`` when set (read now, not at import), else the checkout's
    ``weights/`` (after a non-editable ``pip install .`` there is none: name the folder with ``--weights`` or
    ``AMF_WEIGHTS``)."""
    return Path(os.environ.get("AMF_WEIGHTS") or ROOT / "weights")


@dataclass
class Ensemble:
    """Loaded, verified members plus everything the manifest says about using them."""

    members: list[Classifier]
    manifest: Manifest

    @property
    def spec(self) -> ModelSpec:
        return self.manifest.model

    @property
    def threshold(self) -> Threshold:
        return self.manifest.threshold

    @property
    def tta(self) -> TTAConfig:
        return self.manifest.tta


def save_ensemble(members: list[Classifier], out_dir: Path, threshold: Threshold, tta: TTAConfig,
                  provenance: Provenance | None = None, dtype: torch.dtype | None = None) -> Manifest:
    """Write the members as safetensors (``dtype``, ``torch.float16`` by default to keep git small) and their
    manifest: the members' files and model spec, ``threshold``, ``tta`` and ``provenance`` (empty by default).
    Returns the manifest written.
    """
    import torch
    from safetensors.torch import save

    dtype = torch.float16 if dtype is None else dtype
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, member in enumerate(members):
        state = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
                 for k, v in member.backbone.state_dict().items()}
        name = f"member_{i}.safetensors"
        atomic_write_bytes(out_dir / name, save(state))
        entries.append(MemberFile(name, sha256_file(out_dir / name)))
    manifest = Manifest(members[0].spec, tuple(entries), threshold, tta, provenance or Provenance(),
                        storage_dtype=str(dtype).removeprefix("torch."))
    write_json(out_dir / MANIFEST, manifest.to_dict())
    return manifest


def read_manifest(weights_dir: Path, verify_files: bool = True) -> Manifest:
    """Read, check and type the manifest (:meth:`Manifest.from_dict`), then the member files, without building any
    model: each must be present, hash to the manifest's sha256 and have a sound safetensors header.

    Every problem is a :class:`WeightsError` naming the file: a missing folder or manifest, a manifest
    that is not JSON, of a newer format or missing keys, a member entry that is malformed or points outside
    the folder, a missing or unreadable member file, a sha256 that differs from the manifest's.
    ``verify_files=False`` reads the manifest alone (the audit checks the member files in a check of their own,
    so that a tampered member does not stop the others).
    """
    weights_dir = Path(weights_dir)
    path = weights_dir / MANIFEST
    if not weights_dir.is_dir():
        raise WeightsError(f"weights folder {weights_dir} does not exist: name one with --weights DIR (the shipped "
                           "weights are the weights/ folder of the repository; AMF_WEIGHTS=DIR sets the default)")
    if not path.is_file() and (weights_dir / "config.json").is_file():
        raise WeightsError(f"{weights_dir} is a training run, not a weights folder: make one with "
                           f"amf export {weights_dir} --output <weights folder>")
    if not path.is_file():
        raise WeightsError(f"{path} is missing (no {MANIFEST} in weights folder {weights_dir})")
    manifest = Manifest.read(path)
    for entry in manifest.members if verify_files else ():
        member = weights_dir / entry.file
        if not member.is_file():
            raise WeightsError(f"member file missing: {member}")
        try:
            digest = sha256_file(member)
        except OSError as exc:
            raise WeightsError(f"cannot read {member}: {exc.strerror or exc}") from exc
        if digest != entry.sha256.lower():
            raise WeightsError(
                f"sha256 mismatch for {member}: manifest says {entry.sha256[:12]}..., file is {digest[:12]}..."
            )
        check_safetensors(member)
    return manifest


#: Bytes per element of the safetensors dtypes.
_ST_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
             "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def check_safetensors(path: Path) -> None:
    """Check a safetensors file's header and extents without torch: a damaged file is refused here."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError("shorter than the 8-byte header length")
            n = struct.unpack("<Q", head)[0]
            if n > min(size - 8, 100 << 20):
                raise ValueError(f"header length {n} does not fit the {size}-byte file")
            header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        end = 0
        for name, info in header.items():
            if name == "__metadata__":
                continue
            dtype, shape, (a, b) = info["dtype"], info["shape"], info["data_offsets"]
            count = math.prod(shape) if shape else 1
            if dtype not in _ST_SIZES or not all(type(d) is int and d >= 0 for d in shape) or not 0 <= a <= b:
                raise ValueError(f"tensor {name!r} has a malformed entry")
            if b - a != count * _ST_SIZES[dtype]:
                raise ValueError(f"tensor {name!r} holds {b - a} bytes, its shape needs {count * _ST_SIZES[dtype]}")
            end = max(end, b)
        if 8 + n + end != size:
            raise ValueError(f"tensors end at byte {8 + n + end}, the file has {size}")
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{path} is not a valid safetensors file: {exc}") from exc


def load_ensemble(weights_dir: Path, device: torch.device | str = "cpu", manifest: Manifest | None = None) -> Ensemble:
    """Verify the weights folder, then build every member in fp32 eval mode on ``device``.

    Besides :func:`read_manifest`'s checks: an architecture timm cannot build, a member file that is not
    safetensors, tensors that do not fit the architecture, and NaN (or infinite parameters) are each a
    :class:`WeightsError`. ``manifest``: what :func:`read_manifest` returned for this folder a moment ago,
    to skip hashing the members twice.
    """
    # torch and timm load here, not with the module: read_manifest verifies a folder without them
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from amf.inference.model import build_classifier

    weights_dir = Path(weights_dir)
    manifest = read_manifest(weights_dir) if manifest is None else manifest
    spec = manifest.model
    members = []
    for entry in manifest.members:
        path = weights_dir / entry.file
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise WeightsError(f"cannot read {path} as safetensors: {_first_line(exc)}") from exc
        try:
            model = build_classifier(spec)
        except Exception as exc:  # timm: RuntimeError for an unknown arch, TypeError for bad kwargs, ...
            where = weights_dir / MANIFEST
            raise WeightsError(f"{where}: cannot build model {spec.arch!r}: {_first_line(exc)}") from exc
        params = {name for name, _ in model.backbone.named_parameters()}
        for key, tensor in state.items():
            if tensor.is_floating_point():
                bad = torch.isnan(tensor) if key not in params else ~torch.isfinite(tensor)
                if bool(bad.any()):
                    raise WeightsError(f"{path}: tensor {key!r} holds NaN or inf values")
        try:
            model.backbone.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        except (RuntimeError, ValueError, TypeError) as exc:
            detail = " ".join(str(exc).split()).replace("Error(s) in loading state_dict for ", "")
            detail = detail if len(detail) <= 300 else detail[:297] + "..."
            raise WeightsError(f"{path} does not fit {spec.arch}: {detail}") from exc
        members.append(model.to(device).eval())
    return Ensemble(members, manifest)


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__
