"""amf.inference.io: page formats and sizes become the one patch form, and every damaged file is a clear InputError."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import tifffile
from PIL import Image

from amf.errors import InputError
from amf.inference.io import (
    MAX_PAGE_PIXELS,
    PATCH_SIZE,
    count_pages,
    fit_to_patch,
    iter_pages,
    read_patches,
    to_patch,
    to_rgb_uint8,
)

RNG = np.random.default_rng(0)


def rgb(h: int, w: int) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_patch_size_matches_the_model():
    from amf.inference.spec import ModelSpec

    assert PATCH_SIZE == ModelSpec("any").input_size == ModelSpec("any").crop == 128


# --- sizes: pad black centred, centre-crop, never rescale ---------------------------------------------


@pytest.mark.parametrize("h,w", [(128, 128), (100, 140), (256, 256), (1, 1), (127, 129), (300, 50)])
def test_sizes_are_padded_or_cropped_centred(h, w):
    page = rgb(h, w)
    patch = to_patch(page)
    assert patch.shape == (128, 128, 3) and patch.dtype == np.uint8
    # Reference: place both on a big canvas centred, and cut the centre 128 x 128.
    big = np.zeros((max(h, 128) + 2, max(w, 128) + 2, 3), np.uint8)
    oy, ox = (big.shape[0] - 128) // 2, (big.shape[1] - 128) // 2
    py, px = oy + max(0, (128 - h) // 2) - max(0, (h - 128) // 2), ox + max(0, (128 - w) // 2) - max(0, (w - 128) // 2)
    big[py : py + h, px : px + w] = page
    assert np.array_equal(patch, big[oy : oy + 128, ox : ox + 128])


def test_100x140_exact_layout():
    page = np.full((100, 140, 3), 200, np.uint8)
    page[:, :6] = 1  # cropped away on the left
    page[:, -6:] = 2  # and on the right
    patch = fit_to_patch(page)
    assert (patch[:14] == 0).all() and (patch[-14:] == 0).all()  # 28 rows of black, 14 above and below
    assert (patch[14:114] == 200).all()  # 6 columns cut each side: no 1s or 2s remain


# --- formats ----------------------------------------------------------------------------------------------


def test_gray_is_repeated():
    g = RNG.integers(0, 256, (128, 128), dtype=np.uint8)
    out = to_rgb_uint8(g)
    assert out.shape == (128, 128, 3) and all(np.array_equal(out[..., c], g) for c in range(3))
    assert np.array_equal(to_rgb_uint8(g[..., None]), out)


def test_gray_alpha_and_rgba_drop_alpha():
    g = RNG.integers(0, 256, (20, 30), dtype=np.uint8)
    ga = np.stack([g, np.zeros_like(g)], -1)
    assert np.array_equal(to_rgb_uint8(ga), np.repeat(g[..., None], 3, -1))
    page = rgb(20, 30)
    rgba = np.concatenate([page, np.zeros((20, 30, 1), np.uint8)], -1)
    assert np.array_equal(to_rgb_uint8(rgba), page)


def test_uint16_is_divided_by_257_by_type_not_by_range():
    v = np.array([[0, 257, 128, 385, 65535, 200]], np.uint16)
    assert to_rgb_uint8(v)[0, :, 0].tolist() == [0, 1, 0, 1, 255, 1]
    dark = np.full((4, 4), 200, np.uint16)  # a dark 16-bit page stays dark (not read as 8-bit 200)
    assert (to_rgb_uint8(dark) == 1).all()


def test_big_endian_uint16():
    v = np.array([[65535, 257]], dtype=">u2")
    assert to_rgb_uint8(v)[0, :, 0].tolist() == [255, 1]


def test_other_integers_by_range():
    assert to_rgb_uint8(np.array([[0, 255]], np.int32))[0, :, 0].tolist() == [0, 255]
    assert to_rgb_uint8(np.array([[0, 65535]], np.int64))[0, :, 0].tolist() == [0, 255]
    with pytest.raises(InputError, match="negative"):
        to_rgb_uint8(np.array([[-1, 5]], np.int16))
    with pytest.raises(InputError, match="16-bit range"):
        to_rgb_uint8(np.array([[0, 70000]], np.int32))


def test_float_scales():
    assert to_rgb_uint8(np.array([[0.0, 0.5, 1.0]], np.float32))[0, :, 0].tolist() == [0, 128, 255]
    assert to_rgb_uint8(np.array([[0.0, 100.0, 255.0]], np.float64))[0, :, 0].tolist() == [0, 100, 255]
    assert to_rgb_uint8(np.array([[0.0, 1.0000001]], np.float32))[0, :, 0].tolist() == [0, 255]  # rounding noise
    assert to_rgb_uint8(np.array([[0.0, 0.5]], np.float16))[0, :, 0].tolist() == [0, 128]


@pytest.mark.parametrize("bad,match", [
    (np.array([[0.1, np.nan]], np.float32), "NaN"),
    (np.array([[0.1, np.inf]], np.float32), "NaN or infinite"),
    (np.array([[-5.0, 100.0]], np.float32), "span"),
    (np.array([[0.0, 300.0]], np.float32), "span"),
])
def test_bad_floats(bad, match):
    with pytest.raises(InputError, match=match):
        to_rgb_uint8(bad)


def test_bool_and_planar():
    assert to_rgb_uint8(np.array([[True, False]]))[0, :, 0].tolist() == [255, 0]
    page = rgb(20, 30)
    assert np.array_equal(to_rgb_uint8(np.moveaxis(page, -1, 0)), page)


@pytest.mark.parametrize("shape,dtype", [
    ((0, 5), np.uint8), ((5, 0, 3), np.uint8), ((5, 5, 5), np.uint8), ((2, 2, 2, 3), np.uint8), ((7,), np.uint8),
    ((4, 4), np.complex64), ((4, 4), "U3"), ((4, 4), object), ((4, 4), "datetime64[s]"),
])
def test_not_an_image(shape, dtype):
    with pytest.raises(InputError):
        to_rgb_uint8(np.zeros(shape, dtype=dtype))


def test_oversized_page_is_refused_before_conversion():
    with pytest.raises(InputError, match="limit"):
        to_rgb_uint8(np.broadcast_to(np.uint8(0), (4097, 4097)))
    assert MAX_PAGE_PIXELS == 4096 * 4096


# --- TIFF ---------------------------------------------------------------------------------------------------


def test_tiff_stack_round_trip(tmp_path):
    pages = np.stack([rgb(128, 128) for _ in range(5)])
    tifffile.imwrite(tmp_path / "s.tif", pages, photometric="rgb")
    assert count_pages(tmp_path / "s.tif") == 5
    assert np.array_equal(read_patches(tmp_path / "s.tif"), pages)


def test_tiff_mixed_sizes_and_types(tmp_path):
    with tifffile.TiffWriter(tmp_path / "m.tif") as w:
        w.write(rgb(100, 140), photometric="rgb")
        w.write(np.full((256, 256), 65535, np.uint16), photometric="minisblack")
        w.write(np.full((64, 64, 3), 0.5, np.float32), photometric="rgb")
    patches = read_patches(tmp_path / "m.tif")
    assert patches.shape == (3, 128, 128, 3)
    assert (patches[1] == 255).all() and (patches[2][32:96, 32:96] == 128).all() and (patches[2][:32] == 0).all()


def test_tiff_palette_and_miniswhite(tmp_path):
    idx = np.arange(256, dtype=np.uint8).reshape(16, 16)
    cmap = np.zeros((3, 256), np.uint16)
    cmap[0] = np.arange(256) * 257  # red ramp
    cmap[2] = 65535
    tifffile.imwrite(tmp_path / "p.tif", idx, photometric="palette", colormap=cmap)
    (page,) = list(iter_pages(tmp_path / "p.tif"))
    out = to_rgb_uint8(page)
    assert np.array_equal(out[..., 0], idx) and (out[..., 1] == 0).all() and (out[..., 2] == 255).all()
    tifffile.imwrite(tmp_path / "w.tif", idx, photometric="miniswhite")
    (page,) = list(iter_pages(tmp_path / "w.tif"))
    assert np.array_equal(to_rgb_uint8(page)[..., 0], 255 - idx)  # 0 means white there


def test_tiff_planar(tmp_path):
    page = rgb(20, 30)
    tifffile.imwrite(tmp_path / "pl.tif", np.moveaxis(page, -1, 0), photometric="rgb", planarconfig="separate")
    (got,) = list(iter_pages(tmp_path / "pl.tif"))
    assert np.array_equal(to_rgb_uint8(got), page)


@pytest.mark.parametrize("compression", ["tiff_lzw", "jpeg", "packbits", "tiff_adobe_deflate"])
def test_tiff_compressions_via_tifffile_or_pillow(tmp_path, compression):
    pages = [rgb(128, 128) for _ in range(3)]
    ims = [Image.fromarray(p) for p in pages]
    ims[0].save(tmp_path / "c.tif", save_all=True, append_images=ims[1:], compression=compression)
    got = read_patches(tmp_path / "c.tif")
    assert got.shape == (3, 128, 128, 3)
    tolerance = 60 if compression == "jpeg" else 0  # random noise is JPEG's worst case
    assert all(np.abs(g.astype(int) - p).mean() <= tolerance for g, p in zip(got, pages))


def test_tiff_cmyk_via_pillow(tmp_path):
    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(tmp_path / "k.tif")
    (patch,) = read_patches(tmp_path / "k.tif")
    assert tuple(patch[64, 64]) == (255, 0, 0)


def test_truncated_page_list_is_refused_not_shortened(tmp_path):
    tifffile.imwrite(tmp_path / "s.tif", np.stack([rgb(128, 128) for _ in range(5)]), photometric="rgb")
    data = (tmp_path / "s.tif").read_bytes()
    (tmp_path / "t.tif").write_bytes(data[: len(data) // 2])  # tifffile alone would read 1 page and log
    with pytest.raises(InputError, match="damaged TIFF"):
        count_pages(tmp_path / "t.tif")


def test_truncated_data_is_refused(tmp_path):
    tifffile.imwrite(tmp_path / "s.tif", rgb(128, 128), photometric="rgb")
    data = (tmp_path / "s.tif").read_bytes()
    (tmp_path / "t.tif").write_bytes(data[:1000])
    with pytest.raises(InputError, match="truncated"):
        count_pages(tmp_path / "t.tif")


def test_zero_pages_and_not_a_tiff(tmp_path):
    (tmp_path / "z.tif").write_bytes(b"II*\x00" + struct.pack("<I", 0))
    with pytest.raises(InputError, match="no pages"):
        count_pages(tmp_path / "z.tif")
    (tmp_path / "n.tif").write_text("hello, not a TIFF")
    with pytest.raises(InputError, match="not a readable TIFF"):
        count_pages(tmp_path / "n.tif")
    (tmp_path / "e.tif").write_bytes(b"")
    with pytest.raises(InputError, match="empty file"):
        count_pages(tmp_path / "e.tif")


def test_tifffile_log_lines_do_not_reach_stderr(tmp_path, capfd):
    (tmp_path / "z.tif").write_bytes(b"II*\x00" + struct.pack("<I", 0))
    with pytest.raises(InputError):
        count_pages(tmp_path / "z.tif")
    assert capfd.readouterr().err == ""


def test_a_damaged_tiff_read_beside_good_ones_in_other_threads_is_refused_there_alone(tmp_path):
    """tifffile's log is taken by the thread whose read logged it (the pipeline decodes in a background thread)."""
    import logging
    from concurrent.futures import ThreadPoolExecutor

    tifffile.imwrite(tmp_path / "s.tif", np.stack([rgb(128, 128) for _ in range(5)]), photometric="rgb")
    data = (tmp_path / "s.tif").read_bytes()
    (tmp_path / "t.tif").write_bytes(data[: len(data) // 2])

    def read(name: str) -> str:
        try:
            return f"{count_pages(tmp_path / name)} pages"
        except InputError as exc:
            return "damaged" if "damaged TIFF" in str(exc) else str(exc)

    names = ["s.tif", "t.tif"] * 20
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(read, names))
    assert got == ["5 pages" if n == "s.tif" else "damaged" for n in names]
    logger = logging.getLogger("tifffile")
    assert logger.handlers == [] and logger.propagate  # the reads left the logger as they found it


def test_reduced_resolution_page_is_refused(tmp_path):
    with tifffile.TiffWriter(tmp_path / "r.tif") as w:
        w.write(rgb(128, 128), photometric="rgb")
        w.write(rgb(32, 32), photometric="rgb", subfiletype=1)
    with pytest.raises(InputError, match="page 1: a reduced-resolution"):
        count_pages(tmp_path / "r.tif")


def test_huge_page_is_refused_before_decoding(tmp_path):
    tifffile.imwrite(tmp_path / "h.tif", np.zeros((5000, 5000), bool))
    with pytest.raises(InputError, match="exceeds"):
        count_pages(tmp_path / "h.tif")


def test_page_errors_name_the_page(tmp_path):
    with tifffile.TiffWriter(tmp_path / "f.tif") as w:
        w.write(np.zeros((8, 8), np.float32))
        w.write(np.full((8, 8), np.nan, np.float32))
    with pytest.raises(InputError, match=r"f\.tif: page 1: NaN"):
        read_patches(tmp_path / "f.tif")


# --- MHA, PNG, JPEG ---------------------------------------------------------------------------------------


def test_mha_stack_streams_in_blocks(tmp_path, monkeypatch):
    import SimpleITK as sitk

    import amf.inference.io

    monkeypatch.setattr(amf.inference.io, "MHA_BLOCK", 3)
    vol = np.stack([rgb(128, 128) for _ in range(7)])
    sitk.WriteImage(sitk.GetImageFromArray(vol, isVector=True), str(tmp_path / "v.mha"), useCompression=True)
    assert count_pages(tmp_path / "v.mha") == 7
    assert np.array_equal(read_patches(tmp_path / "v.mha"), vol)


def test_mha_single_gray_image_and_truncation(tmp_path):
    import SimpleITK as sitk

    g = RNG.integers(0, 256, (128, 128), dtype=np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(g), str(tmp_path / "g.mha"))
    assert np.array_equal(read_patches(tmp_path / "g.mha")[0, ..., 1], g)
    vol = np.stack([rgb(128, 128) for _ in range(4)])
    sitk.WriteImage(sitk.GetImageFromArray(vol, isVector=True), str(tmp_path / "v.mha"))
    data = (tmp_path / "v.mha").read_bytes()
    (tmp_path / "t.mha").write_bytes(data[: len(data) - 1000])
    with pytest.raises(InputError, match="truncated"):
        count_pages(tmp_path / "t.mha")


def test_png_modes(tmp_path):
    g16 = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    patch = read_patches(tmp_path / "g16.png")[0]
    assert np.array_equal(patch[32:96, 32:96, 0], np.rint(g16 / 257).astype(np.uint8))
    p = Image.new("P", (10, 10))
    p.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    p.paste(1, (0, 0, 10, 10))
    p.save(tmp_path / "p.png")
    assert tuple(read_patches(tmp_path / "p.png")[0, 64, 64]) == (10, 20, 30)
    Image.new("LA", (10, 10), (77, 0)).save(tmp_path / "la.png")
    assert tuple(read_patches(tmp_path / "la.png")[0, 64, 64]) == (77, 77, 77)


def test_truncated_png_and_animated_png(tmp_path):
    Image.fromarray(rgb(64, 64)).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="t.png"):
        read_patches(tmp_path / "t.png")
    frames = [Image.fromarray(rgb(16, 16)) for _ in range(2)]
    frames[0].save(tmp_path / "anim.png", save_all=True, append_images=frames[1:])
    with pytest.raises(InputError, match="2 frames"):
        count_pages(tmp_path / "anim.png")


def test_unsupported_suffix_and_missing(tmp_path):
    (tmp_path / "x.bmp").write_bytes(b"BM")
    with pytest.raises(InputError, match="unsupported file type"):
        count_pages(tmp_path / "x.bmp")
    with pytest.raises(InputError, match="no such file"):
        list(iter_pages(tmp_path / "nope.tif"))
    (tmp_path / "d.tif").mkdir()
    with pytest.raises(InputError, match="not a file"):
        count_pages(tmp_path / "d.tif")
