"""Leave-one-domain-out results of training runs, scored like the container (``amf crossval``,
:mod:`amf.training.crossval_cli`).

Training already writes single-view held-out predictions (``heldout.csv``). This module rescores every
held-out domain the way ``process.py`` scores a stack (:mod:`amf.training.rescore`), with or without
test-time augmentation, so "TTA on vs off" is measured on the same models. For each held-out domain:

* the ensemble is that domain's LODO folds (their best epochs): models that never saw the domain, not
  even unlabelled;
* its threshold is chosen on those folds' out-of-fold predictions (validation patches of the *training*
  domains, scored with the same TTA), with the run's threshold method; Otsu's threshold on the same
  scores is reported next to it;
* the held-out figures are scored with the evaluator's code (:func:`amf.evaluation.analysis.evaluate`):
  the official metrics, bootstrap 95% intervals and the ROC plot.

The headline of a run is the mean over held-out domains of balanced accuracy (at the OOF threshold) and
ROC AUC, as in the paper's leave-one-domain-out protocol. Outputs, in ``--output``:
``crossval.json`` (everything, with each row's provenance: config, data fingerprint, commits, jobs),
``crossval.md`` (tables), ``roc_<run>_<tta|plain>.png``, ``heldout_<run>_<tta|plain>.csv`` (one row per
held-out figure), ``gallery_<run>_tta/`` (the error gallery with the shipped views: the misclassified figures
and the calls nearest the threshold, per domain), ``oof_<run>_<tta|plain>.csv`` (the out-of-fold scores each
domain's threshold was chosen on) and ``membership_<run>.csv`` (each patch's role in each of the row's models,
as training recorded it). Runs scored earlier into the same folder stay in its tables, so an ablation can be
scored row by row as its runs finish.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import sys
from pathlib import Path

import numpy as np

from amf.errors import AmfError
from amf.evaluation.analysis import Evaluation, Scope, evaluate
from amf.evaluation.figures import Figures
from amf.evaluation.metrics import classification_metrics
from amf.evaluation.report import plot_roc
from amf.evaluation.summary import ci_text, num_text
from amf.files import atomic_write_bytes, json_safe, sha256_file, write_json
from amf.inference.spec import TTAConfig
from amf.provenance import git_state
from amf.training.rescore import HeldOut, PatchCache, score_run
from amf.training.run_folder import MEMBERSHIP, RunFolder, read_membership, write_membership_table
from amf.training.threshold import mean_class_recall, otsu_threshold, transfer_thresholds

#: Test-time augmentation modes: the shipped default views, and the plain image alone.
MODES: dict[str, TTAConfig] = {"tta": TTAConfig(), "plain": TTAConfig(views=1)}


#: The suffix of a mode scored with bf16 autocast (``tta-bf16``): what the engine's opt-in bf16 costs in accuracy.
BF16 = "-bf16"


def mode_tta(mode: str) -> TTAConfig:
    """``tta``, ``plain``, or ``views<N>``: the shipped views cut to the first N (for accuracy vs latency); each
    may end in ``-bf16``, the same views in bf16 autocast."""
    base = mode.removesuffix(BF16)
    if base in MODES:
        return MODES[base]
    if base.startswith("views") and base[5:].isdigit() and int(base[5:]) >= 1:
        return TTAConfig(views=int(base[5:]))
    raise AmfError(f"unknown TTA mode {mode!r}: use tta, plain or views<N>, each optionally ending in {BF16}")


def mode_bf16(mode: str) -> bool:
    """Whether ``mode`` is scored in bf16 autocast (fp32 otherwise, as the container)."""
    return mode.endswith(BF16)


def evaluate_heldout(heldout: list[HeldOut], method: str, source: str, n_resamples: int) -> Evaluation:
    """The evaluator's view of the held-out figures, each classified at its own domain's OOF threshold."""
    labels = np.concatenate([h.labels for h in heldout])
    scores = np.concatenate([h.probs for h in heldout])
    preds = np.concatenate([(h.probs >= h.thresholds[method]["value"]).astype(np.int64) for h in heldout])
    domains = np.concatenate([np.full(len(h.labels), h.domain, dtype=object) for h in heldout]).astype(str)
    return evaluate(Figures(labels, preds, scores, domains, source), n_resamples=n_resamples)


def _scope_record(scope: Scope) -> dict:
    return {
        "n": scope.confusion.n,
        "atypical": scope.n_atypical,
        **json_safe(dict(scope.metrics)),  # an undefined AUC (one class) -> null
        "balanced_accuracy_ci95": _interval(scope.balanced_accuracy_ci),
        "roc_auc_ci95": _interval(scope.roc.auc if scope.roc else None),
    }


def _interval(ci) -> list[float] | None:
    return None if ci is None else [ci.low, ci.high]


def summarize_heldout(heldout: list[HeldOut], evaluation: Evaluation, method: str) -> dict:
    """JSON-ready results of one run and mode: per domain, pooled, and the mean over domains.

    Next to each domain's own OOF threshold, two thresholds meant to transfer to an unseen domain
    (:mod:`amf.training.threshold`): the one cut that maximises the mean held-out balanced accuracy over all
    domains (``transfer``, what ``export --threshold-from`` ships; chosen with these labels, so slightly
    optimistic here), and for each domain the cut chosen on the *other* held-out domains alone
    (``transfer_nested``, the honest estimate of how that choice does on a new domain).
    """
    transfer, nested = transfer_thresholds([(h.probs, h.labels) for h in heldout])
    domains = {}
    for h, scope, t_nested in zip(heldout, evaluation.domains, nested, strict=True):
        otsu = h.thresholds["otsu"]["value"]
        domains[h.domain] = {
            **_scope_record(scope),
            "members": h.members,
            "threshold": {"method": method, "value": h.thresholds[method]["value"], "otsu": otsu,
                          "oof_n": h.oof_n},
            "balanced_accuracy_at_otsu": mean_class_recall(h.probs, h.labels, otsu),
            "balanced_accuracy_at_0.5": mean_class_recall(h.probs, h.labels, 0.5),
            "balanced_accuracy_at_transfer": mean_class_recall(h.probs, h.labels, transfer),
            "transfer_nested_threshold": t_nested,
            "balanced_accuracy_at_transfer_nested":
                None if t_nested is None else mean_class_recall(h.probs, h.labels, t_nested),
            "best_threshold_balanced_accuracy": scope.best.balanced_accuracy if scope.best else None,
        }
    aucs = [d["roc_auc"] for d in domains.values() if d["roc_auc"] is not None]
    return {
        "domains": domains,
        "pooled": _scope_record(evaluation.overall),
        "mean": {
            "balanced_accuracy": float(np.mean([d["balanced_accuracy"] for d in domains.values()])),
            "roc_auc": float(np.mean(aucs)) if aucs else None,
            "sensitivity": float(np.mean([d["sensitivity"] for d in domains.values()])),
            "specificity": float(np.mean([d["specificity"] for d in domains.values()])),
            "balanced_accuracy_at_otsu": float(np.mean([d["balanced_accuracy_at_otsu"] for d in domains.values()])),
            "balanced_accuracy_at_transfer": _mean(domains, "balanced_accuracy_at_transfer"),
            "balanced_accuracy_at_transfer_nested": _mean(domains, "balanced_accuracy_at_transfer_nested"),
            "best_threshold_balanced_accuracy": _mean(domains, "best_threshold_balanced_accuracy"),
        },
        "transfer_threshold": transfer,
    }


def _mean(domains: dict, key: str) -> float | None:
    values = [d[key] for d in domains.values() if d.get(key) is not None]
    return float(np.mean(values)) if values else None


def write_heldout_csv(path: Path, heldout: list[HeldOut], method: str) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "domain", "label", "p_atypical", "threshold", "class"])
    for h in heldout:
        t = h.thresholds[method]["value"]
        for image, y, p in zip(h.images, h.labels.tolist(), h.probs.tolist(), strict=True):
            w.writerow([image, h.domain, "atypical" if y else "normal", repr(float(p)), repr(float(t)),
                        "atypical" if p >= t else "normal"])
    atomic_write_bytes(path, buf.getvalue().encode())


def write_heldout_gallery(folder: Path, heldout: list[HeldOut], method: str, patches: PatchCache, title: str) -> Path:
    """The error gallery of the held-out figures (:mod:`amf.evaluation.gallery`), each at its domain's OOF
    threshold; only the figures shown are read."""
    from amf.evaluation.gallery import Calls, write_gallery

    images = [image for h in heldout for image in h.images]
    thresholds = np.concatenate([np.full(len(h.labels), h.thresholds[method]["value"]) for h in heldout])
    probs = np.concatenate([h.probs for h in heldout])
    calls = Calls(images, np.concatenate([h.labels for h in heldout]), (probs >= thresholds).astype(np.int64), probs,
                  np.concatenate([np.full(len(h.labels), h.domain, dtype=object) for h in heldout]), thresholds)
    return write_gallery(folder, calls, lambda i: patches([images[i]])[0], title=title)


def write_oof_csv(path: Path, heldout: list[HeldOut]) -> dict:
    """``oof_<run>_<mode>.csv``: the out-of-fold scores each held-out domain's threshold was chosen on (the
    validation patches of its training domains, each scored by the one model that never trained on it), so
    the per-domain thresholds can be re-derived from the committed files."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["heldout_domain", "image", "label", "fold", "p_atypical"])
    for h in heldout:
        for image, k, y, p in zip(h.oof.images.tolist(), h.oof.member.tolist(), h.oof.labels.tolist(),
                                  h.oof.probs.tolist(), strict=True):
            w.writerow([h.domain, image, "atypical" if y else "normal", h.folds[k], repr(float(p))])
    atomic_write_bytes(path, buf.getvalue().encode())
    return {"file": path.name, "sha256": sha256_file(path)}


def write_membership_csv(path: Path, run: Path, heldout: list[HeldOut]) -> dict | None:
    """``membership_<run>.csv``: per patch (image, sha256, domain, group, label) its role in every model of the
    row (``train``, ``val``, ``heldout`` or empty), as training recorded it in each fold's ``membership.csv``;
    None when the run was trained before training recorded it."""
    folds = [f for h in heldout for f in h.folds]
    dirs = [RunFolder(run).fold(f) / MEMBERSHIP for f in folds]
    if not all(d.is_file() for d in dirs):
        return None
    write_membership_table(path, folds, [read_membership(d) for d in dirs])
    return {"file": path.name, "sha256": sha256_file(path)}


def run_provenance(run: Path, record: dict, scored_git: dict) -> dict:
    """What made a row, as its run folder recorded it: config (and the file it came from), data fingerprint,
    the commit and dirty state and environment of every training job; and the scoring's own code state
    (``scored_git``, taken when the command started: the files it writes as it goes are not a dirty tree)."""
    return {
        "config": record["config"],
        "config_file": record.get("config_file"),
        "data": record["data"],
        "git": record.get("git") or {"commit": record.get("git_commit"), "dirty": None, "changes": []},
        "environment": record.get("environment"),
        "jobs": RunFolder(run).jobs(),
        "scored_git": scored_git,
    }


def markdown(results: dict, folder: Path | None = None) -> str:
    """An ablation table (one row per run and mode), the threshold rules (with the per-figure files of
    ``folder``, the crossval output, when given) and one leave-one-domain-out table per run and mode."""
    lines = ["## Ablation: mean over held-out domains", "", *ablation_table(results),
             "", "## Threshold rules: mean BA and the widest miss of the hindsight-best cut", "",
             *threshold_rules_table(results, folder)]
    for run, modes in results.items():
        for mode, r in modes.items():
            lines += ["", f"## {run}, TTA {_tta_text(mode)}: each domain held out", "", *domain_table(r)]
    return "\n".join(lines) + "\n"


def ablation_table(results: dict) -> list[str]:
    """One row per run and mode: the means over held-out domains (the markdown lines, no final newline). The last
    column says whether the row's provenance (models' memberships, jobs, commits) was recorded, which is what
    ``amf audit`` checks its leakage and provenance from."""
    lines = ["| run | TTA | held-out domains | models per domain | mean BA (OOF threshold) | mean AUC "
             "| mean BA (Otsu) | mean BA (transfer, nested) | mean BA (transfer) | transfer threshold "
             "| mean BA (hindsight-best) | mean sensitivity | mean specificity | provenance |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run, modes in results.items():
        recorded = "recorded" if any(r.get("provenance") for r in modes.values()) else "not recorded"
        for mode, r in modes.items():
            members = sorted({d["members"] for d in r["domains"].values()})
            m = r["mean"]
            lines.append(f"| {run} | {_tta_text(mode)} | {len(r['domains'])} "
                         f"| {'/'.join(map(str, members))} "
                         f"| {num_text(m['balanced_accuracy'])} | {num_text(m['roc_auc'])} "
                         f"| {num_text(m['balanced_accuracy_at_otsu'])} "
                         f"| {num_text(m.get('balanced_accuracy_at_transfer_nested'))} "
                         f"| {num_text(m.get('balanced_accuracy_at_transfer'))} "
                         f"| {num_text(r.get('transfer_threshold'))} "
                         f"| {num_text(m.get('best_threshold_balanced_accuracy'))} | {num_text(m['sensitivity'])} "
                         f"| {num_text(m['specificity'])} | {recorded} |")
    return lines


#: The cuts every crossval entry scores, each with the per-domain key of its balanced accuracy. All are chosen
#: without the held-out domain's labels: on its models' out-of-fold scores (max BA, Otsu), fixed, or on the
#: other held-out domains (nested transfer).
THRESHOLD_RULES = {"OOF max-BA": "balanced_accuracy", "Otsu on OOF": "balanced_accuracy_at_otsu",
                   "0.5": "balanced_accuracy_at_0.5", "nested transfer": "balanced_accuracy_at_transfer_nested"}
#: One more label-free rule, computed from the per-figure files: Otsu's cut on the held-out domain's own scores,
#: which a new lab can choose from its own unlabelled figures (transductive: it needs many figures of the lab).
OWN_OTSU = "Otsu on the domain's own scores"
#: Issue 24's target: a cut within this of the hindsight-best balanced accuracy on every held-out domain.
MISS_TARGET = 0.03


def own_otsu_balanced_accuracy(path: Path) -> dict[str, float]:
    """Per held-out domain of a ``heldout_<run>_<mode>.csv``: the balanced accuracy at Otsu's cut on that
    domain's own scores (:data:`OWN_OTSU`); empty when the file is not there."""
    if not Path(path).is_file():
        return {}
    d = read_heldout_csv(path)
    out = {}
    for domain in np.unique(d["domain"]):
        rows = d["domain"] == domain
        s, y = d["score"][rows], d["label"][rows]
        out[str(domain)] = mean_class_recall(s, y, otsu_threshold(s))
    return out


def threshold_rules_table(results: dict, folder: Path | None = None) -> list[str]:
    """Which threshold rule transfers to a domain it never saw: for every run and mode, each rule's mean BA
    over the held-out domains and its widest miss (the hindsight-best BA minus the BA at the rule's cut, and
    on which domain). With ``folder`` (the crossval output, holding each row's per-figure file) the table adds
    :data:`OWN_OTSU`. The last line counts the rows each rule keeps within :data:`MISS_TARGET` on every
    domain."""
    rules = [*THRESHOLD_RULES, *([OWN_OTSU] if folder is not None else [])]
    lines = ["| run | TTA | " + " | ".join(f"{r}: mean BA | {r}: widest miss" for r in rules) + " |",
             "|---|---|" + "---|---|" * len(rules)]
    within = dict.fromkeys(rules, 0)
    count = 0
    for run, modes in results.items():
        for mode, r in modes.items():
            domains = r["domains"]
            if len(domains) < 2:  # a row scored on one held-out domain has no nested transfer, no spread
                continue
            count += 1
            at = {rule: {name: d.get(key) for name, d in domains.items()} for rule, key in THRESHOLD_RULES.items()}
            if folder is not None:
                at[OWN_OTSU] = own_otsu_balanced_accuracy(Path(folder) / f"heldout_{run}_{mode}.csv")
            cells = []
            for rule in rules:
                ba = {name: v for name, v in at[rule].items() if v is not None}
                misses = {name: domains[name]["best_threshold_balanced_accuracy"] - v for name, v in ba.items()
                          if domains[name].get("best_threshold_balanced_accuracy") is not None}
                if not misses:
                    cells.append("n/a | n/a")
                    continue
                worst = max(misses, key=misses.get)
                within[rule] += misses[worst] <= MISS_TARGET
                cells.append(f"{num_text(float(np.mean(list(ba.values()))))} | {misses[worst]:.3f} ({worst})")
            lines.append(f"| {run} | {_tta_text(mode)} | " + " | ".join(cells) + " |")
    lines.append(f"| rows within {MISS_TARGET} on every domain | | "
                 + " | ".join(f"| {within[r]} of {count}" for r in rules) + " |")
    return lines


def domain_table(r: dict) -> list[str]:
    """One run and mode: each held-out domain and the pooled figures (the markdown lines)."""
    lines = ["| held-out domain | figures (atypical) | BA [95% CI] | AUC [95% CI] | sensitivity "
             "| specificity | threshold (OOF) | Otsu threshold | BA at Otsu | nested transfer threshold "
             "| BA at nested transfer | BA at transfer threshold | BA at hindsight-best threshold |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, d in [*r["domains"].items(), ("pooled", r["pooled"])]:
        t = d.get("threshold")
        lines.append(
            f"| {name} | {d['n']} ({d['atypical']}) | {num_text(d['balanced_accuracy'])} "
            f"[{_ci(d['balanced_accuracy_ci95'])}] | {num_text(d['roc_auc'])} [{_ci(d['roc_auc_ci95'])}] "
            f"| {num_text(d['sensitivity'])} | {num_text(d['specificity'])} "
            f"| {num_text(t['value']) if t else ''} | {num_text(t['otsu']) if t else ''} "
            f"| {num_text(d['balanced_accuracy_at_otsu']) if t else ''} "
            f"| {num_text(d.get('transfer_nested_threshold')) if t else ''} "
            f"| {num_text(d.get('balanced_accuracy_at_transfer_nested')) if t else ''} "
            f"| {num_text(d.get('balanced_accuracy_at_transfer')) if t else ''} "
            f"| {num_text(d['best_threshold_balanced_accuracy']) if t else ''} |")
    m = r["mean"]
    lines.append(f"| mean of the {len(r['domains'])} domains | | {num_text(m['balanced_accuracy'])} "
                 f"| {num_text(m['roc_auc'])} | {num_text(m['sensitivity'])} | {num_text(m['specificity'])} | | "
                 f"| {num_text(m['balanced_accuracy_at_otsu'])} | "
                 f"| {num_text(m.get('balanced_accuracy_at_transfer_nested'))} "
                 f"| {num_text(m.get('balanced_accuracy_at_transfer'))} "
                 f"| {num_text(m.get('best_threshold_balanced_accuracy'))} |")
    return lines


def _say_missing(run: Path, cfg, finished: dict[str, list[Path]]) -> None:
    """Name the LODO folds the run plans but has not finished (they are left out of its ensembles)."""
    planned = [f"fold{k}" for k in range(cfg.fold_limit or cfg.folds)]
    for domain, dirs in sorted(finished.items()):
        missing = [f for f in planned if f not in {d.name for d in dirs}]
        if missing:
            print(f"amf crossval: note: {run}: held-out {domain} has {len(dirs)} of {len(planned)} folds finished "
                  f"(missing {', '.join(missing)}); its ensemble is the finished ones", file=sys.stderr)


def _tta_text(mode: str) -> str:
    base = mode.removesuffix(BF16)
    text = {"tta": "on", "plain": "off"}.get(base, base.replace("views", "") + " views")
    return text + (", bf16" if mode_bf16(mode) else "")


def _ci(pair: list[float] | None) -> str:
    return ci_text(None) if pair is None else f"{pair[0]:.3f}-{pair[1]:.3f}"


def crossval(runs: list[Path], output: Path, modes: list[str], n_resamples: int = 1000,
             threads: int | None = None, progress: bool = False, rescore: bool = False) -> dict:
    """Score ``runs`` in every mode of ``modes`` into ``output``; returns the results.

    Results already in ``output/crossval.json`` are kept, so an ablation table can grow one run at a
    time; an entry is scored again only when its run's finished folds, TTA or bootstrap size changed, or
    with ``rescore``. Several crossval jobs may score into one folder at once: each merges only the entries
    it scored into the file as it is when it finishes (:func:`merge_results`).
    """
    scored_git = git_state()  # before this command writes anything
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    previous = output / "crossval.json"
    results: dict[str, dict] = json.loads(previous.read_text()) if previous.is_file() else {}
    names = [Path(run).name for run in runs]
    if len(set(names)) < len(names):
        raise AmfError(f"two runs share a folder name ({', '.join(names)}); give them distinct names")
    caches: dict[str, PatchCache] = {}  # one per image folder: runs and modes share the decoded patches
    scored: dict[str, dict] = {}  # what this call scored: run -> mode -> entry
    for run, name in zip(runs, names, strict=True):
        folder = RunFolder(run)
        cfg, record = folder.config()
        method = cfg.threshold_method
        patches = caches.setdefault(record["images_dir"], PatchCache(record["images_dir"]))
        finished = folder.lodo_folds()
        _say_missing(run, cfg, finished)
        folds = sorted(folder.fold_name(d) for dirs in finished.values() for d in dirs)
        entry = results.setdefault(name, {})
        for mode in modes:
            key = {"run": str(run), "folds": folds, "tta": mode_tta(mode).to_dict(), "bootstrap": n_resamples}
            if mode_bf16(mode):  # fp32 entries, all scored before precision was a choice, keep their keys
                key["precision"] = "bf16"
            if not rescore and all(entry.get(mode, {}).get(k) == v for k, v in key.items()):
                continue
            heldout = score_run(run, mode_tta(mode), patches, threads, progress, desc=f"{name} [{mode}]",
                                bf16=mode_bf16(mode))
            ev = evaluate_heldout(heldout, method, f"{run} held-out domains, TTA {mode}", n_resamples)
            provenance = {**run_provenance(run, record, scored_git),
                          "membership": write_membership_csv(output / f"membership_{name}.csv", run, heldout),
                          "oof_scores": write_oof_csv(output / f"oof_{name}_{mode}.csv", heldout)}
            entry[mode] = scored.setdefault(name, {})[mode] = {**key, **summarize_heldout(heldout, ev, method),
                                                               "provenance": provenance}
            plot_roc(ev, output / f"roc_{name}_{mode}.png")
            write_heldout_csv(output / f"heldout_{name}_{mode}.csv", heldout, method)
            if mode == "tta":  # the shipped scoring only: a gallery is a few MB of lossless sheets
                write_heldout_gallery(output / f"gallery_{name}_{mode}", heldout, method, patches,
                                      f"Error gallery: {name}, TTA {_tta_text(mode)}, each domain held out")
    return merge_results(output, scored)


def merge_results(output: Path, scored: dict[str, dict]) -> dict:
    """Put the entries of ``scored`` (run -> mode -> entry) into ``output/crossval.json`` as it is now, and
    write it and crossval.md again. The folder is locked meanwhile, so a crossval job that finished since this
    one started keeps its rows (without the merge, the last job to finish would drop the others' rows)."""
    fd = os.open(output, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        path = output / "crossval.json"
        results: dict[str, dict] = json.loads(path.read_text()) if path.is_file() else {}
        for name, modes in scored.items():
            results.setdefault(name, {}).update(modes)
        write_json(path, results)
        atomic_write_bytes(output / "crossval.md", markdown(results, output).encode())
        return results
    finally:
        os.close(fd)  # releases the lock


def read_heldout_csv(path: Path) -> dict[str, np.ndarray]:
    """A ``heldout_<run>_<mode>.csv`` of :func:`write_heldout_csv`, sorted by image (so two runs line up)."""
    if not Path(path).is_file():
        raise AmfError(f"{path} not found: score that run and mode with amf crossval first")
    with open(path, newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["image"])
    return {"image": np.array([r["image"] for r in rows]), "domain": np.array([r["domain"] for r in rows]),
            "label": np.array([r["label"] == "atypical" for r in rows], dtype=np.int64),
            "score": np.array([float(r["p_atypical"]) for r in rows]),
            "threshold": np.array([float(r["threshold"]) for r in rows]),
            "pred": np.array([r["class"] == "atypical" for r in rows], dtype=np.int64)}


def _domain_scores(d: dict[str, np.ndarray], idx: dict[str, np.ndarray]) -> list[tuple[float, float]]:
    """Each domain's official balanced accuracy (of the submitted classes) and ROC AUC (NaN for a domain of one
    class) on its rows ``idx``."""
    scores = [classification_metrics(d["label"][rows], d["pred"][rows], d["score"][rows]) for rows in idx.values()]
    return [(m["balanced_accuracy"], m["roc_auc"]) for m in scores]


def _mean_of(scores: list[tuple[float, float]]) -> tuple[float, float]:
    """The mean over domains of :func:`_domain_scores`, as the crossval tables average them (AUC over the domains
    that have one)."""
    aucs = [auc for _, auc in scores if auc == auc]
    return float(np.mean([ba for ba, _ in scores])), float(np.mean(aucs)) if aucs else float("nan")


def _mean_over_domains(d: dict[str, np.ndarray], idx: dict[str, np.ndarray]) -> tuple[float, float]:
    """Mean over domains of the official balanced accuracy and ROC AUC on the rows ``idx`` of each domain: what the
    crossval tables average."""
    return _mean_of(_domain_scores(d, idx))


def _bootstrap(stat, domains: dict[str, np.ndarray], n_resamples: int, seed: int
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """``stat`` on all rows of each domain, and its 95% interval over ``n_resamples`` draws of figures with
    replacement within each domain: ``(point, [low, high])``; no interval (None) for 0 draws."""
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_resamples):
        draws.append(stat({dom: rng.choice(rows, rows.size) for dom, rows in domains.items()}))
    return np.asarray(stat(domains)), np.percentile(np.array(draws), [2.5, 97.5], axis=0) if draws else None


def _bounds(interval: np.ndarray | None, i: int) -> list[float] | None:
    """Statistic ``i``'s ``[low, high]`` of a :func:`_bootstrap` interval (None without one)."""
    return None if interval is None else [float(interval[0][i]), float(interval[1][i])]


def mean_interval(path: Path, n_resamples: int = 1000, seed: int = 0) -> dict:
    """Mean held-out BA and AUC over the domains of one ``heldout_<row>_<mode>.csv``, as the tables give them,
    with a bootstrap 95% interval (figures resampled within each domain, as :func:`compare` does)."""
    d = read_heldout_csv(path)
    domains = {dom: np.flatnonzero(d["domain"] == dom) for dom in sorted(set(d["domain"]))}
    point, interval = _bootstrap(lambda idx: np.array(_mean_over_domains(d, idx)), domains, n_resamples, seed)
    return {"domains": list(domains), "resamples": n_resamples, "seed": seed,
            "balanced_accuracy": float(point[0]), "balanced_accuracy_ci95": _bounds(interval, 0),
            "roc_auc": float(point[1]), "roc_auc_ci95": _bounds(interval, 1)}


#: Threshold rules a compared row can be classified by (``ROW:MODE@RULE``; no suffix: its OOF max-BA cut, as scored).
#: ``otsu``: each domain's Otsu cut on the same out-of-fold scores, the rule a one-member export ships
#: (``amf export --threshold-method otsu``), re-derived from the committed ``oof_<row>_<mode>.csv``.
ROW_RULES = ("otsu",)


def parse_row(spec: str) -> tuple[str, str, str | None]:
    """``RUN:MODE`` or ``RUN:MODE@RULE`` (:data:`ROW_RULES`) as ``(run, mode, rule)``."""
    row, _, rule = spec.partition("@")
    run, sep, mode = row.rpartition(":")
    if not sep or not run or not mode or (rule and rule not in ROW_RULES):
        raise AmfError(f"a compared row is RUN_NAME:MODE or RUN_NAME:MODE@RULE (RULE one of {', '.join(ROW_RULES)}), "
                       f"got {spec!r}")
    return run, mode, rule or None


def heldout_file(folder: Path, spec: str) -> tuple[Path, str | None]:
    """The per-figure file of a compared row ``spec`` in a crossval folder, and its threshold rule."""
    run, mode, rule = parse_row(spec)
    return Path(folder) / f"heldout_{run}_{mode}.csv", rule


def oof_file(heldout_csv: Path) -> Path:
    """The out-of-fold scores beside a row's per-figure file (``oof_<row>_<mode>.csv``)."""
    return heldout_csv.with_name(heldout_csv.name.replace("heldout_", "oof_", 1))


def at_otsu(d: dict[str, np.ndarray], oof_csv: Path) -> dict[str, np.ndarray]:
    """``d`` (a :func:`read_heldout_csv`) classified at each domain's Otsu cut on its out-of-fold scores."""
    if not Path(oof_csv).is_file():
        raise AmfError(f"{oof_csv} not found: the Otsu rule needs the row's out-of-fold scores")
    with open(oof_csv, newline="") as f:
        oof = list(csv.DictReader(f))
    d = {**d, "threshold": d["threshold"].copy()}
    for domain in np.unique(d["domain"]):
        scores = np.array([float(r["p_atypical"]) for r in oof if r["heldout_domain"] == domain])
        if scores.size == 0:
            raise AmfError(f"{oof_csv} holds no out-of-fold scores for held-out domain {domain!r}")
        d["threshold"][d["domain"] == domain] = otsu_threshold(scores)
    d["pred"] = (d["score"] >= d["threshold"]).astype(np.int64)  # the class rule of every output
    return d


def compare(a_csv: Path, b_csv: Path, n_resamples: int = 1000, seed: int = 0, thresholds: str = "own",
            rules: tuple[str | None, str | None] = (None, None)) -> dict:
    """Mean held-out BA and AUC of B minus A on the same figures, with a paired bootstrap 95% interval.

    ``thresholds="a"`` classifies B's scores at A's thresholds, figure for figure, instead of B's own: what a
    change of the engine alone does to a model whose threshold was chosen without it (e.g. ``--bf16`` at
    prediction time against the fp32 threshold the weights ship with). ``rules`` classifies A or B by another
    rule of :data:`ROW_RULES` than its OOF max-BA cut (e.g. a student at the Otsu cut it ships with, against
    its teacher at the cut the teacher ships with).

    The rows are compared on the held-out domains that both scored, figure for figure (a row still being
    trained may have fewer domains; ``domains`` in the result names them). Each resample draws figures with
    replacement within each domain, the same draw for both rows, so what the two rows share (the figures,
    their labels) cancels out of the interval: it measures the lever, not the sample. ``per_domain`` gives each
    held-out domain's own differences and intervals, from the same draws: a lever can cost on the one domain from
    another lab (TUPAC16) what it gains on the three scanners.
    """
    a, b = (at_otsu(read_heldout_csv(path), oof_file(path))
            if rule == "otsu" else read_heldout_csv(path)
            for path, rule in zip((Path(a_csv), Path(b_csv)), rules, strict=True))
    shared = sorted(dom for dom in set(a["domain"]) & set(b["domain"])
                    if np.array_equal(a["image"][a["domain"] == dom], b["image"][b["domain"] == dom]))
    if not shared:
        raise AmfError(f"{a_csv} and {b_csv} share no held-out domain scored on the same figures")
    a, b = ({k: v[np.isin(d["domain"], shared)] for k, v in d.items()} for d in (a, b))
    if thresholds == "a":
        if not np.array_equal(a["image"], b["image"]):
            raise AmfError(f"{a_csv} and {b_csv} hold different figures: A's thresholds cannot be carried over")
        b["pred"] = (b["score"] >= a["threshold"]).astype(np.int64)  # the class rule of every output
    elif thresholds != "own":
        raise AmfError(f"thresholds must be 'own' or 'a', not {thresholds!r}")
    domains = {dom: np.flatnonzero(a["domain"] == dom) for dom in shared}

    def differences(idx: dict[str, np.ndarray]) -> np.ndarray:
        """The mean's BA and AUC differences, then each domain's, from one scoring of each domain per row."""
        in_a, in_b = _domain_scores(a, idx), _domain_scores(b, idx)
        each = [np.subtract(y, x) for x, y in zip(in_a, in_b, strict=True)]
        return np.concatenate([np.subtract(_mean_of(in_b), _mean_of(in_a)), *each])

    point, interval = _bootstrap(differences, domains, n_resamples, seed)
    per_domain = {str(dom): {"balanced_accuracy_difference": float(point[2 + 2 * i]),
                        "balanced_accuracy_ci95": _bounds(interval, 2 + 2 * i),
                        "auc_difference": float(point[3 + 2 * i]), "auc_ci95": _bounds(interval, 3 + 2 * i)}
                  for i, dom in enumerate(shared)}
    return {"a": str(a_csv), "b": str(b_csv), "domains": shared, "resamples": n_resamples, "seed": seed,
            **({"thresholds": "a"} if thresholds == "a" else {}),
            "balanced_accuracy_difference": float(point[0]), "balanced_accuracy_ci95": _bounds(interval, 0),
            "auc_difference": float(point[1]), "auc_ci95": _bounds(interval, 1), "per_domain": per_domain}


#: The held-out domain the ship gate names first: TUPAC16, the one domain from another lab than the scanners', where
#: a lever that gains on the three MIDOG21 scanners has lost before.
GATE_FIRST = "TUPAC16"


def ship_gate(record: dict) -> dict:
    """The ship gate (issue 43) on a :func:`compare` record of candidate B against incumbent A: B may replace A
    only if, on every held-out domain, the lower bounds of the paired 95% intervals of B minus A are not below zero,
    both for balanced accuracy (at each row's shipped cut: compare them as ``ROW:MODE@RULE`` to say which) and for
    ROC AUC. Why per domain and not the mean: the mean over four domains rose while the other lab's balanced
    accuracy fell, and a lab scores the classifier on its own figures only.

    The verdict names ``TUPAC16`` first, then the other domains in order; a domain without an interval (no
    bootstrap, or an AUC undefined on one class) cannot show that it did not lose, so it fails.
    """
    names = sorted(record["per_domain"], key=lambda name: (name != GATE_FIRST, name))
    domains = {}
    for name in names:
        d = record["per_domain"][name]
        lows = {f"{metric}_low": None if d[f"{metric}_ci95"] is None else d[f"{metric}_ci95"][0]
                for metric in ("balanced_accuracy", "auc")}
        domains[name] = {**lows, "passed": all(low is not None and low == low and low >= 0 for low in lows.values())}
    return {"rule": "every held-out domain: the lower bounds of the paired 95% intervals of B minus A balanced "
                    "accuracy and ROC AUC >= 0",
            "passed": all(d["passed"] for d in domains.values()), "domains": domains}
