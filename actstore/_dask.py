"""Dask execution shared by training sweeps and the probe engine.

Default: a local cluster of worker *processes* sized to the machine (one thread each, so that
BLAS inside a task uses the core it was given). ``scheduler="tcp://host:8786"`` connects to an
existing cluster instead; every worker must then reach the same store URL.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from actstore._errors import ActstoreError

__all__ = ["check_execution", "check_workers", "dask_client", "default_workers"]


def default_workers() -> int:
    """Number of local worker processes: one per available core."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def for_workers(url: str) -> str:
    """A store path as worker processes must get it: local paths absolute (a worker resolves a
    relative path against its own working directory, which may hold another store)."""
    url = str(url)
    if url.startswith("file://"):
        url = url[len("file://"):]
    return url if "://" in url else os.path.abspath(url)


def in_this_process_only(url: str) -> bool:
    """``memory://`` stores live inside this process: no worker of a cluster can open them."""
    return str(url).startswith("memory://")


def check_workers(workers: int | None) -> None:
    """``--workers`` must be a positive count (``None``: the default)."""
    if workers is not None and workers < 1:
        raise ActstoreError(f"--workers must be at least 1, got {workers}")


def check_execution(
    scheduler: str | None = None, n_workers: int | None = None, timeout: float = 10.0
) -> None:
    """Refuse a worker count below 1, a non-positive timeout or a malformed scheduler address."""
    check_workers(n_workers)
    if not timeout > 0:
        raise ActstoreError(
            f"--scheduler-timeout must be a positive number of seconds, got {timeout:g}"
        )
    if scheduler:
        from distributed.comm.addressing import parse_address, parse_host_port

        try:
            scheme, loc = parse_address(scheduler)
            if scheme not in ("inproc",):
                parse_host_port(loc)
        except ValueError as e:
            raise ActstoreError(
                f"--scheduler {scheduler!r} is not a Dask scheduler address ({e}); give one "
                "like tcp://HOST:8786"
            ) from None


def _connect(client_type: Any, scheduler: str, timeout: float) -> Any:
    """A client of the scheduler at ``scheduler``, or one line saying why there is none.

    The connection is made in a helper thread with a deadline: a server that accepts the
    connection but never completes Dask's handshake would otherwise block for good.
    """
    box: dict[str, Any] = {}

    def connect() -> None:
        try:
            box["client"] = client_type(scheduler, timeout=timeout)
        except BaseException as e:  # handed to the waiting thread
            box["error"] = e

    t = threading.Thread(target=connect, name="actstore-connect", daemon=True)
    t.start()
    t.join(timeout + 5.0)
    hint = "check the address, or leave out --scheduler to run on this machine"
    if t.is_alive():
        raise ActstoreError(
            f"the Dask scheduler at {scheduler} did not answer within {timeout:g} s (the "
            f"connection opened, but no Dask scheduler replied); {hint}"
        )
    err = box.get("error")
    if isinstance(err, (OSError, TimeoutError)):
        raise ActstoreError(
            f"the Dask scheduler at {scheduler} did not answer within {timeout:g} s ({err}); "
            f"{hint}"
        )
    if err is not None:
        raise ActstoreError(
            f"{scheduler} did not answer as a Dask scheduler ({type(err).__name__}: "
            f"{str(err)[:200]}); {hint}"
        )
    return box["client"]


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT in this block (main thread only; elsewhere it changes nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


@contextmanager
def dask_client(
    scheduler: str | None = None,
    n_workers: int | None = None,
    processes: bool = True,
    timeout: float = 10.0,
    memory_limit: str | int | None = "auto",
    device: str = "cpu",
) -> Iterator[Any]:
    """Yield a ``distributed.Client``: a fresh local cluster, or one connected to ``scheduler``.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler (``tcp://127.0.0.1:8786``). ``None`` starts a local
        cluster that is closed on exit.
    n_workers : int, optional
        Local worker count (default: one per core).
    processes : bool
        Local workers as processes (default) or threads of this process.
    timeout : float
        Seconds to wait for ``scheduler`` to answer.
    device : str
        ``"cuda"`` starts one worker per GPU (dask-cuda's ``LocalCUDACluster``, from the
        ``actstore[gpu]`` extra) instead of one per core.

    Raises
    ------
    ActstoreError
        If ``scheduler`` does not answer within ``timeout``.
    """
    from distributed import Client, LocalCluster

    check_execution(scheduler, n_workers, timeout)
    if scheduler:
        client = _connect(Client, scheduler, timeout)
        # a scheduler that goes away makes the client log its reconnection attempts and their
        # tracebacks; the caller gets the error (a lost connection) and reports it once
        client_log = logging.getLogger("distributed.client")
        level = client_log.level
        client_log.setLevel(logging.CRITICAL)
        try:
            yield client
        finally:
            try:
                client.close()
            finally:
                client_log.setLevel(level)
        return
    if device.startswith("cuda"):
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            raise ActstoreError(
                "--device cuda on a local cluster needs dask-cuda; pip install 'actstore[gpu]'"
            ) from None
        gpu_cluster = LocalCUDACluster(threads_per_worker=1, dashboard_address=None)
        client = Client(gpu_cluster)
        try:
            yield client
        finally:
            client.close()
            gpu_cluster.close()
        return
    import dask

    # distributed starts workers with MALLOC_TRIM_THRESHOLD_=65536, which makes glibc hand
    # freed memory back at once: every torch step or decoder block then re-maps its buffers
    # (measured on a training run: 75% more wall time, seconds of system time).
    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    env.pop("MALLOC_TRIM_THRESHOLD_", None)
    # Worker processes log nothing but critical failures: their warnings (a task cancelled
    # when a command stops early, an event loop busy with a long matrix product) and errors (a
    # heartbeat that meets the scheduler closing at the end of a command) are not the user's
    # concern; an error of a job reaches the user through this process, and a worker lost
    # is logged here by its nanny.
    env.setdefault("DASK_LOGGING__DISTRIBUTED", "critical")
    with dask.config.set({"distributed.nanny.pre-spawn-environ": env}), \
            warnings.catch_warnings(), contextlib.ExitStack() as stack:
        # the scheduler's HTTP server moves to a free port when 8787 is taken (another
        # cluster on this machine); nothing here uses it, so that is not worth a warning
        warnings.filterwarnings("ignore", message="Port .* is already in use")
        # Worker processes start with Ctrl-C ignored (a signal disposition they inherit): the
        # terminal sends it to the whole process group, and this process stops them cleanly.
        stack.enter_context(_sigint_ignored())
        cluster = LocalCluster(
            n_workers=n_workers or default_workers(),
            threads_per_worker=1,
            processes=processes,
            dashboard_address=None,
            memory_limit=memory_limit,
        )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        # a worker still busy at close (e.g. a long matrix product) is killed after a few
        # seconds; the nanny's warning about it says nothing the user must act on
        nanny_log = logging.getLogger("distributed.nanny")
        level = nanny_log.level
        nanny_log.setLevel(logging.ERROR)
        try:
            cluster.close()
        finally:
            nanny_log.setLevel(level)
