"""Grouped stratified folds and leave-one-domain-out plans never leak a group or the held-out domain."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amf.errors import DatasetError
from amf.training.splits import domain_slugs, grouped_kfold, make_folds

AMIBR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ami-br-midog21" / "labels.csv"


def synthetic(n=300, n_groups=40, n_domains=3, seed=0):
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, n_groups, n)
    domains = [f"d{g % n_domains}" for g in groups]  # each group lives in one domain
    labels = (rng.random(n) < 0.25).astype(int)
    return labels, domains, [f"g{g}" for g in groups]


def check_plan(labels, domains, groups, k):
    folds = make_folds(labels, domains, groups, k, seed=0)
    dom, grp = np.asarray(domains), np.asarray(groups)
    names = sorted(set(domains))
    assert len(folds) == k * (len(names) + 1)
    for f in folds:
        assert not set(grp[f.train]) & set(grp[f.val]), f.name  # no group on both sides
        assert not set(f.train) & set(f.val)
        if f.heldout_domain is not None:
            assert f.heldout_domain not in set(dom[f.train]) | set(dom[f.val])
            assert set(dom[f.heldout]) == {f.heldout_domain}
            assert not set(grp[f.heldout]) & set(grp[f.train])
    for d in [*names, None]:
        sub = [f for f in folds if f.heldout_domain == d]
        val = np.concatenate([f.val for f in sub])
        expected = np.flatnonzero(dom != d) if d is not None else np.arange(len(labels))
        assert sorted(val.tolist()) == expected.tolist()  # validation folds partition the training pool
    return folds


def test_synthetic_plan():
    folds = check_plan(*synthetic(), k=5)
    assert [f.name for f in folds][-5:] == [f"all/fold{i}" for i in range(5)]
    assert folds[0].name == "lodo/d0/fold0"


def test_stratified_and_seeded():
    labels, domains, groups = synthetic(n=1000, n_groups=200)
    splits = grouped_kfold(labels, groups, 5, seed=1)
    for _, va in splits:
        assert abs(labels[va].mean() - labels.mean()) < 0.05
    again = grouped_kfold(labels, groups, 5, seed=1)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(splits, again, strict=True))
    other = grouped_kfold(labels, groups, 5, seed=2)
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(splits, other, strict=True))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 4), st.integers(2, 4))
def test_random_plans_never_leak(seed, k, n_domains):
    check_plan(*synthetic(n=120, n_groups=30, n_domains=n_domains, seed=seed), k=k)


def test_errors():
    labels, domains, groups = synthetic(n=20, n_groups=3)
    with pytest.raises(DatasetError, match="3 group"):
        grouped_kfold(labels, groups, 5, seed=0)
    with pytest.raises(DatasetError, match="more than one domain"):
        make_folds(np.array([0, 1, 0, 1]), ["a", "b", "a", "b"], ["g", "g", "h", "i"], 2, 0)


def test_slugs_are_unique_folder_names():
    s = domain_slugs(["Hamamatsu XR", "hamamatsu/xr", "canine lung cancer", "  "])
    assert s["Hamamatsu XR"] == "Hamamatsu_XR" and s["hamamatsu/xr"].lower() != "hamamatsu_xr"
    assert s["canine lung cancer"] == "canine_lung_cancer" and s["  "] == "domain"


def test_real_amibr_plan():
    if not AMIBR.is_file():
        pytest.skip(f"AMi-Br labels not found at {AMIBR} (see ../shared/data/SOURCES.md)")
    from amf.training.data import read_labels

    t = read_labels(AMIBR, check_files=False)
    folds = check_plan(t.labels, t.domains, t.groups, 5)
    assert {f.heldout_domain for f in folds} == {"Aperio CS2", "Hamamatsu S360", "Hamamatsu XR", None}
