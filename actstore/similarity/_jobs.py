"""Store-level similarity and alignment jobs: select, compute (in-process or on Dask), write.

``similarity_job`` computes an all-pairs matrix over a :class:`~._select.Selection` and writes
``/results/similarity/<name>`` (an xarray Dataset whose ``similarity`` DataArray is M x M with
``run/model/task/seed/checkpoint/layer`` coordinates on both axes) plus, optionally, a heatmap
PNG. ``alignment_job`` aligns the units of two or more runs layer by layer and writes
``/results/alignment/<name>.<layer>``.

Execution: ``scheduler=None`` starts a local Dask cluster (one worker process per core),
``scheduler="tcp://..."`` uses a running one, ``scheduler="sync"`` computes in this process.
Stores in memory (``memory://``) are always computed in this process, since workers in other
processes cannot see them; so is a similarity with ``device="cuda"``/``"cupy"`` and neither
``scheduler`` nor ``n_workers`` (local workers would all share one GPU). Work is split so
that each task re-opens the store by URL:

* Gram path — stimulus blocks (each task forms the signature strips of its blocks for all
  representations and returns partial M x M sums);
* feature path — blocks of representation pairs;
* bootstrap — groups of replicates;
* alignment — one task per layer.
"""

from __future__ import annotations

import inspect
import itertools
import json
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from actstore._args import as_mapping, as_names
from actstore._errors import ActstoreError
from actstore.alignment._alignment import (
    PairAlignment,
    align_from_parts,
    correlations_from_moments,
    joint_clusters,
    mutual_information,
    split_mask,
)
from actstore.core._backend import BACKENDS, check_device
from actstore.core._moments import PairMoments
from actstore.similarity._bootstrap import (
    bootstrap_indices,
    bootstrap_replicates,
    summarize_bootstrap,
)
from actstore.similarity._select import COORDS, Selection, _absolute, select, select_many
from actstore.similarity._similarity import (
    _ENGINE_ARGS,
    DEFAULT_MEMORY,
    _factory,
    accumulate,
    check_params,
    finalize,
    merge_partials,
    plan_similarity,
)

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "align_layer",
    "alignment_dataset",
    "alignment_job",
    "demo_similarity",
    "similarity_dataset",
    "similarity_job",
    "summary_rows",
    "write_heatmap",
]

Progress = Callable[[str, int, int], None]


# -- execution --------------------------------------------------------------------------------


def _in_process(url: str, scheduler: str | None) -> bool:
    return scheduler in ("sync", "none") or str(url).startswith("memory://")


def _run_tasks(
    tasks: list[tuple[Callable[..., Any], tuple, dict]],
    *,
    local: bool,
    scheduler: str | None,
    n_workers: int | None,
    stage: str,
    progress: Progress | None,
) -> list[Any]:
    """Run ``fn(*args, **kw)`` for each task, in this process or on Dask; results in order."""
    if progress:
        progress(stage, 0, len(tasks))
    if local or len(tasks) == 0:
        out = []
        for i, (fn, args, kw) in enumerate(tasks):
            out.append(fn(*args, **kw))
            if progress:
                progress(stage, i + 1, len(tasks))
        return out
    from distributed import as_completed

    from actstore._dask import dask_client, default_workers

    workers = n_workers or min(len(tasks), default_workers())
    results: list[Any] = [None] * len(tasks)
    with dask_client(scheduler, workers) as client:
        futures = {
            client.submit(fn, *args, **kw, pure=False, key=f"{stage}-{i}-{time.time_ns()}"): i
            for i, (fn, args, kw) in enumerate(tasks)
        }
        for done, fut in enumerate(as_completed(futures), start=1):
            results[futures[fut]] = fut.result()
            if progress:
                progress(stage, done, len(tasks))
    return results


def _stage(progress: Progress, stage: str) -> Callable[[int, int], None]:
    return lambda done, total: progress(stage, done, total)


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


# -- argument checks --------------------------------------------------------------------------

#: Heatmap formats (file extensions) that :func:`write_heatmap` writes.
HEATMAP_FORMATS = ("png", "pdf", "svg", "jpg", "jpeg")


def check_workers(n_workers: int | None) -> None:
    """Refuse a worker count below one (``None``: the default)."""
    if n_workers is not None and (isinstance(n_workers, bool) or int(n_workers) < 1):
        raise ActstoreError(f"the number of workers must be 1 or more, got {n_workers}")


def check_seed(seed: int, what: str = "seed") -> None:
    """Refuse a seed numpy cannot use (negative or not an integer)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ActstoreError(f"the {what} must be an integer >= 0, got {seed!r}")


def check_heatmap_path(path: str) -> None:
    """Refuse a heatmap path whose folder is missing or whose extension is not written."""
    import os

    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext not in HEATMAP_FORMATS:
        raise ActstoreError(
            f"cannot write the heatmap {path!r}: "
            + (f"format '.{ext}' is not supported" if ext else "the file name has no extension")
            + f"; end it in {', '.join('.' + e for e in HEATMAP_FORMATS)} (or give 'none')"
        )
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ActstoreError(f"cannot write the heatmap {path!r}: it is a folder")
    if not os.path.isdir(folder):
        raise ActstoreError(
            f"cannot write the heatmap {path!r}: folder {folder} does not exist; create it "
            "or give another path"
        )
    if not os.access(folder, os.W_OK):
        raise ActstoreError(f"cannot write the heatmap {path!r}: folder {folder} is read-only")


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
    *,
    metric: str = "cka",
    params: dict[str, Any] | None = None,
    name: str | None = None,
    bootstrap: int = 0,
    ci: float = 0.95,
    seed: int = 0,
    method: str = "auto",
    device: str | None = None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    max_memory: int = DEFAULT_MEMORY,
    png: str | None = None,
    write: bool = True,
    overwrite: bool = False,
    progress: Progress | None = None,
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
    metric : str
        Key of :data:`actstore.probes.SIMILARITIES`.
    params : dict, optional
        Metric parameters (``debiased``, ``t``, ``rdm``, ``compare``), checked and converted
        by :func:`~actstore.similarity._similarity.check_params` (``debiased="no"`` is False; a
        value of the wrong type is refused).
    name : str, optional
        Result name (default: the metric name).
    bootstrap : int
        Replicates of the stimulus bootstrap (0: none).
    ci, seed
        Confidence level and seed of the bootstrap.
    method, device, max_memory
        See :func:`actstore.probes.similarity_matrix`. A device this machine cannot run
        (:func:`~actstore.core._backend.check_device`) is refused before anything is read,
        unless ``scheduler`` names a running cluster (whose workers may have it).
    scheduler, n_workers
        Dask execution (see the module docstring).
    png : str, optional
        Write a heatmap PNG to this path.
    write : bool
        Write the result to ``/results/similarity/<name>``.
    overwrite : bool
        Replace a result of this name computed with other settings (else refused before
        anything is computed; a result with the same settings is replaced).
    progress : callable, optional
        ``progress(stage, done, total)``.

    Returns
    -------
    xarray.Dataset
        ``similarity`` (rep_a, rep_b) and, with a bootstrap, ``ci_low``, ``ci_high``,
        ``boot_std``; ``degenerate`` (rep_a).
    """
    from actstore.store import open_store
    from actstore.store._store import check_settings, settings_json

    # unknown metric / parameter, a value of the wrong type: fail before reading anything
    params = check_params(metric, params)
    fn = _factory(metric, params)
    if bootstrap < 0 or (bootstrap and (bootstrap < 2 or not 0 < ci < 1)):
        raise ActstoreError(
            f"a bootstrap needs >= 2 replicates and a level in (0, 1); got {bootstrap}, {ci}"
        )
    check_seed(seed, "bootstrap seed")
    check_workers(n_workers)
    if scheduler is None or scheduler in ("sync", "none") or device not in BACKENDS:
        # (the workers of a running cluster may have the GPU that this machine lacks)
        check_device(device)
    if png:
        check_heatmap_path(png)
    st = open_store(store, mode="a" if write else "r") if isinstance(store, str) else store
    query: dict[str, Any] | list[dict[str, Any]] | None = None
    if isinstance(selection, Selection):
        sel = selection
    else:
        queries = check_selections(selection)
        sel = select_many(st, queries)
        query = queries[0] if len(queries) == 1 else queries
    name = name or metric
    _check_result_name(name)
    reps, labels = sel.lazy_reps(), sel.labels
    settings = similarity_settings(fn, metric, params, sel, bootstrap, ci, seed, query=query)
    if write:
        check_settings(st, "similarity", name, settings, overwrite)
    plan = plan_similarity([r.shape for r in reps], metric, method=method,
                           max_memory=max_memory, **params)
    # local workers would all share one GPU: with a GPU device and no cluster, this process
    # drives it (several GPUs: a dask-cuda cluster and ``scheduler``)
    gpu_local = device in ("cuda", "cupy") and scheduler is None and n_workers is None
    local = gpu_local or _in_process(st.url, scheduler)
    workers = 1 if local else (n_workers or _workers(scheduler))
    common: dict[str, Any] = {"names": labels, "device": device}
    if plan.method == "gram":
        parts = [(accumulate, (reps, metric, params, plan), {**common, "chunk_range": g})
                 for g in _area_split(plan.chunks, plan.n, 1 if local else 2 * workers)]
    else:
        pairs = plan.block_pairs()
        parts = [(accumulate, (reps, metric, params, plan),
                  {**common, "block_pairs": pairs[a:b]})
                 for a, b in _split(len(pairs), 1 if local else 2 * workers)]
    if local and progress is not None:
        # One task in this process: report its blocks instead of the task.
        parts = [(fn, a, {**kw, "progress": _stage(progress, "similarity")})
                 for fn, a, kw in parts]
    partials = _run_tasks(parts, local=local, scheduler=scheduler, n_workers=n_workers,
                          stage="similarity", progress=None if local else progress)
    result = finalize(merge_partials(partials), metric, params, plan.method, labels)
    boot = None
    if bootstrap:
        idx = bootstrap_indices(sel.n, bootstrap, seed)
        groups = _split(bootstrap, 1 if local else 2 * workers)
        tasks = [(bootstrap_replicates, (reps, metric, idx[a:b]),
                  {**common, "method": method, "max_memory": max_memory, **params})
                 for a, b in groups]
        if local and progress is not None:
            tasks = [(fn, a, {**kw, "progress": _stage(progress, "bootstrap")})
                     for fn, a, kw in tasks]
        samples = np.concatenate(_run_tasks(tasks, local=local, scheduler=scheduler,
                                            n_workers=n_workers, stage="bootstrap",
                                            progress=None if local else progress))
        boot = summarize_bootstrap(samples, ci, seed)
    ds = similarity_dataset(sel, result, boot)
    ds.attrs["actstore.config"] = settings_json(settings)
    if write:
        st.write_result("similarity", name, ds)
    if png:
        write_heatmap(ds, png)
    return ds


def similarity_settings(fn: Callable[..., Any], metric: str, params: dict[str, Any],
                        sel: Selection, bootstrap: int, ci: float, seed: int,
                        query: dict[str, Any] | list[dict[str, Any]] | None = None
                        ) -> dict[str, Any]:
    """The settings that determine a similarity result (its ``actstore.config``).

    The representations are recorded as the selection was asked for (``query``) when there
    is one: the same command on a store with more checkpoints or runs is a refresh of the
    result, not other settings. A union of selections is recorded as the list of them, in
    order (repeats of one selection dropped; a list of one is recorded as that one).
    """
    full = {p: v.default for p, v in inspect.signature(fn).parameters.items()
            if p not in ("X", *_ENGINE_ARGS) and v.default is not inspect.Parameter.empty}
    out: dict[str, Any] = {
        "metric": metric, "params": {**full, **params},
        "representations": (list(sel.labels) if query is None else _as_asked_all(query)),
        "stimuli": None if sel.stimuli is None else [int(i) for i in sel.stimuli],
        "bootstrap": int(bootstrap),
    }
    if bootstrap:
        out.update(ci=float(ci), seed=int(seed))
    return out


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


def demo_similarity(store: str, scheduler: str | None = None) -> dict[str, Any]:
    """The similarity step of ``actstore demo``: linear CKA of every layer of every run.

    All layers of all runs at their last checkpoint, written to
    ``/results/similarity/demo-cka``; for a local store the heatmap goes next to it
    (``<store>.cka.png``).

    Returns
    -------
    dict
        ``result``, ``representations``, ``stimuli``, ``png``.
    """
    from pathlib import Path

    local = "://" not in str(store)
    png = str(Path(store).with_suffix("")) + ".cka.png" if local else None
    # the demo's own result: replaced by every run of the demo, whatever wrote it before
    ds = similarity_job(store, metric="cka", name="demo-cka", png=png,
                        scheduler=scheduler or "sync", overwrite=True)
    return {"result": "similarity/demo-cka", "representations": int(ds.sizes["rep_a"]),
            "stimuli": int(ds.attrs["n_stimuli"]), "png": png}


def _workers(scheduler: str | None) -> int:
    from actstore._dask import default_workers

    return default_workers() if scheduler is None else 4


def _check_result_name(name: str) -> None:
    if not name or not all(c.isalnum() or c in "_-." for c in name):
        raise ActstoreError(f"result name {name!r} must use letters, digits, _ - .")


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


def write_heatmap(ds: xr.Dataset, path: str) -> str:
    """Save the ``similarity`` matrix of a result as a heatmap image.

    Parameters
    ----------
    ds : xarray.Dataset
        A similarity result (see :func:`similarity_job`): ``similarity`` (rep_a, rep_b) and
        coordinate ``label_a`` (rep_a); the attrs ``metric``, ``params`` and ``n_stimuli``
        make the title. Tick labels are drawn for at most 60 representations.
    path : str
        Output file; matplotlib takes the format from its extension (PNG, with ``.png``
        appended, when it has none). An existing file is replaced.

    Returns
    -------
    str
        ``path`` as given.

    Raises
    ------
    KeyError
        ``ds`` lacks ``similarity`` or ``label_a``.
    ValueError
        An extension matplotlib cannot write.
    OSError
        The folder does not exist or is not writable (:func:`check_heatmap_path` checks a
        path beforehand).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    S = np.asarray(ds["similarity"].values)
    labels = [str(v) for v in ds["label_a"].values]
    M = len(S)
    size = min(16.0, 3.0 + 0.25 * M)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    try:
        lo = min(0.0, float(np.nanmin(S)))
        im = ax.imshow(S, vmin=lo, vmax=1.0, cmap="viridis", interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.8, label=ds.attrs.get("metric", "similarity"))
        if M <= 60:
            ax.set_xticks(range(M), labels, rotation=90, fontsize=7)
            ax.set_yticks(range(M), labels, fontsize=7)
        params = ds.attrs.get("params", "{}")
        title = " ".join([str(ds.attrs.get("metric", "")), "" if params == "{}" else params])
        ax.set_title(f"{title.strip()} ({ds.attrs.get('n_stimuli', '?')} stimuli)")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


# -- alignment --------------------------------------------------------------------------------


def alignment_job(
    store: Any,
    runs: Sequence[str],
    *,
    layers: str | Sequence[str] | None = None,
    checkpoint: str | int = "last",
    stimuli: Any = None,
    name: str = "align",
    mutual_info: bool = True,
    lasso: bool = True,
    alphas: Sequence[float] | None = None,
    n_clusters: int | None = None,
    positions: str = "auto",
    test_fraction: float = 0.2,
    seed: int = 0,
    scheduler: str | None = None,
    n_workers: int | None = None,
    write: bool = True,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> dict[str, xr.Dataset]:
    """Convergent-learning alignment of two or more runs, layer by layer.

    Parameters
    ----------
    store : Store or str
    runs : sequence of str
        Two or more run ids (all pairs are aligned).
    layers : str or sequence of str, optional
        Layer names or patterns (default: every layer the runs share).
    checkpoint : "last", "first" or int
        Checkpoint of every run.
    stimuli : optional
        Stimulus subset (see :func:`actstore.probes.select`).
    name : str
        Results go to ``/results/alignment/<name>.<layer>``.
    mutual_info, lasso : bool
        Compute binned MI / the sparse-prediction path.
    alphas : sequence of float, optional
        LASSO penalties (default 0, 1e-5 ... 1e-1).
    n_clusters : int, optional
        Spectral clusters of the joint correlation matrix (default total units / 8).
    positions : {"auto", "yes", "no"}
        Treat the spatial positions of unpooled conv maps as samples (``auto``: when the store
        holds the whole map of a layer).
    test_fraction, seed
        Held-out stimuli of the LASSO path.
    scheduler, n_workers, write, overwrite, progress
        As in :func:`similarity_job` (each layer's result is checked).

    Returns
    -------
    dict of str to xarray.Dataset
        One Dataset per layer.
    """
    from actstore.alignment._lasso import DEFAULT_ALPHAS
    from actstore.store import open_store
    from actstore.store._store import check_settings, settings_json

    runs = list(dict.fromkeys(as_names(runs, "runs", allow_empty=True)))
    if len(runs) < 2:
        raise ActstoreError(f"alignment needs at least two runs, got {runs}")
    if positions not in ("auto", "yes", "no"):
        raise ActstoreError(f"positions must be auto, yes or no, not {positions!r}")
    _check_result_name(name)
    check_seed(seed)
    check_workers(n_workers)
    if n_clusters is not None and n_clusters < 1:
        raise ActstoreError(f"the number of clusters must be 1 or more, got {n_clusters}")
    if lasso:
        a = np.asarray(list(alphas if alphas is not None else DEFAULT_ALPHAS), dtype=float)
        if a.size == 0 or not np.all(np.isfinite(a)) or np.any(a < 0):
            raise ActstoreError(
                f"LASSO penalties must be numbers >= 0 (at least one), got {a.tolist()}; "
                "e.g. 0,1e-4,1e-2"
            )
    if not 0 < test_fraction < 1:
        raise ActstoreError(
            f"the held-out share of stimuli must lie between 0 and 1, got {test_fraction}"
        )
    st = open_store(store, mode="a" if write else "r") if isinstance(store, str) else store
    known = st.run_ids()
    unknown = [r for r in runs if r not in known]
    if unknown:
        raise ActstoreError(
            f"no run {unknown[0]!r} in {st.url}; runs: {', '.join(known) or 'none'}"
        )
    sels = [select(st, runs=r, layers=layers, checkpoints=checkpoint, stimuli=stimuli)
            for r in runs]
    by_run = [{ref.layer for ref in s.refs} for s in sels]
    common = [ly for ly in (ref.layer for ref in sels[0].refs) if all(ly in b for b in by_run)]
    if not common:
        raise ActstoreError(
            f"runs {runs} share no selected layer; layers: "
            + "; ".join(f"{r}: {', '.join(sorted(b))}" for r, b in zip(runs, by_run, strict=True))
        )
    for s, r in zip(sels[1:], runs[1:], strict=True):
        if not np.array_equal(s.sample, sels[0].sample):
            raise ActstoreError(
                f"runs {runs[0]!r} and {r!r} were recorded on different samples; "
                "align runs of one probe set"
            )
    steps = [s.refs[0].checkpoint for s in sels]
    stim = sels[0].stimuli
    alpha_list = [float(a) for a in (alphas if alphas is not None else DEFAULT_ALPHAS)]
    settings = {ly: {
        "runs": list(runs), "checkpoint": str(checkpoint), "layer": ly,
        "stimuli": None if stim is None else [int(i) for i in stim],
        "mutual_info": bool(mutual_info), "lasso": bool(lasso),
        "alphas": alpha_list if lasso else None, "n_clusters": n_clusters,
        "positions": positions, "test_fraction": float(test_fraction), "seed": int(seed),
    } for ly in common}
    if write:
        for ly in common:
            check_settings(st, "alignment", f"{name}.{ly}", settings[ly], overwrite)
    tasks = [
        (align_layer, (_absolute(st.url), runs, steps, ly),
         {"stimuli": stim, "mutual_info": mutual_info, "lasso": lasso,
          "alphas": tuple(alphas if alphas is not None else DEFAULT_ALPHAS),
          "n_clusters": n_clusters, "positions": positions, "test_fraction": test_fraction,
          "seed": seed, "storage_options": getattr(st, "storage_options", None)})
        for ly in common
    ]
    local = _in_process(st.url, scheduler)
    results = _run_tasks(tasks, local=local, scheduler=scheduler, n_workers=n_workers,
                         stage="align", progress=progress)
    out = dict(zip(common, results, strict=True))
    for ly, ds in out.items():
        ds.attrs["actstore.config"] = settings_json(settings[ly])
    if write:
        for ly, ds in out.items():
            st.write_result("alignment", f"{name}.{ly}", ds)
    return out


def _is_map(info: dict[str, Any]) -> bool:
    """The store holds a whole conv map (channels x positions) for this layer."""
    shape = list(info.get("output_shape", []))
    return info.get("reduction") in ("flatten", "none") and len(shape) == 3


def _sub_moments(m: PairMoments, ia: np.ndarray, ib: np.ndarray) -> PairMoments:
    """Moments of two unit subsets of a joint accumulator (x = all nets side by side)."""
    return PairMoments(
        m.n, m.shift_x[ia], m.shift_x[ib], m.sx[ia], m.sx[ib], m.sxx[np.ix_(ia, ia)],
        m.sxx[np.ix_(ia, ib)], m.sxx[np.ix_(ib, ib)],
    )


def align_layer(
    url: str,
    runs: Sequence[str],
    steps: Sequence[int],
    layer: str,
    *,
    stimuli: np.ndarray | None = None,
    mutual_info: bool = True,
    lasso: bool = True,
    alphas: Sequence[float] = (),
    n_clusters: int | None = None,
    positions: str = "auto",
    test_fraction: float = 0.2,
    seed: int = 0,
    block: int = 512,
    storage_options: dict | None = None,
) -> Any:
    """Align one layer of several runs, streaming the activations block by block.

    Returns
    -------
    xarray.Dataset
        See :func:`alignment_dataset`.
    """
    from actstore.store import open_store

    st = open_store(url, storage_options=storage_options)
    readers = [st.reader(r) for r in runs]
    infos = [rd.layer_table.get(layer, {}) for rd in readers]
    maps = [_is_map(i) for i in infos]
    if positions == "yes" and not all(maps):
        raise ActstoreError(
            f"layer {layer!r} is not stored as whole conv maps in every run (reduction "
            f"{[i.get('reduction') for i in infos]}); record it with --reduce flatten, or "
            "use --positions no"
        )
    conv = all(maps) and positions != "no"
    widths = [int(i["output_shape"][0]) if conv else rd.units(layer)
              for i, rd in zip(infos, readers, strict=True)]
    n_all = len(readers[0].sample)
    keep = np.ones(n_all, dtype=bool) if stimuli is None else np.isin(np.arange(n_all), stimuli)
    n_sel = int(keep.sum())
    test_stim = split_mask(n_sel, test_fraction, seed)
    pos_in_sel = np.cumsum(keep) - 1  # row of the probe set -> position among the selected
    offsets = np.cumsum([0, *widths])
    train = test = None
    full_rows: list[list[np.ndarray]] = [[] for _ in runs]
    iters = [rd.iter_blocks(layer, step, block=block)
             for rd, step in zip(readers, steps, strict=True)]
    for parts in zip(*iters, strict=True):
        start, stop = parts[0][0], parts[0][1]
        k = keep[start:stop]
        if not k.any():
            continue
        mats = []
        for (_, _, data), w in zip(parts, widths, strict=True):
            data = np.asarray(data, dtype=np.float64)[k]
            if conv:
                # (b, C*H*W) -> (b, C, H*W) -> (b*H*W, C): positions become samples
                data = data.reshape(len(data), w, -1).transpose(0, 2, 1).reshape(-1, w)
            mats.append(data)
        X = np.hstack(mats)
        reps = len(X) // int(k.sum())
        t = np.repeat(test_stim[pos_in_sel[start:stop][k]], reps)
        if train is None or test is None:
            shift = X.mean(axis=0)
            train = PairMoments.empty(shift, np.zeros(0))
            test = PairMoments.empty(shift, np.zeros(0))
        none = np.zeros((len(X), 0))
        train.update(X[~t], none[~t])
        test.update(X[t], none[t])
        if mutual_info:
            for r, m in enumerate(mats):
                full_rows[r].append(m.astype(np.float32))
    if train is None or test is None:
        raise ActstoreError(f"no stimuli selected for layer {layer!r}")
    full = train + test
    pairs, results = [], []
    idx = [np.arange(offsets[r], offsets[r + 1]) for r in range(len(runs))]
    full_data = [np.concatenate(rows) for rows in full_rows] if mutual_info else None
    for r in range(len(runs)):
        for q in range(r + 1, len(runs)):
            mi = (mutual_information(full_data[r], full_data[q])
                  if full_data is not None else None)
            results.append(align_from_parts(
                (runs[r], runs[q]), _sub_moments(full, idx[r], idx[q]),
                _sub_moments(train, idx[r], idx[q]) if lasso else None,
                _sub_moments(test, idx[r], idx[q]) if lasso else None, mi, alphas,
            ))
            pairs.append((r, q))
    joint = correlations_from_moments(full)
    labels, clusters = joint_clusters(
        [joint.within_a[np.ix_(i, i)] for i in idx],
        {(r, q): joint.within_a[np.ix_(idx[r], idx[q])] for r, q in pairs},
        [joint.constant_a[i] for i in idx], n_clusters=n_clusters, seed=seed,
    )
    return alignment_dataset(
        layer, runs, steps, widths, pairs, results, labels, clusters,
        n_samples=full.n, positions=conv, alphas=alphas,
    )


def alignment_dataset(
    layer: str,
    runs: Sequence[str],
    steps: Sequence[int],
    widths: Sequence[int],
    pairs: list[tuple[int, int]],
    results: list[PairAlignment],
    labels: np.ndarray,
    clusters: dict[str, Any],
    *,
    n_samples: int,
    positions: bool,
    alphas: Sequence[float],
) -> Any:
    """Pack the alignments of one layer into an xarray Dataset (units padded to the widest net).

    Dimensions: ``run``, ``unit``, ``pair``, ``unit_b``, ``alpha``. Padding is NaN for
    values and -1 for indices and cluster labels.
    """
    import xarray as xr

    R, P, U = len(runs), len(pairs), max(widths)
    K = len(alphas)

    off = np.cumsum([0, *widths])
    per_run = {
        "constant": np.zeros((R, U), dtype=bool),
        "mean": np.full((R, U), np.nan),
        "std": np.full((R, U), np.nan),
        "cluster": np.full((R, U), -1),
    }
    for r in range(R):
        per_run["cluster"][r, : widths[r]] = labels[off[r] : off[r + 1]]
    data: dict[str, Any] = {}
    pair_vars: dict[str, np.ndarray] = {
        "corr": np.full((P, U, U), np.nan),
        "bipartite_index": np.full((P, U), -1),
        "bipartite_corr": np.full((P, U), np.nan),
        "semi_index": np.full((P, U), -1),
        "semi_corr": np.full((P, U), np.nan),
        "semi_index_ba": np.full((P, U), -1),
        "semi_corr_ba": np.full((P, U), np.nan),
    }
    summ: dict[str, np.ndarray] = {"bipartite_corr_mean": np.full(P, np.nan),
                                   "semi_corr_mean": np.full(P, np.nan)}
    has_mi = any(res.mi is not None for res in results)
    has_lasso = any(res.lasso is not None for res in results)
    if has_mi:
        pair_vars.update({"mi": np.full((P, U, U), np.nan),
                          "mi_bipartite_index": np.full((P, U), -1),
                          "mi_bipartite": np.full((P, U), np.nan)})
        summ["bipartite_mi_mean"] = np.full(P, np.nan)
    if has_lasso:
        for k in ("lasso_test_loss", "lasso_train_loss"):
            pair_vars[k] = np.full((P, K, U), np.nan)
        pair_vars["lasso_nonzero"] = np.full((P, K, U), -1)
        summ["lasso_test_loss_mean"] = np.full((P, K), np.nan)
        summ["lasso_nonzero_mean"] = np.full((P, K), np.nan)
    for p, ((r, q), res) in enumerate(zip(pairs, results, strict=True)):
        da, db = widths[r], widths[q]
        c = res.corr
        for rr, const, mean, std in ((r, c.constant_a, c.mean_a, c.std_a),
                                     (q, c.constant_b, c.mean_b, c.std_b)):
            per_run["constant"][rr, : len(const)] = const
            per_run["mean"][rr, : len(mean)] = mean
            per_run["std"][rr, : len(std)] = std
        pair_vars["corr"][p, :da, :db] = c.between
        pair_vars["bipartite_index"][p, :da], pair_vars["bipartite_corr"][p, :da] = res.bipartite
        pair_vars["semi_index"][p, :da], pair_vars["semi_corr"][p, :da] = res.semi_ab
        pair_vars["semi_index_ba"][p, :db], pair_vars["semi_corr_ba"][p, :db] = res.semi_ba
        s = res.summary()
        summ["bipartite_corr_mean"][p] = s["bipartite_corr"]
        summ["semi_corr_mean"][p] = s["semi_corr"]
        if res.mi is not None and res.mi_bipartite is not None:
            pair_vars["mi"][p, :da, :db] = res.mi
            pair_vars["mi_bipartite_index"][p, :da] = res.mi_bipartite[0]
            pair_vars["mi_bipartite"][p, :da] = res.mi_bipartite[1]
            summ["bipartite_mi_mean"][p] = s["bipartite_mi"]
        if res.lasso is not None:
            lp = res.lasso
            pair_vars["lasso_test_loss"][p, :, :db] = lp.test_loss
            pair_vars["lasso_train_loss"][p, :, :db] = lp.train_loss
            pair_vars["lasso_nonzero"][p, :, :db] = lp.nonzero
            for i, a in enumerate(lp.alphas):
                summ["lasso_test_loss_mean"][p, i] = s[f"lasso_test_loss@{a:g}"]
                summ["lasso_nonzero_mean"][p, i] = s[f"lasso_nonzero@{a:g}"]
    dims = {"corr": ("pair", "unit", "unit_b"), "mi": ("pair", "unit", "unit_b"),
            "semi_index_ba": ("pair", "unit_b"), "semi_corr_ba": ("pair", "unit_b"),
            "lasso_test_loss": ("pair", "alpha", "unit_b"),
            "lasso_train_loss": ("pair", "alpha", "unit_b"),
            "lasso_nonzero": ("pair", "alpha", "unit_b"),
            "lasso_test_loss_mean": ("pair", "alpha"), "lasso_nonzero_mean": ("pair", "alpha")}
    for k, v in pair_vars.items():
        data[k] = (dims.get(k, ("pair", "unit")), v)
    for k, v in summ.items():
        data[k] = (dims.get(k, ("pair",)), v)
    for k, v in per_run.items():
        data[k] = (("run", "unit"), v)
    coords = {
        "run": np.asarray(list(runs)),
        "checkpoint": ("run", np.asarray(list(steps), dtype=np.int64)),
        "units": ("run", np.asarray(list(widths), dtype=np.int64)),
        "run_a": ("pair", np.asarray([runs[r] for r, _ in pairs])),
        "run_b": ("pair", np.asarray([runs[q] for _, q in pairs])),
        "alpha": np.asarray(list(alphas), dtype=float),
    }
    attrs = {"layer": layer, "n_samples": int(n_samples), "positions": bool(positions),
             "n_clusters": clusters["n_clusters"], "mixed_clusters": clusters["mixed"],
             "units_in_mixed": clusters["units_in_mixed"]}
    return xr.Dataset(data, coords=coords, attrs=attrs)


def summary_rows(datasets: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (layer, pair of runs) of alignment results, for printing."""
    rows = []
    for ly, ds in datasets.items():
        for p in range(ds.sizes["pair"]):
            row: dict[str, Any] = {"layer": ly, "run_a": str(ds["run_a"].values[p]),
                                   "run_b": str(ds["run_b"].values[p])}
            for k in ("bipartite_corr_mean", "semi_corr_mean", "bipartite_mi_mean"):
                if k in ds:
                    row[k] = float(ds[k].values[p])
            if "lasso_test_loss_mean" in ds:
                for i, a in enumerate(ds["alpha"].values):
                    row[f"loss@{a:g}"] = float(ds["lasso_test_loss_mean"].values[p, i])
                    row[f"nnz@{a:g}"] = float(ds["lasso_nonzero_mean"].values[p, i])
            row["mixed_clusters"] = int(ds.attrs.get("mixed_clusters", 0))
            row["constant_units"] = int(ds["constant"].values.sum())
            rows.append(row)
    for r in rows:
        for k, v in list(r.items()):
            if isinstance(v, float) and math.isnan(v):
                r[k] = None
    return rows
