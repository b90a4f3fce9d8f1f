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


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto) on loopback; yields a bucket URL prefix.

    Credentials and the endpoint go through the standard AWS environment variables, as a user
    would set them for a real bucket, so every process (Dask workers too) reaches the server.
    """
    import os
    import socket
    import subprocess
    import time

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_DEFAULT_REGION": "us-east-1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        import s3fs

        deadline = time.time() + 30
        while True:
            try:
                s3fs.S3FileSystem(skip_instance_cache=True).mkdir("actstore-test")
                break
            except Exception:
                if time.time() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        yield "s3://actstore-test"
    finally:
        proc.kill()
        proc.wait()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def store_url(tmp_path):
    return str(tmp_path / "s.zarr")
