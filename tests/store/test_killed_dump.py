"""A dump killed with SIGKILL at random points, then re-run, ends identical to a clean dump."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from factories import small_cnn

from actstore.store import open_store

HERE = Path(__file__).parent
KILLS = int(os.environ.get("ACTSTORE_CRASH_KILLS", "20"))


@pytest.fixture(scope="module")
def dump_inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("crash")
    rng = np.random.default_rng(0)
    n = 600
    np.savez(d / "probe.npz", inputs=rng.standard_normal((n, 3, 16, 16)).astype("float32"),
             color=rng.integers(0, 4, n), size=rng.standard_normal(n))
    ckdir = d / "ckpts"
    ckdir.mkdir()
    model = small_cnn(width=16)
    for step in (0, 10, 100, 1000, 5000, 10000):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.01)
        torch.save(model.state_dict(), ckdir / f"step_{step}.pt")
    return d


def _cmd(store: str, d: Path) -> list[str]:
    return [sys.executable, "-m", "actstore.cli", "dump", store, str(d / "ckpts"),
            "--model", f"{HERE / 'factories.py'}:small_cnn", "--model-arg", "width=16",
            "--probe-set", str(d / "probe.npz"), "--run", "r", "--batch-size", "16",
            "--attr", "seed=0", "--json"]


def _arrays(url: str) -> dict[str, np.ndarray]:
    root = zarr.open_group(url, mode="r", use_consolidated=False)
    out = {}

    def walk(g, prefix):
        for name, a in g.arrays():
            out[f"{prefix}/{name}"] = a[...]
        for name, sub in g.groups():
            walk(sub, f"{prefix}/{name}")

    walk(root, "")
    return out


def _complete(url: str) -> dict[int, dict[str, np.ndarray]]:
    try:
        st = open_store(url)
        rd = st.reader("r")
    except Exception:
        return {}
    return {s: {ly: rd.read(ly, s) for ly in rd.layers} for s in rd.complete_steps}


def test_sigkill_at_random_points_then_rerun_is_identical(tmp_path, dump_inputs):
    ref = str(tmp_path / "ref.zarr")
    t0 = time.perf_counter()
    subprocess.run(_cmd(ref, dump_inputs), check=True, capture_output=True)
    full = time.perf_counter() - t0
    expect = _arrays(ref)

    rng = random.Random(1234)
    kills, rounds = 0, 0
    url = str(tmp_path / "killed0.zarr")
    while kills < KILLS:
        before = _complete(url)
        proc = subprocess.Popen(_cmd(url, dump_inputs), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, full))
        if proc.poll() is None:
            proc.kill()
            kills += 1
        proc.wait()
        after = _complete(url)
        for step, layers in before.items():  # no complete slot is ever lost or changed
            assert step in after
            for ly, arr in layers.items():
                np.testing.assert_array_equal(after[step][ly], arr)
        if len(after) == 6 or proc.returncode == 0:
            _finish_and_compare(url, dump_inputs, expect)
            rounds += 1
            url = str(tmp_path / f"killed{rounds}.zarr")  # start over with a fresh store
    if Path(url).exists():
        _finish_and_compare(url, dump_inputs, expect)


def _finish_and_compare(url: str, d: Path, expect: dict[str, np.ndarray]) -> None:
    subprocess.run(_cmd(url, d), check=True, capture_output=True)
    got = _arrays(url)
    assert got.keys() == expect.keys()
    for key in expect:
        np.testing.assert_array_equal(got[key], expect[key], err_msg=key)
    assert open_store(url).reader("r").complete.all()
