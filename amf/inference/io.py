"""Reading patches: single images, multi-page TIFF stacks and .mha volumes, as RGB uint8 128x128 pages.

Every page, whatever its file format, bit depth or size, goes through :func:`to_patch`; training reads
its PNGs through the same function, so the model always sees patches prepared the same way.

Size policy: a page smaller than 128 px on a side is padded with black, centred (the organisers pad
crops at the slide border the same way); a larger page is centre-cropped. Neither rescales, because
the challenge's patches share one resolution (about 0.25 um/px) and the size of a figure is itself a cue.

Reliability policy: every way a file can be unreadable, damaged or not an image at all ends in an
:class:`~amf.errors.InputError` whose one-line message names the file (and the page, where there is one).
Nothing is guessed silently: a TIFF whose page list ends early, whose data runs past the end of the file,
or whose pages hold NaN, negative or out-of-range values is refused rather than read partly. Before a
stack's pixels are decoded, :func:`count_pages` checks its whole structure (page list, shapes, sizes, data
extents), so a bad stack is refused before any model work is spent on it.

Pixel conversion (:func:`to_rgb_uint8`), by type, never by guess where the type says it:

=====================  ===========================================================================
``uint8``              as is
``bool`` (1-bit)       0 / 255
``uint16``             ``round(v / 257)`` (so 65535 -> 255), whatever the page's own maximum
other integers         no declared range: all values in 0-255 are taken as 8-bit, values up to 65535
                       as 16-bit; negative values or values above 65535 are an error
float                  must be finite; a page whose values all lie in ``[0, 1]`` is scaled by 255,
                       otherwise values must lie in 0-255; anything else is an error
gray, gray+alpha       repeated to RGB (alpha dropped: a slide is opaque)
RGBA                   alpha dropped
palette (TIFF, PNG)    looked up in the colour map
min-is-white (TIFF)    inverted, so 0 is black as in every other page
CMYK, YCbCr, LAB, ...  converted to RGB by Pillow
=====================  ===========================================================================

TIFF decoding uses tifffile where it can (no compression, Deflate, PackBits, LZMA, Zstd); pages in other
compressions (LZW, JPEG, ...) or colour spaces are decoded by Pillow's libtiff instead, so an unusual but
valid stack still reads.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from amf.errors import InputError

#: Side of the challenge's patches, in pixels (here, not in amf.inference.model, so that reading needs no torch).
PATCH_SIZE = 128

STACK_SUFFIXES = (".tif", ".tiff", ".mha")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg") + STACK_SUFFIXES
#: Largest page we decode, in pixels (4096 x 4096). A figure patch is 128 x 128; anything far larger is
#: not a patch, and decoding it could exhaust the container's memory before it could be refused.
MAX_PAGE_PIXELS = 4096 * 4096
#: Pages read from an .mha volume per call, bounding memory for long stacks.
MHA_BLOCK = 256

log = logging.getLogger("amf.inference.io")


# --------------------------------------------------------------------------------------------------
# pixels


def to_rgb_uint8(page: np.ndarray) -> np.ndarray:
    """Convert gray, gray+alpha, RGB(A), bool, 8/16-bit, other integer or float pages to ``(H, W, 3)`` uint8.

    The conversion table is in the module docstring. Raises :class:`InputError` for anything that is not
    an image: wrong number of dimensions or channels, an empty or oversized page, NaN/inf, values outside
    the type's range, or a non-numeric type.
    """
    a = np.asarray(page)
    if a.dtype.byteorder not in ("=", "|") and a.dtype.kind in "biuf":
        a = a.astype(a.dtype.newbyteorder("="))
    if a.ndim == 3 and a.shape[0] in (3, 4) and a.shape[-1] > 4:
        a = np.moveaxis(a, 0, -1)  # planar (C, H, W) storage: unambiguous, since C > 4 is no image
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 2, 3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        raise InputError(f"page of shape {tuple(np.shape(page))} is not an image (need H x W with 1 to 4 channels)")
    if a.shape[0] * a.shape[1] > MAX_PAGE_PIXELS:
        raise InputError(f"page of {a.shape[0]} x {a.shape[1]} px exceeds the {MAX_PAGE_PIXELS} px limit")
    a = a[..., :1] if a.shape[-1] in (1, 2) else a[..., :3]  # gray (+ alpha) -> gray; RGBA -> RGB
    rgb = _to_uint8(a)
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    return np.ascontiguousarray(rgb)


def _to_uint8(a: np.ndarray) -> np.ndarray:
    kind = a.dtype.kind
    if a.dtype == np.uint8:
        return a
    if kind == "b":
        return a.astype(np.uint8) * np.uint8(255)
    if a.dtype == np.uint16:
        return np.rint(a.astype(np.float32) / np.float32(257.0)).astype(np.uint8)
    if kind in "iu":
        lo, hi = int(a.min()), int(a.max())
        if lo < 0:
            raise InputError(f"negative pixel values (minimum {lo}) in a {a.dtype} page: not an intensity image")
        if hi <= 255:
            return a.astype(np.uint8)
        if hi <= 65535:
            return np.rint(a.astype(np.float32) / np.float32(257.0)).astype(np.uint8)
        raise InputError(f"pixel values up to {hi} in a {a.dtype} page exceed the 16-bit range")
    if kind == "f":
        if not np.isfinite(a).all():
            raise InputError(f"NaN or infinite pixel values in a {a.dtype} page")
        lo, hi = float(a.min()), float(a.max())
        top = 1.0 if hi <= 1.0 + 1e-3 else 255.0
        if lo < -1e-3 * top or hi > top * (1.0 + 1e-3):
            raise InputError(f"{a.dtype} pixel values span [{lo:g}, {hi:g}]; expected [0, 1] or [0, 255]")
        f = a.astype(np.float32)  # in range now, so the cast cannot overflow
        return np.clip(np.rint(f * np.float32(255.0 / top)), 0, 255).astype(np.uint8)
    raise InputError(f"pixel type {a.dtype} is not an image type")


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
    """Any page -> ``(size, size, 3)`` uint8 RGB, the one form the model takes.

    Examples:
        >>> to_patch(np.zeros((100, 90), np.uint8)).shape  # grey, smaller: RGB, padded to 128
        (128, 128, 3)
        >>> to_patch(np.zeros((200, 150, 4), np.uint8)).shape  # RGBA, larger: RGB, fitted to 128
        (128, 128, 3)
    """
    return fit_to_patch(to_rgb_uint8(page), size)


def page_changes(page: np.ndarray, size: int = PATCH_SIZE) -> tuple[str, ...]:
    """What :func:`to_patch` does to a page beyond reading it: ``cropped`` (larger than ``size``: only its centre
    is kept), ``padded`` (smaller: black around it), ``converted`` (not RGB uint8). Nothing is ever rescaled, so a
    page at another size or magnification than the training patches' is scored as it comes.

    >>> page_changes(np.zeros((128, 128, 3), np.uint8))
    ()
    >>> page_changes(np.zeros((512, 512), np.uint16))
    ('cropped', 'converted')
    """
    h, w = page.shape[:2]
    return tuple(name for name, happens in (
        ("cropped", h > size or w > size), ("padded", h < size or w < size),
        ("converted", page.dtype != np.uint8 or page.ndim != 3 or page.shape[2] != 3)) if happens)


# --------------------------------------------------------------------------------------------------
# files


def iter_pages(path: Path) -> Iterator[np.ndarray]:
    """Yield the pages of an image file lazily, so a 2,000-page stack never sits in memory whole.

    Pages come out channels-last with their colour model resolved (palette looked up, min-is-white
    inverted, planar moved), ready for :func:`to_rgb_uint8`. Any reader failure (not an image, truncated,
    zero pages, damaged page list) becomes an :class:`InputError` naming the file and, where known, the page.
    """
    yield from _read(Path(path), decode=True)


def count_pages(path: Path) -> int:
    """Check a file's whole structure without decoding pixels; return its number of pages.

    Catches, before any model work: a missing, empty or non-image file; a TIFF with no pages, a damaged
    page list or data past the end of the file; pages of an unsupported shape or over the size limit.
    """
    return sum(1 for _ in _read(Path(path), decode=False))


def patch_digest(patch: np.ndarray) -> str:
    """sha256 of a decoded patch's pixels (``(128, 128, 3)`` uint8, row-major): the same figure gives the same
    digest whether it came as a PNG, a TIFF page or an MHA slice, which a file hash would not."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(patch, dtype=np.uint8).tobytes()).hexdigest()


def iter_patches(path: Path) -> Iterator[np.ndarray]:
    """:func:`iter_pages` through :func:`to_patch`; a page that is no image is an error naming the page."""
    for patch, _ in iter_fitted(path):
        yield patch


def iter_fitted(path: Path) -> Iterator[tuple[np.ndarray, tuple[str, ...]]]:
    """Each page as a patch, with what fitting it took (:func:`page_changes`); a page that is no image is an error
    naming the page."""
    path = Path(path)
    for i, page in enumerate(iter_pages(path)):
        try:
            yield to_patch(page), page_changes(page)
        except InputError as exc:
            raise InputError(f"{path}: page {i}: {exc}") from None


def read_patches(path: Path) -> np.ndarray:
    """All pages of ``path`` as one ``(N, 128, 128, 3)`` uint8 array (for small stacks and images)."""
    patches = list(iter_patches(path))
    if not patches:
        raise InputError(f"{path}: no pages")
    return np.stack(patches)


def find_images(paths: list[Path], others: list[Path] | None = None) -> list[Path]:
    """Expand files and folders (recursively, sorted) into the image files they hold; the other files found in the
    folders are added to ``others`` (when given), so a caller can say what it skipped.

    In a folder, every entry with an image suffix counts, so a broken link or unreadable file named
    ``x.tif`` is reported when read instead of being skipped silently.
    """
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            entries = sorted(f for f in p.rglob("*") if not f.is_dir())
            found.extend(f for f in entries if f.suffix.lower() in IMAGE_SUFFIXES)
            if others is not None:
                others.extend(f for f in entries if f.suffix.lower() not in IMAGE_SUFFIXES)
        elif p.is_file():
            found.append(p)
        else:
            raise InputError(f"{p}: no such file or folder")
    return found


def _read(path: Path, decode: bool) -> Iterator[np.ndarray | None]:
    suffix = path.suffix.lower()
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    if suffix in (".tif", ".tiff"):
        reader = _iter_tiff
    elif suffix == ".mha":
        reader = _iter_mha
    elif suffix in (".png", ".jpg", ".jpeg"):
        reader = _iter_pil
    else:
        raise InputError(f"{path}: unsupported file type {suffix!r} (use one of {', '.join(IMAGE_SUFFIXES)})")
    notes: list[str] = []  # library warnings: passed on once the file has read without error
    try:
        if path.stat().st_size == 0:
            raise InputError(f"{path}: empty file (0 bytes)")
        yield from reader(path, decode, notes)
    except InputError:
        raise
    except Exception as exc:  # tifffile, Pillow and SimpleITK raise many types for damaged files
        raise InputError(f"{path}: cannot read {suffix[1:].upper()}: {_one_line(exc)}") from exc
    if decode:
        for note in dict.fromkeys(notes):
            log.warning(note)


@contextmanager
def _pillow_warnings(notes: list[str], where: str) -> Iterator[None]:
    """Pillow warns (to stderr) about damaged metadata; keep those as notes instead."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    notes.extend(f"{where}: Pillow: {' '.join(str(w.message).split())}" for w in caught)


def _one_line(exc: BaseException) -> str:
    """A library exception as one short line (SimpleITK's messages span lines; the useful one says ERROR)."""
    text = str(exc)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    itk = [ln for ln in lines if "ERROR" in ln]
    line = re.sub(r"^ITK ERROR: \w+\(0x[0-9a-f]+\): ", "", itk[0]) if itk else (lines[0] if lines else "")
    line = f"{type(exc).__name__}: {line}" if line else type(exc).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def _check_shape(h: int, w: int, where: str) -> None:
    if h < 1 or w < 1:
        raise InputError(f"{where}: empty page ({h} x {w} px)")
    if h * w > MAX_PAGE_PIXELS:
        raise InputError(f"{where}: page of {h} x {w} px exceeds the {MAX_PAGE_PIXELS} px limit; not a figure patch")


# TIFF -----------------------------------------------------------------------------------------------


class _TiffLog(logging.Filter):
    """What tifffile only logs, taken by the thread whose read logged it: while a thread reads (:func:`_tifffile_log`)
    its records on tifffile's logger go to that read's list and nowhere else; every other record passes as usual.
    One filter for the process, added on the first read (never at import), so no read swaps the logger's handlers
    while another thread (the pipeline's decoder) reads."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        records = getattr(self.local, "records", None)
        if records is None:
            return True
        if record.levelno >= logging.WARNING:
            records.append(record)
        return False


@functools.cache
def _tiff_log() -> _TiffLog:
    watch = _TiffLog()
    logging.getLogger("tifffile").addFilter(watch)
    return watch


@contextmanager
def _tifffile_log() -> Iterator[list[logging.LogRecord]]:
    """Catch what tifffile only logs: it reads a damaged page list up to the damage and says so in the log."""
    watch = _tiff_log()
    outer = getattr(watch.local, "records", None)
    records: list[logging.LogRecord] = []
    watch.local.records = records
    try:
        yield records
    finally:
        watch.local.records = outer


def _raise_logged(logged: list[logging.LogRecord], where: str, notes: list[str], size: int) -> None:
    """tifffile errors mean pages or data were skipped: refuse. Its warnings become notes, with the file."""
    records = logged[:]
    logged.clear()
    messages = []
    for r in records:
        message = r.getMessage().splitlines()[0] if r.getMessage() else ""
        messages.append((r.levelno, re.sub(r"^<tifffile\.\w+ [^>]*> ", "", message)))
    for level, message in messages:
        if level >= logging.ERROR:
            raise InputError(f"{where}: damaged TIFF: {message}{_cut_short(message, size)}")
    notes.extend(f"{where}: tifffile: {message}" for _, message in messages)


def _first_ifd_offset(path: Path) -> int | None:
    """The classic TIFF header's offset of the first page (None for BigTIFF or an unreadable header)."""
    import struct

    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[:4] not in (b"II*\x00", b"MM\x00*"):
        return None
    return struct.unpack("<I" if head[:2] == b"II" else ">I", head[4:8])[0]


def _cut_short(message: str, size: int) -> str:
    """``" (the file is truncated ...)"`` when tifffile's complaint is an offset past the end of the file."""
    offset = re.search(r"offset (\d+)", message)
    if offset and int(offset.group(1)) >= size:
        return f" (the file is truncated: it ends at byte {size})"
    return ""


@functools.cache
def _tifffile_codecs() -> frozenset:
    """The TIFF compressions this tifffile can decode (without imagecodecs, some it cannot)."""
    from tifffile import COMPRESSION, TIFF

    ok = set()
    for c in COMPRESSION:
        try:
            TIFF.DECOMPRESSORS[c]
            ok.add(c)
        except Exception:  # needs imagecodecs, which is not installed
            pass
    return frozenset(ok)


def _iter_tiff(path: Path, decode: bool, notes: list[str]) -> Iterator[np.ndarray | None]:
    import tifffile
    from tifffile import PHOTOMETRIC

    size = path.stat().st_size
    pil: list[Image.Image] = []  # opened only if a page needs Pillow
    with _tifffile_log() as logged:
        try:
            tif = tifffile.TiffFile(path)
        except Exception as exc:  # TiffFileError, struct.error, ValueError, ... for a damaged header
            raise InputError(f"{path}: not a readable TIFF (damaged, truncated or another format): "
                             f"{_one_line(exc)}") from exc
        try:
            n = len(tif.pages)
            if n == 0:
                first = _first_ifd_offset(path)
                if first and first >= size:  # the header points past the end: the rest was cut off
                    raise InputError(f"{path}: TIFF is truncated: its first page would start at byte {first}, "
                                     f"but the file ends at byte {size}")
                raise InputError(f"{path}: TIFF has no pages")
            _raise_logged(logged, str(path), notes, size)
            for i in range(n):
                where = f"{path}: page {i}"
                page = tif.pages[i]
                _raise_logged(logged, where, notes, size)
                if not isinstance(page, tifffile.TiffPage):
                    raise InputError(f"{where}: not a TIFF page")
                if int(page.subfiletype) & 0b101:
                    raise InputError(f"{where}: a reduced-resolution or mask image, not a figure "
                                     f"(NewSubfileType {int(page.subfiletype)})")
                axes = page.axes
                if axes not in ("YX", "YXS", "SYX") or (axes != "YX" and page.shape[axes.index("S")] > 4):
                    raise InputError(f"{where}: shape {page.shape} ({axes}) is not a 2-D image with 1 to 4 samples")
                h, w = page.shape[page.axes.index("Y")], page.shape[page.axes.index("X")]
                _check_shape(h, w, where)
                ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts) if c]
                if ends and max(ends) > size:
                    raise InputError(f"{where}: image data ends at byte {max(ends)}, past the end of the "
                                     f"{size}-byte file: the file is truncated")
                if not decode:
                    yield None
                    continue
                try:
                    tifffile_can = page.compression in _tifffile_codecs() and page.photometric in (
                        PHOTOMETRIC.MINISBLACK, PHOTOMETRIC.MINISWHITE, PHOTOMETRIC.RGB, PHOTOMETRIC.PALETTE,
                    ) and page.bitspersample in (1, 8, 16, 32, 64) and page.dtype is not None
                    if tifffile_can:
                        a = _tiff_page_array(page)
                    else:
                        with _pillow_warnings(notes, where):
                            if not pil:
                                pil.append(Image.open(path))
                            pil[0].seek(i)
                            a = _pil_array(pil[0])
                    _raise_logged(logged, where, notes, size)
                except InputError:
                    raise
                except Exception as exc:
                    raise InputError(f"{where}: cannot decode (compression {_name(page.compression)}, photometric "
                                     f"{_name(page.photometric)}): {_one_line(exc)}") from exc
                yield a
        finally:
            tif.close()
            if pil:
                pil[0].close()


def _name(value) -> str:
    return str(getattr(value, "name", value))


def _tiff_page_array(page) -> np.ndarray:
    from tifffile import PHOTOMETRIC

    a = page.asarray()
    if page.axes == "SYX":
        a = np.moveaxis(a, 0, -1)
    if page.photometric == PHOTOMETRIC.MINISWHITE:
        if a.dtype.kind == "b":
            a = ~a
        elif a.dtype.kind == "u":
            a = np.iinfo(a.dtype).max - a
        else:
            raise InputError(f"min-is-white pages of type {a.dtype} are not supported")
    elif page.photometric == PHOTOMETRIC.PALETTE:
        cmap = np.asarray(page.colormap)
        if cmap is None or cmap.ndim != 2 or cmap.shape[0] != 3:
            raise InputError("palette page without a valid colour map")
        if a.ndim != 2 or a.dtype.kind not in "ub":
            raise InputError(f"palette page of shape {a.shape}, type {a.dtype}")
        if int(a.max()) >= cmap.shape[1]:
            raise InputError(f"palette index {int(a.max())} beyond the {cmap.shape[1]}-entry colour map")
        rgb = cmap.T[a.astype(np.intp)]
        # The TIFF colour map is 16-bit; a few writers store 8-bit values in it, which a 16-bit map
        # whose every entry is <= 255 (an all but black palette) would be indistinguishable from.
        a = rgb.astype(np.uint8) if int(cmap.max()) <= 255 else rgb.astype(np.uint16)
    return a


# PNG / JPEG (and TIFF pages tifffile cannot decode) -----------------------------------------------------


def _pil_array(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("P", "PA"):
        im = im.convert("RGBA")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    elif mode not in ("1", "L", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "I", "F") and not mode.startswith("I;16"):
        im = im.convert("RGB")
    return np.asarray(im)


def _iter_pil(path: Path, decode: bool, notes: list[str]) -> Iterator[np.ndarray | None]:
    try:
        with _pillow_warnings(notes, str(path)):
            im = Image.open(path)
        with im:
            w, h = im.size
            _check_shape(h, w, str(path))
            with _pillow_warnings(notes, str(path)):
                frames = getattr(im, "n_frames", 1)
            if frames != 1:
                raise InputError(f"{path}: {frames} frames; a PNG or JPEG patch must hold one image (use a TIFF stack)")
            if not decode:
                yield None
                return
            with _pillow_warnings(notes, str(path)):
                a = _pil_array(im)
            yield a
    except UnidentifiedImageError as exc:
        raise InputError(f"{path}: not a readable image") from exc
    except Image.DecompressionBombError as exc:
        raise InputError(f"{path}: {exc}") from exc


# MHA --------------------------------------------------------------------------------------------------


def _mha_header(path: Path) -> dict[str, str]:
    """The MetaImage text header, and the byte where LOCAL data starts (``_data_start``)."""
    header: dict[str, str] = {}
    with open(path, "rb") as f:
        for _ in range(100):
            line = f.readline(4096)
            if not line or b"=" not in line:
                break
            key, _, value = line.decode("latin-1").partition("=")
            header[key.strip()] = value.strip()
            if key.strip() == "ElementDataFile":
                header["_data_start"] = str(f.tell())
                break
    return header


_MET_SIZES = {"MET_UCHAR": 1, "MET_CHAR": 1, "MET_USHORT": 2, "MET_SHORT": 2, "MET_UINT": 4, "MET_INT": 4,
              "MET_ULONG": 8, "MET_LONG": 8, "MET_ULONG_LONG": 8, "MET_LONG_LONG": 8, "MET_FLOAT": 4,
              "MET_DOUBLE": 8}


def _check_mha_extent(path: Path, n_values: int) -> None:
    """ITK prints (to stderr, outside Python) and then fails on a truncated file; check the size first."""
    header = _mha_header(path)
    if header.get("ElementDataFile") != "LOCAL" or "_data_start" not in header:
        return
    start, size = int(header["_data_start"]), path.stat().st_size
    if header.get("CompressedData", "False").lower() == "true":
        need = int(header.get("CompressedDataSize", "0") or 0)
    else:
        need = n_values * _MET_SIZES.get(header.get("ElementType", ""), 0)
    if start + need > size:
        raise InputError(f"{path}: header promises {need} bytes of image data, the file holds {size - start}: "
                         "the file is truncated")


@contextmanager
def _sitk_quiet() -> Iterator[None]:
    """SimpleITK's warnings off for one call (its switch is process-wide): a bad file is our one-line error."""
    import SimpleITK as sitk

    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _iter_mha(path: Path, decode: bool, notes: list[str]) -> Iterator[np.ndarray | None]:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    with _sitk_quiet():
        reader.ReadImageInformation()
    dim, size, comps = reader.GetDimension(), list(reader.GetSize()), reader.GetNumberOfComponents()
    if dim == 2:
        (w, h), n = size, 1
    elif dim == 3:
        w, h, n = size
    else:
        raise InputError(f"{path}: a {dim}-D volume; expected a 2-D image or a 3-D stack of pages")
    if comps not in (1, 2, 3, 4):
        raise InputError(f"{path}: {comps} components per pixel; expected 1 to 4")
    if n == 0:
        raise InputError(f"{path}: volume has no pages")
    _check_shape(h, w, str(path))
    _check_mha_extent(path, w * h * n * comps)
    if not decode:
        yield from (None for _ in range(n))
        return
    if dim == 2:
        with _sitk_quiet():
            image = reader.Execute()
        yield sitk.GetArrayFromImage(image)
        return
    for start in range(0, n, MHA_BLOCK):
        k = min(MHA_BLOCK, n - start)
        reader.SetExtractIndex([0, 0, start])
        reader.SetExtractSize([w, h, k])
        with _sitk_quiet():
            image = reader.Execute()
        block = sitk.GetArrayFromImage(image)  # (k, H, W[, C])
        if block.shape[0] != k:
            raise InputError(f"{path}: read {block.shape[0]} pages at page {start}, expected {k}")
        yield from block
