"""Command-line entry: ``amf`` (the console script) or ``python -m amf``, then a sub-command:
train, export, predict, evaluate, crossval, bench or audit.

Each sub-command lives in its own module, which provides ``add_arguments(parser)`` and ``run(args) -> int``.
The modules are imported only when their sub-command runs, so ``predict`` never loads training code and
``--help`` stays fast. Foreseen failures (:class:`amf.errors.AmfError`) become one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from amf import __version__
from amf.errors import AmfError

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("amf.training.train_cli", "train an ensemble (leave-one-domain-out x k-fold)"),
    "export": ("amf.training.export_cli", "export a training run into a weights folder"),
    "predict": ("amf.inference.predict_cli", "score images or stacks into a CSV"),
    "evaluate": ("amf.evaluation.evaluate_cli", "official MIDOG 2025 Track 2 metrics, plus a report"),
    "crossval": ("amf.training.crossval_cli", "leave-one-domain-out results of training runs, with and without TTA"),
    "bench": ("amf.bench.bench_cli", "speed and memory benchmark, measured side by side"),
    "audit": ("amf.audit.audit_cli", "check every claim of the repository from what it ships"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    prog = "amf" if os.path.basename(sys.argv[0]) == "amf" else "python -m amf"
    parser = argparse.ArgumentParser(
        prog=prog, description="Atypical vs normal mitotic figures (MIDOG 2025 Track 2): train, export, predict, "
        "evaluate, crossval, bench and audit. Each command has its own --help.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only the chosen sub-command's module is imported; the others just get a help line.
    chosen = next((a for a in argv if not a.startswith("-")), None)
    modules, parsers = {}, {}
    for name, (module_name, help_text) in COMMANDS.items():
        parsers[name] = p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            modules[name] = importlib.import_module(module_name)
            modules[name].add_arguments(p)
    args, unknown = parser.parse_known_args(argv)
    if args.command is None:  # `amf` alone: the commands, not an error
        parser.print_help()
        return 2
    if unknown:  # said by the sub-command's parser, with its own usage line
        parsers[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return int(modules[args.command].run(args) or 0)
    except AmfError as exc:
        print(f"amf {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader stopped early (``amf train --list-folds | head -3``): no traceback, and no second error
        # when Python flushes stdout at exit. 128 + SIGPIPE, as for any program a closed pipe stops.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        # Every command writes its outputs atomically at the end (train checkpoints every epoch), so an
        # interrupted command leaves nothing partial: one line, no traceback, the shell's 128 + SIGINT.
        print(f"amf {args.command}: interrupted; nothing partial was written", file=sys.stderr)
        return 130
