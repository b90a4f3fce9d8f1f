"""The probe driver: :func:`run_probes` plans the decoding jobs over a store, runs those not
finished yet where an :class:`~actstore.Execution` says (this process or Dask
workers, through :func:`~actstore._execution.map_jobs`), and writes the results back into the
store as they come.

One job = one (run, checkpoint, layer) (:mod:`actstore.decode._jobs`); the result is one
xarray Dataset at ``/results/probes/<name>`` (:mod:`actstore.decode._results`). Finished jobs
are written at least every ``flush_seconds``; Ctrl-C writes them before it stops; a job that
finds bad data leaves the stored result as it was; ``overwrite`` computes under a staging
name that replaces the result only once complete.
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from actstore._errors import ActstoreError
from actstore._execution import GPU_DEVICES, Execution, connect, map_jobs
from actstore.core._backend import check_device
from actstore.core._folds import describe_folds
from actstore.core._plan import Checkpoints, Job, ProbePlan, ProbeWarning, Selection
from actstore.core._reprs import short_list
from actstore.decode._config import ProbeConfig, make_folds
from actstore.decode._decode import DecodeResult
from actstore.decode._jobs import ANALYSIS, plan_probes, run_job
from actstore.decode._results import ResultArrays, existing, job_features

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["ProbeInterrupted", "run_probes"]


class ProbeInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run_probes`; the finished jobs were saved first."""

    def __init__(self, saved: int, total: int, where: str) -> None:
        super().__init__(f"interrupted: {saved} of {total} jobs finished and saved in {where}; "
                         "re-run the same command to continue")
        self.saved, self.total, self.where = saved, total, where


def run_probes(
    url: str,
    name: str = "default",
    *,
    runs: Selection = None, checkpoints: Checkpoints = None,
    layers: Selection = "all", features: Selection = None, strict: bool = False,
    config: ProbeConfig | None = None,
    overwrite: bool = False, flush_seconds: float = 60.0,
    execution: Execution | None = None,
) -> xr.Dataset:
    """Decode every selected feature from every selected (run, checkpoint, layer) of a store.

    Parameters
    ----------
    url : str
        Store path or URL (every Dask worker must reach it).
    name : str
        Result name: written to ``/results/probes/<name>``.
    runs, checkpoints, layers, features, strict
        Selection; see :func:`plan_probes`.
    config : ProbeConfig
        Decoders, penalties, folds, device.
    overwrite : bool
        Recompute everything even if results with this name exist. The new results are
        computed under a hidden staging name and replace the old ones only when complete;
        an interrupted overwrite continues from its staging result when run again.
    flush_seconds : float
        Finished jobs are written to the store at least this often.
    execution : Execution, optional
        Where the jobs run. Default: a local cluster of worker processes (one per core, one
        BLAS thread each); ``Execution(workers=1)`` runs in this process, and so does a
        ``config.device`` of ``"cuda"``/``"cupy"`` unless ``workers`` is given.
        ``memory://`` stores always run in this process. Its ``progress`` callback hears
        ``("probing", done, total)`` as jobs finish.

    Returns
    -------
    xarray.Dataset
        The complete result (also written to the store). ``attrs["computed"]`` and
        ``attrs["reused"]`` count the jobs computed by this call and those of the selection
        found finished; ``attrs["selection"]`` records this call's selection
        (:func:`select_result` gives that part of the result).

    Notes
    -----
    All jobs of a run in one result decode the same features (the run's features among the
    result's and the selection's), since the folds are stratified on all of them together.
    A selection that adds features to a stored result therefore computes the finished jobs
    of the runs that have a new feature again, also jobs outside the selection (with a
    :class:`ProbeWarning`); it is refused if one of them can no longer be read. The decoders
    are compared as a set (the stored order is kept).

    Raises
    ------
    ActstoreError
        Bad input, or (without a scheduler) a device this machine cannot run: found before
        anything is computed; or (NaN/Inf activations, a corrupt chunk, a worker without the
        device) while a job runs; in that case the results of this call are discarded and the
        stored result is left as it was.
    ProbeInterrupted
        On Ctrl-C, after the finished jobs were written.
    """
    from actstore.store import check_result_name, open_store

    config = ProbeConfig.of(config)
    execution = Execution.of(execution)
    if config.device in GPU_DEVICES:
        # local worker processes would all share one GPU: without a cluster or a worker
        # count, this process drives it (several GPUs: a dask-cuda cluster and a scheduler)
        execution = execution.with_(device=config.device)
    check_result_name(name)
    if execution.scheduler is None:
        # local workers run on this machine: a device it lacks fails now, not in every job
        check_device(config.device)
    store = open_store(url, mode="a", storage_options=execution.options())
    plan = plan_probes(store, runs, checkpoints, layers, features, config, strict)
    if not plan.jobs:
        raise ActstoreError(
            f"nothing to probe in {url}: no complete checkpoint among the selection"
        )
    # With overwrite, compute under a staging name: the published result stays until the new
    # one is complete.
    target = f".{name}.overwrite" if overwrite else name
    if not overwrite and store.has_result(ANALYSIS, f".{name}.overwrite"):
        staged = store.read_result(ANALYSIS, f".{name}.overwrite")
        warnings.warn(
            f"an interrupted --overwrite of results/probes/{name} holds "
            f"{int(staged['done'].sum())} of {int(staged['done'].size)} jobs; this run "
            "continues the present result; run with --overwrite to finish the replacement",
            ProbeWarning, stacklevel=2,
        )
    had_analysis = store.has_result(ANALYSIS)  # before a stale staging result is dropped
    old, config = existing(store, target, config, staging=overwrite)
    features_of, redo = job_features(store, plan, old, config, name)
    results = ResultArrays(plan, config, old)
    planned = {j.key for j in plan.jobs}
    for j in redo:
        results.undo(j)
    todo = [j for j in plan.jobs if not results.is_done(j)]
    n_selected_todo = len(todo)
    todo += [j for j in redo if j.key not in planned]
    if redo and old is not None:
        gained = [f for f in plan.features if f not in old.feature.values.tolist()]
        warnings.warn(
            f"results/probes/{name} gains feature(s) {', '.join(gained)}: its {len(redo)} "
            f"finished job(s) of run(s) {short_list(sorted({j.run for j in redo}), 6)} are "
            "computed again with every feature (the folds are stratified on all features "
            "together)", ProbeWarning, stacklevel=2,
        )
    todo.sort(key=lambda j: -j.units)  # big jobs first: better balance across workers
    n_total = len(plan.jobs) + len(todo) - n_selected_todo
    sink = _Sink(store, target, results, _describe_folds(store, plan, features_of, config),
                 old=old, prune=not had_analysis, staging=overwrite, flush_seconds=flush_seconds)
    try:
        if todo:
            _compute(url, todo, features_of, config, execution, sink)
    except ActstoreError:
        # bad data found by a job: the store keeps the result it had before this call
        sink.discard()
        raise
    except KeyboardInterrupt:
        sink.keep()
        where = (f"the staging copy of results/probes/{name} (it replaces the present "
                 "one once complete)" if overwrite else f"results/probes/{name}")
        raise ProbeInterrupted(n_total - len(todo) + sink.added, n_total, where) from None
    except BaseException:
        # finished jobs are kept if the computation stops half-way (a crash, a lost cluster)
        sink.keep()
        raise
    if sink.added or not store.has_result(ANALYSIS, target):
        sink.flush()
    final = sink.dataset()
    if overwrite:
        store.write_result(ANALYSIS, name, final)
        store.remove_result(ANALYSIS, target)
    final.attrs["computed"] = sink.added
    final.attrs["reused"] = len(plan.jobs) - n_selected_todo
    final.attrs["selection"] = json.dumps({
        "runs": {r: {"checkpoints": sorted({j.step for j in plan.jobs if j.run == r}),
                     "layers": list(dict.fromkeys(j.layer for j in plan.jobs if j.run == r))}
                 for r in plan.runs},
        "features": plan.features,
    })
    return final


def _describe_folds(
    store: Any, plan: ProbePlan, features_of: dict[str, list[str]], config: ProbeConfig
) -> str:
    """The folds of a result in words: one description per probe set and feature set (the
    variants of a study may differ)."""
    described: dict[str, str] = {}
    for rid in plan.runs:
        rd = store.reader(rid)
        key = json.dumps([rd.attrs.get("probe_set"), features_of[rid]])
        if key not in described:
            labs = {f: rd.labels[f] for f in features_of[rid]}
            if config.split:
                labs[config.split] = rd.labels[config.split]
            described[key] = make_folds(labs, config)[0].description
    return describe_folds(described.values())


def _compute(
    url: str,
    todo: list[Job],
    features_of: dict[str, list[str]],
    config: ProbeConfig,
    execution: Execution,
    sink: _Sink,
) -> None:
    """Run the jobs ``todo`` where ``execution`` says and hand each result to ``sink``."""
    in_process = execution.in_process(url)
    job_url = execution.job_url(url)
    threads = None if in_process else 1  # worker processes: one BLAS thread each
    cfg, options = asdict(config), execution.options()
    tasks = [(job_url, job, features_of[job.run], cfg, threads, options) for job in todo]
    with contextlib.ExitStack() as stack:
        # Connect before anything is written: a dead scheduler leaves the store untouched.
        client = None if in_process else stack.enter_context(connect(execution))
        # leaving this block early (an error, Ctrl-C) cancels the queued jobs
        finished = stack.enter_context(contextlib.closing(map_jobs(
            run_job, tasks, execution, url=url, stage="probing", client=client)))
        for _, out in finished:
            if "error" in out:
                raise out["error"]
            sink.add(out["job"], out["result"])


class _Sink:
    """Where the finished jobs of one call go: the result arrays, written to the store at
    least every ``flush_seconds``, or discarded as a whole if a job finds bad data.

    Parameters
    ----------
    store, target
        The store and the result name written (a staging name with ``overwrite``).
    results : ResultArrays
        The arrays the jobs fill (holding ``old``'s finished jobs).
    description : str
        The folds in words, stored with the result.
    old : xarray.Dataset, optional
        The stored result this call continues: put back if a job finds bad data.
    prune : bool
        Without ``old``, discarding also removes the analysis group this call created.
    """

    def __init__(self, store: Any, target: str, results: ResultArrays, description: str, *,
                 old: Any | None, prune: bool, staging: bool, flush_seconds: float) -> None:
        self.store, self.target, self.results, self.description = (store, target, results,
                                                                   description)
        self.old, self.prune, self.staging = old, prune, staging
        self.flush_seconds = flush_seconds
        self.added = 0
        self.wrote = False
        self.last_flush = time.monotonic()

    def add(self, job: Job, res: DecodeResult) -> None:
        self.results.add(job, res)
        self.added += 1
        if time.monotonic() - self.last_flush > self.flush_seconds:
            self.flush()

    def dataset(self) -> Any:
        return self.results.dataset(self.description)

    def flush(self) -> None:
        self.store.write_result(ANALYSIS, self.target, self.dataset(), staging=self.staging)
        self.wrote, self.last_flush = True, time.monotonic()

    def keep(self) -> None:
        """Write the jobs finished so far (the computation stopped half-way)."""
        if self.added:
            self.flush()

    def discard(self) -> None:
        """Leave the store's result as it was before this call."""
        if not self.wrote:
            return
        if self.old is None:
            self.store.remove_result(ANALYSIS, self.target, prune=self.prune)
        else:
            self.store.write_result(ANALYSIS, self.target, self.old, staging=self.staging)
