"""``python -m amf train``: train a leave-one-domain-out x k-fold ensemble (see :mod:`amf.training.train`).

Examples::

    python -m amf train --config configs/lite0-crop80.toml --labels ../shared/data/ami-br-midog21/labels.csv \\
        --labels ../shared/data/ami-br-tupac16/labels.csv --output runs/shipped --no-lodo
    python -m amf train --resume --output runs/shipped --labels ../shared/data/ami-br-midog21/labels.csv \\
        --labels ../shared/data/ami-br-tupac16/labels.csv
    python -m amf train --config configs/smoke.toml --labels ... --output runs/tiny --limit 64 --no-lodo
    torchrun --standalone --nproc_per_node 2 -m amf train --config ... --labels ... --output runs/ddp

Under ``torchrun`` each fold trains data-parallel over the processes (:mod:`amf.training.distributed`); ``batch_size``
stays the global batch, so the weights equal one process's within float rounding. See docs/scaling.md.

Command-line options override the config file. With ``--resume`` and no ``--config``, the run's own
``config.json`` is used; any option given must then agree with it (a resumed run must be the same run).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tomllib
from pathlib import Path

from amf.devices import CHOICES, device_arg
from amf.errors import AmfError
from amf.progress import interactive
from amf.training.run_folder import RunFolder


def negatable_settings() -> frozenset[str]:
    """The settings given as ``--X/--no-X`` (the bool fields of TrainConfig): a recorded command keeps their
    ``--no-X`` (:func:`amf.training.run_folder.args_to_argv`)."""
    from amf.training.config import TrainConfig

    return frozenset(f.name for f in dataclasses.fields(TrainConfig) if f.type == "bool")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from amf.training.config import TrainConfig

    p.add_argument("--config", type=Path,
                   help="TOML training config (e.g. configs/lite0-crop80.toml, the shipped recipe)")
    p.add_argument("--labels", type=Path, action="append", required=True,
                   help="labels CSV (AMi-Br or MIDOG 2025 format); repeat to train on several data sets at once, "
                        "each keeping its own format and domain column")
    p.add_argument("--images", type=Path, action="append",
                   help="image folder of the matching --labels (default: each CSV's folder); "
                        "give one per --labels, in order, or none")
    p.add_argument("--output", type=Path, help="run folder, e.g. runs/NAME (required, except with --list-folds)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output where it stopped")
    p.add_argument("--lodo-only", action="store_true",
                   help="train only the leave-one-domain-out folds (cross-domain estimate, nothing to ship): "
                        "--no-ensemble")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, value in TOML syntax, e.g. --set stain_sigma=0 (repeatable)")
    p.add_argument("--device", type=device_arg, default="cpu", help=f"{CHOICES} (default: cpu)")
    settings = p.add_argument_group("settings", "each overrides the config key of the same name (configs/*.toml)")
    for f in dataclasses.fields(TrainConfig):
        if f.type == "dict":
            continue  # a table: --set only
        flag = "--" + f.name.replace("_", "-")
        meta = f.metadata
        if f.type == "bool":
            settings.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=meta["help"])
            continue
        kind = {"int": int, "float": float, "float | None": _none_or_float}.get(f.type, str)
        settings.add_argument(flag, type=kind, choices=meta.get("choices"), default=None, help=meta["help"],
                              metavar=None if meta.get("choices") else f.name.upper())
    for role in ("image", "label", "domain", "group"):
        p.add_argument(f"--{role}-column", help=f"name of the {role} column (overrides the detected format)")
    p.add_argument("--list-folds", action="store_true",
                   help="print the run's fold ids, one per line, and stop (one job each with --fold)")
    p.add_argument("--fold", action="append", metavar="ID",
                   help="train only this fold (repeatable) into the shared run folder: folds as independent jobs")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _none_or_float(text: str) -> float | str:
    """A number, or ``none`` (kept as text: :meth:`TrainConfig.from_dict` and the check read it)."""
    return text if text.lower() == "none" else float(text)


def build_config(args: argparse.Namespace):
    from amf.training.config import TrainConfig

    run = RunFolder(args.output) if args.output else None
    if args.config is not None:
        cfg = TrainConfig.from_toml(args.config)
    elif args.resume and run is not None and run.is_run():
        cfg, _ = run.config()
    else:
        raise AmfError("--config is required (except with --resume of an existing run)")
    changes = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(TrainConfig)}
    if changes["focal_alpha"] == "none":  # replace() ignores None values: set it directly
        cfg, changes["focal_alpha"] = dataclasses.replace(cfg, focal_alpha=None), None
    if args.lodo is False and args.lodo_only:
        raise AmfError("--no-lodo and --lodo-only exclude each other")
    if args.lodo_only:
        changes["ensemble"] = False
    changes.update(parse_overrides(args.set))
    return cfg.replace(**changes)


def parse_overrides(items: list[str]) -> dict:
    """``["stain_sigma=0", "arch='efficientvit_b1'"]`` -> config changes; values are TOML (bare words are strings)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise AmfError(f"--set wants KEY=VALUE, got {item!r}")
        key = key.strip()
        try:
            out[key] = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = value.strip()  # a bare word: a string
    from amf.training.config import TrainConfig

    unknown = sorted(set(out) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise AmfError(f"--set: unknown config key(s): {', '.join(unknown)}")
    return out


def check(args: argparse.Namespace) -> None:
    """The paths, before torch is imported (several seconds): a mistyped file fails at once."""
    if args.output is None and not args.list_folds:
        raise AmfError("--output is required (the run folder, e.g. runs/NAME)")
    if args.config is not None and not args.config.is_file():
        raise AmfError(f"config file not found: {args.config} (see configs/*.toml)")
    if args.config is None and not (args.resume and args.output and RunFolder(args.output).is_run()):
        raise AmfError("--config is required (except with --resume of an existing run)")
    for labels in args.labels:
        if not labels.is_file():
            raise AmfError(f"labels file not found: {labels}")
    for images in args.images or []:
        if not images.is_dir():
            raise AmfError(f"image folder not found: {images}")
    if args.images is not None and len(args.images) != len(args.labels):
        raise AmfError(f"{len(args.labels)} --labels file(s) but {len(args.images)} --images folder(s): give one "
                       "--images per --labels, in the same order, or none")


def run(args: argparse.Namespace) -> int:
    check(args)
    from amf.training.run_folder import args_to_argv
    from amf.training.train import TrainOptions, train_run

    cfg = build_config(args)
    columns = {r: getattr(args, f"{r}_column") for r in ("image", "label", "domain", "group")}
    run = RunFolder(args.output) if args.output else None
    if args.resume and run is not None and run.is_run():
        # Column overrides and image folders are part of the run: reuse the recorded ones unless given.
        recorded, images = run.inputs(len(args.labels))
        for k, v in recorded.items():
            columns[k] = columns.get(k) or v
        if args.images is None:
            args.images = images
    if args.list_folds:
        from amf.training.train import plan

        print("\n".join(plan(cfg, args.labels, args.images, columns)))
        return 0
    from amf.training import distributed

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS: set before CUDA starts
    world = distributed.start(args.device)
    if world.main:
        from amf.devices import resolve

        print(f"amf train: {resolve(args.device)[1]}, {cfg.threads or 'default'} thread(s) per process",
              file=sys.stderr)
    try:
        options = TrainOptions(resume=args.resume, device=args.device, progress=not args.no_progress and interactive(),
                               only=args.fold, world=world, command=[sys.executable, *sys.argv],
                               arguments=args_to_argv("train", args, negatable=negatable_settings()),
                               config_path=args.config)
        summary = train_run(cfg, args.labels, args.output, images_dir=args.images, columns=columns, options=options)
    except KeyboardInterrupt:
        labels = " ".join(f"--labels {p}" for p in args.labels)
        print(f"\ninterrupted; continue with: python -m amf train --resume --output {args.output} {labels}",
              file=sys.stderr)
        return 130
    finally:
        distributed.stop(world)
    if not world.main:
        return 0
    if summary is None:
        print(f"fold(s) {', '.join(args.fold)} done in {args.output}; summary.json comes with the last fold")
        return 0
    all_ = summary.get("all")
    if all_ is not None:
        print(f"run {args.output}: all-domains OOF n={all_['oof']['n']} AUC={_fmt(all_['oof'].get('auc'))} "
              f"BA@0.5={_fmt(all_['oof'].get('balanced_accuracy@0.5'))}")
        for m, c in all_["thresholds"].items():
            print(f"  threshold {m:<17} {c['value']:.4f}  OOF BA {c['oof_balanced_accuracy']:.4f}")
    for domain, d in summary["lodo"].items():
        e = d["heldout_ensemble"]
        print(f"  held out {domain!r}: n={e['n']} AUC={_fmt(e.get('auc'))} BA@0.5={_fmt(e['balanced_accuracy@0.5'])} "
              f"BA@{cfg.threshold_method}={_fmt(e[f'balanced_accuracy@{cfg.threshold_method}'])}")
    print(f"summary: {args.output / 'summary.json'}")
    return 0


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"
