"""The package installs (``pip install .`` and ``-e .``) and its ``amf`` console script works from any folder."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # builds a wheel with pip
def test_a_wheel_builds_with_every_module_and_the_console_script(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                           "--disable-pip-version-check", "-w", str(tmp_path), str(ROOT)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    wheel = next(tmp_path.glob("amf-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    modules = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "amf").rglob("*.py"))
    assert all(m in names for m in modules)
    assert "amf/inference/manifest.schema.json" in names  # amf audit's schema ships with the package
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    declared: dict[str, set[str]] = {}
    for line in metadata.splitlines():
        if line.startswith("Requires-Dist: "):
            pin, _, marker = line.split(": ", 1)[1].partition("; ")
            declared.setdefault(marker.removeprefix("extra == ").strip('"'), set()).add(pin)

    def pins(*files: str) -> set[str]:
        return {line.strip() for f in files for line in (ROOT / f).read_text().splitlines()
                if line.strip() and not line.startswith("#")}

    # pip install . brings the container's pinned runtime and the evaluator's packages (amf predict and amf
    # evaluate work), .[train] training's, each read from its requirements file
    assert declared == {"": pins("requirements.txt", "requirements-eval.txt"), "train": pins("requirements-train.txt")}
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "amf = amf.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_console_script_runs_from_any_folder(tmp_path):
    script = Path(sys.executable).parent / "amf"
    if not script.is_file():
        pytest.skip(f"{script} is not installed: `make test` installs the package (pip install -e .) into .venv")
    for args in (["--help"], ["evaluate", "--help"]):
        proc = subprocess.run([str(script), *args], capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"usage: amf {args[0] if args[0] != '--help' else ''}".rstrip())
