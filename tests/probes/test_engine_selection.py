"""The probe engine's selections: first/last of runs still training, features added to a
result, exports and summaries of a selection, decoders in another order."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from stores import error_line
from threadpoolctl import threadpool_limits
from typer.testing import CliRunner

from actstore import ActstoreError, Execution
from actstore.cli import app
from actstore.features import VarianceConfig, run_variance
from actstore.probes import (
    ProbeConfig,
    ProbeWarning,
    plan_probes,
    run_probes,
    summary_table,
    write_synthetic_store,
)
from actstore.store import open_store

FAST = ProbeConfig(decoders=("ridge",), n_splits=3, alphas=(0.1, 10.0, 1000.0), Cs=(0.01, 1.0))
CLI_FAST = ["--folds", "3", "--alphas", "0.1,10,1000", "--cs", "0.01,1", "--workers", "1"]

IN_PROCESS = Execution(workers=1)  # every job in this process
runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(1):
        yield


@pytest.fixture
def training_store(tmp_path):
    """run0 complete at 0, 50, 200, 300; run1 still training: 300 planned, not written."""
    url = str(tmp_path / "t.zarr")
    store = write_synthetic_store(url, n_runs=2, steps=[0, 50, 200], widths=[4, 6], n=90,
                                  features={"shape": 3, "color": 2})
    rng = np.random.default_rng(0)
    with store.writer("run0", probe_set="synthetic", steps=[0, 50, 200, 300],
                      attrs=store.reader("run0").attrs) as w:
        w.write_slot(300, {"layer0": rng.standard_normal((90, 4)).astype("float32"),
                           "layer1": rng.standard_normal((90, 6)).astype("float32")})
    with store.writer("run1", probe_set="synthetic", steps=[0, 50, 200, 300],
                      attrs=store.reader("run1").attrs):
        pass  # slot 300 planned, never written
    return url


@pytest.fixture
def store_url(tmp_path):
    url = str(tmp_path / "s.zarr")
    write_synthetic_store(url, n_runs=2, steps=[0, 10, 100], widths=[4, 6], n=90,
                          features={"shape": 3, "color": 2, "texture": 2})
    return url


# --- 1. first/last are each run's first/last complete checkpoint ---------------------------


def test_last_is_each_runs_last_complete_checkpoint(training_store):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ProbeWarning)  # nothing is skipped
        plan = plan_probes(training_store, checkpoints="last", config=FAST)
        ds = run_probes(training_store, name="last", checkpoints="last", execution=IN_PROCESS,
                        config=FAST)
    assert sorted({(j.run, j.step) for j in plan.jobs}) == [("run0", 300), ("run1", 200)]
    assert plan.skipped == []
    # runs with different steps fill the union of steps; NaN where a run has no job
    assert ds.checkpoint.values.tolist() == [200, 300]
    acc = ds.accuracy.sel(decoder="ridge")
    assert np.isfinite(acc.sel(run="run1", checkpoint=200)).all()
    assert np.isnan(acc.sel(run="run1", checkpoint=300)).all()
    assert np.isfinite(acc.sel(run="run0", checkpoint=300)).all()
    assert np.isnan(acc.sel(run="run0", checkpoint=200)).all()
    assert int(ds.done.sum()) == 4
    # the summary averages each run's own last checkpoint: one value, not "200 -> 300"
    table = summary_table(ds)
    cell = table.loc["shape (acc)", "layer0"]
    assert "->" not in cell
    mean = float(np.mean([float(acc.sel(run="run0", checkpoint=300, layer="layer0",
                                        feature="shape")),
                          float(acc.sel(run="run1", checkpoint=200, layer="layer0",
                                        feature="shape"))]))
    assert float(cell) == pytest.approx(mean, abs=0.006)


def test_first_is_the_first_complete_checkpoint(tmp_path):
    url = str(tmp_path / "f.zarr")
    store = write_synthetic_store(url, n_runs=1, steps=[10, 20], widths=[4], n=60,
                                  features={"a": 2})
    with store.writer("run0", probe_set="synthetic", steps=[0, 10, 20],
                      attrs=store.reader("run0").attrs):
        pass  # slot 0 planned after the others and never written
    plan = plan_probes(url, checkpoints="first", config=FAST)
    assert [j.step for j in plan.jobs] == [10]
    assert plan.skipped == []


def test_last_of_a_run_without_complete_checkpoints_warns_or_fails(tmp_path):
    url = str(tmp_path / "e.zarr")
    store = write_synthetic_store(url, n_runs=1, steps=[0], widths=[4], n=60,
                                  features={"a": 2})
    with store.writer("fresh", probe_set="synthetic", steps=[0, 5],
                      attrs={"model": "m", "task": "t", "seed": 5, "dataset": "synthetic"}):
        pass
    with pytest.warns(ProbeWarning, match="run 'fresh' has no complete checkpoint"):
        plan = plan_probes(url, checkpoints="last", config=FAST)
    assert [(j.run, j.step) for j in plan.jobs] == [("run0", 0)]
    with pytest.raises(ActstoreError, match="run 'fresh' has no complete checkpoint"):
        plan_probes(url, checkpoints="last", config=FAST, strict=True)


def test_cli_last_keeps_a_run_still_training(training_store):
    r = runner.invoke(app, ["probe", training_store, "--decoders", "ridge", "--checkpoints",
                            "last", "--json", *CLI_FAST])
    assert r.exit_code == 0, r.output
    assert "incomplete" not in r.output
    rep = json.loads(r.stdout)
    assert rep["jobs_done"] == 4 and rep["checkpoints"] == [200, 300]


def test_variance_last_keeps_a_run_still_training(training_store):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ProbeWarning)
        ds = run_variance(training_store, checkpoints="last", config=VarianceConfig(n_splits=3),
                          write=False)
    assert ds.checkpoint.values.tolist() == [200, 300]
    assert np.isfinite(ds.r2.sel(run="run1", checkpoint=200)).all()
    assert np.isfinite(ds.r2.sel(run="run0", checkpoint=300)).all()
    r = runner.invoke(app, ["variance", training_store, "--checkpoints", "last",
                            "--folds", "3", "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert "incomplete" not in r.output


# --- 2. features added to an existing result ------------------------------------------------


def test_adding_features_computes_them_for_every_finished_job(store_url):
    first = run_probes(store_url, name="gf", features="color", execution=IN_PROCESS, config=FAST,
                       checkpoints="0,100")
    assert first.feature.values.tolist() == ["color"]
    with pytest.warns(ProbeWarning, match="gains feature.*shape, texture"):
        ds = run_probes(store_url, name="gf", execution=IN_PROCESS, config=FAST, checkpoints="100")
    assert sorted(ds.feature.values.tolist()) == ["color", "shape", "texture"]
    assert ds.feature_kind.values.tolist() == ["categorical"] * 3
    assert bool(ds.done.sel(checkpoint=[0, 100]).all())
    # every finished job has every feature, also checkpoint 0 outside this selection
    assert np.isfinite(ds.accuracy.sel(checkpoint=[0, 100])).all()
    stored = open_store(store_url).read_result("probes", "gf")
    assert np.isfinite(stored.accuracy.sel(checkpoint=[0, 100])).all()
    # a re-run with all features has nothing left to do
    again = run_probes(store_url, name="gf", execution=IN_PROCESS, config=FAST, checkpoints="0,100")
    assert again.attrs["computed"] == 0


def test_jobs_of_a_result_decode_all_its_features(store_url, monkeypatch):
    import actstore.decode._engine as eng

    run_probes(store_url, name="all", execution=IN_PROCESS, config=FAST, checkpoints="0")
    seen = []
    real = eng.run_job
    monkeypatch.setattr(eng, "run_job",
                        lambda url, job, feats, *a, **k: seen.append(list(feats))
                        or real(url, job, feats, *a, **k))
    ds = run_probes(store_url, name="all", features="color", execution=IN_PROCESS, config=FAST,
                    checkpoints="10")
    # same features (and so the same folds) as the result's other jobs: no gaps
    assert seen and all(sorted(f) == ["color", "shape", "texture"] for f in seen)
    assert np.isfinite(ds.accuracy.sel(checkpoint=[0, 10])).all()


def test_cli_adding_features_is_no_traceback(store_url):
    base = ["probe", store_url, "--decoders", "ridge", "--name", "gf", *CLI_FAST]
    r = runner.invoke(app, [*base, "--features", "color"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, base)
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    ds = open_store(store_url).read_result("probes", "gf")
    assert bool(ds.done.all()) and np.isfinite(ds.accuracy).all()


def test_adding_features_when_a_job_cannot_be_recomputed_is_refused(store_url):
    run_probes(store_url, name="gf", features="color", execution=IN_PROCESS, config=FAST,
               checkpoints="0")
    store = open_store(store_url, mode="a")
    old = store.read_result("probes", "gf")
    ghost = old.assign_coords(run=["run0", "gone"])  # a run no longer in the store
    store.write_result("probes", "gf", ghost)
    with pytest.raises(ActstoreError, match="cannot add feature.*run 'gone' is no longer in.*"
                                            "--overwrite"):
        run_probes(store_url, name="gf", execution=IN_PROCESS, config=FAST, checkpoints="0")


# --- 3. export and summary follow the selection ---------------------------------------------


def test_export_and_summary_follow_the_selection(store_url, tmp_path):
    from actstore.decode import select_result

    run_probes(store_url, name="x", execution=IN_PROCESS, config=FAST)  # the whole store
    ds = run_probes(store_url, name="x", runs="run1", layers="layer1", features="shape",
                    checkpoints="last", execution=IN_PROCESS, config=FAST)
    view = select_result(ds)
    assert view.run.values.tolist() == ["run1"]
    assert view.layer.values.tolist() == ["layer1"]
    assert view.checkpoint.values.tolist() == [100]
    assert view.feature.values.tolist() == ["shape"]
    assert int(view.done.sum()) == 1
    out = tmp_path / "s.csv"
    r = runner.invoke(app, ["probe", store_url, "--decoders", "ridge", "--name", "x",
                            "--runs", "run1", "--layers", "layer1", "--features", "shape",
                            "--out", str(out), "--json", *CLI_FAST])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out)
    assert set(df.run) == {"run1"} and set(df.layer) == {"layer1"}
    assert set(df.feature) == {"shape"} and len(df) == 3  # 3 checkpoints, 1 decoder
    rep = json.loads(r.stdout)
    assert rep["runs"] == ["run1"] and rep["layers"] == ["layer1"]
    assert list(rep["summary"]) == ["layer1"] and list(rep["summary"]["layer1"]) == [
        "shape (acc)"]
    acc = ds.accuracy.sel(decoder="ridge", run="run1", layer="layer1", feature="shape")
    first, last = rep["summary"]["layer1"]["shape (acc)"].split(" -> ")
    assert float(first) == pytest.approx(float(acc.sel(checkpoint=0)), abs=0.006)
    assert float(last) == pytest.approx(float(acc.sel(checkpoint=100)), abs=0.006)


def test_text_summary_follows_the_selection(store_url):
    run_probes(store_url, name="default", execution=IN_PROCESS, config=FAST)
    r = runner.invoke(app, ["probe", store_url, "--decoders", "ridge", "--layers", "layer0",
                            "--features", "color", *CLI_FAST])
    assert r.exit_code == 0, r.output
    assert "layer0" in r.output and "layer1" not in r.output
    assert "color (acc)" in r.output and "shape (acc)" not in r.output


# --- 4. decoders are a set ------------------------------------------------------------------


def test_decoders_in_another_order_continue_the_result(store_url):
    cfg = ProbeConfig(decoders=("ridge", "logistic"), n_splits=3, alphas=(0.1, 10.0),
                      Cs=(0.01, 1.0), max_iter=100)
    first = run_probes(store_url, name="d", execution=IN_PROCESS, config=cfg, checkpoints="0",
                       layers="layer0")
    swapped = ProbeConfig(decoders=("logistic", "ridge"), n_splits=3, alphas=(0.1, 10.0),
                          Cs=(0.01, 1.0), max_iter=100)
    ds = run_probes(store_url, name="d", execution=IN_PROCESS, config=swapped, checkpoints="0,10",
                    layers="layer0")
    assert ds.decoder.values.tolist() == ["ridge", "logistic"]  # the stored order
    assert ds.attrs["reused"] == 2 and ds.attrs["computed"] == 2
    np.testing.assert_array_equal(ds.accuracy.sel(checkpoint=0).values,
                                  first.accuracy.sel(checkpoint=0).values)
    with pytest.raises(ActstoreError, match="other settings"):
        run_probes(store_url, name="d", execution=IN_PROCESS, config=FAST, checkpoints="0")


def test_cli_decoders_in_another_order(store_url):
    base = ["probe", store_url, "--name", "d", "--layers", "layer0", "--checkpoints", "0",
            *CLI_FAST]
    r = runner.invoke(app, [*base, "--decoders", "ridge,logistic"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, [*base, "--decoders", "logistic,ridge"])
    assert r.exit_code == 0, r.output
    assert "already done" in r.output
    r = runner.invoke(app, [*base, "--decoders", "ridge"])
    assert "other settings" in error_line(r)


def test_folds_of_runs_with_other_features_are_all_described(tmp_path):
    """Runs of two probe sets (study variants) decode other features: the result's ``folds``
    describes both splits, not the first run's alone."""
    from actstore.probes import run_variance as variance
    from actstore.store import ProbeSet, create_store

    url = str(tmp_path / "v.zarr")
    st = create_store(url)
    rng = np.random.default_rng(0)
    n = 60
    for ps, feats in (("pa", ("linear", "parity")), ("pb", ("common", "rare"))):
        st.add_probe_set(ProbeSet(ps, labels={f: rng.integers(0, 2, n) for f in feats}))
        with st.writer(f"run_{ps}", probe_set=ps, steps=[0]) as w:
            w.write_slot(0, {"l": rng.standard_normal((n, 4)).astype("float32")})
    res = run_probes(url, name="both", config=FAST, execution=IN_PROCESS)
    var = variance(url, name="both", config=VarianceConfig(n_splits=3), write=False)
    for folds in (res.attrs["folds"], var.attrs["folds"]):
        assert "on linear, parity" in folds and "on common, rare" in folds, folds
