"""The jobs of a probe computation: the plan (one job per (run, checkpoint, layer)) and the
function that runs one job, in this process or on a Dask worker.

A job opens the store by URL itself, streams its activation array (:class:`ReaderSource`),
decodes every selected feature (:func:`~actstore.decode.decode`) and returns a few small
arrays; nothing large travels through the scheduler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from actstore._errors import ActstoreError
from actstore.core._plan import Checkpoints, Job, ProbePlan, Selection, plan_jobs
from actstore.core._source import ReaderSource
from actstore.decode._config import ProbeConfig
from actstore.decode._decode import decode

__all__ = ["ANALYSIS", "plan_probes", "run_job"]

#: Results go to ``/results/probes/<name>``.
ANALYSIS = "probes"


def plan_probes(
    store: Any,
    runs: Selection = None, checkpoints: Checkpoints = None,
    layers: Selection = "all", features: Selection = None,
    config: ProbeConfig | None = None,
    strict: bool = False,
) -> ProbePlan:
    """The decoding jobs of a selection, every input checked before anything is computed.

    The selection (``runs``, ``checkpoints``, ``layers``, ``features``, ``strict``) is that
    of :func:`actstore.core._plan.plan_jobs`: names or glob patterns, ``"all"``/``None`` for
    all; checkpoints ``"all"``, ``"first"``, ``"last"`` (each run's first/last complete one) or
    step numbers; features default to every label of the probe set but the split design.
    ``config`` gives the folds the features are checked with (a :class:`ProbeConfig`).

    Returns
    -------
    ProbePlan
        The jobs and the coordinates of the result, incomplete checkpoints left out (and
        warned about); unknown names or labels that cannot be decoded are an ActstoreError.
    """
    config = ProbeConfig.of(config)
    return plan_jobs(store, runs, checkpoints, layers, features, n_splits=config.n_splits,
                     seed=config.seed, split=config.split, strict=strict)


def run_job(
    url: str,
    job: Job,
    features: list[str],
    config_json: dict[str, Any],
    threads: int | None = None,
    storage_options: dict | None = None,
) -> dict[str, Any]:
    """Run one job (in this process or on a Dask worker); returns small numpy arrays."""
    from actstore.store import open_store

    config = ProbeConfig(**config_json)
    limiter = _thread_limits(threads, config.device)
    try:
        store = open_store(url, mode="r", storage_options=storage_options)
        rd = store.reader(job.run)
        labels = rd.labels
        use = {f: labels[f] for f in features}
        if config.split is not None:
            use[config.split] = labels[config.split]
        res = decode(ReaderSource(rd, job.layer, job.step), use, config)
    except ActstoreError as e:
        # bad data (NaN/Inf, a corrupt chunk) travel back as a value: a Dask worker would
        # log a raised error as a failed task, with its traceback
        return {"job": job, "error": e}
    finally:
        limiter()
    return {"job": job, "result": res}


def _thread_limits(threads: int | None, device: str) -> Callable[[], None]:
    """Limit BLAS (and torch) threads; returns the function that restores them."""
    if threads is None:
        return lambda: None
    undo: list[Callable[[], None]] = []
    try:
        from threadpoolctl import threadpool_limits

        lim = threadpool_limits(threads)
        undo.append(lim.restore_original_limits)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass
    if device in ("torch", "cuda"):
        import torch

        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        undo.append(lambda: torch.set_num_threads(old))
    def restore() -> None:
        for u in undo:
            u()

    return restore
