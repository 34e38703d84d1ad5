"""Blended rows: leave-one-domain-out rows whose models are the union of other rows' models, scored without a model.

An ensemble of two rows' models scores each held-out figure with the mean of all their models' probabilities, as the
engine averages its members: each row's score on a figure is already the mean over its own models and views, so
the blend weighs each row by its number of models. A row of
:mod:`amf.training.crossval` commits, per held-out domain, its models' score of every held-out figure
(``heldout_<row>_<mode>.csv``) and the out-of-fold scores its threshold is chosen on (``oof_<row>_<mode>.csv``),
so a blend of rows follows from those files alone: the held-out scores averaged figure by figure, the out-of-fold
scores patch by patch (on the patches every source scored out of fold), and the thresholds chosen again on the
averaged out-of-fold scores, each domain still scored only by models that never saw it.

What a teacher of several architectures or seeds would give is measured this way before any student is trained on
it (issue 35), and so are two students averaged. The blend's files and its ``crossval.json`` row are written like
any row's, with the source files' sha256 as its provenance; ``amf audit`` recomputes the blend from its sources.
"""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import numpy as np

from amf.errors import AmfError
from amf.evaluation.report import plot_roc
from amf.files import read_json, sha256_file
from amf.provenance import git_state
from amf.training.crossval import (
    evaluate_heldout,
    heldout_file,
    merge_results,
    mode_tta,
    oof_file,
    parse_row,
    summarize_heldout,
    write_heldout_csv,
    write_oof_csv,
)
from amf.training.rescore import HeldOut, OutOfFold
from amf.training.threshold import threshold_candidates


def _read(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise AmfError(f"{path} not found: score that row with amf crossval first")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def source_files(folder: Path, spec: str) -> tuple[Path, Path]:
    """A source row's held-out and out-of-fold files (``ROW:MODE``, no threshold rule)."""
    heldout, rule = heldout_file(folder, spec)
    if rule:
        raise AmfError(f"a blended row averages scores; {spec!r} names a threshold rule")
    return heldout, oof_file(heldout)


def _members(record: dict, spec: str) -> dict[str, int]:
    row, mode, _ = parse_row(spec)
    entry = record.get(row, {}).get(mode)
    if entry is None:
        raise AmfError(f"crossval.json has no row {row} in mode {mode}")
    return {domain: d["members"] for domain, d in entry["domains"].items()}


def blended_domain(domain: str, heldout: list[list[dict]], oof: list[list[dict]], specs: list[str],
                   members: list[int]) -> HeldOut:
    """One held-out domain of the blend: the sources' rows of that domain, averaged image by image, each source
    weighted by its number of models (``members``)."""
    images = [r["image"] for r in heldout[0]]
    by_image = [{r["image"]: r for r in rows} for rows in heldout]
    if any(set(b) != set(images) for b in by_image):
        raise AmfError(f"held-out domain {domain!r}: the blended rows scored different figures")
    labels = np.array([by_image[0][i]["label"] == "atypical" for i in images], dtype=np.int64)
    probs = np.average([[float(b[i]["p_atypical"]) for i in images] for b in by_image], axis=0, weights=members)
    # the patches every source scored out of fold (a one-member row scores its one validation fold: the blend's
    # threshold is chosen on the patches that fold shares with the others; the row's oof_n says how many)
    oof_by_image = [{r["image"]: r for r in rows} for rows in oof]
    oof_images = [r["image"] for r in oof[0] if all(r["image"] in b for b in oof_by_image)]
    if not oof_images:
        raise AmfError(f"held-out domain {domain!r}: no patch is scored out of fold by every blended row")
    oof_probs = np.average([[float(b[i]["p_atypical"]) for i in oof_images] for b in oof_by_image], axis=0,
                           weights=members)
    oof_labels = np.array([oof_by_image[0][i]["label"] == "atypical" for i in oof_images], dtype=np.int64)
    # each out-of-fold patch was scored by one model of each source: the blend's "fold" names them together
    combos = [" + ".join(f"{spec} {b[i]['fold']}" for spec, b in zip(specs, oof_by_image, strict=True))
              for i in oof_images]
    folds = list(dict.fromkeys(combos))
    out_of_fold = OutOfFold(np.array(oof_images), np.array([folds.index(c) for c in combos]), oof_labels, oof_probs)
    return HeldOut(domain, sum(members), images, labels, probs, out_of_fold,
                   threshold_candidates(oof_probs, oof_labels), folds)


def blended_rows(output: Path, specs: list[str]) -> tuple[list[HeldOut], str, str, list[tuple[Path, Path]]]:
    """The blend of ``specs`` in memory: its held-out domains, the threshold method, the mode, and the source
    files."""
    output = Path(output)
    if len(specs) < 2:
        raise AmfError("a blend needs two rows or more")
    modes = {parse_row(s)[1] for s in specs}
    if len(modes) != 1:
        raise AmfError(f"the blended rows must share a mode (TTA views), not {', '.join(sorted(modes))}")
    mode = modes.pop()
    results_path = output / "crossval.json"
    record = read_json(results_path, AmfError) if results_path.is_file() else {}
    members = [_members(record, s) for s in specs]
    files = [source_files(output, s) for s in specs]
    heldout_rows = [_read(h) for h, _ in files]
    oof_rows = [_read(o) for _, o in files]
    domains = [d for d in dict.fromkeys(r["domain"] for r in heldout_rows[0]) if all(d in m for m in members)]
    heldout = [blended_domain(d, [[r for r in rows if r["domain"] == d] for rows in heldout_rows],
                              [[r for r in rows if r["heldout_domain"] == d] for rows in oof_rows], specs,
                              [m[d] for m in members]) for d in domains]
    method = next(iter(record[parse_row(specs[0])[0]][mode]["domains"].values()))["threshold"]["method"]
    return heldout, method, mode, files


def blend(output: Path, name: str, specs: list[str], n_resamples: int = 1000) -> dict:
    """Write the blend of ``specs`` (``ROW:MODE``, two or more, one mode) as row ``name`` of ``output``'s
    ``crossval.json``, with its held-out and out-of-fold files and ROC curve; returns the results. The blend covers
    the held-out domains every source scored."""
    output = Path(output)
    scored_git = git_state()  # before this command writes anything
    heldout, method, mode, files = blended_rows(output, specs)
    ev = evaluate_heldout(heldout, method, f"blend of {', '.join(specs)}, held-out domains", n_resamples)
    write_heldout_csv(output / f"heldout_{name}_{mode}.csv", heldout, method)
    provenance = {
        "blend": [{"row": spec, "heldout": {"file": h.name, "sha256": sha256_file(h)},
                   "oof": {"file": o.name, "sha256": sha256_file(o)}}
                  for spec, (h, o) in zip(specs, files, strict=True)],
        "oof_scores": write_oof_csv(output / f"oof_{name}_{mode}.csv", heldout),
        "scored_git": scored_git,
    }
    entry = {"blend": specs, "tta": mode_tta(mode).to_dict(), "bootstrap": n_resamples,
             **summarize_heldout(heldout, ev, method), "provenance": provenance}
    plot_roc(ev, output / f"roc_{name}_{mode}.png")
    return merge_results(output, {name: {mode: entry}})


def verify(output: Path, name: str, mode: str, entry: dict) -> list[str]:
    """What differs between a blended row's files and its sources now: a source file that is not the one the
    blend was made of, or a blend file that the sources do not give again, byte for byte (``amf audit``)."""
    output = Path(output)
    problems = []
    for source in entry["provenance"]["blend"]:
        for kind in ("heldout", "oof"):
            path = output / source[kind]["file"]
            if not path.is_file() or sha256_file(path) != source[kind]["sha256"]:
                problems.append(f"{path} is not the file the blend was made of")
    if problems:
        return problems
    heldout, method, _, _ = blended_rows(output, entry["blend"])
    with tempfile.TemporaryDirectory(prefix="amf-blend-") as tmp:
        again = {"heldout": Path(tmp) / "heldout.csv", "oof": Path(tmp) / "oof.csv"}
        write_heldout_csv(again["heldout"], heldout, method)
        write_oof_csv(again["oof"], heldout)
        for kind, path in again.items():
            written = output / f"{kind}_{name}_{mode}.csv"
            if not written.is_file() or written.read_bytes() != path.read_bytes():
                problems.append(f"{written} is not the blend of {', '.join(entry['blend'])}")
    return problems
