"""Where and how the jobs of an analysis run: one :class:`Execution` and one :func:`map_jobs`.

Every driver that fans work out (decoders, similarity, alignment, variance, complexity, dump,
training sweeps) takes an :class:`Execution` and hands its jobs to :func:`map_jobs`, so that
"run in this process", worker counts, devices, store options and progress follow one rule.

The library reports progress only through ``Execution.progress`` (a callback); displaying it
(a bar on a terminal, plain lines in a log) is the command line's job.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from actstore._args import instance_or_default
from actstore._dask import check_execution, for_workers, in_this_process_only

__all__ = ["GPU_DEVICES", "Execution", "Progress", "connect", "map_jobs"]

#: ``progress(stage, done, total)``: ``done`` of ``total`` jobs of ``stage`` are finished.
Progress = Callable[[str, int, int], None]

GPU_DEVICES = ("cuda", "cupy")


@dataclass(frozen=True)
class Execution:
    """Where the jobs of one call run.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``). ``None``: a local cluster
        of worker processes (one per core, one BLAS thread each), or this process (below).
    workers : int, optional
        Local worker processes (default: one per core). ``1`` runs every job in this process.
    device : str
        Array device of the jobs: ``"cpu"``, ``"cuda"``/``"cupy"`` (GPU) or ``"auto"``.
    storage_options : mapping, optional
        fsspec options of the store URL, passed to every job.
    progress : callable, optional
        ``progress(stage, done, total)``, called in this process as jobs finish.
    timeout : float
        Seconds to wait for ``scheduler`` to answer.

    Notes
    -----
    The one rule for "in this process": a ``memory://`` store (no worker can open it), or no
    scheduler and either one worker or a GPU device with no worker count given (local worker
    processes would all share one GPU; several GPUs: a dask-cuda cluster and ``scheduler``).
    """

    scheduler: str | None = None
    workers: int | None = None
    device: str = "cpu"
    storage_options: Mapping[str, Any] | None = field(default=None, hash=False)
    progress: Progress | None = field(default=None, compare=False, hash=False)
    timeout: float = 10.0

    def __post_init__(self) -> None:
        check_execution(self.scheduler, self.workers, self.timeout)

    @classmethod
    def of(cls, execution: Execution | None) -> Execution:
        """``execution`` itself, or the default ``Execution()`` for ``None``.

        Raises
        ------
        ActstoreError
            If ``execution`` is something else (the old keyword arguments, a dict).
        """
        return instance_or_default(execution, cls, "execution", "Execution(workers=1), or "
                                   "Execution(scheduler='tcp://host:8786')")

    def in_process(self, url: str | None = None) -> bool:
        """Whether jobs on ``url`` run in this process rather than on Dask workers."""
        if url is not None and in_this_process_only(url):
            return True
        if self.scheduler is not None:
            return False
        gpu_local = self.device in GPU_DEVICES and self.workers is None
        return self.workers == 1 or gpu_local

    def job_url(self, url: str) -> str:
        """``url`` as a job gets it: local paths made absolute for worker processes."""
        return url if self.in_process(url) else for_workers(url)

    def options(self) -> dict[str, Any] | None:
        """The storage options as a plain dict (``None`` if there are none)."""
        return dict(self.storage_options) if self.storage_options else None

    def with_(self, **changes: Any) -> Execution:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def report(self, stage: str, done: int, total: int) -> None:
        """Call the progress callback, if there is one."""
        if self.progress is not None:
            self.progress(stage, done, total)


def map_jobs(
    fn: Callable[..., Any],
    tasks: Iterable[tuple[Any, ...]],
    execution: Execution,
    *,
    url: str | None = None,
    stage: str = "jobs",
    client: Any = None,
    retries: int = 0,
    errors: str = "raise",
) -> Generator[tuple[int, Any], None, None]:
    """Run ``fn(*task)`` for every task; yield ``(index, result)`` as each one finishes.

    In this process (see :class:`Execution`) the tasks run one after the other, in order, as
    the caller consumes the results; otherwise they are submitted at once to a Dask cluster
    (the scheduler of ``execution``, or a local cluster started here and closed at the end)
    and yielded in the order they finish. ``execution.progress`` is told ``(stage, done,
    total)`` before the first result and after each one.

    Use it in a ``with contextlib.closing(...)`` block (or consume it to the end): closing
    the iterator early, or an exception in the caller's loop, cancels the queued jobs.

    Parameters
    ----------
    fn : callable
        A module-level function (pickled to the workers).
    tasks : iterable of tuple
        The positional arguments of each call.
    execution : Execution
        Where to run.
    url : str, optional
        The store the jobs read; a ``memory://`` store runs in this process.
    stage : str
        Name of this batch of jobs in progress reports.
    client : distributed.Client, optional
        A client already connected (the caller connected before writing anything, so that a
        dead scheduler leaves a store untouched); it is not closed here.
    retries : int
        On a cluster, times Dask runs a job again after it failed (a worker lost included).
    errors : {"raise", "return"}
        ``"raise"``: a job's exception stops the iteration (queued jobs are cancelled);
        ``"return"``: it is yielded as the job's result, and the other jobs go on.
    """
    if errors not in ("raise", "return"):
        raise ValueError(f"errors must be 'raise' or 'return', not {errors!r}")
    tasks = list(tasks)
    total = len(tasks)
    execution.report(stage, 0, total)
    if not total:
        return
    if client is None and execution.in_process(url):
        for i, task in enumerate(tasks):
            out = _call(fn, task, errors)
            execution.report(stage, i + 1, total)
            yield i, out
        return
    with contextlib.ExitStack() as stack:
        if client is None:
            client = stack.enter_context(connect(execution))
        from distributed import as_completed

        tag = time.time_ns()
        futures = {
            client.submit(fn, *task, pure=False, key=f"{stage}-{tag}-{i}", retries=retries): i
            for i, task in enumerate(tasks)
        }
        finished = False
        try:
            for done, fut in enumerate(as_completed(futures), start=1):
                out = _call(fut.result, (), errors)
                execution.report(stage, done, total)
                yield futures[fut], out
            finished = True
        finally:
            if not finished:
                cancel(client, list(futures))


def _call(fn: Callable[..., Any], args: tuple[Any, ...], errors: str) -> Any:
    if errors == "raise":
        return fn(*args)
    try:
        return fn(*args)
    except Exception as e:
        return e


@contextlib.contextmanager
def connect(execution: Execution) -> Iterator[Any]:
    """A Dask client for ``execution``: its scheduler, or a local cluster closed on exit."""
    from actstore._dask import dask_client

    with dask_client(execution.scheduler, execution.workers, timeout=execution.timeout) as client:
        yield client


def cancel(client: Any, futures: list[Any]) -> None:
    """Stop queued jobs and quiet the cluster's logs while it is shut down early."""
    if client is None:
        return
    for name in ("distributed", "tornado"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    # a scheduler of ours is shut down right after; one of a user's cluster keeps running
    if client.cluster is None:
        with contextlib.suppress(Exception):
            client.cancel(futures)
