"""Variance explained by a feature: against scikit-learn, invariances, and the store driver."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

from actstore import ActstoreError
from actstore.probes import (
    ArraySource,
    explicit_split,
    stratified_folds,
    variance_arrays,
    variance_explained,
)


def _data(seed: int = 0, n: int = 240, d: int = 12):
    rng = np.random.default_rng(seed)
    labels = {
        "shape": rng.integers(0, 4, n),
        "color": rng.integers(0, 3, n),
        "size": rng.standard_normal(n),
    }
    E = rng.standard_normal((4, d))
    X = (E[labels["shape"]] + 0.4 * rng.standard_normal((n, d)) + 3.0
         + 0.5 * labels["size"][:, None]).astype(np.float32)
    return X, labels


def _design(lab: np.ndarray) -> np.ndarray:
    if lab.dtype.kind == "f":
        return lab[:, None]
    return np.eye(int(lab.max()) + 1)[lab]


def _sklearn_r2(X, lab, train, test) -> float:
    F = _design(lab)
    model = LinearRegression().fit(F[train], X[train].astype(np.float64))
    return r2_score(X[test].astype(np.float64), model.predict(F[test]),
                    multioutput="variance_weighted")


def test_explicit_split_equals_sklearn_linear_regression():
    X, labels = _data()
    rng = np.random.default_rng(1)
    is_test = rng.random(len(X)) < 0.3
    res = variance_explained(ArraySource(X, block_rows=37), labels, explicit_split(is_test))
    assert res["features"] == ["shape", "color", "size"]
    for j, f in enumerate(res["features"]):
        ref = _sklearn_r2(X, labels[f], ~is_test, is_test)
        assert res["r2"][j] == pytest.approx(ref, abs=1e-9)
    # the shape carries most of the variance, colour none (negative held out)
    assert res["r2"][0] > 0.5 and res["r2"][1] < 0.1


def test_kfold_is_mean_of_per_fold_sklearn_scores():
    X, labels = _data(seed=2)
    folds = stratified_folds(len(X), 4, seed=3, stratify={"shape": labels["shape"]})
    res = variance_explained(X, labels, folds)
    for j, f in enumerate(res["features"]):
        per = [_sklearn_r2(X, labels[f], tr, te) for tr, te in folds.split()]
        np.testing.assert_allclose(res["r2_folds"][:, j], per, atol=1e-9)
        assert res["r2"][j] == pytest.approx(np.mean(per), abs=1e-9)


def test_class_missing_from_training_matches_minimum_norm_solution():
    # a class present only in held-out rows: its one-hot column is all zero in training
    X, labels = _data(seed=4)
    is_test = labels["shape"] == 3
    is_test |= np.random.default_rng(0).random(len(X)) < 0.2
    res = variance_explained(X, {"shape": labels["shape"]}, explicit_split(is_test))
    ref = _sklearn_r2(X, labels["shape"], ~is_test, is_test)
    assert res["r2"][0] == pytest.approx(ref, abs=1e-9)


def test_torch_backend_matches_numpy():
    import torch

    X, labels = _data(seed=5)
    folds = stratified_folds(len(X), 3, seed=0, stratify={"shape": labels["shape"]})
    a = variance_explained(X, labels, folds)
    b = variance_explained(ArraySource(torch.from_numpy(X), block_rows=50), labels, folds)
    np.testing.assert_allclose(a["r2_folds"], b["r2_folds"], atol=1e-10)
    c = variance_explained(X, labels, folds, backend="torch")
    np.testing.assert_allclose(a["r2_folds"], c["r2_folds"], atol=1e-10)


def test_variance_arrays_dataset():
    X, labels = _data(seed=6)
    ds = variance_arrays(X, labels, n_splits=3)
    assert ds["r2"].dims == ("feature",)
    assert ds["r2_folds"].shape == (3, 3)
    assert ds["r2"].sel(feature="shape") > ds["r2"].sel(feature="color")


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.01, 100.0), offset=st.floats(-50, 50))
def test_invariant_to_rotation_scale_and_offset(seed, scale, offset):
    X, labels = _data(seed=seed, n=90, d=6)
    rng = np.random.default_rng(seed)
    Qm, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    folds = stratified_folds(len(X), 3, seed=seed, stratify={"shape": labels["shape"]})
    a = variance_explained(X.astype(np.float64), labels, folds)
    Y = scale * (X.astype(np.float64) @ Qm) + offset
    b = variance_explained(Y, labels, folds)
    np.testing.assert_allclose(a["r2_folds"], b["r2_folds"], atol=1e-7)
    assert np.all(a["r2"] <= 1.0 + 1e-12)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_exact_function_of_feature_explains_everything(seed):
    rng = np.random.default_rng(seed)
    n = 60
    lab = np.arange(n) % 3
    X = rng.standard_normal((3, 5))[lab]  # the representation is a function of the label
    folds = stratified_folds(n, 3, seed=seed, stratify=lab)
    res = variance_explained(X, {"f": lab, "noise": rng.integers(0, 2, n)}, folds)
    assert res["r2"][0] == pytest.approx(1.0, abs=1e-9)
    assert res["r2"][1] < 1.0


def test_mismatched_rows_is_an_error():
    X, labels = _data()
    folds = stratified_folds(len(X) - 1, 3)
    with pytest.raises(ActstoreError, match="rows"):
        variance_explained(X, labels, folds)


def test_store_driver_matches_direct_computation(tmp_path):
    from actstore.probes import VarianceConfig, run_variance, write_synthetic_store

    url = str(tmp_path / "v.zarr")
    write_synthetic_store(url, n_runs=2, steps=(0, 10, 100), widths=(8, 12), n=120,
                                features={"shape": 3, "color": 2})
    ds = run_variance(url, name="v", config=VarianceConfig(n_splits=3))
    assert ds["r2"].dims == ("run", "checkpoint", "layer", "feature")
    assert ds["r2"].shape == (2, 3, 2, 2)
    from actstore.store import open_store

    stored = open_store(url).read_result("variance", "v")
    np.testing.assert_allclose(stored["r2"].values, ds["r2"].values)
    # one cell against the array-level function
    rd = open_store(url).reader("run1")
    X = rd.read("layer1", 10)
    labels = rd.labels
    from actstore.probes import ProbeConfig, make_folds

    folds, _ = make_folds(labels, ProbeConfig(decoders=("ridge",), n_splits=3))
    ref = variance_explained(X, labels, folds)
    got = ds["r2"].sel(run="run1", checkpoint=10, layer="layer1").values
    np.testing.assert_allclose(got, ref["r2"], atol=1e-10)
    # the final checkpoint's r2_final equals its own r2; earlier ones share its denominator
    fin = ds.sel(checkpoint=100)
    np.testing.assert_allclose(fin["r2_final"].values, fin["r2"].values, atol=1e-10)
    final = variance_explained(rd.read("layer1", 100), labels, folds)
    want = np.mean((ref["sst"][:, None] - ref["sse"]) / final["sst"][:, None], axis=0)
    got = ds["r2_final"].sel(run="run1", checkpoint=10, layer="layer1").values
    np.testing.assert_allclose(got, want, atol=1e-10)


def test_store_driver_bad_denominator(tmp_path):
    from actstore.probes import VarianceConfig, run_variance, write_synthetic_store

    url = str(tmp_path / "v.zarr")
    write_synthetic_store(url, n_runs=1, steps=(0,), widths=(4,), n=60,
                          features={"shape": 3})
    with pytest.raises(ActstoreError, match="denominator"):
        run_variance(url, config=VarianceConfig(denominator="mean"))


def test_store_driver_covers_runs_on_different_probe_sets(tmp_path):
    from actstore.probes import VarianceConfig, run_variance
    from actstore.store import ProbeSet, create_store

    url = str(tmp_path / "two.zarr")
    st_ = create_store(url)
    rng = np.random.default_rng(0)
    for i, feat in enumerate(("easy", "hard")):
        lab = np.arange(60) % 2
        st_.add_probe_set(ProbeSet(f"ps{i}", labels={feat: lab, "heldout_x": lab}))
        X = (rng.standard_normal((60, 5)) + 4.0 * lab[:, None]).astype(np.float32)
        with st_.writer(f"r{i}", f"ps{i}", [0], attrs={"seed": i}) as w:
            w.write_slot(0, {"h": X})
    ds = run_variance(url, config=VarianceConfig(n_splits=3))
    assert ds["run"].values.tolist() == ["r0", "r1"]
    assert ds["feature"].values.tolist() == ["easy", "hard"]  # heldout_* left out
    r2 = ds["r2"].sel(checkpoint=0, layer="h")
    assert float(r2.sel(run="r0", feature="easy")) > 0.5
    assert float(r2.sel(run="r1", feature="hard")) > 0.5
    assert np.isnan(float(r2.sel(run="r0", feature="hard")))


def test_variance_config_reads_study_options_and_records_its_settings(tmp_path):
    import json

    from actstore.probes import VarianceConfig, run_variance, write_synthetic_store
    from actstore.store import open_store

    config = VarianceConfig.from_options({"runs": "all", "layers": "layer*", "folds": 3,
                                          "seed": 2, "denominator": "own"})
    assert config == VarianceConfig(n_splits=3, seed=2, denominator="own")
    with pytest.raises(ActstoreError, match="unknown option 'fold'.*options: folds, seed"):
        VarianceConfig.from_options({"fold": 3})
    with pytest.raises(ActstoreError, match="at least 2 folds"):
        VarianceConfig(n_splits=1)
    url = str(tmp_path / "v.zarr")
    write_synthetic_store(url, n_runs=1, steps=(0,), widths=(4,), n=60, features={"shape": 3})
    run_variance(url, name="v", layers="layer*", config=config)
    stored = json.loads(open_store(url).result_attrs("variance", "v")["actstore.config"])
    assert stored == {"n_splits": 3, "seed": 2, "split": None, "denominator": "own",
                      "runs": None, "checkpoints": None, "layers": "layer*", "features": None}
    with pytest.raises(ActstoreError, match="result name '.v'"):
        run_variance(url, name=".v", config=config)
