"""Reading patches: single images, multi-page TIFF stacks and .mha volumes, as RGB uint8 128x128 pages.

Every page, whatever its file format, bit depth or size, goes through :func:`to_patch`; training reads
its PNGs through the same function, so the model always sees patches prepared the same way.

Size policy: a page smaller than 128 px on a side is padded with black, centred (the organisers pad
crops at the slide border the same way); a larger page is centre-cropped. Neither rescales, because
the challenge's patches share one resolution (about 0.25 um/px) and the size of a figure is itself a cue.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from amf.errors import InputError
from amf.model import PATCH_SIZE

STACK_SUFFIXES = (".tif", ".tiff", ".mha")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg") + STACK_SUFFIXES


def to_rgb_uint8(page: np.ndarray) -> np.ndarray:
    """Convert grayscale, RGBA, 16-bit, float or bool pages to ``(H, W, 3)`` uint8.

    16-bit values are mapped by ``round(v / 257)``; float pages in ``[0, 1]`` are scaled to 255, other
    floats are taken as 0-255 values; alpha is dropped (the slide is opaque).
    """
    a = np.asarray(page)
    if a.ndim == 3 and a.shape[0] in (3, 4) and a.shape[-1] not in (3, 4):
        a = np.moveaxis(a, 0, -1)  # planar (C, H, W) storage
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 2, 3, 4) or min(a.shape[:2]) < 1:
        raise InputError(f"page of shape {a.shape} is not an image")
    if a.shape[-1] in (1, 2):  # gray, or gray + alpha
        a = np.repeat(a[..., :1], 3, axis=-1)
    a = a[..., :3]
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.floating):
        a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        if a.max(initial=0.0) <= 1.0:
            a = a * 255.0
        return np.clip(np.rint(a), 0, 255).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.int64)
        top = 65535 if a.max(initial=0) > 255 else 255
        return np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8)
    raise InputError(f"page dtype {a.dtype} is not an image type")


def fit_to_patch(rgb: np.ndarray, size: int = PATCH_SIZE) -> np.ndarray:
    """Centre-pad with black and/or centre-crop ``(H, W, 3)`` to ``(size, size, 3)``; never rescales."""
    h, w = rgb.shape[:2]
    if h == size and w == size:
        return rgb
    out = np.zeros((size, size, 3), dtype=np.uint8)
    sy, sx = max(0, (h - size) // 2), max(0, (w - size) // 2)  # crop start in the source
    dy, dx = max(0, (size - h) // 2), max(0, (size - w) // 2)  # paste start in the output
    ch, cw = min(h, size), min(w, size)
    out[dy : dy + ch, dx : dx + cw] = rgb[sy : sy + ch, sx : sx + cw]
    return out


def to_patch(page: np.ndarray, size: int = PATCH_SIZE) -> np.ndarray:
    """Any page -> ``(size, size, 3)`` uint8 RGB, the one form the model takes."""
    return fit_to_patch(to_rgb_uint8(page), size)


def iter_pages(path: Path) -> Iterator[np.ndarray]:
    """Yield the raw pages of an image file lazily, so a 2,000-page stack never sits in memory whole.

    Any reader failure (not an image, truncated, zero pages) becomes an :class:`InputError` naming the file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        if suffix in (".tif", ".tiff"):
            yield from _iter_tiff(path)
        elif suffix == ".mha":
            yield from _iter_mha(path)
        elif suffix in (".png", ".jpg", ".jpeg"):
            yield from _iter_pil(path)
        else:
            raise InputError(f"{path}: unsupported file type {suffix!r} (use one of {', '.join(IMAGE_SUFFIXES)})")
    except InputError:
        raise
    except Exception as exc:  # tifffile, PIL and SimpleITK raise many types for damaged files
        raise InputError(f"{path}: cannot read image: {type(exc).__name__}: {exc}".splitlines()[0]) from exc


def _iter_tiff(path: Path) -> Iterator[np.ndarray]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if len(tif.pages) == 0:
            raise InputError(f"{path}: TIFF has no pages")
        for page in tif.pages:  # one page per patch, read one at a time
            yield page.asarray()


def _iter_mha(path: Path) -> Iterator[np.ndarray]:
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4) and array.shape[0] > 4):
        array = array[None]  # a single 2-D image, gray or RGB
    if array.shape[0] == 0:
        raise InputError(f"{path}: volume has no pages")
    yield from array


def _iter_pil(path: Path) -> Iterator[np.ndarray]:
    try:
        with Image.open(path) as im:
            if im.mode in ("P", "PA"):
                im = im.convert("RGBA")
            elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGB")
            yield np.asarray(im)
    except UnidentifiedImageError as exc:
        raise InputError(f"{path}: not a readable image") from exc


def read_patches(path: Path) -> np.ndarray:
    """All pages of ``path`` as one ``(N, 128, 128, 3)`` uint8 array (for small stacks and images)."""
    patches = [to_patch(p) for p in iter_pages(path)]
    if not patches:
        raise InputError(f"{path}: no pages")
    return np.stack(patches)


def find_images(paths: list[Path]) -> list[Path]:
    """Expand files and folders (recursively, sorted) into the image files they hold."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES))
        elif p.is_file():
            found.append(p)
        else:
            raise InputError(f"{p}: no such file or folder")
    return found
