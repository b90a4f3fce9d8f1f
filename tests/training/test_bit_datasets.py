"""Binary easy/hard task and multi-feature tasks: label statistics and bit structure."""

from __future__ import annotations

import numpy as np
import pytest

from actstore import ActstoreError
from actstore.training import BinaryEasyHard, MultiFeature, make_dataset, task_targets
from actstore.training._data import set_parity


def test_set_parity_is_uniform_given_the_value():
    rng = np.random.default_rng(0)
    n, k = 40000, 3
    block = rng.integers(0, 2, size=(n, 6), dtype=np.uint8)
    value = rng.integers(0, 2, n)
    set_parity(block, k, value)
    assert np.array_equal(block[:, :k].sum(axis=1) % 2, value)
    # each of the 4 patterns of a given parity is equally likely
    codes = block[value == 1, :k] @ np.array([4, 2, 1])
    freq = np.bincount(codes, minlength=8) / (value == 1).sum()
    assert np.allclose(freq[[1, 2, 4, 7]], 0.25, atol=0.02)
    assert np.all(freq[[0, 3, 5, 6]] == 0)


@pytest.mark.parametrize("easy_p", [0.5, 0.75, 1.0])
def test_binary_label_balance_and_predictivity(easy_p):
    ds = BinaryEasyHard(easy_predictivity=easy_p, hard_predictivity=0.9, n_train=20000)
    data = ds.make(("label",), seed=1)
    x, lab = data.train.inputs, data.train.labels
    n = len(x)
    assert x.shape == (20000, 32) and x.dtype == np.uint8
    assert lab["label"].sum() == n // 2  # exactly balanced
    # the features are what the inputs encode: bit 1 (easy), XOR of bits 17 and 18 (hard)
    assert np.array_equal(x[:, 0], lab["easy"])
    assert np.array_equal(x[:, 16] ^ x[:, 17], lab["hard"])
    for feat, p in (("easy", easy_p), ("hard", 0.9)):
        rate = (lab[feat] == lab["label"]).mean()
        assert abs(rate - p) <= 4 * np.sqrt(max(p * (1 - p), 1e-9) / n) + 1e-9
    # bits that carry no feature are fair coins, independent of the label
    free = np.delete(x, [0, 16, 17], axis=1)
    assert np.abs(free[lab["label"] == 1].mean(axis=0) - 0.5).max() < 0.03


def test_binary_probe_set_features_independent_and_balanced():
    ps = BinaryEasyHard(n_probe=1000).probe_set()
    e, h = ps.labels["easy"], ps.labels["hard"]
    joint = np.bincount(2 * e + h, minlength=4)
    assert np.all(joint == 250)
    assert np.array_equal(ps.inputs[:, 0], e)
    assert np.array_equal(ps.inputs[:, 16] ^ ps.inputs[:, 17], h)


def test_binary_bad_parameters():
    for kw in ({"easy_predictivity": 1.2}, {"hard_predictivity": -0.5}):
        with pytest.raises(ActstoreError, match=r"\[0, 1\]"):
            BinaryEasyHard(**kw)
    with pytest.raises(ActstoreError, match="exceeds domain_bits"):
        BinaryEasyHard(domain_bits=4, hard_bits=5)


def test_multifeature_complexity_prevalence_position():
    feats = [
        {"name": "lin", "bits": 1, "prevalence": 0.5, "position": 2},
        {"name": "par4", "bits": 4, "prevalence": 0.5, "position": 0},
        {"name": "rare", "bits": 1, "prevalence": 0.1, "position": 1},
    ]
    ds = MultiFeature(features=feats, domain_bits=6, noise_bits=3, n_train=20000)
    data = ds.make(task_targets("all", ds), seed=0)
    x, lab = data.train.inputs, data.train.labels
    assert x.shape == (20000, 3 * 6 + 3)
    assert np.array_equal(x[:, 0], lab["lin"])
    assert np.array_equal(x[:, 6:10].sum(axis=1) % 2, lab["par4"])
    assert np.array_equal(x[:, 12], lab["rare"])
    for f in feats:
        p, m = f["prevalence"], lab[f["name"]].mean()
        assert abs(m - p) <= 4 * np.sqrt(p * (1 - p) / len(x))
    assert [(h.name, h.position) for h in data.heads] == [("lin", 2), ("par4", 0), ("rare", 1)]
    ps = ds.probe_set()
    for f in feats:  # balanced in the probe set whatever the training prevalence
        assert ps.labels[f["name"]].sum() == ps.n // 2


@pytest.mark.parametrize(
    ("features", "match"),
    [
        ([{"name": "a", "bits": 1}, {"name": "a", "bits": 2}], "unique"),
        ([{"name": "a", "position": 0}, {"name": "b", "position": 0}], "positions must differ"),
        ([{"name": "a", "colour": 1}], "unknown key colour in multifeature feature #0"),
        ([{"name": "a", "prevalence": 2.0}], r"\[0, 1\]"),
        ([{"name": "a", "bits": 9}], "bits"),
        ([{"name": "not valid"}], "identifier"),
        ([], "non-empty"),
    ],
)
def test_multifeature_bad_specs(features, match):
    with pytest.raises(ActstoreError, match=match):
        make_dataset("multifeature", {"features": features, "domain_bits": 8})
