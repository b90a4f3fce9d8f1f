"""Regression tests: V-information is max(0, mean held-out R^2), the variance result's final
denominator is the run's last complete checkpoint, and complexity --overwrite leaves no stale
codes."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from actstore.probes import (
    DEFAULT_ALPHAS,
    ComplexityConfig,
    ProbeConfig,
    VarianceConfig,
    make_folds,
    probe_arrays,
    read_codes,
    run_complexity,
    run_variance,
    select_penalty,
    stratified_folds,
    vinfo_of_codes,
    write_synthetic_store,
)
from actstore.store import open_store

ALPHAS = tuple(DEFAULT_ALPHAS)


def _sk_r2_path(X, Y, folds, alphas=ALPHAS):
    """Held-out R^2 of scikit-learn ``Ridge`` on units z-scored with the training rows (the
    pipeline researchers run) per (fold, alpha, column)."""
    X = np.asarray(X, dtype=np.float64)
    out = np.zeros((folds.n_splits, len(alphas), Y.shape[1]))
    for k, (tr, te) in enumerate(folds.split()):
        for i, a in enumerate(alphas):
            model = make_pipeline(StandardScaler(), Ridge(alpha=a))
            pred = model.fit(X[tr], Y[tr]).predict(X[te])
            out[k, i] = r2_score(Y[te], pred.reshape(len(te), -1), multioutput="raw_values")
    return out


def _sk_choose(r2_path, alphas=ALPHAS):
    """Per column: the chosen alpha (mean R^2 over folds, ties to the stronger penalty), the
    mean R^2 there, and the (buggy) mean over folds of the clipped R^2 there."""
    mean = r2_path.mean(axis=0)  # (P, q)
    order = np.argsort(-np.asarray(alphas))  # strongest first
    best = order[np.argmax(mean[order], axis=0)]
    cols = np.arange(r2_path.shape[2])
    return (np.asarray(alphas)[best], mean[best, cols],
            np.maximum(r2_path[:, best, cols], 0.0).mean(axis=0))


def _weak_data(seed=6, n=150, d=10):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    labels = {
        "weak": 0.15 * X[:, 0] + rng.standard_normal(n),
        "mid": 0.3 * X[:, 1] + rng.standard_normal(n),
        "none": rng.standard_normal(n),
        "strong": X[:, 2] + 0.3 * rng.standard_normal(n),
    }
    return X, labels


# -- 1. V-information = max(0, held-out R^2 aggregate) ------------------------------------------


def test_select_penalty_clips_the_mean_r2_not_each_fold():
    r2 = np.array([[[0.3]], [[-0.5]], [[0.1]]])  # (folds, penalties, features)
    scores = {"r2": r2, "vinfo": np.maximum(r2, 0.0),
              "accuracy": np.full_like(r2, np.nan)}
    _, summary = select_penalty(scores, ["continuous"])
    assert summary["r2"][0] == pytest.approx(-0.1 / 3)
    assert summary["vinfo"][0] == 0.0  # not mean(0.3, 0, 0.1) = 0.133
    r2[1] = -0.1
    _, summary = select_penalty({**scores, "r2": r2, "vinfo": np.maximum(r2, 0)},
                                ["continuous"])
    assert summary["vinfo"][0] == pytest.approx(0.1)  # max(0, mean) where the mean is positive


def test_probe_result_vinfo_is_max0_of_its_r2_and_matches_sklearn():
    X, labels = _weak_data()
    folds = stratified_folds(len(X), 5, seed=0)
    ds = probe_arrays(X, labels, folds=folds, decoders=("ridge",), alphas=ALPHAS,
                      extend_grid=0)  # the same grid as the scikit-learn loop
    ridge = ds.sel(decoder="ridge")
    r2, vinfo = ridge["r2"].values, ridge["vinfo"].values
    # row by row: vinfo == max(0, r2) of the same aggregate
    np.testing.assert_array_equal(vinfo, np.maximum(r2, 0.0))
    names = list(labels)
    Y = np.stack([labels[f] for f in names], axis=1)
    alpha, mean_r2, clipped_mean = _sk_choose(_sk_r2_path(X, Y, folds))
    for j, f in enumerate(names):
        sel = ridge.sel(feature=f)
        assert float(sel["penalty"]) == alpha[j]
        assert float(sel["r2"]) == pytest.approx(mean_r2[j], rel=1e-6, abs=1e-9)
        assert float(sel["vinfo"]) == pytest.approx(max(0.0, mean_r2[j]), rel=1e-6, abs=1e-9)
    # the data exercise the bug: some feature's folds disagree in sign at the chosen penalty
    assert np.any(clipped_mean > np.maximum(mean_r2, 0.0) + 1e-3)


def test_vinfo_of_codes_is_max0_of_mean_r2_and_matches_sklearn():
    X, labels = _weak_data()
    Z = np.stack([labels[f] for f in labels], axis=1)
    folds = stratified_folds(len(X), 5, seed=0)
    res = vinfo_of_codes(X, Z, folds)
    Zs = (Z - Z.mean(axis=0)) / Z.std(axis=0)
    alpha, mean_r2, clipped_mean = _sk_choose(_sk_r2_path(X, Zs, folds))
    np.testing.assert_array_equal(res["alpha"], alpha)
    np.testing.assert_allclose(res["r2"], mean_r2, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(res["vinfo"], np.maximum(mean_r2, 0.0), rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(res["vinfo"], np.maximum(res["r2"], 0.0))
    assert np.any(clipped_mean > np.maximum(mean_r2, 0.0) + 1e-3)


def test_complexity_vinfo_layer_and_k_use_max0_of_mean_r2(tmp_path):
    url = str(tmp_path / "cx.zarr")
    write_synthetic_store(url, n_runs=1, steps=(0, 10), widths=(6, 12), n=150,
                          features={"shape": 3, "color": 2})
    ds = run_complexity(url, name="c", config=ComplexityConfig(k=8, n_splits=3, max_epochs=60,
                                                            importance=False))
    st = open_store(url)
    rd = st.reader("run0")
    Z = read_codes(st, "c", "run0")["codes"].values.astype(np.float64)
    folds, _ = make_folds(rd.labels, ProbeConfig(decoders=("ridge",), n_splits=3, seed=0))
    ok = Z.std(axis=0) > 0
    Zs = (Z[:, ok] - Z[:, ok].mean(axis=0)) / Z[:, ok].std(axis=0)
    exercised = False
    for layer in ("layer0", "layer1"):
        X = rd.read(layer, 10)
        _, mean_r2, clipped_mean = _sk_choose(_sk_r2_path(X, Zs, folds))
        got = ds["vinfo_layer"].sel(run="run0", layer=layer).values[ok]
        np.testing.assert_allclose(got, np.maximum(mean_r2, 0.0), rtol=1e-5, atol=1e-8)
        exercised |= bool(np.any(clipped_mean > np.maximum(mean_r2, 0.0) + 1e-4))
    assert exercised  # the bug would show on these codes
    v = ds["vinfo_layer"].sel(run="run0").values  # (layer, atom)
    np.testing.assert_allclose(ds["complexity"].sel(run="run0").values[ok],
                               1.0 - np.clip(v[:, ok], 0, 1).mean(axis=0), atol=1e-12)


# -- 2. variance: r2_final over the run's final checkpoint, whatever the selection --------------


@pytest.fixture(scope="module")
def var_store(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("var") / "v.zarr")
    write_synthetic_store(url, n_runs=2, steps=(0, 10, 100), widths=(8, 12), n=120,
                          features={"shape": 3, "color": 2})
    return url


def test_variance_r2_final_does_not_depend_on_the_checkpoint_selection(var_store):
    full = run_variance(var_store, name="all", config=VarianceConfig(n_splits=3), write=False)
    part = run_variance(var_store, name="part", config=VarianceConfig(n_splits=3),
                        checkpoints="0,10", write=False)
    assert part["checkpoint"].values.tolist() == [0, 10]
    np.testing.assert_allclose(part["r2_final"].values,
                               full["r2_final"].sel(checkpoint=[0, 10]).values, atol=1e-12)
    np.testing.assert_allclose(part["r2"].values, full["r2"].sel(checkpoint=[0, 10]).values,
                               atol=1e-12)
    # the step that was used is recorded
    assert part["final_checkpoint"].values.tolist() == [100, 100]
    assert full["final_checkpoint"].values.tolist() == [100, 100]
    # the last selected checkpoint is not the final one: its r2_final differs from its r2
    assert not np.allclose(part["r2_final"].sel(checkpoint=10).values,
                           part["r2"].sel(checkpoint=10).values)


def test_variance_own_denominator_with_a_selection(var_store):
    own = run_variance(var_store, name="own", checkpoints="first", write=False,
                       config=VarianceConfig(n_splits=3, denominator="own"))
    np.testing.assert_allclose(own["r2_final"].values, own["r2"].values, atol=1e-10)


# -- 4. complexity --overwrite with a run subset: no stale codes --------------------------------


def test_complexity_overwrite_with_a_run_subset_removes_the_other_runs_codes(tmp_path):
    url = str(tmp_path / "ow.zarr")
    write_synthetic_store(url, n_runs=2, steps=(0,), widths=(6, 8), n=100,
                          features={"shape": 3})
    opts = dict(n_splits=3, max_epochs=20, importance=False, over_checkpoints=False)
    run_complexity(url, name="c", config=ComplexityConfig(k=4, **opts))
    # another result whose name starts with "c." keeps its codes
    run_complexity(url, name="c.x", config=ComplexityConfig(k=3, **opts))
    st = open_store(url)
    assert {"c.run0", "c.run1", "c.x.run0", "c.x.run1"} <= set(st.result_names("nmf"))
    ds = run_complexity(url, name="c", runs="run0", overwrite=True,
                        config=ComplexityConfig(k=5, **opts))
    assert ds["run"].values.tolist() == ["run0"]
    st = open_store(url)
    names = set(st.result_names("nmf"))
    assert "c.run1" not in names  # belonged to the replaced result
    assert {"c.run0", "c.x.run0", "c.x.run1"} <= names
    assert read_codes(st, "c", "run0")["codes"].shape[1] == 5
    with pytest.raises(Exception, match="no result"):
        read_codes(st, "c", "run1")
    assert read_codes(st, "c.x", "run1")["codes"].shape[1] == 3


def test_complexity_refused_overwrite_keeps_every_old_code(tmp_path):
    from actstore import ActstoreError

    url = str(tmp_path / "keep.zarr")
    write_synthetic_store(url, n_runs=2, steps=(0,), widths=(6,), n=100,
                          features={"shape": 3})
    opts = dict(n_splits=3, max_epochs=20, importance=False, over_checkpoints=False)
    run_complexity(url, name="c", config=ComplexityConfig(k=4, **opts))
    with pytest.raises(ActstoreError, match="other settings"):
        run_complexity(url, name="c", runs="run0", config=ComplexityConfig(k=4, **opts))
    assert {"c.run0", "c.run1"} <= set(open_store(url).result_names("nmf"))


# -- 3. `actstore variance` prints its warnings as `actstore: warning:` lines -------------------


def test_variance_cli_prints_warnings_as_one_actstore_line(tmp_path):
    import subprocess
    import sys

    from actstore.store import ProbeSet, create_store

    url = str(tmp_path / "inc.zarr")
    st = create_store(url)
    n = 60
    st.add_probe_set(ProbeSet("p", labels={"shape": np.arange(n) % 3}))
    rng = np.random.default_rng(0)
    with st.writer("r", probe_set="p", steps=[0, 10, 100]) as w:  # checkpoint 100 incomplete
        for s in (0, 10):
            w.write_slot(s, {"l": rng.standard_normal((n, 4)).astype("float32")})
    out = subprocess.run(
        [sys.executable, "-m", "actstore.cli", "variance", url, "--folds", "3", "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert ("actstore: warning: run 'r' checkpoint 100 is incomplete; skipped"
            in out.stderr), out.stderr
    assert "ProbeWarning" not in out.stderr and "_variance.py" not in out.stderr
