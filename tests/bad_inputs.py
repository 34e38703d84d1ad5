"""The bad-input corpus and its helpers: inputs in the platform layout, weights variants, and every case with
its expected outcome (valid output, or an error of a given type whose one-line message names the problem).

Used by tests/test_bad_inputs.py (the container entrypoint in-process), tests/test_predict_failures.py and
tests/test_exit_status.py (subprocesses: the exit status and the one line on stderr).
"""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from amf.errors import AmfError, InputError, OutputError, WeightsError
from amf.inference import challenge
from amf.inference.io import read_patches

ROOT = Path(__file__).resolve().parents[1]
INTERFACE = challenge.INTERFACE
OUT = challenge.OUTPUT_NAME
RNG = np.random.default_rng(1)


def rgb_stack(n: int = 3, h: int = 128, w: int = 128) -> np.ndarray:
    return RNG.integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def inputs_json(name: str | None = None, slug: str = INTERFACE) -> str:
    return json.dumps([{"image": {"name": name}, "interface": {"slug": slug, "kind": "Image",
                                                               "relative_path": f"images/{slug}"}}])


def platform_input(root: Path, stacks: dict[str, Callable[[Path], None]], meta: str | None = None) -> Path:
    """``root/input`` in the platform layout, each stack written by its writer."""
    inp = root / "input"
    folder = inp / "images" / INTERFACE
    folder.mkdir(parents=True)
    for name, write in stacks.items():
        write(folder / name)
    (inp / "inputs.json").write_text(meta if meta is not None else inputs_json(next(iter(stacks), None)))
    return inp


def tif(pages: np.ndarray | list, **kw) -> Callable[[Path], None]:
    def write(p: Path) -> None:
        with tifffile.TiffWriter(p) as w:
            for page in pages:
                colour = np.ndim(page) == 3 and page.shape[-1] in (3, 4)
                w.write(page, **({"photometric": "rgb"} if colour else {}), **kw)
    return write


def raw(data: bytes) -> Callable[[Path], None]:
    return lambda p: p.write_bytes(data)


def good() -> Callable[[Path], None]:
    return tif(rgb_stack(3))


def tiff_bytes(pages: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    tifffile.imwrite(buf, pages, photometric="rgb")
    return buf.getvalue()


def pil_tif(pages: np.ndarray, compression: str) -> Callable[[Path], None]:
    def write(p: Path) -> None:
        ims = [Image.fromarray(x) for x in pages]
        ims[0].save(p, save_all=True, append_images=ims[1:], compression=compression)
    return write


def mha(pages: np.ndarray, truncate: int = 0) -> Callable[[Path], None]:
    def write(p: Path) -> None:
        import SimpleITK as sitk

        sitk.WriteImage(sitk.GetImageFromArray(pages, isVector=True), str(p))
        if truncate:
            p.write_bytes(p.read_bytes()[:-truncate])
    return write


# --- weights variants: each is applied to a copy of the tiny ensemble -----------------------------------


def _manifest(w: Path) -> dict:
    return json.loads((w / "manifest.json").read_text())


def _set_manifest(w: Path, m: dict) -> None:
    (w / "manifest.json").write_text(json.dumps(m))


def _rehash(w: Path) -> None:
    from amf.files import sha256_file

    m = _manifest(w)
    for e in m["members"]:
        e["sha256"] = sha256_file(w / e["file"])
    _set_manifest(w, m)


def w_no_folder(w: Path) -> Path:
    return w / "does-not-exist"


def w_no_manifest(w: Path) -> Path:
    (w / "manifest.json").unlink()
    return w


def w_manifest_not_json(w: Path) -> Path:
    (w / "manifest.json").write_text("{ not json")
    return w


def w_member_missing(w: Path) -> Path:
    (w / "member_1.safetensors").unlink()
    return w


def w_hash_mismatch(w: Path) -> Path:
    data = bytearray((w / "member_0.safetensors").read_bytes())
    data[-1] ^= 1
    (w / "member_0.safetensors").write_bytes(bytes(data))
    return w


def w_corrupt_matching_hash(w: Path) -> Path:
    (w / "member_0.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header!!}")
    _rehash(w)
    return w


def w_truncated_matching_hash(w: Path) -> Path:
    p = w / "member_0.safetensors"
    p.write_bytes(p.read_bytes()[:-100])
    _rehash(w)
    return w


def w_newer_format(w: Path) -> Path:
    m = _manifest(w)
    m["format_version"] = 99
    _set_manifest(w, m)
    return w


def w_bad_threshold(w: Path) -> Path:
    m = _manifest(w)
    m["threshold"]["value"] = 1.5
    _set_manifest(w, m)
    return w


def w_zero_views(w: Path) -> Path:
    m = _manifest(w)
    m["tta"]["views"] = 0
    _set_manifest(w, m)
    return w


def w_member_outside(w: Path) -> Path:
    m = _manifest(w)
    m["members"][0]["file"] = "../member_0.safetensors"
    _set_manifest(w, m)
    return w


def w_unknown_arch(w: Path) -> Path:
    m = _manifest(w)
    m["model"]["arch"] = "no_such_architecture_b9"
    _set_manifest(w, m)
    return w


def w_wrong_arch(w: Path) -> Path:
    m = _manifest(w)
    m["model"]["arch"] = "test_vit2"  # the tensors are test_vit's
    _set_manifest(w, m)
    return w


def w_nan_weights(w: Path) -> Path:
    from safetensors.torch import load_file, save_file

    p = w / "member_0.safetensors"
    state = load_file(str(p))
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[key][0] = float("nan")
    save_file(state, str(p))
    _rehash(w)
    return w


# --- the corpus -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path], Path]  # tmp -> input folder
    expect: str  # "ok" or a substring of the error message
    error: type[AmfError] = InputError
    pages: int | tuple[int, ...] = 3  # for "ok": pages per stack, in stack order
    weights: Callable[[Path], Path] | None = None  # applied to a copy of the weights
    output: Callable[[Path], Path] | None = None  # tmp -> output folder (default tmp/output)


def _missing(tmp: Path) -> Path:
    return tmp / "no-such-input"


def _a_file(tmp: Path) -> Path:
    (tmp / "file").write_text("x")
    return tmp / "file"


def _empty(tmp: Path) -> Path:
    (tmp / "input").mkdir()
    return tmp / "input"


def _meta(text: str) -> Callable[[Path], Path]:
    return lambda tmp: platform_input(tmp, {"s.tif": good()}, meta=text)


def _no_stack_folder(tmp: Path) -> Path:
    (tmp / "input").mkdir()
    (tmp / "input" / "inputs.json").write_text(inputs_json())
    return tmp / "input"


def _folder_with(names: dict[str, Callable[[Path], None]], meta: str | None = None) -> Callable[[Path], Path]:
    return lambda tmp: platform_input(tmp, names, meta=meta if meta is not None else inputs_json())


def _broken_link(tmp: Path) -> Path:
    inp = platform_input(tmp, {}, meta=inputs_json())
    (inp / "images" / INTERFACE / "s.tif").symlink_to(tmp / "gone.tif")
    return inp


def one_page(writer: Callable[[Path], None], name: str = "s.tif") -> Callable[[Path], Path]:
    return lambda tmp: platform_input(tmp, {name: writer})


def valid_stack(tmp: Path) -> Path:
    return platform_input(tmp, {"s.tif": good()})


def _out_under_file(tmp: Path) -> Path:
    (tmp / "blocker").write_text("a file, not a folder")
    return tmp / "blocker" / "output"


def _out_target_is_folder(tmp: Path) -> Path:
    (tmp / "output" / OUT).mkdir(parents=True)
    return tmp / "output"


def _truncated_data(tmp: Path) -> Path:
    return platform_input(tmp, {"s.tif": raw(tiff_bytes(rgb_stack(1))[:1000])})


def truncated_pagelist(tmp: Path) -> Path:
    data = tiff_bytes(rgb_stack(5))
    return platform_input(tmp, {"s.tif": raw(data[: len(data) // 2])})


def _subfile(p: Path) -> None:
    with tifffile.TiffWriter(p) as w:
        w.write(rgb_stack(1)[0], photometric="rgb")
        w.write(rgb_stack(1, 32, 32)[0], photometric="rgb", subfiletype=1)


def _palette(p: Path) -> None:
    cmap = RNG.integers(0, 65536, (3, 256), dtype=np.uint16)
    with tifffile.TiffWriter(p) as w:
        for _ in range(3):
            w.write(RNG.integers(0, 256, (128, 128), dtype=np.uint8), photometric="palette", colormap=cmap)


def _mixed(p: Path) -> None:
    with tifffile.TiffWriter(p) as w:
        w.write(rgb_stack(1, 100, 140)[0], photometric="rgb")
        w.write(RNG.integers(0, 65536, (256, 256), dtype=np.uint16))
        w.write(RNG.random((64, 64, 3), dtype=np.float32), photometric="rgb")
        w.write(np.zeros((128, 128, 4), np.uint8), photometric="rgb", extrasamples=["unassalpha"])


ZERO_PAGES = b"II*\x00" + struct.pack("<I", 0)
BAD_IFD = b"II*\x00" + struct.pack("<I", 10_000)  # first page beyond the end of the file

CASES = [
    # input folder and inputs.json
    Case("input folder missing", _missing, "does not exist"),
    Case("input is a file", _a_file, "is not a folder"),
    Case("input folder empty", _empty, "inputs.json is missing"),
    Case("inputs.json not JSON", _meta("{oops"), "not valid JSON"),
    Case("inputs.json not a list", _meta('{"a": 1}'), "not a list"),
    Case("inputs.json other interface", _meta(inputs_json("s.tif", "some-other-slug")), "'some-other-slug'"),
    Case("inputs.json malformed items", _meta('[{"interface": "x"}, 3, null]'), "names interfaces [None, None, None]"),
    Case("inputs.json names another file name", _meta(inputs_json("other.tif")), "ok"),  # a note on stderr only
    Case("stack folder missing", _no_stack_folder, "stack folder"),
    Case("stack folder empty", _folder_with({}), "it is empty"),
    Case("stack folder without stacks", _folder_with({"a.png": raw(b"x"), "notes.txt": raw(b"x")}), "it holds a.png"),
    Case("stack is a broken link", _broken_link, "broken link"),
    # files
    Case("text file named .tif", one_page(raw(b"this is not an image at all")), "not a readable TIFF"),
    Case("empty .tif", one_page(raw(b"")), "empty file"),
    Case("PNG named .tif", one_page(lambda p: Image.new("RGB", (8, 8)).save(p, format="PNG")), "not a readable TIFF"),
    Case("truncated TIFF data", _truncated_data, "the file is truncated"),
    Case("truncated TIFF page list", truncated_pagelist, "damaged TIFF"),
    Case("TIFF with zero pages", one_page(raw(ZERO_PAGES)), "TIFF has no pages"),
    Case("TIFF first page past the end", one_page(raw(BAD_IFD)), "s.tif"),
    Case("reduced-resolution subfile", one_page(_subfile), "page 1: a reduced-resolution"),
    Case("page over the size limit", one_page(tif([np.zeros((5000, 5000), bool)])), "exceeds"),
    Case("page with NaN", one_page(tif([np.zeros((8, 8), np.float32), np.full((8, 8), np.nan, np.float32)])),
         "s.tif: page 1: NaN"),
    Case("page with negative ints", one_page(tif([np.full((8, 8), -3, np.int16)])), "page 0: negative"),
    Case("page with 5 samples", one_page(tif([np.zeros((8, 8, 5), np.uint8)], planarconfig="contig")),
         "1 to 4 samples"),
    Case("truncated MHA", one_page(mha(rgb_stack(3), truncate=500), "s.mha"), "truncated"),
    # several stacks
    Case("two good stacks", _folder_with({"a.tif": good(), "b.tiff": tif(rgb_stack(2))}), "ok", pages=(3, 2)),
    Case("second of two stacks bad", _folder_with({"a.tif": good(), "b.tif": raw(b"junk")}), "stack 2 of 2"),
    Case("two stacks, one output name", _folder_with({"a.tif": good(), "a.tiff": good()}), "would both be written"),
    # page sizes and formats that must work
    Case("100x140 pages", one_page(tif(rgb_stack(3, 100, 140))), "ok"),
    Case("256x256 pages", one_page(tif(rgb_stack(3, 256, 256))), "ok"),
    Case("gray pages", one_page(tif(RNG.integers(0, 256, (3, 128, 128), dtype=np.uint8))), "ok"),
    Case("RGBA pages", one_page(tif(RNG.integers(0, 256, (3, 128, 128, 4), dtype=np.uint8),
                                    extrasamples=["unassalpha"])),
         "ok"),
    Case("palette pages", one_page(_palette), "ok"),
    Case("16-bit RGB pages", one_page(tif(RNG.integers(0, 65536, (3, 128, 128, 3), dtype=np.uint16))), "ok"),
    Case("float pages", one_page(tif(RNG.random((3, 128, 128, 3), dtype=np.float32))), "ok"),
    Case("all-black pages", one_page(tif(np.zeros((3, 128, 128, 3), np.uint8))), "ok"),
    Case("mixed sizes and types", one_page(_mixed), "ok", pages=4),
    Case("LZW stack (Pillow decodes)", one_page(pil_tif(rgb_stack(3), "tiff_lzw")), "ok"),
    Case("JPEG stack (Pillow decodes)", one_page(pil_tif(rgb_stack(3), "jpeg")), "ok"),
    Case("MHA stack", one_page(mha(rgb_stack(3)), "s.mha"), "ok"),
    Case("single-page stack", one_page(tif(rgb_stack(1))), "ok", pages=1),
    # weights: refused before any input is read (the input folder here does not even exist)
    Case("weights folder missing", _missing, "does not exist", WeightsError, weights=w_no_folder),
    Case("weights manifest missing", _missing, "no manifest.json", WeightsError, weights=w_no_manifest),
    Case("weights manifest not JSON", _missing, "not valid JSON", WeightsError, weights=w_manifest_not_json),
    Case("weights member missing", _missing, "member file missing", WeightsError, weights=w_member_missing),
    Case("weights hash mismatch", _missing, "sha256 mismatch", WeightsError, weights=w_hash_mismatch),
    Case("weights corrupt, hash matches", _missing, "not a valid safetensors", WeightsError,
         weights=w_corrupt_matching_hash),
    Case("weights truncated, hash matches", _missing, "not a valid safetensors", WeightsError,
         weights=w_truncated_matching_hash),
    Case("weights newer format", _missing, "format_version 99", WeightsError, weights=w_newer_format),
    Case("weights threshold out of range", _missing, "not a probability", WeightsError, weights=w_bad_threshold),
    Case("weights zero views", _missing, "views 0", WeightsError, weights=w_zero_views),
    Case("weights member outside folder", _missing, "not a plain file name", WeightsError, weights=w_member_outside),
    # weights problems that need the model: found after the input checks, before any inference
    Case("weights unknown architecture", valid_stack, "cannot build model", WeightsError, weights=w_unknown_arch),
    Case("weights of another architecture", valid_stack, "does not fit", WeightsError, weights=w_wrong_arch),
    Case("weights with NaN", valid_stack, "NaN", WeightsError, weights=w_nan_weights),
    # output
    Case("output under a file", valid_stack, "cannot write", OutputError, output=_out_under_file),
    Case("output target is a folder", valid_stack, "cannot write", OutputError, output=_out_target_is_folder),
]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}



def check_output(path: Path, stack: Path, engine_for, pages: int) -> None:
    engine, threshold = engine_for
    records = json.loads(path.read_text())
    assert isinstance(records, list) and len(records) == pages
    for r in records:
        assert set(r) == {"class", "confidence"}
        assert type(r["confidence"]) is float and math.isfinite(r["confidence"]) and 0 <= r["confidence"] <= 1
        assert r["class"] == ("atypical" if r["confidence"] >= threshold else "normal")
    expected = engine.predict_proba(read_patches(stack))  # page order: same pages, same numbers
    assert np.allclose([r["confidence"] for r in records], expected, atol=1e-6)


def run_cmd(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=env)


def assert_one_line_error(proc: subprocess.CompletedProcess, prefix: str, text: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(prefix) and text in lines[0], lines[0]
