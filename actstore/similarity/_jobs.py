"""The similarity job: select representations of a store, compute their all-pairs matrix, write it.

``similarity_job`` computes an all-pairs matrix over a :class:`~actstore.core._select.Selection`
and writes ``/results/similarity/<name>`` (an xarray Dataset whose ``similarity`` DataArray is
M x M with ``run/model/task/seed/checkpoint/layer`` coordinates on both axes).

Execution (:class:`~actstore._execution.Execution`): jobs run on Dask workers, or in this
process by its rule (a ``memory://`` store, one worker, or a GPU ``device`` with neither a
scheduler nor a worker count: local workers would all share one GPU). Each job re-opens the
store by URL:

* Gram path — stimulus blocks (each job forms the signature strips of its blocks for all
  representations and returns partial M x M sums);
* feature path — blocks of representation pairs;
* bootstrap — groups of replicates.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from actstore._args import as_mapping
from actstore._errors import ActstoreError
from actstore._execution import GPU_DEVICES, Execution, map_jobs
from actstore.core._backend import BACKENDS, check_device
from actstore.core._select import COORDS, Selection, select, select_many
from actstore.similarity._accumulate import accumulate
from actstore.similarity._bootstrap import (
    bootstrap_indices,
    bootstrap_replicates,
    summarize_bootstrap,
)
from actstore.similarity._config import SimilarityConfig
from actstore.similarity._plan import plan_similarity
from actstore.similarity._result import finalize, merge_partials

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "check_selections",
    "demo_similarity",
    "similarity_dataset",
    "similarity_job",
    "similarity_settings",
]


# -- how the work is cut into jobs ------------------------------------------------------------


def _split(items: int, parts: int) -> list[tuple[int, int]]:
    parts = max(1, min(items, parts))
    edges = np.linspace(0, items, parts + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges) if b > a]


def _area_split(chunks: list[tuple[int, int]], n: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous groups of stimulus blocks with about equal strip areas."""
    area = np.array([(r1 - r0) * (n - r0) for r0, r1 in chunks], dtype=float)
    cum = np.cumsum(area) / area.sum()
    groups, start = [], 0
    for p in range(1, parts + 1):
        stop = int(np.searchsorted(cum, p / parts - 1e-12)) + 1
        stop = min(len(chunks), max(stop, start + 1))
        if start < len(chunks):
            groups.append((start, stop))
        start = stop
    return groups



# -- selections -----------------------------------------------------------------------------------


# -- similarity -------------------------------------------------------------------------------


_SELECT_KEYS = ("runs", "layers", "checkpoints", "where", "stimuli")


def check_selections(selection: Any) -> list[dict[str, Any]]:
    """One selection dict, or a list of them (a union, see :func:`select_many`), as a list of
    checked dicts; anything else is one clear error."""
    if isinstance(selection, (list, tuple)) and selection and all(
            isinstance(s, dict) for s in selection):
        return [check_selection_keys(s) for s in selection]
    return [check_selection_keys(selection)]


def check_selection_keys(selection: Any) -> dict[str, Any]:
    """A selection dict (keywords of :func:`select`); anything else is one clear error."""
    if selection is None:
        return {}
    if isinstance(selection, (str, list, tuple)):
        raise ActstoreError(
            f"selection must be a dict of keywords of select() or a Selection, not "
            f"{type(selection).__name__}; e.g. {{'layers': 'fc*', 'checkpoints': 'last'}}, or "
            "parse_selection('layer=fc*;checkpoint=last') for a command-line string (a list "
            "of such dicts is the union of the selections)"
        )
    sel = as_mapping(selection, "selection", "e.g. {'layers': 'fc*', 'checkpoints': 'last'}")
    bad = [k for k in sel if k not in _SELECT_KEYS]
    if bad:
        raise ActstoreError(
            f"unknown selection keyword {bad[0]!r}; use {', '.join(_SELECT_KEYS)} (run "
            "attributes go in where={...})"
        )
    return sel


def similarity_job(
    store: Any,
    selection: Selection | dict[str, Any] | list[dict[str, Any]] | None = None,
    name: str | None = None,
    *,
    config: SimilarityConfig | None = None,
    write: bool = True, overwrite: bool = False, execution: Execution | None = None,
) -> xr.Dataset:
    """All-pairs similarity of representations selected from a store.

    Parameters
    ----------
    store : Store or str
        Store (or its path/URL).
    selection : Selection or dict or list of dict, optional
        A :class:`Selection`, keyword arguments of :func:`select` (default: all layers of
        all runs at their last checkpoint), or a list of such dicts: the union of their
        representations, in order, without duplicates (:func:`select_many`).
    name : str, optional
        Result name (default: the metric name).
    config : SimilarityConfig, optional
        Metric, parameters, bootstrap, path, device and memory budget (default:
        linear CKA).
        A device this machine cannot run (:func:`~actstore.core._backend.check_device`) is
        refused before anything is read, unless ``execution`` names a running cluster (whose
        workers may have it).
    write : bool
        Write the result to ``/results/similarity/<name>``.
    overwrite : bool
        Replace a result of this name computed with other settings (else refused before
        anything is computed; a result with the same settings is replaced).
    execution : Execution, optional
        Where the jobs run (see the module docstring); progress goes to its callback.

    Returns
    -------
    xarray.Dataset
        ``similarity`` (rep_a, rep_b) and, with a bootstrap, ``ci_low``, ``ci_high``,
        ``boot_std``; ``degenerate`` (rep_a).
    """
    from actstore.store import check_result_name, check_settings, open_store, settings_json

    config = config or SimilarityConfig()
    execution = execution or Execution()
    metric, params, device = config.metric, dict(config.params), config.device
    if execution.scheduler is None or device not in BACKENDS:
        # (the workers of a running cluster may have the GPU that this machine lacks)
        check_device(device)
    if device in GPU_DEVICES and execution.device not in GPU_DEVICES:
        execution = execution.with_(device=device)
    name = name or metric
    check_result_name(name)
    st = open_store(store, mode="a" if write else "r") if isinstance(store, str) else store
    query: dict[str, Any] | list[dict[str, Any]] | None = None
    if isinstance(selection, Selection):
        sel = selection
    else:
        queries = check_selections(selection)
        sel = select_many(st, queries)
        query = queries[0] if len(queries) == 1 else queries
    reps, labels = sel.lazy_reps(), sel.labels
    settings = similarity_settings(config, sel, query=query)
    if write:
        check_settings(st, "similarity", name, settings, overwrite)
    plan = plan_similarity([r.shape for r in reps], metric, method=config.method,
                           max_memory=config.max_memory, **params)
    local = execution.in_process(st.url)
    parts = 1 if local else 2 * (execution.workers or _workers(execution.scheduler))
    job: dict[str, Any] = {"reps": reps, "metric": metric, "params": params, "plan": plan,
                           "names": labels, "device": device}
    pieces: list[dict[str, Any]]
    if plan.method == "gram":
        pieces = [{"chunk_range": g} for g in _area_split(plan.chunks, plan.n, parts)]
    else:
        pairs = plan.block_pairs()
        pieces = [{"block_pairs": pairs[a:b]} for a, b in _split(len(pairs), parts)]
    partials = _run(_accumulate_part, job, pieces, execution, st.url, "similarity")
    result = finalize(merge_partials(partials), metric, params, plan.method, labels)
    boot = None
    if config.bootstrap:
        idx = bootstrap_indices(sel.n, config.bootstrap, config.seed)
        job = {"reps": reps, "metric": metric, "names": labels, "device": device,
               "method": config.method, "max_memory": config.max_memory, **params}
        pieces = [{"indices": idx[a:b]} for a, b in _split(config.bootstrap, parts)]
        samples = np.concatenate(_run(_bootstrap_part, job, pieces, execution, st.url,
                                      "bootstrap"))
        boot = summarize_bootstrap(samples, config.ci, config.seed)
    ds = similarity_dataset(sel, result, boot)
    ds.attrs["actstore.config"] = settings_json(settings)
    if write:
        st.write_result("similarity", name, ds)
    return ds


def _accumulate_part(piece: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """Partial sums of one piece of the all-pairs computation (one job)."""
    return accumulate(**job, **piece)


def _bootstrap_part(piece: dict[str, Any], job: dict[str, Any]) -> np.ndarray:
    """Similarity matrices of one group of bootstrap replicates (one job)."""
    return bootstrap_replicates(**job, **piece)


def _run(fn: Callable[..., Any], job: dict[str, Any], pieces: Iterable[dict[str, Any]],
         execution: Execution, url: str, stage: str) -> list[Any]:
    """``fn(piece, job)`` for every piece, through :func:`map_jobs`; results in order.

    In this process there is one piece, which reports its own blocks (or replicates) as
    progress rather than being one step of one.
    """
    pieces = list(pieces)
    if execution.in_process(url) and execution.progress is not None:
        report = execution.report
        pieces = [{**p, "progress": lambda done, total: report(stage, done, total)}
                  for p in pieces]
        execution = execution.with_(progress=None)
    out: list[Any] = [None] * len(pieces)
    with contextlib.closing(map_jobs(fn, [(p, job) for p in pieces], execution, url=url,
                                     stage=stage)) as results:
        for i, res in results:
            out[i] = res
    return out


def similarity_settings(config: SimilarityConfig, sel: Selection,
                        query: dict[str, Any] | list[dict[str, Any]] | None = None
                        ) -> dict[str, Any]:
    """The settings that determine a similarity result (its ``actstore.config``).

    The representations are recorded as the selection was asked for (``query``) when there
    is one: the same command on a store with more checkpoints or runs is a refresh of the
    result, not other settings. A union of selections is recorded as the list of them, in
    order (repeats of one selection dropped; a list of one is recorded as that one).
    """
    return {
        **config.to_json(),
        "representations": (list(sel.labels) if query is None else _as_asked_all(query)),
        "stimuli": None if sel.stimuli is None else [int(i) for i in sel.stimuli],
    }

def _as_asked_all(query: dict[str, Any] | list[dict[str, Any]]) -> Any:
    """:func:`_as_asked` of one selection, or the list of those of a union (repeats dropped;
    one left: that one, as for a single selection)."""
    if isinstance(query, dict):
        return _as_asked(query)
    out: list[dict[str, Any]] = []
    for q in query:
        a = _as_asked(q)
        if a not in out:
            out.append(a)
    return out[0] if len(out) == 1 else out


def _as_asked(query: dict[str, Any]) -> dict[str, Any]:
    """A selection of :func:`select` without its defaults (and without the stimuli, which are
    recorded resolved): ``{}``, ``{"checkpoints": "last"}`` and ``{"where": {}}`` are one."""
    defaults = {k: p.default for k, p in inspect.signature(select).parameters.items()
                if p.default is not inspect.Parameter.empty}
    kept = {k: v for k, v in query.items() if k != "stimuli" and v != defaults.get(k)
            and v not in (None, {}, [], "")}
    return json.loads(json.dumps(kept, sort_keys=True, default=str))



def demo_similarity(store: str, execution: Execution | None = None) -> dict[str, Any]:
    """The similarity step of ``actstore demo``: linear CKA of every layer of every run.

    All layers of all runs at their last checkpoint, written to
    ``/results/similarity/demo-cka`` (computed in this process unless ``execution`` names a
    scheduler). For a local store, ``png`` is where the demo's heatmap goes
    (``<store>.cka.png``; see :func:`~actstore.report.write_heatmap`), else None.

    Returns
    -------
    dict
        ``result``, ``representations``, ``stimuli``, ``png``.
    """
    from pathlib import Path

    local = "://" not in str(store)
    png = str(Path(store).with_suffix("")) + ".cka.png" if local else None
    execution = execution or Execution()
    if execution.scheduler is None:
        execution = execution.with_(workers=1)
    # the demo's own result: replaced by every run of the demo, whatever wrote it before
    ds = similarity_job(store, name="demo-cka", overwrite=True, execution=execution)
    return {"result": "similarity/demo-cka", "representations": int(ds.sizes["rep_a"]),
            "stimuli": int(ds.attrs["n_stimuli"]), "png": png}


def _workers(scheduler: str | None) -> int:
    from actstore._dask import default_workers

    return default_workers() if scheduler is None else 4


def similarity_dataset(sel: Selection, result: Any, boot: Any = None) -> Any:
    """An xarray Dataset of an all-pairs result with coordinates on both axes."""
    import xarray as xr

    coords: dict[str, Any] = {}
    for side, dim in (("a", "rep_a"), ("b", "rep_b")):
        for k, v in sel.coords().items():
            coords[f"{k}_{side}"] = (dim, np.asarray(v))
        coords[f"label_{side}"] = (dim, np.asarray(sel.labels))
    data = {
        "similarity": (("rep_a", "rep_b"), result.values),
        "degenerate": (("rep_a",), result.degenerate),
    }
    if boot is not None:
        data["ci_low"] = (("rep_a", "rep_b"), boot.low)
        data["ci_high"] = (("rep_a", "rep_b"), boot.high)
        data["boot_std"] = (("rep_a", "rep_b"), boot.std)
    attrs = {
        "metric": result.metric,
        "params": json.dumps(result.params, sort_keys=True),
        "method": result.method,
        "n_stimuli": int(sel.n),
        "stimuli": "all" if sel.stimuli is None else json.dumps(sel.stimuli.tolist()),
        "coords": list(COORDS),
    }
    if boot is not None:
        attrs.update({"n_boot": boot.n_boot, "ci": boot.ci, "boot_seed": boot.seed})
    return xr.Dataset(data, coords=coords, attrs=attrs)
