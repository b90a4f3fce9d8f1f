"""Shared fixtures: tiny probe sets, models and stores in temporary directories."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from actstore.probes._backend import gpu_available

    if gpu_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def image_probe_set():
    from actstore.store import ProbeSet

    rng = np.random.default_rng(0)
    n = 40
    return ProbeSet(
        "images",
        labels={"color": rng.integers(0, 3, n), "size": rng.standard_normal(n)},
        inputs=rng.standard_normal((n, 3, 8, 8)).astype("float32"),
        attrs={"generator": "gaussian", "seed": 0},
    )


@pytest.fixture
def store_url(tmp_path):
    return str(tmp_path / "s.zarr")
