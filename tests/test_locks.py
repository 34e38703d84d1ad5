"""The image is locked: the base by digest, the Python closure by hash (locks/VARIANT.txt, made by tools/lock.sh from
requirements.txt), and the default image, the tests and .venv run one torch: requirements.txt's, a CUDA 12 build."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCKS = sorted((ROOT / "locks").glob("*.txt"))
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", re.M)


def pins(text: str) -> dict[str, str]:
    """name (normalised) -> version, from ``name==version`` lines."""
    return {re.sub(r"[-_.]+", "-", m[1]).lower(): m[2] for m in PIN.finditer(text)}


def requirements() -> dict[str, str]:
    return pins("\n".join(line.split("#")[0] for line in (ROOT / "requirements.txt").read_text().splitlines()))


DOCKERFILE = (ROOT / "Dockerfile").read_text()
DEFAULT = re.search(r"^ARG TORCH_VARIANT=(\S+)", DOCKERFILE, re.M)[1]


def test_the_default_variant_is_locked_and_the_dockerfile_installs_it_with_hashes():
    assert (ROOT / "locks" / f"{DEFAULT}.txt").is_file(), f"no locks/{DEFAULT}.txt: run tools/lock.sh {DEFAULT}"
    assert "--require-hashes" in DOCKERFILE and "$TORCH_VARIANT.txt" in DOCKERFILE
    assert re.search(rf"^\s*[\w|]*\b{DEFAULT}\b[\w|]*\)", (ROOT / "tools" / "lock.sh").read_text(), re.M), \
        f"tools/lock.sh cannot lock the default variant {DEFAULT}"
    for script in ("build.sh", "test.sh", "export.sh", "tools/lock.sh"):  # one default everywhere
        assert re.search(rf":-{DEFAULT}\}}", (ROOT / script).read_text()), f"{script}'s default is not {DEFAULT}"


def test_the_default_variant_is_requirements_torch_a_cuda_12_build_from_pypi():
    text = (ROOT / "locks" / f"{DEFAULT}.txt").read_text()
    locked = pins(text)
    assert locked["torch"] == requirements()["torch"] and locked["torchvision"] == requirements()["torchvision"]
    cuda = {n for n in locked if n.startswith("nvidia-") and n.endswith(("-cu12", "-cu13"))}
    assert cuda and all(n.endswith("-cu12") for n in cuda), f"the default lock must be a CUDA 12 build: {cuda}"
    assert locked["nvidia-cuda-runtime-cu12"].startswith("12."), locked["nvidia-cuda-runtime-cu12"]
    assert "--index-url" not in text and "--extra-index-url" not in text  # PyPI alone: lock.sh emits any other index


def test_the_base_image_is_pinned_by_digest_and_can_be_replaced():
    default = re.search(r"^ARG BASE_IMAGE=(\S+)$", DOCKERFILE, re.M)[1]
    assert re.search(r"@sha256:[0-9a-f]{64}$", default), default
    froms = [x for x in DOCKERFILE.splitlines() if x.startswith("FROM ")]
    assert froms and all("${BASE_IMAGE}" in x for x in froms), froms


@pytest.mark.parametrize("lock", LOCKS, ids=[p.stem for p in LOCKS])
def test_a_lock_pins_requirements_versions_and_hashes_every_distribution(lock):
    """Every lock pins requirements.txt's versions, but for the torch its variant overrides (locks/overrides/)."""
    text = lock.read_text()
    assert f"tools/lock.sh {lock.stem}" in text.splitlines()[1]  # made by the tool, for this variant
    locked = pins(text)
    override = ROOT / "locks" / "overrides" / f"{lock.stem}.txt"
    assert lock.stem != DEFAULT or not override.exists(), "the default variant runs requirements.txt as it is"
    wanted = requirements() | (pins(override.read_text()) if override.exists() else {})
    differ = {n: (v, locked.get(n)) for n, v in wanted.items() if (locked.get(n) or "").split("+")[0] != v}
    assert not differ, f"{lock.name} disagrees with requirements.txt (wanted, locked): {differ}"
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])  # one block per distribution
    unhashed = [e.split("==")[0] for e in entries if "==" in e and "--hash=sha256:" not in e]
    assert not unhashed, f"{lock.name}: no hash for {unhashed}"


def test_the_tests_run_the_torch_the_image_ships():
    assert metadata.version("torch").split("+")[0] == requirements()["torch"]
