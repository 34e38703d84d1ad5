"""Make ``test/input/``: a synthetic 16-page H&E stack in the platform layout, from our own code only.

Why synthetic: the repository must not carry the challenge's or AMi-Br's images. The patches are drawn as
stain-concentration maps (eosin background, haematoxylin-dense irregular chromatin blobs, some in pieces
like atypical segregation) and rendered to RGB with scikit-image's H&E matrix; three pages are
black-padded at a border, as the organisers' crops of figures near the slide edge are.

    python tools/make_test_input.py [--output test/input] [--seed 2025]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import tifffile
from skimage.color import hed2rgb
from skimage.filters import gaussian

from amf.inference.challenge import INTERFACE

SIZE = 128


def synthetic_patch(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    conc = np.zeros((SIZE, SIZE, 3))
    conc[..., 1] = gaussian(rng.uniform(0.02, 0.06, (SIZE, SIZE)), 3)  # eosin: cytoplasm and stroma
    for _ in range(rng.integers(3, 9)):  # background nuclei, pale
        cy, cx, r = rng.uniform(0, SIZE), rng.uniform(0, SIZE), rng.uniform(5, 10)
        conc[..., 0] += 0.03 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
    pieces = rng.integers(1, 4)  # the centred figure: one dense clump, or two or three (lagging, multipolar)
    for _ in range(pieces):
        cy, cx = SIZE / 2 + rng.normal(0, 8, 2)
        ry, rx = rng.uniform(4, 12, 2)
        theta = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u, v = dy * np.cos(theta) + dx * np.sin(theta), -dy * np.sin(theta) + dx * np.cos(theta)
        blob = np.exp(-((u / ry) ** 2 + (v / rx) ** 2))
        conc[..., 0] += 0.12 * blob * gaussian(rng.uniform(0.6, 1.4, (SIZE, SIZE)), 1)
    rgb = hed2rgb(conc + rng.normal(0, 0.002, conc.shape).clip(0))
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)


def pad_border(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Black out a strip at one side, as a crop that ran over the slide's edge."""
    out = patch.copy()
    width = int(rng.integers(20, 60))
    side = int(rng.integers(4))
    if side == 0:
        out[:width] = 0
    elif side == 1:
        out[-width:] = 0
    elif side == 2:
        out[:, :width] = 0
    else:
        out[:, -width:] = 0
    return out


def make_stack(seed: int, pages: int = 16, padded: tuple[int, ...] = (3, 9, 14)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    stack = [synthetic_patch(rng) for _ in range(pages)]
    for i in padded:
        stack[i] = pad_border(stack[i], rng)
    return np.stack(stack)


def inputs_json(stack_name: str) -> list[dict]:
    return [{
        "file": None,
        "image": {"name": stack_name},
        "value": None,
        "interface": {
            "slug": INTERFACE,
            "kind": "Image",
            "super_kind": "Image",
            "relative_path": f"images/{INTERFACE}",
            "example_value": None,
        },
    }]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("test/input"))
    parser.add_argument("--seed", type=int, default=2025)
    args = parser.parse_args()
    name = "stack_synthetic.tiff"
    folder = args.output / "images" / INTERFACE
    folder.mkdir(parents=True, exist_ok=True)
    stack = make_stack(args.seed)
    with tifffile.TiffWriter(folder / name) as tif:
        for page in stack:  # one page per patch, like the organisers' stacks
            tif.write(page, photometric="rgb", compression="zlib")
    (args.output / "inputs.json").write_text(json.dumps(inputs_json(name), indent=4) + "\n")
    print(f"wrote {len(stack)} pages to {folder / name}")


if __name__ == "__main__":
    main()
