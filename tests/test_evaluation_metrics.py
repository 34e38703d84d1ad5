"""Metric arithmetic: hand-computed cases, the official conventions, sklearn agreement, bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from amf.errors import EvaluationError
from amf.evaluation.analysis import evaluate
from amf.evaluation.bootstrap import balanced_accuracy_ci, roc_band
from amf.evaluation.figures import Figures
from amf.evaluation.metrics import best_threshold, classification_metrics, confusion

# Five figures, worked out on paper: TP=1 (0.9), FN=1 (0.4), FP=1 (0.6), TN=2 (0.2, 0.1).
Y_TRUE = np.array([1, 1, 0, 0, 0])
Y_PRED = np.array([1, 0, 0, 1, 0])
SCORE = np.array([0.9, 0.4, 0.2, 0.6, 0.1])


def figures(y_true, y_pred, score, domain) -> Figures:
    return Figures(np.asarray(y_true), np.asarray(y_pred), np.asarray(score, dtype=float), np.asarray(domain), "test")


def test_hand_computed_case():
    c = confusion(Y_TRUE, Y_PRED)
    assert (c.tp, c.fp, c.fn, c.tn) == (1, 1, 1, 2)
    m = classification_metrics(Y_TRUE, Y_PRED, SCORE)
    assert m["sensitivity"] == 0.5
    assert m["specificity"] == 2 / 3
    assert m["balanced_accuracy"] == (0.5 + 2 / 3) / 2
    assert m["accuracy"] == 3 / 5
    # 0.9 outranks all three normals, 0.4 outranks 0.2 and 0.1 but not 0.6: 5 of 6 pairs.
    assert m["roc_auc"] == pytest.approx(5 / 6, abs=1e-15)


def test_best_threshold_hand_computed():
    # Thresholds 0.9: BA 0.75; 0.6: BA 7/12; 0.4: sens 1, spec 2/3, BA 5/6 (the best); lower ones worse.
    best = best_threshold(Y_TRUE, SCORE)
    assert best.threshold == 0.4
    assert (best.sensitivity, best.specificity) == (1.0, 2 / 3)
    assert best.balanced_accuracy == (1.0 + 2 / 3) / 2


def test_single_class_scope_uses_official_conventions():
    normals = classification_metrics(np.array([0, 0]), np.array([0, 1]), np.array([0.1, 0.7]))
    assert normals["sensitivity"] == 0.0  # recall_score's zero_division default
    assert normals["specificity"] == 0.5
    assert normals["balanced_accuracy"] == 0.25
    assert math.isnan(normals["roc_auc"])
    atypicals = classification_metrics(np.array([1]), np.array([1]), np.array([0.9]))
    assert (atypicals["sensitivity"], atypicals["specificity"], atypicals["balanced_accuracy"]) == (1.0, 0.0, 0.5)
    assert best_threshold(np.array([0, 0]), np.array([0.1, 0.7])) is None


def test_domains_pool_and_split():
    # The hand-computed case as domain 2, plus one normal in domain 7 that was called atypical.
    figs = figures([1, 1, 0, 0, 0, 0], [1, 0, 0, 1, 0, 1], [0.9, 0.4, 0.2, 0.6, 0.1, 0.8], [2, 2, 2, 2, 2, 7])
    ev = evaluate(figs, 0)
    agg = ev.official_aggregates()
    assert list(agg) == [
        "overall_sensitivity", "overall_specificity", "overall_balanced_accuracy", "overall_roc_auc",
        "overall_accuracy", "domain_2", "domain_7",
    ]
    assert agg["domain_2"]["balanced_accuracy"] == (0.5 + 2 / 3) / 2
    assert agg["domain_7"] == {"sensitivity": 0.0, "specificity": 0.0, "balanced_accuracy": 0.0,
                               "accuracy": 0.0, "roc_auc": agg["domain_7"]["roc_auc"]}
    assert math.isnan(agg["domain_7"]["roc_auc"])
    assert agg["overall_specificity"] == 2 / 4
    assert any("domain_7: only normal figures" in note for note in ev.notes)


def test_empty_figures_refused():
    with pytest.raises(EvaluationError, match="no figures"):
        figures([], [], [], [])


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=2, max_value=60).flatmap(
        lambda n: st.tuples(
            st.lists(st.integers(0, 1), min_size=n, max_size=n),
            st.lists(st.integers(0, 1), min_size=n, max_size=n),
            st.lists(st.one_of(st.floats(0, 1), st.sampled_from([0.0, 0.25, 0.5, 1.0])), min_size=n, max_size=n),
            st.lists(st.integers(0, 3), min_size=n, max_size=n),
        )
    )
)
def test_pooled_metrics_equal_sklearn(data):
    y_true, y_pred, score, domain = (np.array(a) for a in data)
    if len(set(y_true.tolist())) < 2:
        y_true[0], y_true[1] = 0, 1  # both classes, so sklearn's definitions are the official ones
    agg = evaluate(figures(y_true, y_pred, score, domain), n_resamples=0).official_aggregates()
    assert agg["overall_balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred), abs=1e-12)
    assert agg["overall_roc_auc"] == pytest.approx(roc_auc_score(y_true, score), abs=1e-12)
    assert agg["overall_accuracy"] == pytest.approx(np.mean(y_true == y_pred), abs=1e-12)


def test_balanced_accuracy_ci_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 2, 400)
    y_pred = np.where(rng.random(400) < 0.8, y_true, 1 - y_true)
    a = balanced_accuracy_ci(y_true, y_pred, 300, seed=1)
    assert a == balanced_accuracy_ci(y_true, y_pred, 300, seed=1)
    assert a != balanced_accuracy_ci(y_true, y_pred, 300, seed=2)
    point = classification_metrics(y_true, y_pred, y_pred.astype(float))["balanced_accuracy"]
    assert a.low < point < a.high
    assert a.high - a.low < 0.15
    assert balanced_accuracy_ci(np.zeros(5), np.zeros(5), 100, seed=0) is None
    assert balanced_accuracy_ci(y_true, y_pred, 0, seed=0) is None


def test_roc_band_from_grand_challenge_metrics():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 2, 200)
    score = np.clip(y_true * 0.3 + rng.random(200) * 0.7, 0, 1)
    band = roc_band(y_true, score, 100)
    auc = roc_auc_score(y_true, score)
    assert band.auc.low < auc < band.auc.high
    assert band.fpr.shape == band.low_tpr.shape == band.high_tpr.shape == (101,)
    assert np.all(band.low_tpr <= band.high_tpr)


def test_roc_band_skipped_where_the_library_would_loop_forever():
    # The library never draws the last figure, so a lone positive there can never be resampled.
    assert roc_band(np.array([0, 0, 0, 1]), np.array([0.1, 0.2, 0.3, 0.9]), 50) is None
    assert roc_band(np.array([1]), np.array([0.5]), 50) is None
