"""The wings of the package and what the container carries: imports run one way only, and the inference wing
runs with the container's runtime requirements alone.

Wings, from the bottom up: the core (``amf/*.py``), ``inference``, ``evaluation``, ``training``, and beside them
``bench`` (on inference) and ``audit`` (on everything). A wing may import from the wings below it, never from
one beside or above it; imports inside functions count too.
"""

import ast
import importlib.util
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from amf.audit import expected
from amf.reproducibility import ISA_CAPS

ROOT = Path(__file__).resolve().parents[1]

#: What each wing may import from amf (besides itself).
ALLOWED = {
    "core": {"core"},
    "inference": {"core"},
    "evaluation": {"core", "inference"},
    "training": {"core", "inference", "evaluation"},
    "bench": {"core", "inference"},
    "audit": {"core", "inference", "evaluation", "training"},
}


#: The package itself (``amf/__init__.py``) is the notebook's door: ``amf.load`` hands on to the inference wing's
#: API, imported when called, so ``import amf`` loads no torch. That one import runs upwards by design.
FACADE = {("amf", "amf.inference.api")}


def wing(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in ALLOWED else "core"


def amf_imports(path: Path) -> set[str]:
    """Every amf module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("amf.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("amf"):
            if node.module == "amf":  # from amf import distributed: a module, or a name of amf/__init__
                found |= {f"amf.{a.name}" for a in node.names if (ROOT / "amf" / f"{a.name}.py").is_file()}
            else:
                found.add(node.module)
    return found


def test_wings_import_downwards_only():
    wrong = []
    for path in sorted((ROOT / "amf").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for imported in amf_imports(path):
            if (module, imported) in FACADE:
                continue
            if wing(imported) != wing(module) and wing(imported) not in ALLOWED[wing(module)]:
                wrong.append(f"{module} ({wing(module)}) imports {imported} ({wing(imported)})")
    assert not wrong, "\n".join(wrong)


def test_every_module_sits_in_a_wing_the_readme_names():
    """The README's module table matches the tree: every wing, and every module in its wing's row."""
    readme = (ROOT / "README.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in readme.splitlines() if line.startswith("| ")}
    for folder in ("inference", "training", "evaluation", "audit", "bench"):
        assert (ROOT / "amf" / folder / "__init__.py").is_file()
        row = rows.get(f"`amf/{folder}/`")
        assert row is not None, f"README's module table lacks amf/{folder}/"
        missing = [p.stem for p in (ROOT / "amf" / folder).glob("*.py")
                   if p.stem != "__init__" and f"`{p.stem}`" not in row]
        assert not missing, f"README's row for amf/{folder}/ does not name {missing}"
    core = rows["core `amf/`"]
    missing = [p.stem for p in (ROOT / "amf").glob("*.py")
               if p.stem not in ("__init__", "__main__") and f"`{p.stem}`" not in core]
    assert not missing, f"README's core row does not name {missing}"


def container_files(dest: Path) -> None:
    """What the Dockerfile copies into /opt/app, read from its COPY lines."""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        m = re.match(r"COPY (?:--chown=\S+ )?(\S+) /opt/app/(\S*)$", line)
        if not m or m.group(1).startswith("requirements"):
            continue
        for src in sorted(ROOT.glob(m.group(1))):
            target = dest / m.group(2) / src.name if m.group(2).endswith("/") or not m.group(2) else dest / m.group(2)
            target.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(src, target)


def runtime_site(dest: Path) -> Path:
    """A site-packages folder holding only the distributions requirements.txt names and everything they require
    (links into this environment's), as the image holds them: the closure of ``tools/image_size.py``."""
    spec = importlib.util.spec_from_file_location("image_size", ROOT / "tools" / "image_size.py")
    image_size = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(image_size)
    dists, _ = image_size.closure(image_size.requirement_names(str(ROOT / "requirements.txt")))
    dest.mkdir()
    for dist in dists.values():
        site = Path(dist.locate_file(""))
        for top in {f.parts[0] for f in dist.files or [] if f.parts[0] != ".."}:
            if (site / top).exists() and not (dest / top).exists():
                (dest / top).symlink_to(site / top)
    return dest


@pytest.mark.slow
def test_the_container_files_run_with_the_runtime_requirements_alone(tmp_path):
    """process.py from the Dockerfile's files only, on a Python that sees no site-packages but requirements.txt's
    distributions and what they require: the bundled stack gives test/expected_output.json."""
    app = tmp_path / "app"
    container_files(app)
    assert (app / "amf" / "inference").is_dir() and not (app / "amf" / "training").exists()
    site = runtime_site(tmp_path / "site-packages")
    assert not (site / "sklearn").exists() and not (site / "matplotlib").exists()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{app}:{site}", "HF_HUB_OFFLINE": "1", "AMF_GRAPH_CACHE": "off",
           **{k: os.environ[k] for k in ISA_CAPS if k in os.environ}}  # CI runs the suite again with oneDNN capped
    got, machine = expected.run_process(app, app / "weights", python=[sys.executable, "-S"], env=env, cwd=app)
    verdict = expected.compare(ROOT, json.loads(got), machine)  # bit for bit on the recording machine
    assert verdict.ok, verdict.line()
