"""The probe engine on stores: selection, results in the store, re-runs, bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import xarray as xr
from sklearn.linear_model import Ridge, RidgeClassifier
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from actstore import ActstoreError, Execution
from actstore.probes import (
    DECODERS,
    ProbeConfig,
    ProbeInterrupted,
    ProbeWarning,
    export_results,
    plan_probes,
    probe_arrays,
    run_probes,
    stratified_folds,
    summary_table,
    write_synthetic_store,
)
from actstore.store import ProbeSet, create_store, open_store

FAST = ProbeConfig(n_splits=3, alphas=(0.1, 10.0, 1000.0), Cs=(0.01, 1.0), max_iter=200)

IN_PROCESS = Execution(workers=1)  # every job in this process


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(1):
        yield


@pytest.fixture
def store_url(tmp_path):
    url = str(tmp_path / "s.zarr")
    write_synthetic_store(url, n_runs=2, steps=[0, 10, 100], widths=[6, 24], n=120,
                          features={"shape": 3, "color": 4})
    return url


def test_registry_names():
    assert set(DECODERS) == {"ridge", "logistic"}


def test_probe_arrays_equals_a_scikit_learn_loop():
    rng = np.random.default_rng(0)
    n = 150
    a = rng.integers(0, 3, n)
    c = rng.standard_normal(n)
    X = rng.standard_normal((n, 9))
    X[:, 0] += a
    X[:, 1] += c
    alphas = (0.01, 1.0, 100.0)
    ds = probe_arrays(X, {"a": a, "c": c}, decoders=("ridge",), alphas=alphas, n_splits=3,
                      extend_grid=0)  # the grid of the scikit-learn loop
    folds = stratified_folds(n, 3, seed=0, stratify={"a": a})
    accs, r2s, bals = [], [], []
    for alpha in alphas:
        fold_acc, fold_r2, fold_bal = [], [], []
        for tr, te in folds.split():
            pred = make_pipeline(StandardScaler(), RidgeClassifier(alpha=alpha)).fit(
                X[tr], a[tr]).predict(X[te])
            fold_acc.append(np.mean(pred == a[te]))
            fold_bal.append(balanced_accuracy_score(a[te], pred))
            fold_r2.append(make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(
                X[tr], c[tr]).score(X[te], c[te]))
        accs.append(np.mean(fold_acc))
        r2s.append(np.mean(fold_r2))
        bals.append(np.mean(fold_bal))
    ridge = ds.sel(decoder="ridge")
    np.testing.assert_allclose(ds["ridge_score"].sel(feature="a"), accs, rtol=1e-12)
    np.testing.assert_allclose(ds["ridge_score"].sel(feature="c"), r2s, rtol=1e-6)
    best_a = int(np.argmax(np.round(accs, 12)[::-1]))  # ties: the strongest penalty
    best_a = len(alphas) - 1 - best_a
    assert float(ridge.penalty.sel(feature="a")) == alphas[best_a]
    assert float(ridge.accuracy.sel(feature="a")) == pytest.approx(accs[best_a])
    assert float(ridge.balanced_accuracy.sel(feature="a")) == pytest.approx(bals[best_a])
    best_c = int(np.argmax(r2s))
    assert float(ridge.r2.sel(feature="c")) == pytest.approx(r2s[best_c], rel=1e-6)
    assert float(ridge.vinfo.sel(feature="c")) == pytest.approx(max(r2s[best_c], 0), rel=1e-6)
    assert np.isnan(float(ridge.accuracy.sel(feature="c")))
    majority = [np.mean(a[te] == np.bincount(a[tr]).argmax()) for tr, te in folds.split()]
    assert float(ds.chance.sel(feature="a")) == pytest.approx(np.mean(majority))


def test_run_probes_writes_an_xarray_dataset_and_reruns_skip(store_url, monkeypatch):
    ds = run_probes(store_url, name="t", execution=IN_PROCESS, config=FAST)
    assert dict(ds.sizes) == {"decoder": 2, "run": 2, "checkpoint": 3, "layer": 2,
                              "feature": 2, "alpha": 3, "C": 2}
    assert bool(ds.done.all())
    acc = ds.accuracy.sel(decoder="logistic")
    # the synthetic features become decodable over training
    assert float(acc.sel(checkpoint=100).mean()) > float(acc.sel(checkpoint=0).mean()) + 0.2
    assert np.all((ds.accuracy >= 0) & (ds.accuracy <= 1))
    # plain xarray reads the result from the store
    plain = xr.open_zarr(store_url, group="results/probes/t", zarr_format=3,
                         consolidated=False)
    np.testing.assert_array_equal(plain.accuracy.values, ds.accuracy.values)
    assert json.loads(plain.attrs["actstore.config"])["n_splits"] == 3

    import actstore.decode._engine as eng

    calls = []
    real = eng.run_job
    monkeypatch.setattr(eng, "run_job", lambda *a, **k: calls.append(a) or real(*a, **k))
    again = run_probes(store_url, name="t", execution=IN_PROCESS, config=FAST)
    assert calls == []
    np.testing.assert_array_equal(again.accuracy.values, ds.accuracy.values)
    # a wider selection computes only the new jobs
    more = run_probes(store_url, name="t", execution=IN_PROCESS, config=FAST, layers="layer0")
    assert calls == [] and bool(more.done.all())
    with pytest.raises(ActstoreError, match="other settings.*--overwrite"):
        run_probes(store_url, name="t", execution=IN_PROCESS, config=ProbeConfig(n_splits=4))


def test_partial_results_then_the_rest(store_url):
    first = run_probes(store_url, name="p", execution=IN_PROCESS, config=FAST, checkpoints="first",
                       layers="layer1")
    assert int(first.done.sum()) == 2
    full = run_probes(store_url, name="p", execution=IN_PROCESS, config=FAST)
    assert int(full.done.sum()) == 12
    sel = {"checkpoint": 0, "layer": "layer1"}
    np.testing.assert_array_equal(full.accuracy.sel(**sel).values,
                                  first.accuracy.sel(**sel).values)


def test_selection_errors_list_valid_names(store_url):
    store = open_store(store_url)
    with pytest.raises(ActstoreError, match="no layer matches 'fc9'; layers: layer0, layer1"):
        plan_probes(store, layers="fc9")
    with pytest.raises(ActstoreError, match="unknown feature 'size'; features: shape, color"):
        plan_probes(store, features="size")
    with pytest.raises(ActstoreError, match="no run matches 'x\\*'; runs: run0, run1"):
        plan_probes(store, runs="x*")
    with pytest.raises(ActstoreError, match="no checkpoint at step 7; steps: 0, 10, 100"):
        plan_probes(store, checkpoints="7")
    plan = plan_probes(store, runs="run1", layers="layer*", checkpoints="first,last",
                       features="color")
    assert [(j.run, j.step, j.layer) for j in plan.jobs] == [
        ("run1", 0, "layer0"), ("run1", 100, "layer0"),
        ("run1", 0, "layer1"), ("run1", 100, "layer1")]
    assert plan.features == ["color"]


def test_incomplete_checkpoint_warns_or_fails_with_strict(tmp_path):
    url = str(tmp_path / "inc.zarr")
    store = write_synthetic_store(url, n_runs=1, steps=[0, 10], widths=[5], n=60,
                                  features={"a": 2})
    with store.writer("run0", probe_set="synthetic", steps=[0, 10, 50],
                      attrs=store.reader("run0").attrs):
        pass  # slot 50 planned but never written: incomplete
    with pytest.warns(ProbeWarning, match="run 'run0' checkpoint 50 is incomplete"):
        ds = run_probes(url, execution=IN_PROCESS, config=FAST)
    assert ds.checkpoint.values.tolist() == [0, 10]
    with pytest.raises(ActstoreError, match="checkpoint 50 is incomplete.*--strict"):
        run_probes(url, name="s", execution=IN_PROCESS, config=FAST, strict=True)


def _store_with_labels(tmp_path, labels, X=None, n=40):
    url = str(tmp_path / "lab.zarr")
    store = create_store(url)
    store.add_probe_set(ProbeSet("ps", labels=labels))
    rng = np.random.default_rng(0)
    with store.writer("r", probe_set="ps", steps=[0],
                      attrs={"model": "m", "task": "t", "seed": 0, "dataset": "d"}) as w:
        w.write_slot(0, {"h": rng.standard_normal((n, 6)) if X is None else X})
    return url


def test_bad_labels_are_refused_before_computing(tmp_path):
    n = 40
    url = _store_with_labels(tmp_path, {"one": np.zeros(n, int), "ok": np.arange(n) % 2})
    with pytest.raises(ActstoreError, match="'one' has a single class.*--features"):
        run_probes(url, execution=IN_PROCESS, config=FAST)
    ds = run_probes(url, execution=IN_PROCESS, config=FAST, features="ok")
    assert ds.feature.values.tolist() == ["ok"]


def test_nan_activations_name_the_job(tmp_path):
    import zarr

    url = _store_with_labels(tmp_path, {"a": np.arange(40) % 2})
    # the writer refuses NaN; a store written by other tools may still hold some
    zarr.open_group(url, mode="r+")["runs/r/h"][0, 13, 2] = np.nan
    with pytest.raises(ActstoreError, match="run 'r', layer 'h', checkpoint 0.*row 13"):
        run_probes(url, execution=IN_PROCESS, config=FAST)


def _files(url):
    from pathlib import Path

    root = Path(url)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".lock" not in p.name}


def test_nan_found_while_decoding_leaves_the_results_as_they_were(tmp_path):
    import zarr

    url = str(tmp_path / "two.zarr")
    store = create_store(url)
    n = 60
    store.add_probe_set(ProbeSet("ps", labels={"a": np.arange(n) % 2}))
    rng = np.random.default_rng(0)
    with store.writer("r", probe_set="ps", steps=[0, 1],
                      attrs={"model": "m", "task": "t", "seed": 0, "dataset": "d"}) as w:
        for step in (0, 1):
            w.write_slot(step, {"big": rng.standard_normal((n, 8)),
                                "small": rng.standard_normal((n, 3))})
    zarr.open_group(url, mode="r+")["runs/r/small"][1, 7, 0] = np.inf
    before = _files(url)
    # the big jobs run (and are flushed to the store) before the bad one is read
    with pytest.raises(ActstoreError, match="layer 'small', checkpoint 1.*row 7"):
        run_probes(url, execution=IN_PROCESS, config=FAST, flush_seconds=0.0)
    assert _files(url) == before
    # an existing result is kept as it was, not extended with the jobs of the failed call
    run_probes(url, execution=IN_PROCESS, config=FAST, layers="big", checkpoints="0")
    before = _files(url)
    with pytest.raises(ActstoreError, match="layer 'small', checkpoint 1"):
        run_probes(url, execution=IN_PROCESS, config=FAST, flush_seconds=0.0)
    assert _files(url) == before
    ds = open_store(url).read_result("probes", "default")
    assert int(ds.done.sum()) == 1


def _interrupt_after(monkeypatch, jobs):
    """Ctrl-C when the engine starts job number ``jobs + 1``; returns the real job runner."""
    import actstore.decode._engine as eng

    real, calls = eng.run_job, []

    def interrupting(*a, **k):
        if len(calls) == jobs:
            raise KeyboardInterrupt
        calls.append(a)
        return real(*a, **k)

    monkeypatch.setattr(eng, "run_job", interrupting)
    return real


def test_overwrite_keeps_the_old_result_until_the_new_one_is_complete(store_url, monkeypatch):
    import actstore.decode._engine as eng

    old = run_probes(store_url, name="t", execution=IN_PROCESS, config=FAST)
    other = ProbeConfig(n_splits=4, alphas=FAST.alphas, Cs=FAST.Cs, max_iter=200)
    real = _interrupt_after(monkeypatch, 3)
    with pytest.raises(ProbeInterrupted, match="3 of 12 jobs finished and saved"):
        run_probes(store_url, name="t", execution=IN_PROCESS, config=other, overwrite=True)
    store = open_store(store_url)
    assert store.result_names("probes") == ["t"]  # the staging copy is not listed
    assert store.staged_result_names() == ["probes/t"]  # but shown as a pending replacement
    from typer.testing import CliRunner

    from actstore.cli import app

    out = CliRunner().invoke(app, ["ls", store_url]).output
    assert "pending: an interrupted --overwrite of results/probes/t" in " ".join(out.split())
    kept = store.read_result("probes", "t")
    assert kept.attrs["actstore.config_key"] == FAST.key()
    np.testing.assert_array_equal(kept.accuracy.values, old.accuracy.values)
    # the next overwrite continues from the staged jobs and then replaces the result
    monkeypatch.setattr(eng, "run_job", real)
    new = run_probes(store_url, name="t", execution=IN_PROCESS, config=other, overwrite=True)
    assert (new.attrs["computed"], new.attrs["reused"]) == (9, 3)
    store = open_store(store_url)
    assert not store.has_result("probes", ".t.overwrite")
    assert store.staged_result_names() == []
    assert store.read_result("probes", "t").attrs["actstore.config_key"] == other.key()
    assert json.loads(new.attrs["actstore.config"])["n_splits"] == 4


def test_a_pending_overwrite_is_mentioned_and_counts_are_of_the_selection(store_url,
                                                                         monkeypatch):
    import actstore.decode._engine as eng

    run_probes(store_url, name="t", execution=IN_PROCESS, config=FAST)
    real = _interrupt_after(monkeypatch, 2)
    with pytest.raises(ProbeInterrupted, match="2 of 12 jobs finished and saved"):
        run_probes(store_url, name="t", execution=IN_PROCESS, config=FAST, overwrite=True)
    monkeypatch.setattr(eng, "run_job", real)
    with pytest.warns(ProbeWarning, match="interrupted --overwrite of results/probes/t holds 2 "
                                          "of 12 jobs"):
        ds = run_probes(store_url, name="t", execution=IN_PROCESS, config=FAST, layers="layer0")
    assert (ds.attrs["computed"], ds.attrs["reused"]) == (0, 6)


def test_other_settings_are_named_in_the_refusal(store_url):
    run_probes(store_url, name="t", execution=IN_PROCESS, config=FAST, layers="layer0",
               checkpoints="0")
    other = ProbeConfig(n_splits=4, alphas=FAST.alphas, Cs=FAST.Cs, max_iter=200)
    with pytest.raises(ActstoreError, match=r"folds 3 there, 4 now\); choose another"):
        run_probes(store_url, name="t", execution=IN_PROCESS, config=other)


def test_explicit_split_label(tmp_path):
    n = 80
    rng = np.random.default_rng(1)
    a = np.arange(n) % 3
    split = np.where(rng.random(n) < 0.3, "val", "train")
    X = rng.standard_normal((n, 5))
    X[:, 0] += 2 * a
    url = _store_with_labels(tmp_path, {"a": a, "split": split}, X=X, n=n)
    ds = run_probes(url, execution=IN_PROCESS,
                    config=ProbeConfig(split="split", decoders=("ridge",), alphas=(1.0,)))
    assert ds.feature.values.tolist() == ["a"]
    tr, te = split == "train", split == "val"
    ref = RidgeClassifier(alpha=1.0).fit(X[tr], a[tr]).score(X[te], a[te])
    assert float(ds.accuracy.sel(decoder="ridge").squeeze()) == pytest.approx(ref)
    assert float(ds.n_test.squeeze()) == te.sum()


def test_memory_store_runs_in_process(tmp_path):
    url = f"memory://{tmp_path.name}-engine.zarr"  # one per test: the memory fs is global
    write_synthetic_store(url, n_runs=1, steps=[0, 5], widths=[4], n=60, features={"a": 2})
    ds = run_probes(url, config=FAST)  # the default: a Dask cluster on disk stores
    assert bool(ds.done.all())
    assert "probes/default" in open_store(url).result_names()


def test_export_and_summary(store_url, tmp_path):
    ds = run_probes(store_url, execution=IN_PROCESS, config=FAST)
    df = export_results(ds, str(tmp_path / "r.csv"))
    assert len(df) == 2 * 2 * 3 * 2 * 2  # decoders x runs x checkpoints x layers x features
    assert (tmp_path / "r.csv").read_text().startswith("decoder,run,checkpoint,layer,feature")
    pq = export_results(ds, str(tmp_path / "r.parquet"))
    import pandas as pd

    assert len(pd.read_parquet(tmp_path / "r.parquet")) == len(pq)
    with pytest.raises(ActstoreError, match=".csv or .parquet"):
        export_results(ds, str(tmp_path / "r.txt"))
    table = summary_table(ds)
    assert list(table.columns) == ["layer0", "layer1"]
    first, last = table.loc["color (acc)", "layer1"].split(" -> ")
    mean = ds.accuracy.sel(decoder="logistic", feature="color", layer="layer1").mean("run")
    assert float(first) == pytest.approx(float(mean.isel(checkpoint=0)), abs=0.006)
    assert float(last) == pytest.approx(float(mean.isel(checkpoint=-1)), abs=0.006)


def test_config_is_validated():
    with pytest.raises(ActstoreError, match="unknown decoder 'svm'; available: ridge, logistic"):
        ProbeConfig(decoders=("svm",))
    with pytest.raises(ActstoreError, match="alphas must be positive"):
        ProbeConfig(alphas=(0.0, 1.0))
    with pytest.raises(ActstoreError, match="unknown device 'tpu'"):
        ProbeConfig(device="tpu")
    assert ProbeConfig().key() == ProbeConfig(device="torch", cache_mb=1).key()
    assert ProbeConfig().key() != ProbeConfig(seed=1).key()


def test_continuous_only_probe_set_skips_logistic():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = probe_arrays(X, {"z": X[:, 0] + 0.1 * rng.standard_normal(50)}, n_splits=3)
    assert ds.decoder.values.tolist() == ["ridge"]
    assert float(ds.r2.squeeze()) > 0.9


@pytest.mark.gpu
def test_cuda_matches_numpy():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 40))
    a = np.arange(300) % 3
    X[:, 0] += a
    ref = probe_arrays(X, {"a": a}, n_splits=3)
    got = probe_arrays(X, {"a": a}, n_splits=3, device="cuda")
    # ridge decoders are float64 throughout; the logistic ones iterate in float32, whose
    # rounding differs between the GPU and the CPU (as between BLAS libraries)
    np.testing.assert_allclose(got.accuracy.sel(decoder="ridge").values,
                               ref.accuracy.sel(decoder="ridge").values, atol=1e-12)
    np.testing.assert_allclose(got.accuracy.sel(decoder="logistic").values,
                               ref.accuracy.sel(decoder="logistic").values, atol=0.01)
