"""The organisers' reference model, as a container of its own, for ``python -m amf bench`` to time.

    python -m amf.bench.reference --input DIR --output DIR [--batch 16]

timm ``efficientnetv2_m`` at 224 px, one model, no test-time augmentation, random weights: the compute of
the MIDOG 2025 Track 2 baseline container. It does what a container does, in a fresh process: read the
stack from the platform layout, resize each 128 px patch to 224 px, one forward pass per patch (in
batches), write the challenge JSON. Nothing of ``amf``'s inference code is imported, so its start-up cost
is its own. The benchmark times it from process start to the JSON written, like ``process.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

INTERFACE = "stacked-histopathology-roi-cropouts"
OUTPUT_NAME = "multiple-mitotic-figure-classification.json"
ARCH = "efficientnetv2_m"
INPUT_SIZE = 224


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=16, help="patches per forward pass")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)

    import numpy as np
    import tifffile
    import timm
    import torch
    import torch.nn.functional as F

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    stacks = sorted((args.input / "images" / INTERFACE).glob("*.tif*"))
    if len(stacks) != 1:
        print(f"bench_reference: expected one stack in {args.input}, found {len(stacks)}", file=sys.stderr)
        return 2
    model = timm.create_model(ARCH, pretrained=False, num_classes=2).to(device).eval()
    mean = torch.tensor((0.485, 0.456, 0.406), device=device).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225), device=device).view(1, 3, 1, 1)
    probs: list[float] = []
    with tifffile.TiffFile(stacks[0]) as tif, torch.inference_mode():
        pages = (page.asarray() for page in tif.pages)
        while batch := [p for _, p in zip(range(args.batch), pages)]:
            x = torch.from_numpy(np.stack(batch)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
            logits = model((x - mean) / std)
            probs.extend(torch.softmax(logits.float(), dim=1)[:, 1].tolist())
    records = [{"class": "atypical" if p >= 0.5 else "normal", "confidence": float(p)} for p in probs]
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / OUTPUT_NAME).write_text(json.dumps(records, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
