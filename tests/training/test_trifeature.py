"""Trifeature label statistics: balance, held-out splits, correlated variant, probe set."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actstore import ActstoreError
from actstore.training import Trifeature, heldout_mask, pairing
from actstore.training._trifeature import FEATURES


def _combo_ids(labels: dict[str, np.ndarray]) -> np.ndarray:
    return labels["shape"] * 100 + labels["texture"] * 10 + labels["color"]


@settings(max_examples=25, deadline=None)
@given(
    anchor=st.sampled_from(FEATURES),
    n_heldout=st.integers(0, 9),
    cv_split=st.integers(0, 50),
)
def test_heldout_mask_design(anchor, n_heldout, cv_split):
    held = heldout_mask(anchor, n_heldout, cv_split)  # (10, 10, 10) [shape, texture, color]
    a = FEATURES.index(anchor)
    train = ~held
    # every anchor value keeps 10 - n values of each other feature: (10 - n)^2 combinations
    per_anchor = np.moveaxis(train, a, 0).reshape(10, -1).sum(axis=1)
    assert np.all(per_anchor == (10 - n_heldout) ** 2)
    for f in range(3):
        if f == a:
            continue
        # each value of a non-target feature is held out for exactly n anchor values...
        seen = np.moveaxis(train, (a, f), (0, 1)).any(axis=2)  # (anchor value, f value)
        assert np.all((~seen).sum(axis=0) == n_heldout)
        # ... and appears in training with the others
        assert np.all(seen.any(axis=0))


def test_splits_differ_and_impossible_splits_are_refused():
    assert not np.array_equal(heldout_mask("shape", 3, 0), heldout_mask("shape", 3, 1))
    assert np.array_equal(heldout_mask("shape", 3, 2), heldout_mask("shape", 3, 2))
    with pytest.raises(ActstoreError, match="impossible split"):
        heldout_mask("shape", 10)
    with pytest.raises(ActstoreError, match="impossible split"):
        Trifeature(n_heldout=11)
    with pytest.raises(ActstoreError, match="n_heldout"):
        Trifeature(n_heldout=-1)


@pytest.mark.parametrize("target", FEATURES)
def test_heldout_split_never_leaks_and_is_balanced(target):
    ds = Trifeature(image_size=16, renders=2, n_val=300, cv_split=1)
    data = ds.make((target,), seed=0)
    held = heldout_mask(target, 3, 1).reshape(-1)
    train_ids = _combo_ids(data.train.labels)
    val_ids = _combo_ids(data.val.labels)
    assert not held[train_ids].any()  # no held-out combination in training
    assert held[val_ids].all()  # validation is made of held-out combinations only
    assert len(data.train) == 490 * 2
    for f in FEATURES:
        counts = np.bincount(data.train.labels[f], minlength=10)
        assert np.all(counts == counts[0])  # balanced classes, every feature
    assert data.train.inputs.shape == (980, 3, 16, 16)
    assert data.info["n_heldout_combos"] == 510


def test_same_seed_same_data():
    ds = Trifeature(image_size=16, renders=1, n_val=50)
    a, b = ds.make(("color",), 3), ds.make(("color",), 3)
    c = ds.make(("color",), 4)
    assert np.array_equal(a.train.inputs, b.train.inputs)
    assert np.array_equal(a.val.inputs, b.val.inputs)
    assert not np.array_equal(a.train.inputs, c.train.inputs)


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_correlated_match_rate_is_p(p):
    ds = Trifeature(image_size=16, p=p, correlate=["shape", "color"], cv_split=2)
    rng = np.random.default_rng(0)
    n = 20000
    combos = ds.sample_correlated(rng, n)
    pair = pairing(2)
    match = combos[:, 2] == pair[combos[:, 0]]
    sd = np.sqrt(max(p * (1 - p), 1e-12) / n)
    assert abs(match.mean() - p) <= 4 * sd + 1e-12
    # marginals stay uniform: p only couples the pair
    for f in range(3):
        freq = np.bincount(combos[:, f], minlength=10) / n
        assert np.abs(freq - 0.1).max() < 0.015
    if p < 1:
        # non-matching values are spread uniformly over the 9 others
        others = (combos[~match, 2] - pair[combos[~match, 0]]) % 10
        freq = np.bincount(others, minlength=10)[1:] / max(1, (~match).sum())
        assert np.abs(freq - 1 / 9).max() < 0.02


def test_correlated_variant_in_training_and_validation():
    ds = Trifeature(image_size=16, renders=1, n_val=2000, p=0.8, correlate=["texture", "color"])
    data = ds.make(("texture",), seed=0)
    pair = np.array(data.info["pairing"])
    for split in (data.train, data.val):
        rate = (split.labels["color"] == pair[split.labels["texture"]]).mean()
        assert abs(rate - 0.8) < 0.05
    assert ds.n_heldout == 0


def test_bad_correlated_parameters():
    for bad in (-0.1, 1.5, "x", True):
        with pytest.raises(ActstoreError, match=r"\[0, 1\]"):
            Trifeature(p=bad)
    with pytest.raises(ActstoreError, match="n_heldout = 0"):
        Trifeature(p=0.5, n_heldout=3)
    with pytest.raises(ActstoreError, match="two different features"):
        Trifeature(p=0.5, correlate=["shape", "shape"])


def test_probe_set_covers_every_combination_with_all_labels():
    ds = Trifeature(image_size=16)
    ps = ds.probe_set()
    assert ps.n == 1000
    ids = _combo_ids(ps.labels)
    assert sorted(ids.tolist()) == list(range(1000))
    for f in FEATURES:
        held = heldout_mask(f, 3, 0)
        lab = ps.labels[f"heldout_{f}"]
        assert np.array_equal(
            lab, held[ps.labels["shape"], ps.labels["texture"], ps.labels["color"]]
        )
        assert lab.sum() == 510
    assert ps.inputs.shape == (1000, 3, 16, 16) and ps.inputs.dtype == np.uint8


def test_probe_set_is_shared_by_tasks_and_training_variants():
    a = Trifeature(image_size=16, renders=3, probe_combos=50)
    b = Trifeature(image_size=16, renders=9, n_val=10, probe_combos=50)
    assert a.probe_set().name == b.probe_set().name
    assert a.probe_set().hash == b.probe_set().hash
    c = Trifeature(image_size=16, probe_combos=50, cv_split=1)  # other held-out labels
    assert c.probe_set().name != a.probe_set().name
    d = Trifeature(image_size=16, probe_combos=50, probe_renders=2)
    assert d.probe_set().n == 100
