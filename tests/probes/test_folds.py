"""Cross-validation folds: stratification, seeding, explicit splits, refused labels."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.model_selection import PredefinedSplit

from actstore import ActstoreError
from actstore.probes import (
    Folds,
    check_folds,
    explicit_split,
    predefined_folds,
    stratified_folds,
)


def _per_fold_counts(folds: Folds, labels: np.ndarray) -> np.ndarray:
    classes = np.unique(labels)
    return np.array(
        [[np.sum((folds.test_fold == k) & (labels == c)) for c in classes]
         for k in range(folds.n_splits)]
    )


def test_every_sample_is_held_out_once():
    f = stratified_folds(103, 5, seed=1)
    assert f.test_fold.shape == (103,)
    assert set(np.unique(f.test_fold)) == set(range(5))
    n_train, n_test = f.counts()
    assert n_test.sum() == 103 and np.all(n_train + n_test == 103)
    assert n_test.max() - n_test.min() <= 1
    for train, test in f.split():
        assert np.intersect1d(train, test).size == 0
        assert train.size + test.size == 103


def test_same_seed_same_folds_other_seed_other_folds():
    lab = np.arange(200) % 4
    a = stratified_folds(200, 5, seed=3, stratify={"x": lab})
    b = stratified_folds(200, 5, seed=3, stratify={"x": lab})
    c = stratified_folds(200, 5, seed=4, stratify={"x": lab})
    assert np.array_equal(a.test_fold, b.test_fold)
    assert not np.array_equal(a.test_fold, c.test_fold)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(20, 300),
    k=st.integers(2, 6),
    n_classes=st.lists(st.integers(2, 5), min_size=1, max_size=3),
    seed=st.integers(0, 10_000),
)
def test_stratification_balances_first_label_and_combinations(n, k, n_classes, seed):
    rng = np.random.default_rng(seed)
    labels = {f"f{i}": rng.integers(0, c, n) for i, c in enumerate(n_classes)}
    f = stratified_folds(n, k, seed=seed, stratify=labels)
    first = labels["f0"]
    counts = _per_fold_counts(f, first)
    assert np.all(counts.max(axis=0) - counts.min(axis=0) <= 1)
    joint = np.unique(np.stack(list(labels.values()), axis=1), axis=0, return_inverse=True)[1]
    counts = _per_fold_counts(f, joint.ravel())
    assert np.all(counts.max(axis=0) - counts.min(axis=0) <= 1)


def test_split_matches_sklearn_predefined_split():
    tf = np.array([0, 1, -1, 2, 1, 0, -1, 2, 2, 0])
    f = predefined_folds(tf)
    ours = [(tr.tolist(), te.tolist()) for tr, te in f.split()]
    ref = [(tr.tolist(), te.tolist()) for tr, te in PredefinedSplit(tf).split()]
    assert ours == ref
    assert f.n_groups == 4
    assert np.array_equal(f.group_of(), np.where(tf < 0, 3, tf))


@pytest.mark.parametrize(
    "split",
    [
        np.array(["train", "val", "train", "test", "train"]),
        np.array([False, True, False, True, False]),
        np.array([0, 1, 0, 1, 0]),
    ],
)
def test_explicit_split_forms(split):
    f = explicit_split(split)
    assert f.n_splits == 1
    assert f.test_fold.tolist() == [-1, 0, -1, 0, -1]


@pytest.mark.parametrize(
    "split, msg",
    [
        (np.array(["train", "holdout"]), "train/val"),
        (np.array([0, 2]), "0 \\(train\\) and 1"),
        (np.array([True, True]), "no training rows"),
        (np.array([0.5, 0.2]), "boolean"),
    ],
)
def test_explicit_split_refuses_bad_labels(split, msg):
    with pytest.raises(ActstoreError, match=msg):
        explicit_split(split)


def test_predefined_folds_need_consecutive_numbers():
    with pytest.raises(ActstoreError, match="without gaps"):
        predefined_folds(np.array([0, 2, 2, -1]))
    with pytest.raises(ActstoreError, match="no held-out rows"):
        predefined_folds(np.array([-1, -1]))


def test_check_folds_single_class_and_small_classes():
    f = stratified_folds(30, 5, seed=0)
    with pytest.raises(ActstoreError, match="'mono' has a single class"):
        check_folds(f, {"mono": np.zeros(30, int)})
    lab = np.array([0] * 27 + [1] * 3)
    with pytest.raises(ActstoreError, match="'rare': class 1 has 3 samples, fewer than the 5"):
        check_folds(f, {"rare": lab})
    check_folds(f, {"ok": np.arange(30) % 3})  # no error


def test_check_folds_explicit_split_needs_two_training_classes():
    f = explicit_split(np.array([False] * 5 + [True] * 5))
    with pytest.raises(ActstoreError, match="single class in the training rows"):
        check_folds(f, {"x": np.array([0] * 5 + [1] * 5)})


def test_too_few_samples_or_folds():
    with pytest.raises(ActstoreError, match="at least 2 folds"):
        stratified_folds(10, 1)
    with pytest.raises(ActstoreError, match="cannot make 5 folds of 3 samples"):
        stratified_folds(3, 5)


def test_factorial_design_keeps_every_class_in_every_training_set():
    # Trifeature's probe set: every (shape, texture, colour) combination once. Dealing a
    # lexicographic order in turn would hold out each colour in one fold only.
    grid = np.stack(np.meshgrid(np.arange(10), np.arange(10), np.arange(10), indexing="ij"))
    labels = {name: g.ravel() for name, g in zip(("shape", "texture", "color"), grid,
                                                  strict=True)}
    f = stratified_folds(1000, 5, seed=0, stratify=labels)
    for name, lab in labels.items():
        counts = _per_fold_counts(f, lab)  # (folds, classes) held out
        assert (counts < 100).all(), name  # no class is held out whole in one fold
        assert (counts > 0).all(), name
        assert counts.max() <= 40, name  # 20 expected per fold and class
    first = _per_fold_counts(f, labels["shape"])
    assert (first.max(axis=0) - first.min(axis=0) <= 1).all()
