"""Decoders on degenerate but legitimate inputs, and one clear error for unusable ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import actstore.probes as ap
from actstore import ActstoreError

rng = np.random.default_rng(0)


@pytest.mark.parametrize("X", [np.zeros((90, 5)), np.ones((90, 3)), np.zeros((90, 1)),
                               torch.zeros((90, 4))])
def test_a_dead_layer_decodes_at_chance(X):
    """Every unit constant (a dead ReLU layer): both decoders give chance-level scores (the
    logistic solver used to fail on its empty weight matrix)."""
    y = np.arange(90) % 3
    res = ap.probe_arrays(X, {"y": y}, n_splits=3,
                          device="torch" if isinstance(X, torch.Tensor) else "numpy")
    np.testing.assert_allclose(res["accuracy"].values[:, 0], 1 / 3, atol=1e-12)
    ce = res["cross_entropy"].sel(decoder="logistic").values[0]
    assert ce == pytest.approx(np.log(3), rel=1e-4)  # the class prior: log 3 nats
    assert res["vinfo_bits"].sel(decoder="logistic").values[0] == pytest.approx(0, abs=1e-4)


def test_a_class_held_out_but_never_trained_on_is_refused():
    y = np.repeat([0, 1, 2], 20)
    is_test = (y == 2) | (np.arange(60) % 3 == 0)  # every sample of class 2 held out
    with pytest.raises(ActstoreError, match="class 2 is in the held-out rows of the split but "
                                            "not in its training rows"):
        ap.check_folds(ap.explicit_split(is_test), {"y": y})
    test_fold = np.where(y == 2, 0, np.arange(60) % 2)  # fold 0 holds every sample of class 2
    with pytest.raises(ActstoreError, match="class 2 is in the held-out rows of fold 0"):
        ap.check_folds(ap.predefined_folds(test_fold), {"y": y})
    # a split that trains on every class it holds out is fine
    ap.check_folds(ap.explicit_split(np.arange(60) % 4 == 0), {"y": y})


@pytest.mark.parametrize("X, labels, words", [
    (rng.normal(size=(60, 4)), {}, "no features to decode"),
    (rng.normal(size=(60, 4))[:, :0], {"y": np.arange(60) % 2}, "have no units"),
    (rng.normal(size=(60, 4)) * 1j, {"y": np.arange(60) % 2}, "give real numbers"),
    (rng.normal(size=(60, 4)), {"y": np.array(["a", None] * 30, dtype=object)},
     "labels of feature 'y' mix NoneType, str values"),
])
def test_unusable_inputs_are_one_error(X, labels, words):
    with pytest.raises(ActstoreError, match=words):
        ap.probe_arrays(X, labels, n_splits=3)


def test_no_penalty_is_reported_where_no_penalty_has_a_score():
    """The logistic decoder does not score continuous features: its penalty there is NaN,
    not the first C of the grid."""
    X = rng.normal(size=(90, 4))
    res = ap.probe_arrays(X, {"y": np.arange(90) % 2, "c": rng.normal(size=90)}, n_splits=3)
    pen = res["penalty"]
    assert np.isnan(pen.sel(decoder="logistic", feature="c"))
    assert np.isfinite(pen.sel(decoder="logistic", feature="y"))
    assert np.isfinite(pen.sel(decoder="ridge", feature="c"))


@pytest.mark.parametrize("test_fold, words", [
    ([0, 1, 0.5, 1, 0], "fractional"),
    ([0, 1, np.nan, 1], "fractional or non-finite"),
    ([0, 1, -2, 1], "got -2"),
    ([[0, 1], [1, 0]], "shape \\(2, 2\\)"),
    (["a", "b"], "dtype <U1"),
])
def test_predefined_folds_are_whole_numbers(test_fold, words):
    """A fold vector that is not one whole number per sample is refused (0.5 was cut to 0)."""
    with pytest.raises(ActstoreError, match=words):
        ap.predefined_folds(test_fold)
    assert ap.predefined_folds([0, 1, 0, 1.0, -1]).n_splits == 2
