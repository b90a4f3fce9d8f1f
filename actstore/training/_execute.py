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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from actstore._dask import for_workers, in_this_process_only
from actstore._errors import ActstoreError, ProvenanceError
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
    from actstore.store._open import _exists

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
    if not _exists(store):
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


def _dask_task(spec: RunSpec, store: str, weights_dir: str | None) -> dict[str, Any]:
    """Worker side of one run: one torch thread, progress sent as worker events."""
    from distributed import get_worker

    worker = get_worker()

    def report(run_id: str, step: int, total: int) -> None:
        worker.log_event(_TOPIC, {"run": run_id, "step": step, "total": total})

    return train_run(spec, store, weights_dir=weights_dir, progress=report, threads=1)


class _Progress:
    """Rich progress: one bar for the sweep, one per run in progress."""

    def __init__(self, enabled: bool, total: int, label: str, console: Any = None):
        self.enabled = enabled
        self.lock = threading.Lock()
        self.bars: dict[str, Any] = {}
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=console or Console(stderr=True, soft_wrap=True),
            transient=False,
        )
        self.overall = self.progress.add_task(f"[bold]{label}[/] runs", total=total)

    def __enter__(self) -> _Progress:
        if self.enabled:
            self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self.progress.stop()

    def step(self, run_id: str, step: int, total: int) -> None:
        if not self.enabled:
            return
        with self.lock:
            if run_id not in self.bars:
                self.bars[run_id] = self.progress.add_task(f"  {run_id} steps", total=total)
            self.progress.update(self.bars[run_id], completed=step)

    def done(self, run_id: str) -> None:
        if not self.enabled:
            return
        with self.lock:
            bar = self.bars.pop(run_id, None)
            if bar is not None:
                self.progress.remove_task(bar)
            self.progress.advance(self.overall)

    def event(self, event: Any) -> None:
        msg = event[1] if isinstance(event, tuple) and len(event) == 2 else event
        if isinstance(msg, dict) and "run" in msg:
            self.step(msg["run"], int(msg["step"]), int(msg["total"]))


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
    scheduler: str | None = None,
    n_workers: int | None = None,
    serial: bool = False,
    weights_dir: str | None = None,
    progress: bool = True,
    dry_run: bool = False,
    console: Any = None,
    on_run: Callable[[dict[str, Any]], None] | None = None,
) -> SweepReport:
    """Train every run of ``sweep`` into ``store`` (created if missing).

    Parameters
    ----------
    sweep : Sweep
    store : str
        Path or fsspec URL; every Dask worker must reach it.
    scheduler : str, optional
        Address of a running Dask scheduler; default a local cluster of worker processes.
    n_workers : int, optional
        Local workers (default: one per core, at most one per run).
    serial : bool
        Train the runs one after another in this process (no Dask).
    weights_dir : str, optional
        Also save each checkpoint's state dict under ``<weights_dir>/<run_id>/``.
    progress : bool
        Show rich progress bars (on stderr).
    dry_run : bool
        Check and plan only: nothing is trained or written.
    on_run : callable, optional
        Called with each run's result as it finishes.

    Returns
    -------
    SweepReport
    """
    from actstore._dask import check_execution
    from actstore.store import create_store, open_store
    from actstore.store._open import _exists
    from actstore.training._run import check_weights_dir

    check_execution(scheduler, n_workers)
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
    if scheduler is None:  # on a cluster, the workers' devices count (checked there)
        for spec in {s.train.device: s for s in todo}.values():
            spec.train.check_device()
    created = not _exists(store)
    st = create_store(store)
    added = [ps.name for ps in probe_sets.values() if st.add_probe_set(ps)]
    st.consolidate()
    try:
        _train_all(sweep, store, todo, report, scheduler=scheduler, n_workers=n_workers,
                   serial=serial, weights_dir=weights_dir, progress=progress, console=console,
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
    scheduler: str | None,
    n_workers: int | None,
    serial: bool,
    weights_dir: str | None,
    progress: bool,
    console: Any,
    on_run: Callable[[dict[str, Any]], None] | None,
) -> None:
    from actstore._dask import default_workers

    def finish(result: dict[str, Any]) -> None:
        report.runs.append(result)
        if on_run is not None:
            on_run(result)

    with _Progress(progress and bool(todo), len(todo), sweep.name, console) as bars:
        if serial or not todo or in_this_process_only(store):
            for spec in todo:
                try:
                    result = train_run(spec, store, weights_dir=weights_dir,
                                       progress=bars.step, threads=1)
                except Exception as e:
                    result = _failure(spec, e)
                bars.done(spec.run_id)
                finish(result)
        else:
            from distributed import as_completed

            from actstore._dask import dask_client

            workers = n_workers or min(len(todo), default_workers())
            # workers resolve paths against their own working directory: send absolute ones
            url = for_workers(store)
            wdir = None if weights_dir is None else os.path.abspath(weights_dir)
            with dask_client(scheduler, workers) as client:
                client.subscribe_topic(_TOPIC, bars.event)
                futures = {
                    client.submit(_dask_task, spec, url, wdir, pure=False,
                                  key=f"train-{spec.run_id}-{time.time_ns()}"): spec
                    for spec in todo
                }
                for fut in as_completed(futures):
                    spec = futures[fut]
                    try:
                        result = fut.result()
                    except Exception as e:
                        result = _failure(spec, e)
                    bars.done(spec.run_id)
                    finish(result)
                client.unsubscribe_topic(_TOPIC)
