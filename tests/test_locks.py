"""The image is locked: the base by digest, the Python closure by hash (locks/VARIANT.txt, made by tools/lock.sh from
requirements.txt), and the test environment runs the torch the image ships."""

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


def test_there_is_a_lock_and_the_dockerfile_installs_it_with_hashes():
    assert LOCKS, "no locks/*.txt: run tools/lock.sh"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes" in dockerfile and 'locks/$TORCH_VARIANT.txt' in dockerfile
    default = re.search(r"^ARG TORCH_VARIANT=(\S+)", dockerfile, re.M)[1]
    assert default.startswith("cu12"), f"the default variant {default} must run on the platform's pre-580 drivers"
    assert re.search(rf"^\s*[\w|]*\b{default}\b[\w|]*\)", (ROOT / "tools" / "lock.sh").read_text(), re.M), \
        f"tools/lock.sh cannot lock the default variant {default}"


def test_the_base_image_is_pinned_by_digest():
    line = next(x for x in (ROOT / "Dockerfile").read_text().splitlines() if x.startswith("FROM "))
    assert re.search(r"@sha256:[0-9a-f]{64}\b", line), line


@pytest.mark.parametrize("lock", LOCKS, ids=[p.stem for p in LOCKS])
def test_a_lock_pins_requirements_versions_and_hashes_every_distribution(lock):
    text = lock.read_text()
    assert f"tools/lock.sh {lock.stem}" in text.splitlines()[1]  # made by the tool, for this variant
    locked = pins(text)
    wanted = requirements()
    differ = {n: (v, locked.get(n)) for n, v in wanted.items() if (locked.get(n) or "").split("+")[0] != v}
    assert not differ, f"{lock.name} disagrees with requirements.txt (wanted, locked): {differ}"
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])  # one block per distribution
    unhashed = [e.split("==")[0] for e in entries if "==" in e and "--hash=sha256:" not in e]
    assert not unhashed, f"{lock.name}: no hash for {unhashed}"


def test_the_tests_run_the_torch_the_image_ships():
    assert metadata.version("torch").split("+")[0] == requirements()["torch"]
