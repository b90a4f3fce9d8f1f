"""Shared fixtures: tiny probe sets, models and stores in temporary directories."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():  # the gpu tests drive CUDA through torch
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

    import s3fs

    keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL",
            "AWS_DEFAULT_REGION")
    old = {k: os.environ.get(k) for k in keys}
    proc = None
    try:
        for attempt in range(3):
            # a free port, released for the server: another process may take it meanwhile,
            # in which case the server exits and the next attempt takes another port
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            sock.close()
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            os.environ.update({
                "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                "AWS_DEFAULT_REGION": "us-east-1"})
            deadline = time.time() + 30
            while True:
                try:
                    s3fs.S3FileSystem(skip_instance_cache=True).mkdir("actstore-test")
                    break
                except Exception:  # not up yet: botocore raises several kinds
                    if proc.poll() is not None and attempt < 2:
                        break
                    if time.time() > deadline or proc.poll() is not None:
                        raise
                    time.sleep(0.2)
            if proc.poll() is None:
                break
        yield "s3://actstore-test"
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class LoopbackCluster:
    """A real Dask cluster: `dask scheduler` + `dask worker` processes on 127.0.0.1."""

    def __init__(self, tmp: Path, n_workers: int = 2):
        import json
        import subprocess
        import time

        self.tmp = tmp
        self.file = tmp / "scheduler.json"
        bin_dir = Path(sys.executable).parent
        dask = str(bin_dir / "dask")
        self.scheduler = subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(self.file)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 60
        while not self.file.exists():
            if time.time() > deadline:
                raise RuntimeError("dask scheduler did not start")
            time.sleep(0.1)
        time.sleep(0.2)
        self.address = json.loads(self.file.read_text())["address"]
        self.workers = [self._start_worker() for _ in range(n_workers)]
        self.wait_for_workers(n_workers)

    def _start_worker(self):
        import subprocess

        dask = str(Path(sys.executable).parent / "dask")
        return subprocess.Popen(
            [dask, "worker", self.address, "--nthreads", "1", "--no-nanny",
             "--no-dashboard", "--host", "127.0.0.1", "--memory-limit", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def wait_for_workers(self, n: int) -> None:
        from distributed import Client

        with Client(self.address, timeout=30) as c:
            c.wait_for_workers(n, timeout=60)

    def close(self) -> None:
        for p in [*self.workers, self.scheduler]:
            p.kill()
            p.wait()


@pytest.fixture
def dask_cluster(tmp_path):
    """Scheduler + 2 single-threaded worker processes on loopback (`.address`, `.workers`)."""
    cluster = LoopbackCluster(tmp_path)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def store_url(tmp_path):
    return str(tmp_path / "s.zarr")
