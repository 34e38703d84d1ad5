"""The weights folder: safetensors members plus one manifest that says how to use them.

Layout::

    weights/
      manifest.json          # format, model spec, threshold, TTA, training provenance, hashes
      member_0.safetensors   # one file per ensemble member, no pickle
      ...

Loading checks everything (format version, every file present, every sha256) before a single input is
read, so a bad weights folder fails fast and loudly instead of producing quietly wrong answers.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from amf.errors import WeightsError
from amf.model import Classifier, ModelSpec, build_classifier
from amf.tta import TTAConfig

MANIFEST = "manifest.json"
#: Bump when the manifest changes in a way older code cannot read.
FORMAT_VERSION = 1


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename: readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class Threshold:
    """The decision threshold on P(atypical), and how it was chosen (e.g. ``oof_balanced_accuracy``)."""

    value: float
    method: str

    def to_dict(self) -> dict:
        return {"value": self.value, "method": self.method}


@dataclass
class Ensemble:
    """Loaded, verified members plus everything the manifest says about using them."""

    members: list[Classifier]
    spec: ModelSpec
    threshold: Threshold
    tta: TTAConfig
    manifest: dict


def save_ensemble(
    members: list[Classifier],
    out_dir: Path,
    threshold: Threshold,
    tta: TTAConfig,
    provenance: dict,
    dtype: torch.dtype = torch.float16,
) -> dict:
    """Write the members as safetensors (``dtype``, fp16 by default to keep git small) and the manifest.

    ``provenance`` holds the training config, command, data fingerprint and git commit; it is stored
    as given. Returns the manifest.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = members[0].spec
    entries = []
    for i, member in enumerate(members):
        state = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
                 for k, v in member.backbone.state_dict().items()}
        name = f"member_{i}.safetensors"
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=out_dir)
        os.close(fd)
        try:
            save_file(state, tmp)
            os.replace(tmp, out_dir / name)
        finally:
            Path(tmp).unlink(missing_ok=True)
        entries.append({"file": name, "sha256": sha256_file(out_dir / name)})
    manifest = {
        "format_version": FORMAT_VERSION,
        "model": spec.to_dict(),
        "storage_dtype": str(dtype).removeprefix("torch."),
        "members": entries,
        "threshold": threshold.to_dict(),
        "tta": tta.to_dict(),
        **provenance,
    }
    atomic_write_bytes(out_dir / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def read_manifest(weights_dir: Path) -> dict:
    """Read and check the manifest and the member files' hashes, without building any model."""
    weights_dir = Path(weights_dir)
    path = weights_dir / MANIFEST
    if not path.is_file():
        raise WeightsError(f"no {MANIFEST} in weights folder {weights_dir}")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise WeightsError(f"{path} is not a JSON object")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise WeightsError(
            f"{path} has format_version {version!r}; this code reads versions 1 to {FORMAT_VERSION}: "
            "update amf or re-export the weights"
        )
    for key in ("model", "members", "threshold", "tta"):
        if key not in manifest:
            raise WeightsError(f"{path} lacks the key {key!r}")
    if not manifest["members"]:
        raise WeightsError(f"{path} lists no members")
    for entry in manifest["members"]:
        member = weights_dir / entry["file"]
        if not member.is_file():
            raise WeightsError(f"member file missing: {member}")
        digest = sha256_file(member)
        if digest != entry["sha256"]:
            raise WeightsError(
                f"sha256 mismatch for {member}: manifest says {entry['sha256'][:12]}..., file is {digest[:12]}..."
            )
    return manifest


def load_ensemble(weights_dir: Path, device: torch.device | str = "cpu") -> Ensemble:
    """Verify the weights folder, then build every member in fp32 eval mode on ``device``."""
    weights_dir = Path(weights_dir)
    manifest = read_manifest(weights_dir)
    try:
        spec = ModelSpec.from_dict(manifest["model"])
        threshold = Threshold(float(manifest["threshold"]["value"]), str(manifest["threshold"]["method"]))
        tta = TTAConfig(**manifest["tta"])
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"{weights_dir / MANIFEST} is malformed: {exc}") from exc
    members = []
    for entry in manifest["members"]:
        path = weights_dir / entry["file"]
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise WeightsError(f"cannot read {path}: {exc}") from exc
        model = build_classifier(spec)
        try:
            model.backbone.load_state_dict({k: v.float() for k, v in state.items()})
        except RuntimeError as exc:
            raise WeightsError(f"{path} does not fit {spec.arch}: {str(exc).splitlines()[0]}") from exc
        members.append(model.to(device).eval())
    return Ensemble(members, spec, threshold, tta, manifest)
