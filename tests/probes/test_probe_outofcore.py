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
    import json, resource, sys
    from actstore.probes import ProbeConfig, run_probes
    cfg = ProbeConfig(decoders=("ridge",), n_splits=3, alphas=(0.1, 10.0, 1000.0), cache_mb=0)
    ds = run_probes(sys.argv[1], n_workers=1, config=cfg)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(json.dumps({"peak_mb": peak_mb, "done": int(ds.done.sum()),
                      "reads": ds.reads.values.ravel().tolist(),
                      "acc": ds.accuracy.values.ravel().tolist()}))
    """
)


def _probe(url: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, url], capture_output=True, text=True, timeout=600,
        env={"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss units differ off Linux")
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
    base = _probe(str(small))
    res = _probe(str(big))
    assert res["done"] == base["done"] == 4
    assert res["reads"] == [2, 2, 2, 2]  # streamed twice, never held in memory
    growth = res["peak_mb"] - base["peak_mb"]
    assert growth < BUDGET_MB, f"peak RSS grew by {growth:.0f} MiB on a 256 MiB store"
    acc = np.asarray(res["acc"])
    assert np.all((acc > 0.2) & (acc <= 1.0))
