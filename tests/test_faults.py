"""Faults across the pipeline: Dask workers killed mid-analysis, stores on an S3 server."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from actstore import Execution
from actstore.probes import run_probes, write_synthetic_store
from actstore.report import write_report
from actstore.similarity import similarity_job
from actstore.store import dump, open_store

FACTORIES = Path(__file__).parent / "store" / "factories.py"


def _kill_when_busy(cluster, victim) -> threading.Thread:
    """SIGKILL ``victim`` as soon as the scheduler has tasks processing on any worker."""
    from distributed import Client

    def watch() -> None:
        with Client(cluster.address, timeout=30, set_as_default=False) as c:
            deadline = time.time() + 120
            while time.time() < deadline:
                if any(c.processing().values()):
                    victim.kill()
                    return
                time.sleep(0.02)

    t = threading.Thread(target=watch)
    t.start()
    return t


@pytest.fixture
def synthetic(tmp_path):
    url = str(tmp_path / "syn.zarr")
    write_synthetic_store(url, n_runs=2, steps=(0, 50, 100), widths=(24, 48, 96), n=600,
                          features={"shape": 5, "color": 4})
    return url


def test_probe_with_a_killed_worker_equals_an_undisturbed_run(synthetic, dask_cluster):
    run_probes(synthetic, name="local", execution=Execution(workers=1))
    run_probes(synthetic, name="calm", execution=Execution(dask_cluster.address))
    watcher = _kill_when_busy(dask_cluster, dask_cluster.workers[0])
    run_probes(synthetic, name="killed", execution=Execution(dask_cluster.address))
    watcher.join()
    assert dask_cluster.workers[0].poll() is not None  # the worker really died
    st = open_store(synthetic)
    local, calm, killed = (st.read_result("probes", n) for n in ("local", "calm", "killed"))
    assert calm.sizes == killed.sizes == local.sizes
    for var in calm.data_vars:
        if var == "seconds":  # timings of each job
            continue
        # bit-identical to the same cluster undisturbed
        np.testing.assert_array_equal(killed[var].values, calm[var].values, err_msg=var)
    # the in-process run differs by BLAS threading only: round-off for the closed-form ridge
    # (iterative logistic fits at the weakest penalties may flip a sample)
    ridge_k, ridge_l = killed.sel(decoder="ridge"), local.sel(decoder="ridge")
    for var in ("accuracy", "r2", "penalty", "ridge_score"):
        np.testing.assert_allclose(ridge_k[var].values, ridge_l[var].values, rtol=1e-9,
                                   atol=1e-12, err_msg=var)


def _matrix(ds: xr.Dataset) -> np.ndarray:
    return np.asarray(ds["similarity"].values)


def test_similarity_with_a_killed_worker_equals_an_undisturbed_run(synthetic, dask_cluster):
    sel = {"checkpoints": "all"}
    local = _matrix(similarity_job(synthetic, sel, name="local", execution=Execution(workers=1)))
    cluster = Execution(dask_cluster.address)
    calm = _matrix(similarity_job(synthetic, sel, name="calm", execution=cluster))
    watcher = _kill_when_busy(dask_cluster, dask_cluster.workers[0])
    killed = _matrix(similarity_job(synthetic, sel, name="killed", execution=cluster))
    watcher.join()
    assert dask_cluster.workers[0].poll() is not None
    np.testing.assert_array_equal(killed, calm)
    np.testing.assert_allclose(killed, local, rtol=1e-10, atol=1e-12)


@pytest.fixture
def dumped_inputs(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "probe.npz", inputs=rng.standard_normal((120, 3, 8, 8)).astype("float32"),
             color=rng.integers(0, 3, 120), size=rng.integers(0, 2, 120))
    for seed in (0, 1):
        ck = tmp_path / f"seed{seed}"
        ck.mkdir()
        torch.manual_seed(seed)
        import importlib.util

        spec = importlib.util.spec_from_file_location("factories_for_faults", FACTORIES)
        assert spec and spec.loader
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        model = mod.SmallCNN()
        for step in (0, 10):
            with torch.no_grad():
                model.conv1.weight.add_(0.1)
            torch.save(model.state_dict(), ck / f"step{step}.pt")
    return tmp_path


def test_whole_pipeline_on_s3_equals_local(s3_server, dumped_inputs):
    d = dumped_inputs
    local = str(d / "local.zarr")
    remote = f"{s3_server}/{uuid.uuid4().hex}.zarr"
    for url in (local, remote):
        for seed in (0, 1):
            dump(url, f"cnn_s{seed}", f"{FACTORIES}:small_cnn", d / f"seed{seed}",
                 str(d / "probe.npz"), attrs={"seed": seed})
        run_probes(url, name="p", layers="all", execution=Execution(workers=1))
        similarity_job(url, {"checkpoints": "all"}, name="cka", execution=Execution(workers=1))
    a, b = open_store(local), open_store(remote)
    for r in a.run_ids():
        for ly in a.reader(r).layers:
            for s in (0, 10):
                np.testing.assert_array_equal(a.reader(r).read(ly, s), b.reader(r).read(ly, s))
    for kind, name in (("probes", "p"), ("similarity", "cka")):
        ra, rb = a.read_result(kind, name), b.read_result(kind, name)
        # timings and write times differ; every number computed from the data is identical
        ra, rb = (r.drop_vars(["seconds"], errors="ignore") for r in (ra, rb))
        ra.attrs.pop("updated", None)
        rb.attrs.pop("updated", None)
        xr.testing.assert_identical(ra, rb)
    page = write_report(remote, out=str(d / "report"))
    html = Path(page.path).read_text()
    assert "cka" in html and "probes" in html.lower()


def _arrays_of(url: str) -> dict[tuple[str, str, int], np.ndarray]:
    st = open_store(url)
    return {(r, ly, s): st.reader(r).read(ly, s) for r in st.run_ids()
            for ly in st.reader(r).layers for s in st.reader(r).complete_steps}


def test_training_sweep_with_a_killed_worker_equals_serial(tmp_path, dask_cluster):
    from actstore.training import parse_sweep, run_sweep

    sweep = parse_sweep({"datasets": ["binary"], "tasks": ["label"], "models": ["mlp"],
                         "seeds": [0, 1, 2],
                         "train": {"steps": 40, "checkpoints": 4, "eval_size": 16},
                         "dataset": {"binary": {"n_train": 256, "n_val": 16, "n_probe": 64}},
                         "model": {"mlp": {"hidden": [32, 16]}}})
    serial, remote = str(tmp_path / "serial.zarr"), str(tmp_path / "cluster.zarr")
    run_sweep(sweep, serial, execution=Execution(workers=1))
    watcher = _kill_when_busy(dask_cluster, dask_cluster.workers[0])
    rep = run_sweep(sweep, remote, execution=Execution(dask_cluster.address))
    watcher.join()
    assert dask_cluster.workers[0].poll() is not None
    assert {r["status"] for r in rep.runs} == {"trained"}
    got, expect = _arrays_of(remote), _arrays_of(serial)
    assert got.keys() == expect.keys() and len(got) > 0
    for key, arr in expect.items():
        np.testing.assert_array_equal(got[key], arr, err_msg=str(key))


def test_probe_refuses_a_corrupt_chunk(synthetic):
    from actstore import StoreError

    shard = next(p for p in sorted(Path(synthetic, "runs").rglob("c/1/0/0")) if p.is_file())
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x10
    shard.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="corrupt data in run"):
        run_probes(synthetic, name="p", execution=Execution(workers=1))
