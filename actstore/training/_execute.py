"""Running a sweep: check everything, write the probe sets, then train the runs as Dask tasks.

Nothing is written before every run has been checked: names and parameters, the model of
each run (built once on the meta device), and, for a store that exists, that every run id
already there was made with the same configuration and probe set. Runs whose checkpoints are
all complete are skipped; the others are trained (partially written runs again from scratch,
writing only their missing slots).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from actstore._errors import ActstoreError, ProvenanceError
from actstore._execution import Execution, connect, map_jobs
from actstore.training._run import RunSpec, train_run
from actstore.training._sweep import Sweep

__all__ = ["ConfigConflictError", "SweepReport", "plan_sweep", "run_sweep"]

_TOPIC = "actstore-train"
_IDENTITY = ("model", "task", "seed", "dataset", "variant", "config")


class ConfigConflictError(ProvenanceError):
    """A run id of a sweep is already in the store, made with another configuration; nothing
    was written. ``advice`` ends the message; :meth:`advise` words it for another command."""

    ADVICE = ("give this configuration a variant name (a [variants.NAME] table of a sweep "
              "file) or use a new store")

    def __init__(self, run_id: str, store: str, key: str, advice: str = ADVICE):
        self.run_id, self.store, self.key, self.advice = run_id, store, key, advice
        super().__init__(f"run {run_id!r} in {store} was made with another {key}; nothing was "
                         f"written; {advice}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.run_id, self.store, self.key, self.advice)

    def advise(self, advice: str) -> ConfigConflictError:
        """The same error ending with ``advice``."""
        return ConfigConflictError(self.run_id, self.store, self.key, advice)


def _config_difference(old: Any, new: Any, most: int = 3) -> str:
    """``train.lr 0.001 there, 0.01 now; ...``: the settings that differ, by dotted path."""
    out: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b), key=str):
                walk(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        elif a != b:
            out.append(f"{path or 'config'} {a!r} there, {b!r} now")

    walk(old, new, "")
    more = f"; ... ({len(out)} in all)" if len(out) > most else ""
    return "; ".join(out[:most]) + more


@dataclass
class SweepReport:
    """What a sweep did.

    Attributes
    ----------
    store : str
    name : str
        Sweep name.
    runs : list of dict
        One per run: ``run_id``, ``status`` (``planned``, ``complete`` (skipped), ``trained``,
        ``failed``), ``written`` (checkpoint steps), ``wall_s``, ``final`` (validation
        accuracy per head), ``error``.
    wall_s : float
    """

    store: str
    name: str
    runs: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def failed(self) -> list[dict[str, Any]]:
        """Runs that raised."""
        return [r for r in self.runs if r["status"] == "failed"]

    def to_json(self) -> dict[str, Any]:
        """JSON form (``actstore train --json``)."""
        return {"store": self.store, "sweep": self.name, "wall_s": round(self.wall_s, 3),
                "runs": self.runs}


def _norm(v: Any) -> Any:
    return json.loads(json.dumps(v, sort_keys=True, default=str))


def plan_sweep(sweep: Sweep, store: str) -> tuple[dict[str, dict[str, Any]], dict[str, Any],
                                                   list[str]]:
    """Check a sweep against a store without writing anything.

    Parameters
    ----------
    sweep : Sweep
        The runs to check.
    store : str
        Store path or URL; it need not exist yet (then nothing is compared with it).

    Returns
    -------
    attrs : dict of str to dict
        Run id -> identity attributes (``model``, ``task``, ``seed``, ``dataset``,
        ``variant``, ``config``), in the order of ``sweep.runs``.
    probe_sets : dict of str to ProbeSet
        Probe set name -> the probe set the sweep's datasets render (one per distinct
        dataset and probe parameters).
    complete : list of str
        Run ids already in the store with every checkpoint complete (empty for a new store).

    Raises
    ------
    ActstoreError
        The sweep has no runs, or bad names or parameters (from :meth:`RunSpec.resolve`).
    StoreError
        ``store`` is a local path where no store can be (a file, a folder of other files).
    ConfigConflictError
        A run id of the store was made with other identity attributes.
    ProvenanceError
        A probe set of the store has other contents, or a run of the store was recorded on
        another probe set.
    """
    from actstore.store import open_store
    from actstore.store._dump import check_store_path
    from actstore.store._open import store_exists

    if not sweep.runs:
        raise ActstoreError(f"sweep {sweep.name!r} has no runs")
    check_store_path(store)
    attrs = {spec.run_id: spec.resolve() for spec in sweep.runs}
    probe_sets: dict[str, Any] = {}
    probe_of: dict[str, str] = {}
    cache: dict[str, Any] = {}
    for spec in sweep.runs:
        ds = spec.make_dataset()
        key = json.dumps([spec.dataset, ds.probe_params()], sort_keys=True)
        if key not in cache:
            cache[key] = ds.probe_set()
        ps = cache[key]
        probe_sets[ps.name] = ps
        probe_of[spec.run_id] = ps.name
    complete: list[str] = []
    if not store_exists(store):
        return attrs, probe_sets, complete
    st = open_store(store, mode="r")
    have = set(st.probe_set_names())
    for name, ps in probe_sets.items():
        if name in have:
            old = st.probe_set(name, inputs=False)
            old_hash = st.root["probe_sets"][name].attrs.get("actstore.hash")
            if old_hash != ps.hash:
                raise ProvenanceError(
                    f"probe set {name!r} in {store} has other contents (hash "
                    f"{str(old_hash)[:12]} vs {ps.hash[:12]}, {old.n} vs {ps.n} samples); "
                    "record this sweep into a new store"
                )
    existing = set(st.run_ids())
    for spec in sweep.runs:
        rid = spec.run_id
        if rid not in existing:
            continue
        r = st.reader(rid)
        old = _norm({k: r.attrs.get(k) for k in _IDENTITY})
        new = _norm(attrs[rid])
        diff = [k for k in _IDENTITY if old.get(k) != new.get(k)]
        if diff:
            key = diff[0]
            if key == "config":
                key = f"config ({_config_difference(old.get(key), new.get(key))})"
            raise ConfigConflictError(rid, store, key)
        if r.attrs.get("probe_set") != probe_of[rid]:
            raise ProvenanceError(
                f"run {rid!r} in {store} was recorded on probe set "
                f"{r.attrs.get('probe_set')!r}, not {probe_of[rid]!r}; use a new store"
            )
        steps = set(spec.train.checkpoint_steps())
        if steps <= set(r.complete_steps):
            complete.append(rid)
    return attrs, probe_sets, complete


def _train_on_worker(spec: RunSpec, store: str, weights_dir: str | None) -> dict[str, Any]:
    """One run on a Dask worker: one torch thread, progress sent as worker events."""
    from distributed import get_worker

    worker = get_worker()

    def report(run_id: str, step: int, total: int) -> None:
        worker.log_event(_TOPIC, {"run": run_id, "step": step, "total": total})

    try:
        return train_run(spec, store, weights_dir=weights_dir, progress=report, threads=1)
    except Exception as e:
        return _failure(spec, e)


def _train_here(spec: RunSpec, store: str, weights_dir: str | None,
                progress: Callable[[str, int, int], None]) -> dict[str, Any]:
    """One run in this process (one torch thread, as on a worker)."""
    try:
        return train_run(spec, store, weights_dir=weights_dir, progress=progress, threads=1)
    except Exception as e:
        return _failure(spec, e)


def _steps_reporter(execution: Execution) -> Callable[[str, int, int], None]:
    """``progress(run_id, step, total)`` of a run as the stage ``"<run_id> steps"``."""

    def report(run_id: str, step: int, total: int) -> None:
        execution.report(f"{run_id} steps", step, total)

    return report


def _failure(spec: RunSpec, e: BaseException) -> dict[str, Any]:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    if not isinstance(e, ActstoreError):
        msg = f"{type(e).__name__}: {msg}"
    return {"run_id": spec.run_id, "status": "failed", "written": [], "wall_s": 0.0,
            "final": {}, "error": msg}


def run_sweep(
    sweep: Sweep,
    store: str,
    *,
    weights_dir: str | None = None,
    dry_run: bool = False,
    on_run: Callable[[dict[str, Any]], None] | None = None,
    execution: Execution | None = None,
) -> SweepReport:
    """Train every run of ``sweep`` into ``store`` (created if missing).

    Parameters
    ----------
    sweep : Sweep
    store : str
        Path or fsspec URL; every Dask worker must reach it.
    weights_dir : str, optional
        Also save each checkpoint's state dict under ``<weights_dir>/<run_id>/``.
    dry_run : bool
        Check and plan only: nothing is trained or written.
    on_run : callable, optional
        Called with each run's result as it finishes.
    execution : Execution, optional
        Where the runs are trained, one job per run: by default a local cluster of worker
        processes (one per core, at most one per run); ``Execution(workers=1)`` trains them one
        after another in this process. Progress is reported as ``("<sweep> runs", done,
        total)`` and, per run, ``("<run_id> steps", step, total)``.

    Returns
    -------
    SweepReport
    """
    from actstore.store import create_store, open_store
    from actstore.store._open import store_exists
    from actstore.training._run import check_weights_dir

    ex = Execution.of(execution)
    if weights_dir is not None:
        check_weights_dir(weights_dir)
    t0 = time.perf_counter()
    _, probe_sets, complete = plan_sweep(sweep, store)
    report = SweepReport(store=store, name=sweep.name)
    done = set(complete)
    for rid in complete:
        report.runs.append({"run_id": rid, "status": "complete", "written": [], "wall_s": 0.0,
                            "final": {}})
    todo = [s for s in sweep.runs if s.run_id not in done]
    if dry_run:
        report.runs += [{"run_id": s.run_id, "status": "planned", "written": [], "wall_s": 0.0,
                         "final": {}} for s in todo]
        return report
    if ex.scheduler is None:  # on a cluster, the workers' devices count (checked there)
        for spec in {s.train.device: s for s in todo}.values():
            spec.train.check_device()
    created = not store_exists(store)
    st = create_store(store)
    added = [ps.name for ps in probe_sets.values() if st.add_probe_set(ps)]
    st.consolidate()
    try:
        _train_all(sweep, store, todo, report, execution=ex, weights_dir=weights_dir,
                   on_run=on_run)
    except KeyboardInterrupt:
        # complete checkpoints are kept and a re-run continues; plain xarray reads the
        # consolidated metadata, which must list the runs written so far
        with contextlib.suppress(Exception):
            open_store(store, mode="a").consolidate()
        raise
    except BaseException:
        _undo(store, created, added)
        raise
    if report.failed:
        _undo(store, created, added)
    else:
        open_store(store, mode="a").consolidate()
    order = {s.run_id: i for i, s in enumerate(sweep.runs)}
    report.runs.sort(key=lambda r: order.get(r["run_id"], 0))
    report.wall_s = time.perf_counter() - t0
    return report


def _undo(store: str, created: bool, added: list[str]) -> None:
    """After a sweep that failed: remove the store it created if no run is in it, else the
    probe sets it added that no run uses (complete checkpoints are never removed)."""
    from actstore.store import open_store
    from actstore.store._open import undo_additions

    try:
        st = open_store(store, mode="a")
        if created and not st.run_ids():
            undo_additions(store, st, True, None)
            return
        for name in added:
            undo_additions(store, st, False, name)
        st.consolidate()
    except Exception:  # the failure being reported matters more than this clean-up
        pass


def _train_all(
    sweep: Sweep,
    store: str,
    todo: list[RunSpec],
    report: SweepReport,
    *,
    execution: Execution,
    weights_dir: str | None,
    on_run: Callable[[dict[str, Any]], None] | None,
) -> None:
    """Train the runs of ``todo``, one job per run; a run that fails is listed as failed."""
    from actstore._dask import default_workers

    if not todo:
        return
    ex = execution
    if ex.scheduler is None and ex.workers is None:
        ex = ex.with_(workers=min(len(todo), default_workers()))
    stage = f"{sweep.name} runs"
    with contextlib.ExitStack() as stack:
        if ex.in_process(store):
            steps = _steps_reporter(ex)
            tasks: list[tuple[Any, ...]] = [(spec, store, weights_dir, steps) for spec in todo]
            jobs = map_jobs(_train_here, tasks, ex, url=store, stage=stage)
        else:
            client = stack.enter_context(connect(ex))
            if ex.progress is not None:
                steps = _steps_reporter(ex)

                def event(ev: Any) -> None:
                    msg = ev[1] if isinstance(ev, tuple) and len(ev) == 2 else ev
                    if isinstance(msg, dict) and "run" in msg:
                        steps(msg["run"], int(msg["step"]), int(msg["total"]))

                client.subscribe_topic(_TOPIC, event)
                stack.callback(client.unsubscribe_topic, _TOPIC)
            # workers resolve paths against their own working directory: send absolute ones
            wdir = None if weights_dir is None else os.path.abspath(weights_dir)
            tasks = [(spec, ex.job_url(store), wdir) for spec in todo]
            # a worker lost while training (Dask's KilledWorker) fails that run, not the sweep
            jobs = map_jobs(_train_on_worker, tasks, ex, url=store, stage=stage, client=client,
                            errors="return")
        with contextlib.closing(jobs):
            for i, result in jobs:
                if isinstance(result, BaseException):
                    result = _failure(todo[i], result)
                report.runs.append(result)
                if on_run is not None:
                    on_run(result)
