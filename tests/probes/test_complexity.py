"""V-information of dictionary features, complexity, time-to-decode, and the store driver."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from actstore import ActstoreError
from actstore.probes import (
    ArraySource,
    ComplexityConfig,
    code_targets,
    codes_as_labels,
    complexity_score,
    decodable_step,
    probe_arrays,
    read_codes,
    run_complexity,
    stratified_folds,
    time_to_decode,
    vinfo_of_codes,
    write_synthetic_store,
)


def test_exact_linear_feature_has_vinfo_one_at_its_layer():
    rng = np.random.default_rng(0)
    n, d = 300, 10
    X = rng.standard_normal((n, d))
    other = rng.standard_normal((n, d))  # an unrelated layer
    z = np.stack([X @ rng.standard_normal(d), np.abs(X[:, 2]) + 0.0 * X[:, 0]], axis=1)
    folds = stratified_folds(n, 5, seed=0)
    at = vinfo_of_codes(ArraySource(X, block_rows=64), z, folds)
    assert at["vinfo"][0] == pytest.approx(1.0, abs=1e-4)
    assert at["vinfo"][1] < 0.5  # |x| is not a linear function of x
    away = vinfo_of_codes(other, z, folds)
    assert away["vinfo"][0] < 0.1
    K = complexity_score(np.stack([at["vinfo"], away["vinfo"]]))
    assert K[0] == pytest.approx(0.5, abs=0.06)


def test_vinfo_matches_sklearn_ridge_at_the_chosen_penalty():
    rng = np.random.default_rng(1)
    n, d = 200, 8
    X = rng.standard_normal((n, d))
    Z = np.abs(X @ rng.standard_normal((d, 3)) + rng.standard_normal((n, 3)))
    folds = stratified_folds(n, 4, seed=2)
    res = vinfo_of_codes(X, Z, folds)
    for j in range(3):
        zs = (Z[:, j] - Z[:, j].mean()) / Z[:, j].std()
        per = []
        for tr, te in folds.split():
            # units z-scored with the training fold's statistics, as in a pipeline
            m = make_pipeline(StandardScaler(), Ridge(alpha=res["alpha"][j])).fit(X[tr], zs[tr])
            per.append(r2_score(zs[te], m.predict(X[te])))
        # I_V = max(0, held-out R^2): the clip applies to the mean over folds
        assert res["r2"][j] == pytest.approx(np.mean(per), abs=1e-8)
        assert res["vinfo"][j] == pytest.approx(max(0.0, np.mean(per)), abs=1e-8)


def test_vinfo_torch_backend_matches_numpy():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((120, 6)).astype(np.float32)
    Z = np.abs(X @ rng.standard_normal((6, 4)) + 0.5 * rng.standard_normal((120, 4)))
    folds = stratified_folds(120, 3, seed=1)
    a = vinfo_of_codes(X, Z, folds)
    b = vinfo_of_codes(X, Z, folds, backend="torch")
    np.testing.assert_allclose(a["vinfo"], b["vinfo"], atol=1e-10)
    np.testing.assert_array_equal(a["alpha"], b["alpha"])


def test_constant_features_are_nan_and_left_out_of_targets():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((60, 4))
    Z = np.c_[np.abs(X[:, 0]), np.zeros(60), X[:, 1] ** 2]
    targets, usable = code_targets(Z)
    assert usable.tolist() == [True, False, True]
    assert targets.Y.shape == (60, 2)
    np.testing.assert_allclose(targets.Y.std(axis=0), 1.0)
    res = vinfo_of_codes(X, Z, stratified_folds(60, 3))
    assert np.isnan(res["vinfo"][1]) and np.isfinite(res["vinfo"][[0, 2]]).all()
    with pytest.raises(ActstoreError, match="2-D"):
        code_targets(np.zeros(5))


@settings(max_examples=30, deadline=None)
@given(v=st.lists(st.floats(-0.5, 1.5, allow_nan=False), min_size=6, max_size=6))
def test_complexity_and_time_to_decode_are_in_unit_interval(v):
    arr = np.asarray(v).reshape(3, 2)
    for f in (complexity_score, time_to_decode):
        out = f(arr)
        assert out.shape == (2,)
        assert np.all((out >= 0) & (out <= 1))
    # more decodable everywhere -> less complex
    assert np.all(complexity_score(np.clip(arr, 0, 1) + 0.0) >= complexity_score(
        np.clip(arr + 0.2, 0, 1)) - 1e-12)


def test_decodable_step():
    v = np.array([[0.1, 0.0, np.nan], [0.6, 0.2, np.nan], [0.9, 0.4, np.nan]])
    out = decodable_step(v, [0, 10, 100], threshold=0.5)
    assert out[0] == 10 and np.isnan(out[1]) and np.isnan(out[2])


@pytest.fixture(scope="module")
def synth_store(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("cx") / "s.zarr")
    write_synthetic_store(url, n_runs=2, steps=(0, 10, 100), widths=(8, 24), n=200,
                          features={"shape": 3, "color": 2})
    return url


def test_store_driver_writes_codes_and_complexity(synth_store):
    from actstore.store import open_store

    ds = run_complexity(synth_store, name="c",
                        config=ComplexityConfig(k=12, n_splits=3, max_epochs=60))
    assert ds["complexity"].shape == (2, 12)
    assert ds["vinfo_layer"].dims == ("run", "layer", "atom")
    assert ds["layer"].values.tolist() == ["layer0", "layer1"]
    assert ds["vinfo_checkpoint"].shape == (2, 3, 12)
    ok = np.isfinite(ds["complexity"].values)
    assert ok.any()
    c = ds["complexity"].values[ok]
    assert np.all((c >= 0) & (c <= 1))
    # the complexity is 1 - mean over layers of the stored V-information
    want = 1 - np.clip(ds["vinfo_layer"].values, 0, 1).mean(axis=1)
    np.testing.assert_allclose(ds["complexity"].values, np.clip(want, 0, 1))
    st_ = open_store(synth_store)
    assert "complexity/c" in st_.result_names()
    codes = read_codes(st_, "c", "run0")
    assert codes["codes"].dims == ("sample", "atom")
    assert codes.attrs["layer"] == "layer1" and codes.attrs["checkpoint"] == 100
    # the codes reconstruct the layer to the reported error
    A = np.clip(st_.reader("run0").read("layer1", 100).astype(np.float64), 0, None)
    err = np.linalg.norm(A - codes["codes"].values.astype(np.float64)
                         @ codes["dictionary"].values.astype(np.float64))
    assert err == pytest.approx(codes.attrs["error"], rel=1e-4)
    assert codes.attrs["relative_error"] < 0.6
    # V-information at the dictionary's own layer and checkpoint is the same number twice
    np.testing.assert_allclose(
        ds["vinfo_layer"].sel(run="run0", layer="layer1").values,
        ds["vinfo_checkpoint"].sel(run="run0", checkpoint=100).values,
    )


def test_codes_are_continuous_targets_for_the_decoder_engine(synth_store):
    from actstore.store import open_store

    run_complexity(synth_store, name="c2", runs="run1",
                   config=ComplexityConfig(k=6, n_splits=3, over_checkpoints=False,
                                           importance=False, max_epochs=40))
    st_ = open_store(synth_store)
    labels = codes_as_labels(read_codes(st_, "c2", "run1"))
    assert labels and all(v.dtype.kind == "f" for v in labels.values())
    X = st_.reader("run1").read("layer1", 100)
    out = probe_arrays(X, labels, decoders=("ridge",), n_splits=3)
    assert set(out["feature"].values.tolist()) == set(labels)
    assert np.all(np.isfinite(out["r2"].values))
    assert float(out["r2"].max()) > 0.5  # codes are nearly linear in their own layer


def test_store_driver_errors(synth_store):
    with pytest.raises(ActstoreError, match="no layer"):
        run_complexity(synth_store, config=ComplexityConfig(layer="fc9"), write=False)
    with pytest.raises(ActstoreError, match="no run"):
        run_complexity(synth_store, runs="nope*", write=False)
    with pytest.raises(ActstoreError, match="positive integer"):
        run_complexity(synth_store, config=ComplexityConfig(k=0), write=False)


def test_importance_on_a_trained_run_equals_autograd_through_its_head(tmp_path):
    from actstore.probes import gradient_x_activation
    from actstore.store import create_store, open_store
    from actstore.training import CaptureConfig, RunSpec, TrainConfig, load_saved_model, train_run

    url = str(tmp_path / "t.zarr")
    create_store(url)
    spec = RunSpec(
        dataset="binary", task="label", model="mlp", seed=0,
        dataset_params={"n_train": 256, "n_val": 64, "n_probe": 128},
        model_params={"hidden": [16, 12], "activation": "relu"},
        train=TrainConfig(steps=20, checkpoints=2, eval_size=64),
        capture=CaptureConfig(),
    )
    wdir = tmp_path / "weights"
    train_run(spec, url, weights_dir=wdir)
    ds = run_complexity(url, name="t", config=ComplexityConfig(k=5, n_splits=3, max_epochs=50))
    assert ds["source_layer"].values.tolist() == ["fc2"]
    assert float(ds["head_residual"].values[0]) < 1e-4
    codes = read_codes(open_store(url), "t", spec.run_id)
    step = int(codes.attrs["checkpoint"])
    model = load_saved_model(wdir / spec.run_id, step=step).double()
    # the probe set does not label the task's feature: the predicted class is used
    assert ds["importance_class"].sel(target="label").values.tolist() == ["predicted"]
    logits = open_store(url).reader(spec.run_id).read("out", step)
    y = np.argmax(logits, axis=1)
    want = gradient_x_activation(model.out, codes["codes"].values, codes["dictionary"].values, y)
    got = ds["importance"].sel(target="label").values[0]
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-6)
    assert np.abs(want).max() > 0


def test_any_run_even_without_labels_or_head(tmp_path):
    from actstore.store import ProbeSet, create_store

    url = str(tmp_path / "plain.zarr")
    st_ = create_store(url)
    st_.add_probe_set(ProbeSet("stim", labels={}, sample=np.arange(80)))
    rng = np.random.default_rng(0)
    h1 = rng.standard_normal((80, 6)).astype(np.float32)
    h2 = np.maximum(h1 @ rng.standard_normal((6, 10)), 0).astype(np.float32)  # ReLU of h1
    with st_.writer("net", "stim", [0, 5], attrs={"seed": 0}) as w:
        w.write_slot(0, {"a": rng.standard_normal((80, 6)).astype(np.float32),
                         "b": rng.random((80, 10)).astype(np.float32)})
        w.write_slot(5, {"a": h1, "b": h2})
    ds = run_complexity(url, name="x", config=ComplexityConfig(k=5, n_splits=3, max_epochs=50))
    assert ds["source_layer"].values.tolist() == ["b"]
    assert ds.sizes["target"] == 0 and np.isnan(ds["head_residual"].values[0])
    # "a" (negative values) is probed, "b" factorised; b's features are linear-ish in a
    assert ds["vinfo_layer"].sel(layer="a").max() > 0.5
    v = ds["vinfo_checkpoint"].sel(run="net")
    assert float(v.sel(checkpoint=5).mean()) > float(v.sel(checkpoint=0).mean())


def test_complexity_records_standardize_and_refuses_the_other_setting(synth_store):
    import json

    import xarray as xr

    kw = dict(k=4, n_splits=3, over_checkpoints=False, importance=False, max_epochs=20)
    run_complexity(synth_store, name="std", runs="run0", config=ComplexityConfig(**kw))
    attrs = xr.open_zarr(synth_store, group="results/complexity/std").attrs
    assert json.loads(attrs["actstore.config"])["standardize"] is True
    with pytest.raises(ActstoreError, match="standardize"):
        run_complexity(synth_store, name="std", runs="run0",
                       config=ComplexityConfig(standardize=False, **kw))


def test_complexity_config_reads_study_options():
    config = ComplexityConfig.from_options({"runs": "run0", "k": 4, "folds": 3,
                                            "layers": "layer0, layer1", "checkpoints": False})
    assert config == ComplexityConfig(k=4, n_splits=3, layers=("layer0", "layer1"),
                                      over_checkpoints=False)
    settings = config.to_json()
    assert settings["layers"] == ["layer0", "layer1"] and settings["threshold"] == 0.5
    assert "backend" not in settings  # the array backend does not change the numbers
    with pytest.raises(ActstoreError, match="unknown option 'device'"):
        ComplexityConfig.from_options({"device": "cuda"})
    with pytest.raises(ActstoreError, match="threshold"):
        ComplexityConfig(threshold=2.0)
