"""Variance explained over a store: one job per (run, layer, checkpoint), one result Dataset.

Results go to ``/results/variance/<name>`` (dims run, checkpoint, layer, feature). A job opens
the store by URL itself, streams one activation array once and returns the held-out sums of
squares of every (fold, feature) (:func:`~actstore.probes.variance_from_stats`); nothing
large travels through the scheduler.
"""

from __future__ import annotations

import datetime as _dt
from typing import TYPE_CHECKING, Any

import numpy as np

from actstore._errors import ActstoreError
from actstore._execution import Execution, map_jobs
from actstore.core._blocks import CachedSource
from actstore.core._folds import describe_folds, label_folds
from actstore.core._plan import Checkpoints, ProbePlan, Selection, plan_jobs
from actstore.core._select import check_not_blank
from actstore.core._source import ReaderSource
from actstore.core._targets import encode_targets
from actstore.features._config import VarianceConfig
from actstore.features._variance import (
    accumulate_design,
    default_features,
    variance_from_stats,
)

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["ANALYSIS", "run_variance"]

#: Results go to ``/results/variance/<name>``.
ANALYSIS = "variance"


def _job(
    url: str,
    run: str,
    layer: str,
    step: int,
    features: list[str],
    config: VarianceConfig,
    storage_options: dict | None = None,
) -> dict[str, Any]:
    """One (run, layer, checkpoint): held-out sums of squares per (fold, feature)."""
    from actstore.store import open_store

    rd = open_store(url, storage_options=storage_options).reader(run)
    labels = rd.labels
    use = {f: labels[f] for f in features}
    if config.split is not None:
        use[config.split] = labels[config.split]
    folds, analysed = label_folds(use, config.n_splits, config.seed, config.split)
    targets = encode_targets(analysed)
    stats = accumulate_design(CachedSource(ReaderSource(rd, layer, step), cache_bytes=0),
                              targets, folds)
    return {"features": targets.names, "folds": folds.description,
            **variance_from_stats(stats, targets, folds)}


def _selection_query(**selection: Checkpoints) -> dict[str, Any]:
    """The selection as asked for (recorded: the same command on a store with more runs or
    checkpoints refreshes the result)."""
    return {k: (v if v is None or isinstance(v, str) else [str(x) for x in v])
            for k, v in selection.items()}


def _plan(store: Any, runs: Selection, checkpoints: Checkpoints, layers: Selection,
          features: Selection, config: VarianceConfig) -> ProbePlan:
    """Check the selection against the store and plan the (run, checkpoint, layer) jobs."""
    all_runs = store.run_ids()
    readers = [store.reader(r) for r in all_runs]
    check_not_blank(runs, "run", all_runs)
    check_not_blank(layers, "layer", list(dict.fromkeys(x for rd in readers for x in rd.layers)))
    check_not_blank(checkpoints, "checkpoint",
                    hint="give all, first, last or training steps separated by commas")
    check_not_blank(features, "feature",
                    list(dict.fromkeys(f for rd in readers for f in rd.features)))
    if features is None and all_runs:
        # every run's stimulus features (runs may be recorded on different probe sets)
        features = list(dict.fromkeys(
            f for rd in readers for f in default_features(rd.features, config.split)))
    return plan_jobs(store, runs, checkpoints, layers, features, n_splits=config.n_splits,
                     seed=config.seed, split=config.split)


def run_variance(
    url: str,
    name: str = "default",
    *,
    runs: Selection = None, checkpoints: Checkpoints = None,
    layers: Selection = "all", features: Selection = None,
    config: VarianceConfig | None = None,
    write: bool = True, overwrite: bool = False, execution: Execution | None = None,
) -> xr.Dataset:
    """Variance explained by each feature for every (run, checkpoint, layer) of a store.

    Parameters
    ----------
    url : str
        Store path or URL.
    name : str
        Written to ``/results/variance/<name>``.
    runs, checkpoints, layers, features
        Selection, as in :func:`actstore.probes.plan_probes` (features default to every
        label except the ``heldout_*`` split design).
    config : VarianceConfig, optional
        Folds and ``denominator`` (default ``VarianceConfig()``). With
        ``denominator="final"``, ``r2_final``'s denominator is the run's last complete
        checkpoint, read for this even when ``checkpoints`` does not select it (recorded as
        ``final_checkpoint``).
    write : bool
        Write the result to the store (else only return it).
    overwrite : bool
        Replace a result of this name computed with other settings (else refused before
        anything is computed; a result with the same settings is replaced).
    execution : Execution, optional
        Where the jobs run (default: in this process, ``Execution(workers=1)``); its
        ``progress`` hears ``("variance", done, total)`` over (run, layer, checkpoint) jobs.

    Returns
    -------
    xarray.Dataset
        Dims (run, checkpoint, layer, feature): ``r2``, ``r2_final``, ``r2_std`` (over folds),
        ``explained`` (explained sum of squares per held-out sample), ``total``
        (run, checkpoint, layer): total sum of squares per held-out sample, and
        ``final_checkpoint`` (run,): the run's last complete checkpoint (``r2_final``'s
        denominator with ``denominator="final"``).
    """
    from actstore.store import check_result_name, check_settings, open_store

    config = VarianceConfig() if config is None else config
    execution = Execution(workers=1) if execution is None else Execution.of(execution)
    check_result_name(name)
    store = open_store(url, mode="a" if write else "r", storage_options=execution.options())
    plan = _plan(store, runs, checkpoints, layers, features, config)
    if not plan.jobs:
        raise ActstoreError(f"nothing to compute in {url}: no complete checkpoint selected")
    settings = {**config.to_json(), **_selection_query(
        runs=runs, checkpoints=checkpoints, layers=layers, features=features)}
    if write:
        check_settings(store, ANALYSIS, name, settings, overwrite)
    # r2_final's denominator: each run's last complete checkpoint, whatever the selection
    # (fixed here, so that every layer of a run shares it)
    final_of = {r: max(store.reader(r).complete_steps, default=-1) for r in plan.runs}
    cells = [(j.run, j.layer, j.step) for j in plan.jobs]
    if config.denominator == "final":  # final checkpoints not selected: one more pass each
        cells += list(dict.fromkeys((j.run, j.layer, final_of[j.run]) for j in plan.jobs
                                    if (j.run, j.layer, final_of[j.run]) not in cells))
    job_url = execution.job_url(url)
    tasks = [(job_url, r, lay, s, plan.features_of[r], config, execution.options())
             for r, lay, s in cells]
    parts = dict.fromkeys(cells)
    for i, out in map_jobs(_job, tasks, execution, url=url, stage=ANALYSIS):
        parts[cells[i]] = out
    ds = _dataset(plan, parts, final_of, config, settings)
    if write:
        store.write_result(ANALYSIS, name, ds)
    return ds


def _dataset(plan: ProbePlan, parts: dict[tuple[str, str, int], Any], final_of: dict[str, int],
             config: VarianceConfig, settings: dict[str, Any]) -> xr.Dataset:
    """The result Dataset from the sums of squares of every (run, layer, checkpoint)."""
    import xarray as xr

    from actstore.store import settings_json

    R, S, L, F = len(plan.runs), len(plan.steps), len(plan.layers), len(plan.features)
    ri = {r: i for i, r in enumerate(plan.runs)}
    si = {s: i for i, s in enumerate(plan.steps)}
    li = {x: i for i, x in enumerate(plan.layers)}
    fi = {x: i for i, x in enumerate(plan.features)}
    r2, r2f, r2s, expl = (np.full((R, S, L, F), np.nan) for _ in range(4))
    total = np.full((R, S, L), np.nan)
    for j in plan.jobs:
        res = parts[(j.run, j.layer, j.step)]
        r, s, lay = ri[j.run], si[j.step], li[j.layer]
        cols = [fi[f] for f in res["features"]]
        sst = res["sst"][:, None]
        denom = (parts[(j.run, j.layer, final_of[j.run])]["sst"][:, None]
                 if config.denominator == "final" else sst)
        with np.errstate(divide="ignore", invalid="ignore"):
            r2[r, s, lay, cols] = np.nanmean(res["r2"], axis=0)
            r2s[r, s, lay, cols] = np.nanstd(res["r2"], axis=0)
            r2f[r, s, lay, cols] = np.nanmean((sst - res["sse"]) / denom, axis=0)
            expl[r, s, lay, cols] = np.nansum(sst - res["sse"], axis=0) / res["n_test"].sum()
        total[r, s, lay] = res["sst"].sum() / res["n_test"].sum()
    dims = ("run", "checkpoint", "layer", "feature")
    return xr.Dataset(
        {"r2": (dims, r2), "r2_final": (dims, r2f), "r2_std": (dims, r2s),
         "explained": (dims, expl), "total": (dims[:3], total),
         "final_checkpoint": (("run",), np.asarray([final_of[r] for r in plan.runs],
                                                   dtype=np.int64))},
        coords={"run": plan.runs, "checkpoint": np.asarray(plan.steps, dtype=np.int64),
                "layer": plan.layers, "feature": plan.features},
        attrs={
            "analysis": ANALYSIS,
            "description": (
                "Variance of each layer explained by each feature: representation regressed "
                "on the feature (one-hot + intercept) on training folds, R^2 pooled over units "
                "on held-out folds (mean over folds). r2_final: explained sum of squares over "
                "the final checkpoint's total sum of squares (the run's last complete "
                "checkpoint, final_checkpoint, selected or not; common denominator, inferred)."
            ),
            "folds": describe_folds(parts[(j.run, j.layer, j.step)]["folds"]
                                    for j in plan.jobs),
            "denominator": config.denominator,
            "actstore.config": settings_json(settings),
            "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
    )
