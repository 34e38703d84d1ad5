"""Fuzzing the stack reader: whatever the bytes, tags, shapes or types, the only error is InputError.

Every example either reads (and then every page becomes a 128 x 128 x 3 uint8 patch) or raises
:class:`amf.errors.InputError`. Anything else (a library's own exception, a crash, a hang, a huge
allocation) fails the test.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from amf.errors import InputError
from amf.inference.io import count_pages, iter_patches, to_patch

# AMF_FUZZ_EXAMPLES=3000 for a deeper search (passed 3,000 per test when written).
FUZZ = settings(max_examples=int(os.environ.get("AMF_FUZZ_EXAMPLES", 150)), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def read_all(path: Path) -> int:
    """count_pages, then every patch; the two must agree. Returns the page count, or -1 for InputError."""
    try:
        n = count_pages(path)
    except InputError:
        return -1
    try:
        patches = list(iter_patches(path))
    except InputError:
        return -1
    assert len(patches) == n
    for p in patches:
        assert p.shape == (128, 128, 3) and p.dtype == np.uint8
    return n


#: One folder for every example of this module: each example overwrites the file of its suffix (the examples run
#: one after another).
FOLDER = tempfile.TemporaryDirectory(prefix="amf-fuzz-")


def write(data: bytes, suffix: str) -> Path:
    path = Path(FOLDER.name) / f"f{suffix}"
    path.write_bytes(data)
    return path


# --- random bytes ----------------------------------------------------------------------------------------

TIFF_HEADERS = [b"II*\x00", b"MM\x00*", b"II+\x00\x08\x00\x00\x00", b"\x89PNG\r\n\x1a\n", b"ObjectType = Image\n"]


@FUZZ
@given(head=st.sampled_from([b""] + TIFF_HEADERS), body=st.binary(max_size=600),
       suffix=st.sampled_from([".tif", ".tiff", ".png", ".jpg", ".mha"]))
def test_random_bytes(head, body, suffix):
    read_all(write(head + body, suffix))


# --- random TIFF tags --------------------------------------------------------------------------------------

# (tag, TIFF type) pairs the reader looks at; values are drawn at random, including absurd ones.
TAGS = [(254, 4), (256, 3), (256, 4), (257, 3), (257, 4), (258, 3), (259, 3), (262, 3), (273, 4), (277, 3),
        (278, 4), (279, 4), (284, 3), (317, 3), (320, 3), (322, 3), (323, 3), (324, 4), (325, 4), (338, 3),
        (339, 3), (530, 3)]
TYPE_FMT = {3: "H", 4: "I"}


@st.composite
def tiff_files(draw) -> bytes:
    width = draw(st.integers(0, 70))
    height = draw(st.integers(0, 70))
    spp = draw(st.sampled_from([1, 2, 3, 4, 5]))
    bps = draw(st.sampled_from([1, 4, 8, 16, 32, 64, 7]))
    data = draw(st.binary(min_size=0, max_size=2048))
    base = {
        256: (4, [width]), 257: (4, [height]), 258: (3, [bps] * spp),
        259: (3, [draw(st.sampled_from([1, 5, 7, 8, 32773, 50000]))]),
        262: (3, [draw(st.sampled_from([0, 1, 2, 3, 5, 6, 8, 32844, 99]))]), 273: (4, [0]), 277: (3, [spp]),
        278: (4, [max(height, 1)]), 279: (4, [len(data)]), 284: (3, [draw(st.sampled_from([1, 2]))]),
        339: (3, [draw(st.sampled_from([1, 2, 3, 4]))] * spp),
    }
    for tag, typ in draw(st.lists(st.sampled_from(TAGS), max_size=6)):  # random extra or overriding tags
        count = draw(st.integers(1, 4))
        top = 0xFFFF if typ == 3 else 0xFFFFFFFF
        base[tag] = (typ, draw(st.lists(st.integers(0, top), min_size=count, max_size=count)))
    for tag in draw(st.lists(st.sampled_from(sorted(base)), max_size=2)):  # and some left out
        base.pop(tag, None)
    entries = sorted(base.items())
    # Layout: header (8) | IFD | out-of-line values | image data.
    ifd_size = 2 + 12 * len(entries) + 4
    extra = bytearray()
    blobs = []
    for tag, (typ, values) in entries:
        blob = struct.pack("<" + TYPE_FMT[typ] * len(values), *values)
        blobs.append((tag, typ, len(values), blob))
        if len(blob) > 4:
            extra += blob
    data_offset = 8 + ifd_size + len(extra)
    ifd = bytearray(struct.pack("<H", len(entries)))
    cursor = 8 + ifd_size
    for tag, typ, count, blob in blobs:
        if tag == 273 and count == 1 and draw(st.booleans()):
            blob = struct.pack("<I", data_offset)  # point the strip at the data, usually
        if len(blob) <= 4:
            ifd += struct.pack("<HHI", tag, typ, count) + blob.ljust(4, b"\0")
        else:
            ifd += struct.pack("<HHII", tag, typ, count, cursor)
            cursor += len(blob)
    next_ifd = draw(st.sampled_from([0, 0, 0, 8, 4, 10**6]))  # end, a loop to itself, garbage
    ifd += struct.pack("<I", next_ifd)
    cut = draw(st.sampled_from([None, None, None, 10, 30, 100]))
    out = b"II*\x00" + struct.pack("<I", 8) + bytes(ifd) + bytes(extra) + data
    return out[:cut] if cut else out


@FUZZ
@given(data=tiff_files())
def test_random_tiff_tags(data):
    read_all(write(data, ".tif"))


# --- random valid TIFFs: page shapes and types ---------------------------------------------------------------

DTYPES = [np.uint8, np.uint16, np.int16, np.int32, np.uint32, np.float32, np.float64, np.bool_, np.int8, np.float16]


@st.composite
def pages(draw) -> np.ndarray:
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(st.sampled_from([(7, 9), (130, 3), (1, 1), (20, 30, 3), (20, 30, 4), (12, 12, 2), (5, 6, 1)]))
    return draw(hnp.arrays(dtype, shape, elements=_elements(dtype)))


def _elements(dtype):
    if np.dtype(dtype).kind == "f":
        width = np.dtype(dtype).itemsize * 8
        return st.one_of(st.floats(-2, 300, width=width), st.floats(0, 1, width=width),
                         st.sampled_from([float("nan"), float("inf"), -float("inf")]))
    return None


@FUZZ
@given(stack=st.lists(pages(), min_size=1, max_size=3), photometric=st.sampled_from([None, "minisblack", "rgb"]))
def test_random_pages_in_tiffs(stack, photometric):
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), tifffile.TiffWriter(buf) as w:
            warnings.simplefilter("ignore")  # tifffile's notes on how it will store such data in future
            for page in stack:
                kw = {"photometric": photometric} if photometric else {}
                if page.ndim == 3 and page.shape[-1] in (2, 4) and photometric == "rgb" and page.shape[-1] == 4:
                    kw["extrasamples"] = ["unassalpha"]
                w.write(page, **kw)
    except Exception:  # tifffile refuses to write some combinations; nothing to read then
        return
    with tifffile.TiffFile(io.BytesIO(buf.getvalue())) as tif:
        written = len(tif.pages)  # a 3-D array with photometric minisblack is written as several pages
    n = read_all(write(buf.getvalue(), ".tif"))
    assert n in (-1, written)


@FUZZ
@given(page=st.one_of(
    hnp.arrays(st.sampled_from(DTYPES + [np.complex64, np.int64, np.uint64]),
               hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=9)),
    pages(),
))
def test_to_patch_on_any_array(page):
    try:
        patch = to_patch(page)
    except InputError:
        return
    assert patch.shape == (128, 128, 3) and patch.dtype == np.uint8


def test_fuzz_strategies_make_readable_files_too():
    """The TIFF generator is not only noise: a plain valid file built the same way reads."""
    data = np.arange(16, dtype=np.uint8).reshape(4, 4)
    buf = io.BytesIO()
    tifffile.imwrite(buf, data)
    assert read_all(write(buf.getvalue(), ".tif")) == 1


@pytest.fixture(autouse=True, scope="module")
def _one_folder():
    """The module's examples share :data:`FOLDER`; it goes when they are done (not another run's folders)."""
    yield
    FOLDER.cleanup()
