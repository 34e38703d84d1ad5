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
import json
import sys
import tomllib
from pathlib import Path

from amf.devices import CHOICES, device_arg
from amf.errors import AmfError
from amf.progress import interactive


def add_arguments(p: argparse.ArgumentParser) -> None:
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
    p.add_argument("--no-lodo", action="store_true", help="train only the all-domains folds (the shipped ensemble)")
    p.add_argument("--lodo-only", action="store_true",
                   help="train only the leave-one-domain-out folds (cross-domain estimate, nothing to ship)")
    p.add_argument("--fold-limit", type=int, help="train only folds 0..N-1 of each k-fold (cheap ablations)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, value in TOML syntax, e.g. --set stain_sigma=0 (repeatable)")
    p.add_argument("--folds", type=int, help="k of the k-fold")
    p.add_argument("--epochs", type=int, help="training epochs per fold (config key epochs)")
    p.add_argument("--batch-size", type=int, help="training batch size (config key batch_size)")
    p.add_argument("--lr", type=float, help="peak AdamW learning rate after warm-up (config key lr)")
    p.add_argument("--seed", type=int, help="seed of the splits, initialisation, sampling and augmentation")
    p.add_argument("--arch", help="any timm model name (weights are never downloaded)")
    p.add_argument("--preset", choices=["paper", "cpu"], help="model preset: sets arch and input size")
    p.add_argument("--input-size", type=int, help="backbone input side in pixels")
    p.add_argument("--init-weights", type=Path, help="local backbone weights (.safetensors or torch checkpoint)")
    p.add_argument("--device", type=device_arg, default="cpu", help=f"{CHOICES} (default: cpu)")
    p.add_argument("--threads", type=int, help="torch CPU threads (0 = torch default)")
    p.add_argument("--limit", type=int, help="use only N patches, spread over domains and classes (tiny runs)")
    p.add_argument("--threshold-method", choices=["balanced_accuracy", "youden", "otsu"])
    p.add_argument("--note", help="free text carried into the export's provenance")
    for role in ("image", "label", "domain", "group"):
        p.add_argument(f"--{role}-column", help=f"name of the {role} column (overrides the detected format)")
    p.add_argument("--list-folds", action="store_true",
                   help="print the run's fold ids, one per line, and stop (one job each with --fold)")
    p.add_argument("--fold", action="append", metavar="ID",
                   help="train only this fold (repeatable) into the shared run folder: folds as independent jobs")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_config(args: argparse.Namespace):
    from amf.training.run_folder import load_run_config
    from amf.training.config import TrainConfig

    if args.config is not None:
        cfg = TrainConfig.from_toml(args.config)
    elif args.resume and args.output and (args.output / "config.json").is_file():
        cfg, _ = load_run_config(args.output)
    else:
        raise AmfError("--config is required (except with --resume of an existing run)")
    changes = {
        "folds": args.folds,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "preset": args.preset,
        "arch": args.arch,
        "input_size": args.input_size,
        "init_weights": str(args.init_weights) if args.init_weights else None,
        "threads": args.threads,
        "limit": args.limit,
        "threshold_method": args.threshold_method,
        "note": args.note,
        "fold_limit": args.fold_limit,
    }
    if args.no_lodo and args.lodo_only:
        raise AmfError("--no-lodo and --lodo-only exclude each other")
    if args.no_lodo:
        changes["lodo"] = False
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
    if args.config is None and not (args.resume and args.output and (args.output / "config.json").is_file()):
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
    from amf.training.train import train_run

    cfg = build_config(args)
    columns = {r: getattr(args, f"{r}_column") for r in ("image", "label", "domain", "group")}
    if args.resume and args.output and (args.output / "config.json").is_file():
        # Column overrides and image folder are part of the run: reuse the recorded ones unless given.
        record = json.loads((args.output / "config.json").read_text())
        for k, v in record.get("column_overrides", {}).items():
            columns[k] = columns.get(k) or v
        if args.images is None and record.get("image_dirs"):
            args.images = [Path(d) if d else None for d in record["image_dirs"]]
        elif args.images is None and record.get("images_dir") and len(args.labels) == 1:  # runs before image_dirs
            args.images = [Path(record["images_dir"])]
    if args.list_folds:
        from amf.training.train import plan

        print("\n".join(plan(cfg, args.labels, args.images, columns)))
        return 0
    from amf.training import distributed

    world = distributed.start(args.device)
    if world.main:
        print(f"amf train: device {args.device}, {cfg.threads or 'default'} thread(s) per process", file=sys.stderr)
    try:
        summary = train_run(
            cfg,
            args.labels,
            args.output,
            images_dir=args.images,
            columns=columns,
            resume=args.resume,
            device=args.device,
            progress=not args.no_progress and interactive(),
            command=[sys.executable, *sys.argv],
            arguments=args_to_argv("train", args),
            only=args.fold,
            world=world,
            config_path=args.config,
        )
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
