"""Dumping several runs on a real Dask cluster, with a worker killed mid-run."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import small_cnn

from actstore import ActstoreError
from actstore._execution import Execution
from actstore.store import dump, dump_many, open_store, run_ids_for

HERE = Path(__file__).parent
FACTORY = f"{HERE / 'factories.py'}:small_cnn"


@pytest.fixture
def sweep(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "probe.npz", inputs=rng.standard_normal((300, 3, 16, 16)).astype("float32"),
             color=rng.integers(0, 3, 300))
    dirs = []
    for seed in range(4):
        d = tmp_path / f"seed{seed}" / "checkpoints"
        d.mkdir(parents=True)
        torch.manual_seed(seed)
        model = small_cnn()
        for step in (0, 10, 20):
            with torch.no_grad():
                model.conv1.weight.mul_(1.1)
            torch.save(model.state_dict(), d / f"step{step}.pt")
        dirs.append(d)
    return tmp_path, dirs


def _all(url: str) -> dict[tuple[str, str, int], np.ndarray]:
    st = open_store(url)
    return {(r, ly, s): st.reader(r).read(ly, s) for r in st.run_ids()
            for ly in st.reader(r).layers for s in st.reader(r).complete_steps}


def test_run_id_templates(tmp_path):
    dirs = [tmp_path / "a" / "checkpoints", tmp_path / "b" / "checkpoints"]
    assert run_ids_for(dirs, "{parent}") == ["a", "b"]
    assert run_ids_for(dirs, "net_{i}") == ["net_0", "net_1"]
    with pytest.raises(ActstoreError, match="same run id"):
        run_ids_for(dirs, "{dir}")


def test_cluster_dump_with_a_killed_worker_equals_local(sweep, dask_cluster):
    tmp, dirs = sweep
    ids = run_ids_for(dirs, "{parent}")
    local = str(tmp / "local.zarr")
    for r, d in zip(ids, dirs, strict=True):
        dump(local, r, FACTORY, d, str(tmp / "probe.npz"), batch_size=8)

    victim = dask_cluster.workers[0]
    url = str(tmp / "cluster.zarr")
    state: dict[str, int] = {}

    def kill_when_writing() -> None:
        # SIGKILL one worker as soon as the cluster has started writing slots
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                st = open_store(url)
                slots = [int(v) for r in st.run_ids() for v in st.reader(r).status]
            except Exception:
                slots = []
            if any(v > 0 for v in slots):
                state["complete_at_kill"] = sum(v == 2 for v in slots)
                victim.kill()
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_when_writing)
    killer.start()
    reports = dump_many(url, ids, dirs, FACTORY, str(tmp / "probe.npz"),
                        execution=Execution(dask_cluster.address), batch_size=8)
    killer.join()
    assert victim.poll() is not None
    assert state["complete_at_kill"] < 4 * 3  # killed while work was left
    assert [r.run for r in reports] == ids
    got, expect = _all(url), _all(local)
    assert got.keys() == expect.keys()
    for key, arr in expect.items():
        np.testing.assert_array_equal(got[key], arr, err_msg=str(key))


def test_bad_checkpoint_in_one_run_fails_before_any_run_is_written(sweep):
    tmp, dirs = sweep
    torch.save({"conv1.weight": torch.zeros(1)}, dirs[2] / "step30.pt")
    url = tmp / "never.zarr"
    with pytest.raises(ActstoreError, match=r"step30.pt does not match model"):
        dump_many(str(url), run_ids_for(dirs, "{parent}"), dirs, FACTORY,
                  str(tmp / "probe.npz"))
    assert not url.exists()
