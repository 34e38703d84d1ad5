"""Which cut holds per lab (issue 43): each label-free rule's balanced-accuracy gap to the hindsight-best cut on every
held-out domain of a leave-one-domain-out row, from its committed per-figure files (no model is run).

A lab scores the classifier on its own figures at the one cut the weights ship with, so a rule is judged by its
worst held-out domain, not its mean. For held-out domain D the rules see only what an export would see, the
out-of-fold scores of D's models on the training domains (``oof_<row>_<mode>.csv``, each patch's domain from
``membership_<row>.csv``), or the other held-out domains:

* ``otsu``: Otsu's cut on all those out-of-fold scores (what ``amf export --threshold-method otsu`` ships);
* ``lodo_transfer``: the cut maximising the mean balanced accuracy of the *other* held-out domains (the nested
  transfer cut; ``amf export --threshold-from`` ships its all-domains counterpart);
* ``otsu_domain_mean`` and ``otsu_domain_median``: Otsu's cut on each training domain's out-of-fold scores alone,
  then their mean or median (a lab's shift moves its own valley; a middle of the valleys may sit nearer a new one).

The gap is the hindsight-best balanced accuracy on D's figures (the best cut chosen with D's labels) minus the
balanced accuracy at the rule's cut.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from amf.errors import AmfError
from amf.training.crossval import heldout_file, oof_file, parse_row, read_heldout_csv
from amf.training.threshold import (
    domain_otsu_threshold,
    max_balanced_accuracy_threshold,
    mean_class_recall,
    nested_transfer_thresholds,
    otsu_threshold,
)

#: The rules, in the order a tie is broken: the first is the rule shipped today, kept unless another is better.
RULES = ("otsu", "lodo_transfer", "otsu_domain_mean", "otsu_domain_median")


def oof_by_domain(folder: Path, spec: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per held-out domain of row ``spec`` (``ROW:MODE``): its models' out-of-fold scores and each patch's own
    (training) domain, as recorded in the row's membership file."""
    heldout, _ = heldout_file(folder, spec)
    membership = Path(folder) / f"membership_{parse_row(spec)[0]}.csv"
    if not membership.is_file():
        raise AmfError(f"{membership} not found: the per-domain rules need each out-of-fold patch's domain")
    with open(membership, newline="") as f:
        domain_of = {r["image"]: r["domain"] for r in csv.DictReader(f)}
    out: dict[str, tuple[list, list]] = {}
    with open(oof_file(heldout), newline="") as f:
        for r in csv.DictReader(f):
            scores, domains = out.setdefault(r["heldout_domain"], ([], []))
            scores.append(float(r["p_atypical"]))
            domains.append(domain_of[r["image"]])
    return {d: (np.array(s), np.array(t)) for d, (s, t) in out.items()}


def cut_gaps(folder: Path, spec: str) -> dict:
    """Every rule of :data:`RULES` on every held-out domain of row ``spec``: its cut, the balanced accuracy there and
    the gap to the hindsight-best; then each rule's worst domain, and the rule whose worst gap is smallest."""
    d = read_heldout_csv(heldout_file(folder, spec)[0])
    names = sorted(set(d["domain"].tolist()))
    figures = [(d["score"][d["domain"] == n], d["label"][d["domain"] == n]) for n in names]
    oof = oof_by_domain(folder, spec)
    nested = nested_transfer_thresholds(figures)
    domains = {}
    for name, (s, y), transfer in zip(names, figures, nested, strict=True):
        scores, of = oof[name]
        cuts = {"otsu": otsu_threshold(scores), "lodo_transfer": transfer,
                "otsu_domain_mean": domain_otsu_threshold(scores, of, "mean"),
                "otsu_domain_median": domain_otsu_threshold(scores, of, "median")}
        best = mean_class_recall(s, y, max_balanced_accuracy_threshold(s, y))
        at = {rule: mean_class_recall(s, y, cut) for rule, cut in cuts.items()}
        domains[name] = {"n": int(y.size), "hindsight_best_balanced_accuracy": best, "rules": {
            rule: {"threshold": cut, "balanced_accuracy": at[rule], "gap": best - at[rule]}
            for rule, cut in cuts.items()}}
    worst = {}
    for rule in RULES:
        name = max(domains, key=lambda n: domains[n]["rules"][rule]["gap"])
        worst[rule] = {"domain": name, "gap": domains[name]["rules"][rule]["gap"]}
    chosen = min(RULES, key=lambda rule: worst[rule]["gap"])  # min keeps the first of equal gaps: today's rule
    return {"domains": domains, "worst": worst, "chosen": chosen}
