"""``--report DIR``: plots, a per-domain table and report.md for people to read.

The official metrics say how a submission ranks; a team also needs to see how sure that number is
(bootstrap intervals), where it comes from (confusion matrices, per-domain rows) and what its
threshold choice costs (balanced accuracy at the best threshold next to that of the submitted
classes). Plots use matplotlib's object API with the Agg canvas, so no display and no global pyplot
state are involved.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from amf.errors import OutputError
from amf.evaluation.analysis import Evaluation, Scope
from amf.evaluation.bootstrap import LEVEL
from amf.evaluation.summary import ci_text, num_text

DPI = 120
TABLE_COLUMNS = (
    "domain",
    "figures",
    "atypical",
    "sensitivity",
    "specificity",
    "balanced_accuracy",
    "balanced_accuracy_ci95",
    "best_threshold",
    "best_threshold_balanced_accuracy",
    "accuracy",
    "roc_auc",
    "roc_auc_ci95",
)


def _row(scope: Scope) -> dict[str, str]:
    m, best = scope.metrics, scope.best
    return {
        "domain": scope.name,
        "figures": str(scope.confusion.n),
        "atypical": str(scope.n_atypical),
        "sensitivity": num_text(m["sensitivity"]),
        "specificity": num_text(m["specificity"]),
        "balanced_accuracy": num_text(m["balanced_accuracy"]),
        "balanced_accuracy_ci95": ci_text(scope.balanced_accuracy_ci),
        "best_threshold": num_text(best.threshold if best else None),
        "best_threshold_balanced_accuracy": num_text(best.balanced_accuracy if best else None),
        "accuracy": num_text(m["accuracy"]),
        "roc_auc": num_text(m["roc_auc"]),
        "roc_auc_ci95": ci_text(scope.roc.auc if scope.roc else None),
    }


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def plot_roc(evaluation: Evaluation, path: Path) -> None:
    """Pooled ROC curve with its bootstrap band, the submitted and best operating points, and thin
    per-domain curves (domains with both classes)."""
    figs, overall = evaluation.figures, evaluation.overall
    fig = Figure(figsize=(6, 6), dpi=DPI)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.7", linestyle=":", linewidth=1, label="chance")
    if overall.roc is not None:
        ax.fill_between(
            overall.roc.fpr, overall.roc.low_tpr, overall.roc.high_tpr, color="C0", alpha=0.2,
            label=f"{LEVEL:.0%} bootstrap band",
        )
    for i, (domain, scope) in enumerate(zip(figs.domains(), evaluation.domains)):
        if scope.only_class is None and len(evaluation.domains) > 1:
            y_true, _, score = figs.select(figs.domain == domain)
            fpr, tpr, _ = roc_curve(y_true, score)
            ax.plot(fpr, tpr, linewidth=0.8, alpha=0.7, color=f"C{2 + i % 8}",
                    label=f"{scope.name} (AUC {num_text(scope.metrics['roc_auc'])})")
    if overall.only_class is None:
        fpr, tpr, _ = roc_curve(figs.y_true, figs.score)
        auc = f"AUC {num_text(overall.metrics['roc_auc'])}"
        if overall.roc is not None:
            auc += f", CI {ci_text(overall.roc.auc)}"
        ax.plot(fpr, tpr, color="C0", linewidth=2, label=f"all figures ({auc})")
    m = overall.metrics
    ax.plot(1 - m["specificity"], m["sensitivity"], "o", color="C3", markersize=8,
            label=f"submitted classes (BA {num_text(m['balanced_accuracy'])})")
    if overall.best is not None:
        b = overall.best
        ax.plot(1 - b.specificity, b.sensitivity, "*", color="C1", markersize=12, clip_on=False, zorder=5,
                label=f"best threshold {b.threshold:.4g} (BA {num_text(b.balanced_accuracy)})")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="1 - specificity (false positive rate)",
           ylabel="sensitivity (true positive rate)", title="ROC, atypical vs normal", aspect="equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def plot_confusion(scope: Scope, path: Path) -> None:
    """2x2 confusion matrix of the submitted classes: counts, and shares of each true class."""
    c = scope.confusion
    counts = np.array([[c.tn, c.fp], [c.fn, c.tp]])
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    fig = Figure(figsize=(3.6, 3.3), dpi=DPI)
    ax = fig.add_subplot()
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (r, k), count in np.ndenumerate(counts):
        ax.text(k, r, f"{count}\n{shares[r, k]:.1%}" if totals[r, 0] else "0", ha="center", va="center",
                color="white" if shares[r, k] > 0.6 else "black", fontsize=10)
    ax.set_xticks([0, 1], ["normal", "atypical"])
    ax.set_yticks([0, 1], ["normal", "atypical"])
    ax.set(xlabel="submitted class", ylabel="true class",
           title=f"{scope.name}: BA {num_text(scope.metrics['balanced_accuracy'])}, n={c.n}")
    ax.title.set_fontsize(9)
    fig.tight_layout()
    fig.savefig(path)


def _markdown_table(rows: list[dict[str, str]]) -> list[str]:
    header = list(rows[0])
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(row.values()) + " |" for row in rows),
    ]


def write_report(evaluation: Evaluation, folder: Path, load: Callable[[int], np.ndarray | None] | None = None,
                 gallery_hint: str = "", known_cuts: tuple[float, ...] = ()) -> Path:
    """Write roc.png, confusion_*.png, domains.csv and report.md into ``folder``; return report.md.

    With ``load`` (figure index -> its patch), also the error gallery in ``folder/gallery``
    (:mod:`amf.evaluation.gallery`), each figure shown at the cut its calls follow (``known_cuts``, the weights'
    threshold, first); without it, report.md says how to get one (``gallery_hint``)."""
    folder = Path(folder)
    gallery = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        plot_roc(evaluation, folder / "roc.png")
        scopes = (evaluation.overall, *evaluation.domains)
        confusion_files = [f"confusion_{_slug(s.name)}.png" for s in scopes]
        for scope, name in zip(scopes, confusion_files):
            plot_confusion(scope, folder / name)
        rows = [_row(s) for s in scopes]
        with open(folder / "domains.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=TABLE_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        if load is not None:
            gallery = write_figures_gallery(evaluation, folder / "gallery", load, known_cuts)
        report = folder / "report.md"
        text = _markdown(evaluation, rows, confusion_files) + _reliability(evaluation, folder)
        text += ("\n## The figures it got wrong\n\n" + (
            f"The error gallery, per domain: [{gallery.relative_to(folder)}]({gallery.relative_to(folder)}).\n"
            if gallery is not None else f"{gallery_hint or 'No error gallery: the images were not at hand.'}\n"))
        report.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"cannot write the report into {folder}: {exc}") from None
    return report


def _reliability(evaluation: Evaluation, folder: Path) -> str:
    """The report's calibration section (reliability.png, the ECE with its interval) and, where the predictions
    carry each figure's score spread, its error rate by spread."""
    import matplotlib.pyplot as plt

    from amf.evaluation.reliability import calibration, error_by_spread

    figs = evaluation.figures
    cal = calibration(figs.y_true, figs.score, evaluation.n_resamples, evaluation.seed)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", label="perfectly calibrated")
    seen = cal.counts > 0
    ax.plot(cal.mean_confidence[seen], cal.fraction_atypical[seen], marker="o", label="these figures")
    ax.set(xlabel="confidence = P(atypical), bin mean", ylabel="fraction atypical", xlim=(0, 1), ylim=(0, 1),
           title=f"Reliability (ECE {cal.ece:.3f})")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(folder / "reliability.png", dpi=120)
    plt.close(fig)
    interval = "" if cal.ece_ci95 is None else f" [{cal.ece_ci95[0]:.3f}, {cal.ece_ci95[1]:.3f}]"
    text = ["", "## Can the confidence be read as a probability", "",
            f"Expected calibration error (ECE, {len(cal.counts)} equal-width bins of P(atypical)): "
            f"**{cal.ece:.3f}**{interval}: the figures' confidences are, on average over the bins, that far from "
            "how often the figures in their bin are atypical. The threshold is not a probability of one half: the "
            "weights' cut is chosen for balanced accuracy, so a well-ranked but shifted confidence still classifies "
            "well.", "", "![Reliability diagram](reliability.png)", ""]
    if figs.spread is not None:
        rows = error_by_spread(figs.y_true, figs.y_pred, figs.spread)
        text += ["## Which calls to look at twice", "",
                 "Each figure's score is the mean over its members' test-time views (`view_sd`: their standard "
                 "deviation). By quarter of that spread, calmest first:", "",
                 "| view spread | figures | wrong | error rate |", "|---|---|---|---|",
                 *(f"| {r['spread_from']:.3f} to {r['spread_to']:.3f} | {r['n']} | {r['errors']} | "
                   f"{r['error_rate']:.1%} |" for r in rows), ""]
    return "\n".join(text)


def write_figures_gallery(evaluation: Evaluation, folder: Path, load: Callable[[int], np.ndarray | None],
                          known_cuts: tuple[float, ...] = ()) -> Path:
    """The error gallery of the evaluated figures, each at the single cut its calls follow (where one does)."""
    from amf.evaluation.gallery import Calls, infer_threshold, write_gallery

    figs = evaluation.figures
    cut = infer_threshold(figs.score, figs.y_pred, known_cuts)
    names = [f"{path} (page {page})" if page else str(path) for path, page in figs.where] or \
        [f"figure {i}" for i in range(len(figs))]
    calls = Calls(names, figs.y_true, figs.y_pred, figs.score, figs.domain,
                  np.full(len(figs), np.nan if cut is None else cut))
    return write_gallery(folder, calls, load, title=f"Error gallery: {figs.source}")


def _markdown(evaluation: Evaluation, rows: list[dict[str, str]], confusion_files: list[str]) -> str:
    figs, overall = evaluation.figures, evaluation.overall
    m, best = overall.metrics, overall.best
    roc_ci = overall.roc.auc if overall.roc else None
    lines = [
        "# MIDOG 2025 Track 2 evaluation",
        "",
        f"Source: {figs.source}.",
        f"{len(figs)} figures: {overall.n_atypical} atypical, {len(figs) - overall.n_atypical} normal, "
        f"in {len(evaluation.domains)} domain(s). Atypical is the positive class.",
        "",
        "## Official metrics, all figures pooled",
        "",
        f"| metric | value | {LEVEL:.0%} CI |",
        "|---|---|---|",
        f"| balanced accuracy (the ranking metric) | {num_text(m['balanced_accuracy'])} "
        f"| {ci_text(overall.balanced_accuracy_ci)} |",
        f"| ROC AUC | {num_text(m['roc_auc'])} | {ci_text(roc_ci)} |",
        f"| sensitivity | {num_text(m['sensitivity'])} | |",
        f"| specificity | {num_text(m['specificity'])} | |",
        f"| accuracy | {num_text(m['accuracy'])} | |",
        "",
        "## What the threshold costs",
        "",
    ]
    if best is None:
        lines.append("Not defined: the figures hold one class only.")
    else:
        lines += [
            f"Balanced accuracy of the submitted classes: **{num_text(m['balanced_accuracy'])}**. "
            f"Calling a figure atypical when its confidence is >= {best.threshold:.6g} would give "
            f"**{num_text(best.balanced_accuracy)}** (sensitivity {num_text(best.sensitivity)}, specificity "
            f"{num_text(best.specificity)}): {best.balanced_accuracy - m['balanced_accuracy']:+.4f}.",
            "",
        ]
        if best.balanced_accuracy < m["balanced_accuracy"]:
            lines += [
                "The submitted classes beat every single threshold on confidence, so they do not follow "
                "one threshold: the classes carry information the confidences do not.",
                "",
            ]
        lines += [
            "The best threshold is chosen on these very figures, so its balanced accuracy is an optimistic "
            "bound on what a threshold can do, not a score to expect on unseen data.",
        ]
    lines += [
        "",
        "![ROC curve with its bootstrap band](roc.png)",
        "",
        "## Per domain",
        "",
        "The same table as CSV: [domains.csv](domains.csv).",
        "",
        *_markdown_table(rows),
        "",
        "## Confusion matrices (rows: true class, columns: submitted class)",
        "",
        *(f"![{name}]({name})" for name in confusion_files),
        "",
        "## How the numbers are made",
        "",
        "- Sensitivity, specificity, balanced accuracy, accuracy and ROC AUC follow the official "
        "`evaluate.py` of DeepMicroscopy/MIDOG25_T2_evaluation_docker: counts from the submitted classes, "
        "pooled over all figures; ROC AUC on `confidence` = P(atypical). An empty class gets 0.0, as "
        "sklearn's `recall_score` gives it.",
    ]
    if evaluation.n_resamples > 0:
        lines += [
            f"- Balanced accuracy CI: percentile interval over {evaluation.n_resamples} resamples of the "
            f"figures (numpy, seed {evaluation.seed}); resamples missing a class are drawn again.",
            f"- ROC band and AUC CI: grand-challenge-metrics `get_bootstrapped_roc_ci_curves`, "
            f"{evaluation.n_resamples} resamples. It uses its own fixed seed (40), not ours, and its "
            "resamples never contain the last figure (`randint(0, n - 1)`); with many figures this hardly "
            "matters.",
        ]
    else:
        lines.append("- No bootstrap was run (`--bootstrap 0`), so there are no intervals.")
    lines += [f"- {note}" for note in evaluation.notes]
    return "\n".join(lines) + "\n"
