"""Out-of-core: a store several times larger than a worker's memory budget is probed with a
bounded peak resident set size (measured in a separate process)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from actstore.probes import write_synthetic_store

BUDGET_MB = 64  # memory a probing worker may use beyond the engine's fixed footprint

PROBE = textwrap.dedent(
    """
    import json, re, sys
    from actstore import Execution
    from actstore.probes import ProbeConfig, run_probes

    def status_mb(key):
        text = open("/proc/self/status").read()
        return int(re.search(key + r":\\s+(\\d+) kB", text).group(1)) / 1024

    # extend_grid=0: a penalty at the end of the grid would be chosen again over an extended
    # grid, which for arrays beyond the cache reads the held-out rows once more
    cfg = ProbeConfig(decoders=("ridge",), n_splits=3, alphas=(0.1, 10.0, 1000.0),
                      cache_mb=float(sys.argv[3]), extend_grid=0)
    run_probes(sys.argv[1], execution=Execution(workers=1), config=cfg,
               overwrite=True)  # warm up: imports
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident set size (VmHWM) to the current one
    before = status_mb("VmRSS")
    ds = run_probes(sys.argv[2], execution=Execution(workers=1), config=cfg,
                    overwrite=True)
    print(json.dumps({"growth_mb": status_mb("VmHWM") - before, "done": int(ds.done.sum()),
                      "reads": ds.reads.values.ravel().tolist(),
                      "acc": ds.accuracy.values.ravel().tolist()}))
    """
)


def _probe(small: str, big: str, cache_mb: float) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, small, big, str(cache_mb)], capture_output=True,
        text=True, timeout=600,
        env={"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_peak_memory_stays_bounded_on_a_large_store(tmp_path):
    small = tmp_path / "small.zarr"
    big = tmp_path / "big.zarr"
    feats = {"shape": 4, "color": 3}
    write_synthetic_store(str(small), n_runs=1, steps=[0, 100], widths=[256, 256], n=1024,
                          features=feats, codec="none")
    # 2 checkpoints x 2 layers x 65,536 samples x 256 float32 units: 64 MiB per array,
    # 256 MiB in all -- four times the budget; a single array in float64 would be 128 MiB.
    write_synthetic_store(str(big), n_runs=1, steps=[0, 100], widths=[256, 256], n=65536,
                          features=feats, codec="none")
    assert _size_mb(big) >= 4 * BUDGET_MB
    res = _probe(str(small), str(big), cache_mb=0)
    assert res["done"] == 4
    assert res["reads"] == [2, 2, 2, 2]  # streamed twice, never held in memory
    assert res["growth_mb"] < BUDGET_MB, f"peak RSS grew by {res['growth_mb']:.0f} MiB"
    acc = np.asarray(res["acc"])
    assert np.all((acc > 0.2) & (acc <= 1.0))
    # The measurement does see memory: with a cache large enough to hold whole arrays, each
    # array is read once and kept, and the peak grows beyond the budget.
    cached = _probe(str(small), str(big), cache_mb=1024)
    assert cached["reads"] == [1, 1, 1, 1]
    assert cached["growth_mb"] > BUDGET_MB
    np.testing.assert_allclose(cached["acc"], res["acc"], rtol=1e-12)
