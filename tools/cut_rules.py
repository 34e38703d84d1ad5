"""A cut that holds per lab (issue 43): each label-free threshold rule's gap to the hindsight-best balanced accuracy on
every held-out domain of the given leave-one-domain-out rows (:mod:`amf.training.cut_rules`), and the rule with the
smallest worst-domain gap.

    python tools/cut_rules.py ROW:MODE... [--results docs/results/lodo4] [--json FILE]

From the committed per-figure files alone (held-out and out-of-fold scores, the membership file for each out-of-fold
patch's domain): no model is run, and the result does not depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from amf.provenance import git_state, write_tool_record
from amf.training.cut_rules import RULES, cut_gaps

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="+", metavar="ROW:MODE", help="rows of the crossval folder, e.g. ROW:tta")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "results" / "lodo4")
    parser.add_argument("--json", type=Path, help="write the measurement here, with the command and git state")
    args = parser.parse_args(argv)
    git = git_state()
    rows = {spec: cut_gaps(args.results, spec) for spec in args.rows}
    for spec, r in rows.items():
        print(spec)
        for rule in RULES:
            gaps = "  ".join(f"{name} {d['rules'][rule]['gap']:.4f}" for name, d in r["domains"].items())
            print(f"  {rule:<19} worst {r['worst'][rule]['gap']:.4f} ({r['worst'][rule]['domain']})   {gaps}")
        print(f"  smallest worst-domain gap: {r['chosen']}")
    if args.json:
        write_tool_record(args.json, "cut_rules.py", argv, {
            "git": git, "results": os.path.relpath(args.results, ROOT), "rules": list(RULES), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
