"""The built container image under the platform's contract (``make test-image``; marker ``container``).

The module builds the default image once with ``./build.sh`` (after ``tools/docker_engine.sh`` has made sure an
engine answers, installing and starting one where it can), then checks the running image:

* ``./test.sh --no-build``: the bundled stack under ``--network none``, a read-only root with a tmpfs ``/tmp``, a
  read-only ``/input`` and the image's user, matches ``test/expected_output.json`` within the tolerance;
* it runs as a non-root user, has no network interface but loopback, and finds ``/tmp`` empty (the graph cache
  lives in the image, not in ``/tmp``) and uses that cache;
* a run with a writable root changes nothing in it (``docker diff``): it writes only to ``/output`` and ``/tmp``;
* an ``.mha`` stack gives the same JSON as the ``.tif``;
* ``tools/verify_docker.sh`` prints what the image is.

The tests skip only where no engine can be started (``tools/docker_engine.sh`` exits 3 and says why).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from amf.inference.challenge import INTERFACE
from amf.inference.challenge import OUTPUT_NAME as OUT
from amf.inference.io import read_patches

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "midog25-t2-amf"
VARIANT = "cu128"
TAG = f"{IMAGE}:{VARIANT}"
PLATFORM = ["--network", "none", "--read-only", "--tmpfs", "/tmp", "--shm-size", "1g"]


def sh(*cmd: str, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def image() -> str:
    """The default image, built from this checkout by ./build.sh."""
    engine = sh("bash", "tools/docker_engine.sh", check=False, timeout=900)
    if engine.returncode == 3:
        pytest.skip(engine.stderr.strip())
    assert engine.returncode == 0, engine.stdout + engine.stderr
    sh("bash", "build.sh", VARIANT, timeout=3600)
    return TAG


def run_image(image: str, input_dir: Path, output_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    output_dir.mkdir(parents=True, exist_ok=True)
    output_dir.chmod(0o777)
    return sh("docker", "run", "--rm", *PLATFORM, *extra, "--volume", f"{input_dir}:/input:ro",
              "--volume", f"{output_dir}:/output", image)


def test_the_image_gives_the_expected_output_under_the_platforms_restrictions(image):
    proc = sh("bash", "test.sh", "--no-build", VARIANT)
    assert "test.sh: OK, 16 entries match" in proc.stdout, proc.stdout + proc.stderr


def test_the_image_runs_as_a_non_root_user_with_no_network_and_an_empty_tmp(image):
    user = sh("docker", "image", "inspect", image, "--format", "{{.Config.User}}").stdout.strip()
    assert user and user != "root"
    probe = ("import json, os, socket; print(json.dumps({'uid': os.getuid(), 'tmp': os.listdir('/tmp'), "
             "'interfaces': [n for _, n in socket.if_nameindex()], "
             "'cache': os.listdir(os.environ['AMF_GRAPH_CACHE'])}))")
    # Without the tmpfs too: what the image itself holds in /tmp is what a job would find there.
    for tmpfs in ([], ["--tmpfs", "/tmp"]):
        got = json.loads(sh("docker", "run", "--rm", "--network", "none", "--read-only", *tmpfs, "--entrypoint",
                            "python", image, "-c", probe).stdout)
        assert got["uid"] != 0 and got["tmp"] == [] and got["interfaces"] == ["lo"], got
        assert got["cache"], "the image carries no warm graph cache"


def test_the_image_starts_from_its_graph_cache(image):
    """The warm cache is used: no timm import, no trace (amf.inference.loading reports where the engine came from)."""
    probe = ("import sys; from amf.inference.loading import load_engine; from amf.inference.weights import "
             "default_weights; print(load_engine(default_weights(), 'cpu').source, 'timm' in sys.modules)")
    got = sh("docker", "run", "--rm", *PLATFORM, "--entrypoint", "python", image, "-c", probe)
    assert got.stdout.split() == ["graph-cache", "False"], got.stdout + got.stderr


def test_the_image_writes_only_to_output_and_tmp(image, tmp_path):
    """With a writable root, a job changes nothing in the image's file system (docker diff is empty)."""
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)
    name = f"amf-diff-{tmp_path.name}"
    sh("docker", "create", "--name", name, "--network", "none", "--tmpfs", "/tmp", "--volume",
       f"{ROOT / 'test' / 'input'}:/input:ro", "--volume", f"{out}:/output", image)
    try:
        sh("docker", "start", "--attach", name)
        changed = sh("docker", "diff", name).stdout.split("\n")
    finally:
        sh("docker", "rm", "--force", name, check=False)
    assert [c for c in changed if c.strip()] == []
    assert (out / OUT).is_file()


def test_an_mha_stack_gives_the_same_json_as_the_tif(image, tmp_path):
    import SimpleITK as sitk

    src = next((ROOT / "test" / "input" / "images" / INTERFACE).glob("*.tif*"))
    pages = read_patches(src)
    assert pages.shape == (16, 128, 128, 3)
    inp = tmp_path / "input"
    (inp / "images" / INTERFACE).mkdir(parents=True)
    inputs = json.loads((ROOT / "test" / "input" / "inputs.json").read_text())
    inputs[0]["image"]["name"] = f"{src.stem}.mha"
    (inp / "inputs.json").write_text(json.dumps(inputs))
    sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(pages), isVector=True),
                    str(inp / "images" / INTERFACE / f"{src.stem}.mha"), useCompression=True)
    run_image(image, inp, tmp_path / "mha")
    run_image(image, ROOT / "test" / "input", tmp_path / "tif")
    assert (tmp_path / "mha" / OUT).read_bytes() == (tmp_path / "tif" / OUT).read_bytes()
    verdict = sh(sys.executable, "tools/compare_output.py", str(tmp_path / "mha" / OUT), "--label", "mha")
    assert "mha: OK, 16 entries match" in verdict.stdout


def test_verify_docker_says_what_the_image_is(image):
    proc = sh("bash", "tools/verify_docker.sh", "--no-build", VARIANT, timeout=900)
    for word in ("user=user", 'entrypoint=["python","process.py"]', "size=", "base:", "torch 2.10.0", "sm_75",
                 "verify_docker cu128: OK"):
        assert word in proc.stdout, f"{word!r} not in:\n{proc.stdout}"
