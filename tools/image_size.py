"""What a requirements file adds to the container image: the installed size of its distributions and of
everything they require, read from the installed wheels' RECORD files in this environment.

    python tools/image_size.py 08f334c:requirements.txt requirements.txt [--json FILE]

One row per file: distributions, installed MiB, and the largest ones; ``REV:PATH`` reads a file as git holds it at
a revision, to compare an older image with today's. Only distributions installed here
can be measured; any other is listed as missing.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

MIB = 1024**2


def read(spec: str) -> str:
    """A requirements file's text: a path, or ``REV:PATH`` for the file as git holds it at a revision."""
    if not Path(spec).is_file() and ":" in spec:
        rev, path = spec.split(":", 1)
        return subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True, check=True).stdout
    return Path(spec).read_text()


def requirement_names(spec: str) -> list[str]:
    """The distribution names a requirements file pins (``-r`` lines followed, at the same revision)."""
    names = []
    for line in read(spec).splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            rev = spec.split(":", 1)[0] + ":" if not Path(spec).is_file() and ":" in spec else ""
            base = Path(spec.split(":", 1)[-1]).parent if rev else Path(spec).parent
            names += requirement_names(rev + str(base / line[3:].strip()))
        elif line:
            names.append(re.split(r"[=<>!~ ;\[]", line)[0])
    return names


def closure(names: list[str]) -> tuple[dict[str, importlib.metadata.Distribution], list[str]]:
    """Every installed distribution ``names`` needs (theirs and their requirements', markers evaluated for this
    Python without extras), by name, and the names that are not installed here. ``tests/test_layout.py`` builds
    the image's site-packages from the same closure."""
    found: dict[str, importlib.metadata.Distribution] = {}
    missing: list[str] = []
    todo = list(names)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in found or name in missing:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
            continue
        found[name] = dist
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return found, missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("requirements", nargs="+", help="requirements files, or REV:PATH for one at a git revision")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    rows = {}
    for path in args.requirements:
        dists, missing = closure(requirement_names(path))
        sizes = {name: sum(f.size or 0 for f in dist.files or []) for name, dist in dists.items()}
        largest = sorted(sizes.items(), key=lambda kv: -kv[1])[:5]
        rows[str(path)] = {"distributions": len(sizes), "installed_mib": round(sum(sizes.values()) / MIB, 1),
                           "largest_mib": {k: round(v / MIB, 1) for k, v in largest}, "missing": sorted(missing),
                           "by_distribution_mib": {k: round(v / MIB, 2) for k, v in sorted(sizes.items())}}
        row = rows[str(path)]
        print(f"{path}: {row['distributions']} distributions, {row['installed_mib']:.1f} MiB installed; largest: "
              + ", ".join(f"{k} {v:.0f}" for k, v in row["largest_mib"].items())
              + (f"; not installed here: {', '.join(missing)}" if missing else ""))
    if args.json:
        made_by = ["python", "tools/image_size.py", *(argv if argv is not None else sys.argv[1:])]
        args.json.write_text(json.dumps({"command": made_by, "python": sys.version.split()[0], "files": rows}, indent=2)
                             + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
