"""The probe engine on a real multi-process Dask cluster (scheduler + 2 workers on loopback)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from actstore import ActstoreError, Execution
from actstore.probes import ProbeConfig, run_probes, write_synthetic_store

CONFIG = ProbeConfig(n_splits=3, alphas=(0.1, 10.0, 1000.0), Cs=(0.01, 1.0), max_iter=200)

IN_PROCESS = Execution(workers=1)  # every job in this process


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """``dask scheduler`` and ``dask worker --nworkers 2`` as separate OS processes.

    The scheduler picks its own free port (``--port 0``) and publishes its address in a
    scheduler file, so no port is chosen here that another process could take first.
    """
    sched_file = tmp_path_factory.mktemp("dask") / "scheduler.json"
    procs = [subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", "0", "--no-dashboard", "--scheduler-file", str(sched_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )]
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                addr = json.loads(sched_file.read_text())["address"]
                break
            except (OSError, ValueError, KeyError):  # not written (completely) yet
                if time.monotonic() > deadline or procs[0].poll() is not None:
                    raise RuntimeError("the dask scheduler did not start") from None
                time.sleep(0.1)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", addr, "--nworkers", "2",
             "--nthreads", "1", "--no-dashboard", "--memory-limit", "1GiB"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
        from distributed import Client

        with Client(addr, timeout=30) as c:
            c.wait_for_workers(2, timeout=60)
            worker_pids = set(c.run(lambda: __import__("os").getpid()).values())
        yield addr, worker_pids
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_cluster_results_equal_the_local_run(tmp_path, cluster):
    addr, worker_pids = cluster
    url = str(tmp_path / "d.zarr")
    write_synthetic_store(url, n_runs=2, steps=[0, 100], widths=[5, 20], n=150,
                          features={"shape": 3, "color": 2})
    import os

    assert len(worker_pids) == 2 and os.getpid() not in worker_pids
    remote = run_probes(url, name="remote", config=CONFIG,
                        execution=Execution(scheduler=addr))
    local = run_probes(url, name="local", execution=IN_PROCESS, config=CONFIG)
    assert bool(remote.done.all()) and int(remote.done.sum()) == 8
    np.testing.assert_array_equal(remote.penalty.values, local.penalty.values)
    np.testing.assert_array_equal(remote.accuracy.values, local.accuracy.values)
    for var in ("r2", "vinfo", "vinfo_bits", "cross_entropy", "ridge_score", "logistic_score"):
        np.testing.assert_allclose(remote[var].values, local[var].values, rtol=1e-9,
                                   atol=1e-12, err_msg=var)


@pytest.mark.timeout(120)  # a hang guard: the call must give up, not wait for ever
def test_scheduler_that_does_not_answer(tmp_path):
    url = str(tmp_path / "n.zarr")
    write_synthetic_store(url, n_runs=1, steps=[0], widths=[4], n=40, features={"a": 2})
    # a port held by this test but not listening: connections to it are refused, and no
    # other process can start listening on it meanwhile
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        addr = f"tcp://127.0.0.1:{held.getsockname()[1]}"
        with pytest.raises(ActstoreError,
                           match=f"scheduler at {addr} did not answer within 2 s"):
            run_probes(url, config=CONFIG,
                       execution=Execution(scheduler=addr, timeout=2))
    from actstore.store import open_store

    assert open_store(url).result_names() == []  # nothing written


def test_a_relative_store_path_is_the_callers_on_a_cluster(tmp_path, cluster, monkeypatch):
    """Workers run in their own working directory: a relative store path is sent absolute (it
    was opened relative to the workers' folder, which may hold another store of that name)."""
    from actstore.probes import VarianceConfig, run_variance

    addr, _ = cluster
    sub = tmp_path / "sub"
    sub.mkdir()
    monkeypatch.chdir(sub)
    write_synthetic_store("rel.zarr", n_runs=1, steps=[0, 10], widths=[4], n=90,
                          features={"shape": 3})
    remote = run_probes("rel.zarr", name="remote", config=CONFIG,
                        execution=Execution(scheduler=addr))
    local = run_probes("rel.zarr", name="local", execution=IN_PROCESS, config=CONFIG)
    np.testing.assert_array_equal(remote.accuracy.values, local.accuracy.values)
    var = run_variance("rel.zarr", name="v", config=VarianceConfig(n_splits=3), write=False,
                       execution=Execution(scheduler=addr))
    assert np.isfinite(var["r2"].values).all()


def test_memory_stores_stay_in_this_process_with_a_cluster(cluster):
    """A memory:// store lives in this process: its jobs run here even when a scheduler is
    given (the workers could not open it)."""
    import uuid

    from actstore.probes import VarianceConfig, run_variance

    addr, _ = cluster
    url = f"memory://{uuid.uuid4().hex}/m.zarr"
    write_synthetic_store(url, n_runs=1, steps=[0, 10], widths=[4], n=90,
                          features={"shape": 3})
    res = run_probes(url, name="m", config=CONFIG, execution=Execution(scheduler=addr))
    assert bool(res.done.all())
    var = run_variance(url, name="v", config=VarianceConfig(n_splits=3), write=False,
                       execution=Execution(scheduler=addr))
    assert np.isfinite(var["r2"].values).all()
