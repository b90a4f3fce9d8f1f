"""Decoders on z-scored units: what ``make_pipeline(StandardScaler(), model)`` computes per fold,
whatever the scale of the activations; the edge-of-grid record and the chance level."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge, RidgeClassifier
from sklearn.metrics import r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from actstore import ActstoreError, Execution
from actstore.decode._decode import penalty_at_edge
from actstore.probes import (
    ArraySource,
    ProbeConfig,
    encode_targets,
    logistic_cv,
    probe_arrays,
    ridge_cv,
    stratified_folds,
)

ALPHAS = [1e-2, 1.0, 100.0, 1e4]
CS = [1e-3, 1e-1, 10.0]


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(1):
        yield


def _data(n, d, seed=0, classes=4):
    """Units of very different scales and offsets; a few carry a class and a continuous
    feature; unit 1 is constant, unit 2 is zero except in a handful of rows (constant in the
    training rows of some folds)."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % classes)
    X = rng.standard_normal((n, d))
    X[:, : min(d, 4)] += 0.8 * np.eye(classes, min(d, 4))[y]
    c = X[:, 0] - X[:, min(d - 1, 3)] + 0.5 * rng.standard_normal(n)
    X = X * np.exp(rng.uniform(-9, 3, d)) + rng.uniform(-50, 50, d)
    if d > 2:
        X[:, 1] = 3.25
        X[:, 2] = 0.0
        X[rng.choice(n, 3, replace=False), 2] = 1e-3
    return X, y, c


def _pipeline_r2_and_acc(X, y, c, folds, alpha):
    acc, r2 = [], []
    for tr, te in folds.split():
        clf = make_pipeline(StandardScaler(), RidgeClassifier(alpha=alpha)).fit(X[tr], y[tr])
        acc.append(np.mean(clf.predict(X[te]) == y[te]))
        reg = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(X[tr], c[tr])
        r2.append(r2_score(c[te], reg.predict(X[te])))
    return np.array(acc), np.array(r2)


@pytest.mark.parametrize("form, n, d", [("primal", 200, 12), ("dual", 40, 90)])
def test_ridge_equals_the_standard_scaler_pipeline(form, n, d):
    X, y, c = _data(n, d, seed=1)
    T = encode_targets({"y": y, "c": c})
    folds = stratified_folds(n, 4, seed=3, stratify={"y": y})
    s = ridge_cv(ArraySource(X, block_rows=17), T, folds, ALPHAS, form=form)
    for i, alpha in enumerate(ALPHAS):
        acc, r2 = _pipeline_r2_and_acc(X, y, c, folds, alpha)
        np.testing.assert_array_equal(s["accuracy"][:, i, 0], acc)
        np.testing.assert_allclose(s["r2"][:, i, 1], r2, rtol=1e-6, atol=1e-9)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(16, 60), d=st.integers(3, 90), seed=st.integers(0, 10_000),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_random_shapes_with_constant_units_match_the_pipeline(n, d, seed, dtype):
    """n < d and n > d, constant units, float32 storage: held-out R^2 equals scikit-learn's
    pipeline on the same (float64) values."""
    X, _y, c = _data(n, d, seed=seed, classes=2)
    X = X.astype(dtype).astype(np.float64)
    T = encode_targets({"c": c})
    folds = stratified_folds(n, 3, seed=seed)
    s = ridge_cv(ArraySource(X.astype(dtype), block_rows=7), T, folds, [0.1, 10.0])
    for i, alpha in enumerate([0.1, 10.0]):
        for k, (tr, te) in enumerate(folds.split()):
            reg = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(X[tr], c[tr])
            ref = r2_score(c[te], reg.predict(X[te]))
            assert s["r2"][k, i, 0] == pytest.approx(ref, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("n, d", [(240, 16), (45, 80)])
def test_logistic_within_one_point_of_the_pipeline(n, d):
    X, y, _c = _data(n, d, seed=2, classes=3)
    T = encode_targets({"y": y})
    folds = stratified_folds(n, 3, seed=0, stratify={"y": y})
    s = logistic_cv(X, T, folds, CS, tol=1e-7, max_iter=3000, dtype="float64")
    for i, C in enumerate(CS):
        acc, ce = [], []
        for tr, te in folds.split():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                m = make_pipeline(StandardScaler(), LogisticRegression(
                    C=C, tol=1e-10, max_iter=10_000)).fit(X[tr], y[tr])
            p = m.predict_proba(X[te])
            acc.append(np.mean(np.argmax(p, axis=1) == y[te]))
            ce.append(-np.mean(np.log(p[np.arange(te.size), y[te]])))
        assert abs(s["accuracy"][:, i, 0].mean() - np.mean(acc)) <= 0.01
        assert s["cross_entropy"][:, i, 0].mean() == pytest.approx(np.mean(ce), rel=2e-3)


@pytest.mark.parametrize("decoder", ["ridge", "logistic"])
def test_accuracy_does_not_depend_on_the_scale_of_the_units(decoder):
    X, y, _ = _data(300, 24, seed=4, classes=5)
    ref = None
    for scale in (1.0, 1e-2, 1e-4, 1e4):
        ds = probe_arrays(X * scale, {"y": y}, decoders=(decoder,), n_splits=3)
        acc = float(ds.accuracy.values.ravel()[0])
        ref = acc if ref is None else ref
        assert abs(acc - ref) <= 0.005, scale
    # and per unit: every unit rescaled by its own factor, in another order
    rng = np.random.default_rng(0)
    perm = rng.permutation(X.shape[1])
    Xs = (X * np.exp(rng.uniform(-8, 8, X.shape[1])))[:, perm]
    ds = probe_arrays(Xs, {"y": y}, decoders=(decoder,), n_splits=3)
    assert abs(float(ds.accuracy.values.ravel()[0]) - ref) <= 0.005


def test_raw_units_are_still_available_and_differ_at_tiny_scale():
    rng = np.random.default_rng(5)
    y = np.arange(400) % 10
    X = rng.standard_normal((10, 64))[y] + rng.standard_normal((400, 64))
    X *= 1e-4  # the scale of an untrained deep layer
    for decoder in ("ridge", "logistic"):
        std = probe_arrays(X, {"y": y}, decoders=(decoder,), n_splits=3)
        raw = probe_arrays(X, {"y": y}, decoders=(decoder,), n_splits=3, standardize=False)
        assert float(std.accuracy.values.ravel()[0]) >= 0.95
        # every penalty of the default grids is huge next to activations this small
        assert float(raw.accuracy.values.ravel()[0]) <= 0.75


def test_standardize_is_a_setting_of_the_result():
    assert ProbeConfig().to_json()["standardize"] is True
    assert ProbeConfig(standardize=False).key() != ProbeConfig().key()
    with pytest.raises(ActstoreError, match="standardize must be True or False"):
        ProbeConfig(standardize="yes")


def test_a_result_computed_on_raw_units_is_other_settings(tmp_path):
    from stores import mlp_store

    from actstore.probes import run_probes

    y = np.arange(60) % 3
    url = mlp_store(str(tmp_path / "s.zarr"), ["r0"], {"shape": y})
    raw = ProbeConfig(decoders=("ridge",), n_splits=3, standardize=False)
    run_probes(url, config=raw, execution=Execution(workers=1))
    with pytest.raises(ActstoreError, match="other settings.*standardize"):
        run_probes(url, config=ProbeConfig(decoders=("ridge",), n_splits=3),
                   execution=Execution(workers=1))


def test_chance_is_the_majority_class_rate():
    y = np.arange(200) % 10  # balanced: 1/10, whatever the folds
    X = np.random.default_rng(0).standard_normal((200, 5))
    ds = probe_arrays(X, {"y": y, "u": np.r_[np.zeros(150), np.ones(50)].astype(int)},
                      decoders=("ridge",), n_splits=5)
    assert ds.chance.sel(feature="y").item() == pytest.approx(0.1)
    assert ds.chance.sel(feature="u").item() == pytest.approx(0.75)


def test_penalty_at_edge_flags_a_score_still_rising_toward_an_end():
    strong_first = np.array([3, 2, 1, 0])  # ridge: the largest alpha (index 3) is strongest
    path = np.array([[0.1, 0.5, 0.2, np.nan],
                     [0.2, 0.6, 0.2, np.nan],
                     [0.3, 0.4, 0.2, np.nan],
                     [0.4, 0.3, 0.2, np.nan]])
    chosen = np.array([3, 1, 3, 0])
    out = penalty_at_edge(path, chosen, strong_first)
    # rising toward the strong end; interior best; flat (a tie is no evidence); no score
    np.testing.assert_array_equal(out[:3], [1.0, 0.0, 0.0])
    assert np.isnan(out[3])
    # the weak end of the grid
    out = penalty_at_edge(path[::-1].copy(), np.array([0, 2, 0, 0]), strong_first)
    assert out[0] == 1.0


def test_probe_results_record_the_edge_of_the_grid():
    rng = np.random.default_rng(5)
    n = 300
    X = rng.standard_normal((n, 30))
    noise = rng.standard_normal(n)  # nothing to decode: the strongest penalty wins
    signal = X[:, 0] + 0.1 * rng.standard_normal(n)  # little shrinkage wanted
    ds = probe_arrays(X, {"noise": noise, "signal": signal}, decoders=("ridge",),
                      alphas=(1.0, 10.0, 100.0), n_splits=3, extend_grid=0)
    edge = ds.penalty_at_edge.sel(decoder="ridge")
    assert edge.sel(feature="noise").item() == 1.0
    assert ds.penalty.sel(decoder="ridge", feature="noise").item() == 100.0
    assert edge.sel(feature="signal").item() == 1.0  # the weak end: 1.0 still best
    # many weak units and noise: the middle penalty is best
    n = 100
    X = rng.standard_normal((n, 60))
    mixed = X[:, :10].sum(axis=1) + 3 * rng.standard_normal(n)
    ds = probe_arrays(X, {"mixed": mixed}, decoders=("ridge",), alphas=(1e-3, 30.0, 1e6),
                      n_splits=3, extend_grid=0)
    assert ds.penalty.sel(decoder="ridge", feature="mixed").item() == 30.0
    assert ds.penalty_at_edge.sel(decoder="ridge", feature="mixed").item() == 0.0


def test_the_grid_is_extended_beyond_the_end_it_sits_at():
    """By default a flagged penalty is chosen again over the grid extended by up to 3
    decades at that end: the scores equal a run with that wider grid given explicitly."""
    rng = np.random.default_rng(5)
    n = 300
    X = rng.standard_normal((n, 30))
    labels = {"noise": rng.standard_normal(n), "signal": X[:, 0] + 0.1 * rng.standard_normal(n)}
    ds = probe_arrays(X, labels, decoders=("ridge",), alphas=(1.0, 10.0, 100.0), n_splits=3)
    got = ds.sel(decoder="ridge")
    assert got.penalty.sel(feature="noise").item() > 100.0  # beyond the strong end
    assert got.penalty.sel(feature="signal").item() < 1.0  # beyond the weak end
    wide = probe_arrays(X, labels, decoders=("ridge",), n_splits=3, extend_grid=0,
                        alphas=tuple(10 ** np.arange(-3.0, 5.01, 0.5))).sel(decoder="ridge")
    assert wide.penalty_at_edge.sel(feature="signal").item() == 0
    for f in labels:
        # the same penalty and score as the wide grid, unless that one is still at its end
        if wide.penalty_at_edge.sel(feature=f).item() == 0:
            assert got.penalty.sel(feature=f).item() == pytest.approx(
                wide.penalty.sel(feature=f).item())
            assert got.r2.sel(feature=f).item() == pytest.approx(wide.r2.sel(feature=f).item(),
                                                                 rel=1e-9)
    assert ds.ridge_score.shape[0] == 3  # the path keeps the base grid
    with pytest.raises(ActstoreError, match="extend_grid"):
        ProbeConfig(extend_grid=-1)


def test_untrained_deep_network_decodes_like_the_pipeline(tmp_path):
    """The zoo's default initialisation shrinks activations layer by layer; standardised
    decoders still read a colour the shallow layers carry from the deepest ones, as a
    StandardScaler + LogisticRegression loop does, and not at chance."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    from actstore.store import create_store, open_store
    from actstore.training import RunSpec, TrainConfig, train_run

    url = str(tmp_path / "u.zarr")
    create_store(url)
    spec = RunSpec(dataset="trifeature", task="color", model="alexnet", seed=0,
                   dataset_params={"image_size": 32, "renders": 1, "n_val": 16,
                                   "probe_combos": 200},
                   train=TrainConfig(steps=1, checkpoints=2, eval_size=16))
    train_run(spec, url)
    r = open_store(url).reader("trifeature-color-alexnet-s0")
    y = np.asarray(r.labels["color"])
    chance = np.bincount(y).max() / y.size
    first = r.read("conv1", 0)
    for layer in ("conv1", "fc7", "out"):
        X = r.read(layer, 0)
        ds = probe_arrays(X, {"color": y}, decoders=("logistic",))
        acc = float(ds.accuracy.values.ravel()[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            ref = max(cross_val_score(
                make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=3000)), X, y,
                cv=StratifiedKFold(5, shuffle=True, random_state=0)).mean() for C in (0.1, 1.0))
        assert acc >= ref - 0.08, (layer, acc, ref)
        assert acc >= chance + 0.15, (layer, acc, chance)
    # the deep layers are much smaller than the first: a scale that raw decoders misread
    assert r.read("fc7", 0).std() < first.std()


def _nested_reference(X, y, folds, alphas):
    """scikit-learn's nested loop: per outer fold, GridSearchCV over the inner folds of its
    training rows (strongest penalty first, so that ties go to it), scored on the fold."""
    from sklearn.model_selection import GridSearchCV, PredefinedSplit

    accs, chosen = [], []
    for k, (tr, te) in enumerate(folds.split()):
        tf = folds.test_fold[tr]
        inner = PredefinedSplit(np.where(tf > k, tf - 1, tf))
        grid = GridSearchCV(make_pipeline(StandardScaler(), RidgeClassifier()),
                            {"ridgeclassifier__alpha": sorted(alphas, reverse=True)},
                            cv=inner).fit(X[tr], y[tr])
        chosen.append(grid.best_params_["ridgeclassifier__alpha"])
        accs.append(np.mean(grid.predict(X[te]) == y[te]))
    return np.mean(accs), chosen


def test_nested_selection_equals_a_scikit_learn_nested_loop():
    X, y, _ = _data(150, 10, seed=7, classes=3)
    folds = stratified_folds(150, 4, seed=1, stratify={"y": y})
    alphas = (1e-2, 1.0, 100.0, 1e4)
    ds = probe_arrays(X, {"y": y}, folds=folds, decoders=("ridge",), alphas=alphas,
                      select="nested")
    ref, chosen = _nested_reference(X, y, folds, alphas)
    assert ds.accuracy.sel(decoder="ridge", feature="y").item() == pytest.approx(ref)
    # the reported penalty is the one chosen most often over the outer folds
    values, counts = np.unique(chosen, return_counts=True)
    assert ds.penalty.sel(decoder="ridge", feature="y").item() in values[counts == counts.max()]


def test_nested_selection_with_an_explicit_split_chooses_on_the_training_part():
    from actstore.probes import explicit_split

    X, y, _ = _data(160, 10, seed=8, classes=2)
    is_test = np.arange(160) % 4 == 0
    alphas = (1e-2, 1.0, 100.0, 1e4)
    ds = probe_arrays(X, {"y": y, "part": is_test}, split="part", decoders=("ridge",),
                      alphas=alphas, select="nested", n_splits=3)
    # the inner folds: stratified 3-fold on the training part, as the engine makes them
    tr = np.flatnonzero(~is_test)
    inner = stratified_folds(tr.size, 3, seed=0, stratify={"y": y[tr]})
    scores = []
    for a in sorted(alphas, reverse=True):
        acc = [np.mean(make_pipeline(StandardScaler(), RidgeClassifier(alpha=a)).fit(
            X[tr][itr], y[tr][itr]).predict(X[tr][ite]) == y[tr][ite])
            for itr, ite in inner.split()]
        scores.append(np.mean(acc))
    best = sorted(alphas, reverse=True)[int(np.argmax(scores))]
    folds = explicit_split(is_test)
    model = make_pipeline(StandardScaler(), RidgeClassifier(alpha=best))
    test = np.flatnonzero(folds.test_mask(0))
    ref = np.mean(model.fit(X[tr], y[tr]).predict(X[test]) == y[test])
    assert ds.penalty.sel(decoder="ridge", feature="y").item() == best
    assert ds.accuracy.sel(decoder="ridge", feature="y").item() == pytest.approx(ref)


def test_permutation_null_is_the_decoding_of_permuted_labels():
    from actstore.decode._decode import permuted_copies

    rng = np.random.default_rng(3)
    n = 120
    y = np.arange(n) % 3
    X = rng.standard_normal((n, 6))
    X[:, 0] += 1.5 * y  # decodable well above chance
    folds = stratified_folds(n, 3, seed=0, stratify={"y": y})
    ds = probe_arrays(X, {"y": y}, folds=folds, decoders=("ridge",), permutations=9)
    perms = permuted_copies({"y": y}, 9, seed=0)
    null = [probe_arrays(X, {"y": v}, folds=folds, decoders=("ridge",)).accuracy.item()
            for v in perms.values()]
    got = ds.sel(decoder="ridge", feature="y")
    assert got.null_mean.item() == pytest.approx(np.mean(null))
    assert got.null_p95.item() == pytest.approx(np.percentile(null, 95))
    assert got.p_value.item() == pytest.approx(0.1)  # (1 + 0) / (1 + 9): none as good
    assert got.null_mean.item() < 0.5 < got.accuracy.item()
    assert np.isnan(probe_arrays(X, {"y": y}, decoders=("ridge",)).null_mean).all()


def test_selection_and_permutation_settings_are_checked():
    assert ProbeConfig(select="nested", permutations=5).to_json()["select"] == "nested"
    with pytest.raises(ActstoreError, match="select must be one of cv, nested"):
        ProbeConfig(select="inner")
    with pytest.raises(ActstoreError, match="permutations"):
        ProbeConfig(permutations=-1)


def test_probe_command_records_the_settings_and_counts_edges(tmp_path):
    import json

    import xarray as xr
    from stores import mlp_store
    from typer.testing import CliRunner

    from actstore.cli import app

    rng = np.random.default_rng(0)
    url = mlp_store(str(tmp_path / "s.zarr"), ["r0"],
                    {"shape": np.arange(60) % 3, "noise": rng.standard_normal(60)})
    res = CliRunner().invoke(app, [
        "probe", url, "--decoders", "ridge", "--folds", "3", "--no-standardize",
        "--select", "nested", "--permutations", "3", "--alphas", "1,10", "--workers", "1",
        "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(report["penalty_at_edge"]) == {"ridge"}
    ds = xr.open_zarr(url, group="results/probes/default")
    config = json.loads(ds.attrs["actstore.config"])
    assert (config["standardize"], config["select"], config["permutations"]) == (
        False, "nested", 3)
    assert int((ds.penalty_at_edge == 1).sum()) == report["penalty_at_edge"]["ridge"]
    assert np.isfinite(ds.p_value.sel(decoder="ridge", feature="shape")).all()
    bad = CliRunner().invoke(app, ["probe", url, "--select", "inner"])
    assert bad.exit_code == 2 and "select must be one of cv, nested" in bad.output
