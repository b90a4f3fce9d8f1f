"""Probe engine: plan decoding jobs over a store, run them (in process or on Dask), and write
the results back into the store.

One job = one (run, checkpoint, layer). A job opens the store by URL itself, streams that
activation array, decodes every selected feature (:func:`actstore.probes.decode`) and returns
a few small arrays; nothing large travels through the scheduler. Results are one xarray
Dataset at ``/results/probes/<name>`` with dims (decoder, run, checkpoint, layer, feature);
its ``done`` variable records finished jobs so that a re-run computes only the rest. Every
job of a run decodes the same features (those of the result it has), so ``done`` means all
of them.

``memory://`` stores live inside one process, so their jobs always run in this process.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fnmatch
import json
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from os import PathLike
from typing import TYPE_CHECKING, Any

import numpy as np

from actstore._dask import for_workers, in_this_process_only
from actstore._errors import ActstoreError
from actstore.core._backend import check_device
from actstore.core._folds import check_folds, describe_folds
from actstore.core._reprs import short_list
from actstore.core._targets import encode_targets
from actstore.decode._decode import (
    PENALTY,
    RESULT_VARS,
    DecodeResult,
    ProbeConfig,
    decode,
    make_folds,
)
from actstore.store._store import settings_difference

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr

__all__ = [
    "Job",
    "ProbeInterrupted",
    "ProbePlan",
    "ProbeWarning",
    "export_results",
    "plan_probes",
    "run_probes",
    "select_result",
    "summary_table",
]

ANALYSIS = "probes"

#: Labels that describe the split design rather than the stimuli (``heldout_<feature>`` of
#: Trifeature, ``split``): not decoded unless named with ``features``; usable with ``split``.
META_PREFIXES = ("heldout_", "split")


class ProbeWarning(UserWarning):
    """Something was skipped (e.g. an incomplete checkpoint); the rest was computed."""


@dataclass(frozen=True)
class Job:
    """One unit of work: decode all selected features of one (run, checkpoint, layer)."""

    run: str
    step: int
    layer: str
    units: int

    @property
    def key(self) -> str:
        return f"{self.run}/{self.step}/{self.layer}"


@dataclass
class ProbePlan:
    """The jobs of a probe computation and the coordinates of its result.

    Attributes
    ----------
    jobs : list of Job
    runs, layers, features : list of str
    steps : list of int
        Union of the selected checkpoints over runs.
    features_of : dict run -> list of str
        The decoded features of each run (its probe set's labels among the selection).
    kinds : dict feature -> str
    skipped : list of str
        Descriptions of incomplete checkpoints that were left out.
    """

    jobs: list[Job]
    runs: list[str]
    steps: list[int]
    layers: list[str]
    features: list[str]
    features_of: dict[str, list[str]]
    kinds: dict[str, str]
    skipped: list[str]
    units: dict[tuple[str, str], int]

    def __repr__(self) -> str:
        return (f"ProbePlan({len(self.jobs)} jobs: runs={short_list(self.runs, 6)}, "
                f"steps={short_list(self.steps, 6)}, layers={short_list(self.layers, 6)}, "
                f"features={short_list(self.features, 6)}, skipped={len(self.skipped)})")


def _patterns(sel: str | Sequence[str] | None, what: str) -> list[str] | None:
    if sel is None:
        return None
    items = [s.strip() for s in (sel.split(",") if isinstance(sel, str) else sel)]
    items = [s for s in items if s]
    if not items:
        raise ActstoreError(
            f"the {what} selection {sel!r} is empty; give 'all' or comma-separated {what}s"
        )
    return None if items == ["all"] else items


def _match(names: Sequence[str], pats: list[str] | None, what: str, valid: Sequence[str]) -> list:
    if pats is None:
        return list(names)
    out = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in pats)]
    for p in pats:
        if not any(fnmatch.fnmatchcase(v, p) for v in valid):
            raise ActstoreError(
                f"no {what} matches {p!r}; {what}s: {', '.join(valid) or 'none'}"
            )
    return out


def _select_steps(
    reader: Any, sel: str | Sequence[int | str] | None, strict: bool, skipped: list[str]
) -> list[int]:
    planned = reader.planned_steps
    written = [int(s) for s in reader.steps if s >= 0]
    complete = set(reader.complete_steps)
    candidates = sorted(set(planned) | set(written))
    items = _patterns(sel if isinstance(sel, str) or sel is None else [str(s) for s in sel],
                      "checkpoint")
    chosen: list[int] = []
    if items is None:
        chosen = candidates
    else:
        # first/last: the run's first/last *complete* checkpoint (a run still training has
        # planned steps not written yet), as in ``actstore similarity``
        done = sorted(complete)
        for it in items:
            if it in ("first", "last"):
                if done:
                    chosen.append(done[0] if it == "first" else done[-1])
                elif candidates:
                    what = f"run {reader.run_id!r} has no complete checkpoint"
                    if strict:
                        raise ActstoreError(
                            f"{what} for --checkpoints {it}; finish one (re-run training/"
                            "dump), leave the run out with --runs or leave out --strict"
                        )
                    if what not in skipped:
                        skipped.append(what)
                continue
            try:
                step = int(it)
            except ValueError:
                raise ActstoreError(
                    f"checkpoint {it!r} is not a step number, 'first', 'last' or 'all'"
                ) from None
            if step not in candidates:
                raise ActstoreError(
                    f"run {reader.run_id!r} has no checkpoint at step {step}; steps: "
                    f"{', '.join(map(str, candidates)) or 'none'}"
                )
            chosen.append(step)
    out = []
    for s in sorted(set(chosen)):
        if s in complete:
            out.append(s)
            continue
        what = f"run {reader.run_id!r} checkpoint {s} is incomplete"
        if strict:
            raise ActstoreError(
                f"{what}; finish it (re-run training/dump) or leave out --strict to skip it"
            )
        skipped.append(what)
    return out


def _feature_kinds(
    rd: Any, feats: list[str], config: ProbeConfig, checked: dict[str, list[str]]
) -> list[str]:
    """Check that a run's features can be decoded together (folds, classes); their kinds.

    ``checked`` caches the answer per (probe set, features).
    """
    key = json.dumps([rd.attrs.get("probe_set"), feats])
    if key not in checked:
        labels = rd.labels
        use = {f: labels[f] for f in feats}
        if config.split is not None:
            if config.split not in labels:
                raise ActstoreError(
                    f"run {rd.run_id!r} has no label {config.split!r} to split on; "
                    f"labels: {', '.join(labels)}"
                )
            use[config.split] = labels[config.split]
        folds, decoded = make_folds(use, config)
        targets = encode_targets(decoded)
        check_folds(folds, targets.labels())
        checked[key] = [f.kind for f in targets.features]
    return checked[key]


def _check_config(config: Any) -> ProbeConfig:
    if config is None:
        return ProbeConfig()
    if not isinstance(config, ProbeConfig):
        raise ActstoreError(
            f"config must be a ProbeConfig, not {type(config).__name__}; e.g. "
            "ProbeConfig(decoders=('ridge',), n_splits=5)"
        )
    return config


def plan_probes(
    store: Any,
    runs: str | Sequence[str] | None = None,
    checkpoints: str | Sequence[int | str] | None = None,
    layers: str | Sequence[str] | None = "all",
    features: str | Sequence[str] | None = None,
    config: ProbeConfig | None = None,
    strict: bool = False,
) -> ProbePlan:
    """Select runs, checkpoints, layers and features, and check every input before computing.

    Parameters
    ----------
    store : actstore.store.Store, str or path
        An open store, or the path or URL of one (opened read-only).
    runs, layers : str or list of str, optional
        Names or glob patterns (comma-separated in a string); ``None``/``"all"``: all.
    checkpoints : str or list, optional
        ``"all"`` (default), ``"first"``, ``"last"``, or step numbers (``"0,1000"``).
        ``first``/``last`` are each run's first/last *complete* checkpoint (a run still
        training keeps its last finished one); runs whose steps differ fill the union of
        their steps, NaN where a run has no job.
    features : str or list of str, optional
        Feature names (default: every label of the probe set except the split design,
        ``heldout_*`` and ``split*``).
    config : ProbeConfig
    strict : bool
        An incomplete checkpoint is an error instead of a skipped job (with a warning).

    Returns
    -------
    ProbePlan
        One :class:`Job` per selected (run, complete checkpoint, layer) and the coordinates
        of the result; incomplete checkpoints left out are listed in ``skipped`` (each also
        warned about with a :class:`ProbeWarning`).

    Raises
    ------
    ActstoreError
        Unknown names (listing the valid ones), or labels that cannot be decoded.
    """
    config = _check_config(config)
    if isinstance(store, (str, PathLike)):
        from actstore.store import open_store

        store = open_store(str(store))
    all_runs = store.run_ids()
    if not all_runs:
        raise ActstoreError(f"{store.url} has no runs to probe; train or dump some first")
    run_ids = _match(all_runs, _patterns(runs, "run"), "run", all_runs)
    readers = {r: store.reader(r) for r in run_ids}
    all_layers = list(dict.fromkeys(lay for r in readers.values() for lay in r.layers))
    lay_pats = _patterns(layers, "layer")
    _match(all_layers, lay_pats, "layer", all_layers)
    all_feats = list(dict.fromkeys(f for r in readers.values() for f in r.features))
    feat_sel = _patterns(features, "feature")
    if feat_sel is not None:
        for f in feat_sel:
            if f not in all_feats:
                raise ActstoreError(
                    f"unknown feature {f!r}; features: {', '.join(all_feats) or 'none'}"
                )
    if config.split is not None and config.split not in all_feats:
        raise ActstoreError(
            f"no label array {config.split!r} to split on; labels: {', '.join(all_feats)}"
        )
    jobs: list[Job] = []
    skipped: list[str] = []
    features_of: dict[str, list[str]] = {}
    kinds: dict[str, str] = {}
    units: dict[tuple[str, str], int] = {}
    steps_all: set[int] = set()
    checked: dict[str, list[str]] = {}
    for rid, rd in readers.items():
        feats = [f for f in rd.features if f != config.split]
        if feat_sel is not None:
            feats = [f for f in feats if f in feat_sel]
        else:
            feats = [f for f in feats if not f.startswith(META_PREFIXES)]
        if not feats:
            continue
        for f, k in zip(feats, _feature_kinds(rd, feats, config, checked), strict=True):
            kinds[f] = k
        features_of[rid] = feats
        lays = _match(rd.layers, lay_pats, "layer", all_layers) if lay_pats else rd.layers
        steps = _select_steps(rd, checkpoints, strict, skipped)
        steps_all.update(steps)
        for lay in lays:
            units[(rid, lay)] = rd.units(lay)
            for s in steps:
                jobs.append(Job(rid, s, lay, units[(rid, lay)]))
    for msg in skipped:
        warnings.warn(f"{msg}; skipped (use --strict to make this an error)", ProbeWarning,
                      stacklevel=2)
    feats_used = [f for f in all_feats if f in kinds]
    lays_used = [lay for lay in all_layers if any(j.layer == lay for j in jobs)]
    return ProbePlan(
        jobs=jobs,
        runs=[r for r in run_ids if r in features_of],
        steps=sorted(steps_all),
        layers=lays_used,
        features=feats_used,
        features_of=features_of,
        kinds=kinds,
        skipped=skipped,
        units=units,
    )


class _ReaderSource:
    """Stream one (layer, checkpoint) of a run in chunk-aligned blocks of samples."""

    def __init__(self, reader: Any, layer: str, step: int) -> None:
        self.reader, self.layer, self.step = reader, layer, step
        self.n = int(reader.array(layer).shape[1])
        self.d = reader.units(layer)
        self.name = f"run {reader.run_id!r}, layer {layer!r}, checkpoint {step}"

    def blocks(self) -> Iterator[tuple[int, int, Any]]:
        yield from self.reader.iter_blocks(self.layer, self.step)


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
        res = decode(_ReaderSource(rd, job.layer, job.step), use, config)
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


class _Results:
    """Result arrays over the plan's coordinates, filled job by job."""

    def __init__(self, plan: ProbePlan, config: ProbeConfig, old: Any | None) -> None:
        import xarray as xr

        self.config = config
        runs = list(dict.fromkeys([*(old.run.values.tolist() if old is not None else []),
                                   *plan.runs]))
        steps = sorted(set(plan.steps) | set(old.checkpoint.values.tolist() if old is not None
                                             else []))
        layers = list(dict.fromkeys([*(old.layer.values.tolist() if old is not None else []),
                                     *plan.layers]))
        feats = list(dict.fromkeys([*(old.feature.values.tolist() if old is not None else []),
                                    *plan.features]))
        kinds = dict(plan.kinds)
        if old is not None:
            kinds = {**dict(zip(old.feature.values.tolist(),
                                old.feature_kind.values.tolist(), strict=True)), **kinds}
        dec = list(config.decoders)
        R, S, L, F, D = len(runs), len(steps), len(layers), len(feats), len(dec)
        coords = {
            "decoder": dec, "run": runs, "checkpoint": np.asarray(steps, dtype=np.int64),
            "layer": layers, "feature": feats,
            "feature_kind": ("feature", [kinds.get(f, "categorical") for f in feats]),
        }
        main = ("decoder", "run", "checkpoint", "layer", "feature")
        data: dict[str, Any] = {v: (main, np.full((D, R, S, L, F), np.nan)) for v in RESULT_VARS}
        data["chance"] = (("run", "feature"), np.full((R, F), np.nan))
        data["n_train"] = (("run",), np.full(R, np.nan))
        data["n_test"] = (("run",), np.full(R, np.nan))
        data["units"] = (("run", "layer"), np.full((R, L), -1, dtype=np.int64))
        data["done"] = (("run", "checkpoint", "layer"), np.zeros((R, S, L), dtype=bool))
        data["seconds"] = (("run", "checkpoint", "layer"), np.full((R, S, L), np.nan))
        data["reads"] = (("run", "checkpoint", "layer"), np.zeros((R, S, L), dtype=np.int64))
        for d in dec:
            pname = PENALTY[d][0]
            coords[pname] = np.asarray(config.penalties(d))
            data[f"{d}_score"] = (
                ("run", "checkpoint", "layer", "feature", pname),
                np.full((R, S, L, F, len(config.penalties(d))), np.nan),
            )
        if "logistic" in dec:
            data["logistic_converged"] = (main[1:], np.full((R, S, L, F), np.nan))
        ds = xr.Dataset(data, coords=coords)
        if old is not None:
            # non-index coordinates (the string ``feature_kind``) are the new dataset's: a
            # reindex would fill them for new features too, with NaN
            old = old.reset_coords(drop=True)
            for var in ds.data_vars:
                if var in old.data_vars:
                    fill: Any = {"done": False, "units": -1, "reads": 0}.get(str(var), np.nan)
                    ds[var] = old[var].reindex_like(ds[var], fill_value=fill).astype(
                        ds[var].dtype
                    )
        for (rid, lay), u in plan.units.items():
            ds["units"].loc[{"run": rid, "layer": lay}] = u
        self.ds = ds
        self.idx = {k: {v: i for i, v in enumerate(ds[k].values.tolist())}
                    for k in ("run", "checkpoint", "layer", "feature", "decoder")}

    def is_done(self, job: Job) -> bool:
        i = self.idx
        return bool(self.ds["done"].values[i["run"][job.run], i["checkpoint"][job.step],
                                           i["layer"][job.layer]])

    def undo(self, job: Job) -> None:
        """Mark a finished job as to be computed again (its values stay until then)."""
        i = self.idx
        self.ds["done"].values[i["run"][job.run], i["checkpoint"][job.step],
                               i["layer"][job.layer]] = False

    def add(self, job: Job, res: DecodeResult) -> None:
        i = self.idx
        r, s, lay = i["run"][job.run], i["checkpoint"][job.step], i["layer"][job.layer]
        fi = [i["feature"][f] for f in res.features]
        ds = self.ds
        for d, info in res.decoders.items():
            if d not in i["decoder"]:
                continue
            di = i["decoder"][d]
            for var in RESULT_VARS:
                if var == "penalty":
                    val = np.asarray(info["penalty"], np.float64)
                    # a decoder that does not apply to a feature chose nothing
                    applies = ~np.all(np.isnan(info["path"]), axis=0)
                    val = np.where(applies, val, np.nan)
                else:
                    val = info["summary"].get(var)
                    if val is None:
                        continue
                ds[var].values[di, r, s, lay, fi] = val
            ds[f"{d}_score"].values[r, s, lay, fi, :] = info["path"].T
            if d == "logistic" and "converged" in info["extra"]:
                cat = [fi[j] for j, k in enumerate(res.kinds) if k == "categorical"]
                ds["logistic_converged"].values[r, s, lay, cat] = info["extra"]["converged"]
        ds["chance"].values[r, fi] = res.chance
        ds["n_train"].values[r] = res.n_train
        ds["n_test"].values[r] = res.n_test
        ds["seconds"].values[r, s, lay] = sum(res.seconds.values())
        ds["reads"].values[r, s, lay] = res.passes
        ds["done"].values[r, s, lay] = True

    def dataset(self, description: str) -> Any:
        ds = self.ds.copy()
        from actstore import __version__

        ds.attrs = {
            "analysis": ANALYSIS,
            "actstore.config": json.dumps(self.config.to_json(), sort_keys=True),
            "actstore.config_key": self.config.key(),
            "folds": description,
            "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "actstore.version": __version__,
            "description": (
                "Held-out decoding of each feature from each (run, checkpoint, layer): scores "
                "at the penalty chosen by cross-validation (mean over folds); *_score: the "
                "selection criterion (accuracy, or R^2 for continuous features) per penalty."
            ),
        }
        return ds


def _same_decoders(old: Any, config: ProbeConfig) -> ProbeConfig:
    """``config`` with its decoders in the stored result's order when they are the same set.

    The decoders are a set: ``logistic,ridge`` continues a result of ``ridge,logistic`` (and
    keeps the stored order of its ``decoder`` coordinate).
    """
    try:
        stored = [str(d) for d in json.loads(old.attrs.get("actstore.config", "{}"))
                  .get("decoders", [])]
    except (TypeError, ValueError, AttributeError):
        return config
    if sorted(stored) != sorted(config.decoders) or list(config.decoders) == stored:
        return config
    return ProbeConfig(**{**asdict(config), "decoders": tuple(stored)})


def _existing(
    store: Any, name: str, config: ProbeConfig, staging: bool = False
) -> tuple[Any | None, ProbeConfig]:
    """The stored result ``name`` to continue (or None) and the config to continue it with.

    Other settings are refused; the same decoders in another order are the same settings
    (the returned config has the stored order). A staging result (an interrupted
    ``--overwrite``) with other settings is dropped instead.
    """
    if not store.has_result(ANALYSIS, name):
        return None, config
    old = store.read_result(ANALYSIS, name)
    same = _same_decoders(old, config)
    if old.attrs.get("actstore.config_key") == same.key():
        return old, same
    if staging:
        store.remove_result(ANALYSIS, name)
        return None, config
    raise ActstoreError(
        f"results/probes/{name} in {store.url} were computed with other settings "
        f"({settings_difference(old.attrs.get('actstore.config'), config.to_json())}); "
        "choose another --name or pass --overwrite"
    )


def _job_features(
    store: Any, plan: ProbePlan, old: Any | None, config: ProbeConfig, name: str
) -> tuple[dict[str, list[str]], list[Job]]:
    """The features each run's jobs decode, and the stored jobs to compute again.

    All jobs of a run in one result decode the same features, its features among the
    result's (stored and selected): the folds are stratified on the categorical features
    together, so a job decoding fewer would use other folds. A selection that adds features
    to a result therefore recomputes the finished jobs of the runs that have them (all of
    their features); a job that cannot be recomputed any more is refused.
    """
    if old is None:
        return dict(plan.features_of), []
    stored = [str(f) for f in old.feature.values.tolist()]
    result_feats = set(stored) | set(plan.features)
    added = [f for f in plan.features if f not in stored]
    checked: dict[str, list[str]] = {}
    readers: dict[str, Any] = {}
    present = set(store.run_ids())

    def feats_of(rid: str) -> list[str]:
        rd = readers.setdefault(rid, store.reader(rid))
        feats = [f for f in rd.features if f != config.split and f in result_feats]
        if feats:
            _feature_kinds(rd, feats, config, checked)
        return feats

    features_of = {rid: feats_of(rid) for rid in plan.features_of}
    redo: list[Job] = []
    if not added:
        return features_of, redo
    done = old["done"]
    steps = [int(x) for x in old.checkpoint.values.tolist()]
    layers = [str(x) for x in old.layer.values.tolist()]

    def refuse(why: str) -> ActstoreError:
        return ActstoreError(
            f"cannot add feature(s) {', '.join(added)} to results/probes/{name}: {why}, so "
            "its finished jobs cannot be recomputed with them; pass --overwrite or choose "
            "another --name"
        )

    for ri, rid in enumerate(str(x) for x in old.run.values.tolist()):
        finished = np.argwhere(done.values[ri])
        if finished.size == 0:
            continue
        if rid not in present:
            raise refuse(f"run {rid!r} is no longer in {store.url}")
        feats = features_of.get(rid)
        if feats is None:
            feats = features_of[rid] = feats_of(rid)
        if not any(f in added for f in feats):
            continue
        rd = readers[rid]
        complete = set(rd.complete_steps)
        for si, li in finished:
            step, layer = steps[si], layers[li]
            if layer not in rd.layers:
                raise refuse(f"run {rid!r} has no layer {layer!r} any more")
            if step not in complete:
                raise refuse(f"run {rid!r} checkpoint {step} is no longer complete")
            redo.append(Job(rid, step, layer, rd.units(layer)))
    return features_of, redo


def select_result(ds: Any, selection: Any = None) -> Any:
    """The part of a probe result that one :func:`run_probes` call selected.

    Parameters
    ----------
    ds : xarray.Dataset
        A result returned by :func:`run_probes` (its ``attrs["selection"]`` records the
        selection), or any probe result with ``selection`` given.
    selection : dict or str (JSON), optional
        ``{"runs": {run: {"checkpoints": [...], "layers": [...]}}, "features": [...]}``.

    Returns
    -------
    xarray.Dataset
        The selected runs, checkpoints, layers and features; where the selected runs have
        different checkpoints (e.g. ``last`` of runs at different steps), the cells of
        (run, checkpoint, layer) outside the selection are NaN and not ``done``. Without a
        recorded selection, ``ds`` itself.
    """
    import xarray as xr

    sel = selection if selection is not None else ds.attrs.get("selection")
    if not sel:
        return ds
    if isinstance(sel, str):
        sel = json.loads(sel)
    per_run = sel["runs"]
    runs = [r for r in ds.run.values.tolist() if r in per_run]
    steps = [s for s in ds.checkpoint.values.tolist()
             if any(s in v["checkpoints"] for v in per_run.values())]
    layers = [x for x in ds.layer.values.tolist()
              if any(x in v["layers"] for v in per_run.values())]
    feats = [f for f in ds.feature.values.tolist() if f in sel["features"]]
    sub = ds.sel(run=runs, checkpoint=steps, layer=layers, feature=feats)
    mask = np.zeros((len(runs), len(steps), len(layers)), dtype=bool)
    for i, r in enumerate(runs):
        mask[i] = np.outer(np.isin(steps, per_run[r]["checkpoints"]),
                           np.isin(layers, per_run[r]["layers"]))
    m = xr.DataArray(mask, dims=("run", "checkpoint", "layer"),
                     coords={"run": runs, "checkpoint": sub.checkpoint.values, "layer": layers})
    for var in list(sub.data_vars):
        da = sub[var]
        if not {"run", "checkpoint", "layer"} <= set(da.dims):
            continue
        if da.dtype == bool:
            sub[var] = da & m
        elif da.dtype.kind == "f":
            sub[var] = da.where(m)
    return sub


class ProbeInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run_probes`; the finished jobs were saved first."""

    def __init__(self, saved: int, total: int, where: str) -> None:
        super().__init__(f"interrupted: {saved} of {total} jobs finished and saved in {where}; "
                         "re-run the same command to continue")
        self.saved, self.total, self.where = saved, total, where


def run_probes(
    url: str,
    name: str = "default",
    runs: str | Sequence[str] | None = None,
    checkpoints: str | Sequence[int | str] | None = None,
    layers: str | Sequence[str] | None = "all",
    features: str | Sequence[str] | None = None,
    config: ProbeConfig | None = None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    strict: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    storage_options: dict | None = None,
    flush_seconds: float = 60.0,
    scheduler_timeout: float = 10.0,
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
    scheduler : str, optional
        Address of a running Dask scheduler. Default: a local cluster of worker processes
        (one per core, one BLAS thread each); ``n_workers=1`` runs in this process, and so
        does ``device="cuda"``/``"cupy"`` unless ``n_workers`` is given.
        ``memory://`` stores always run in this process.
    overwrite : bool
        Recompute everything even if results with this name exist. The new results are
        computed under a hidden staging name and replace the old ones only when complete;
        an interrupted overwrite continues from its staging result when run again.
    progress : bool
        Show a progress bar (stderr).
    storage_options : dict, optional
        fsspec options of the store URL (passed to every job).
    flush_seconds : float
        Finished jobs are written to the store at least this often.
    scheduler_timeout : float
        Seconds to wait for ``scheduler`` to answer.

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
        Bad input, or (without ``scheduler``) a device this machine cannot run: found before
        anything is computed; or (NaN/Inf activations, a corrupt chunk, a worker without the
        device) while a job runs; in that case the results of this call are discarded and the
        stored result is left as it was.
    ProbeInterrupted
        On Ctrl-C, after the finished jobs were written.
    """
    from actstore.store import open_store
    from actstore.store._store import check_result_name

    config = _check_config(config)
    check_result_name(name)
    if scheduler is None:
        # local workers run on this machine: a device it lacks fails now, not in every job
        check_device(config.device)
    store = open_store(url, mode="a", storage_options=storage_options)
    plan = plan_probes(store, runs, checkpoints, layers, features, config, strict)
    if not plan.jobs:
        raise ActstoreError(
            f"nothing to probe in {url}: no complete checkpoint among the selection"
        )
    # With overwrite, compute under a staging name: the published result stays until the new
    # one is complete.
    target = f".{name}.overwrite" if overwrite else name
    had_analysis = store.has_result(ANALYSIS)
    if not overwrite and store.has_result(ANALYSIS, f".{name}.overwrite"):
        staged = store.read_result(ANALYSIS, f".{name}.overwrite")
        warnings.warn(
            f"an interrupted --overwrite of results/probes/{name} holds "
            f"{int(staged['done'].sum())} of {int(staged['done'].size)} jobs; this run "
            "continues the present result; run with --overwrite to finish the replacement",
            ProbeWarning, stacklevel=2,
        )
    old, config = _existing(store, target, config, staging=overwrite)
    features_of, redo = _job_features(store, plan, old, config, name)
    results = _Results(plan, config, old)
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
    described: dict[str, str] = {}
    for rid in plan.runs:  # one description per probe set and feature set (study variants)
        rd = store.reader(rid)
        key = json.dumps([rd.attrs.get("probe_set"), features_of[rid]])
        if key not in described:
            labs = {f: rd.labels[f] for f in features_of[rid]}
            if config.split:
                labs[config.split] = rd.labels[config.split]
            described[key] = make_folds(labs, config)[0].description
    desc = describe_folds(described.values())
    cfg = asdict(config)
    # local workers would all share one GPU: with a GPU device and no cluster, one process
    # drives it (several GPUs: a dask-cuda cluster and ``scheduler``)
    gpu_local = config.device in ("cuda", "cupy") and scheduler is None and n_workers is None
    in_process = in_this_process_only(url) or (scheduler is None and (n_workers == 1
                                                                       or gpu_local))
    job_url = url if in_process else for_workers(url)
    n_added = 0
    wrote = False
    last_flush = time.monotonic()

    def flush() -> None:
        nonlocal wrote, last_flush
        store.write_result(ANALYSIS, target, results.dataset(desc), staging=overwrite)
        wrote, last_flush = True, time.monotonic()

    def collect(out: dict[str, Any], advance: Callable[[], None]) -> None:
        nonlocal n_added
        if "error" in out:
            raise out["error"]
        results.add(out["job"], out["result"])
        n_added += 1
        advance()
        if time.monotonic() - last_flush > flush_seconds:
            flush()

    with contextlib.ExitStack() as stack:
        client = None
        if todo and not in_process:
            from actstore._dask import dask_client

            # Connect before anything is written: a dead scheduler leaves the store untouched.
            client = stack.enter_context(
                dask_client(scheduler, n_workers, timeout=scheduler_timeout)
            )
        futs: list[Any] = []
        try:
            with _progress(progress, len(todo)) as advance:
                if client is None:
                    for job in todo:
                        collect(run_job(url, job, features_of[job.run], cfg, None,
                                        storage_options), advance)
                else:
                    from distributed import as_completed

                    futs = [
                        client.submit(run_job, job_url, job, features_of[job.run], cfg, 1,
                                      storage_options, pure=False)
                        for job in todo
                    ]
                    for fut in as_completed(futs):
                        collect(fut.result(), advance)
        except ActstoreError:
            # bad data found by a job: the store keeps the result it had before this call
            _cancel(client, futs)
            if wrote:
                if old is None:
                    store.remove_result(ANALYSIS, target, prune=not had_analysis)
                else:
                    store.write_result(ANALYSIS, target, old, staging=overwrite)
            raise
        except KeyboardInterrupt:
            _cancel(client, futs)
            if n_added:
                flush()
            where = (f"the staging copy of results/probes/{name} (it replaces the present "
                     "one once complete)" if overwrite else f"results/probes/{name}")
            raise ProbeInterrupted(
                n_total - len(todo) + n_added, n_total, where
            ) from None
        except BaseException:
            # finished jobs are kept if the computation stops half-way (a crash, a lost cluster)
            _cancel(client, futs)
            if n_added:
                flush()
            raise
    if n_added or not store.has_result(ANALYSIS, target):
        flush()
    final = results.dataset(desc)
    if overwrite:
        store.write_result(ANALYSIS, name, final)
        store.remove_result(ANALYSIS, target)
    final.attrs["computed"] = n_added
    final.attrs["reused"] = len(plan.jobs) - n_selected_todo
    final.attrs["selection"] = json.dumps({
        "runs": {r: {"checkpoints": sorted({j.step for j in plan.jobs if j.run == r}),
                     "layers": list(dict.fromkeys(j.layer for j in plan.jobs if j.run == r))}
                 for r in plan.runs},
        "features": plan.features,
    })
    return final


def _cancel(client: Any, futs: list[Any]) -> None:
    """Stop queued jobs and quiet the cluster's logs while it is shut down early."""
    if client is None:
        return
    import logging

    for name in ("distributed", "tornado"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    # a scheduler of ours is shut down right after; one of a user's cluster keeps running
    if client.cluster is None:
        with contextlib.suppress(Exception):
            client.cancel(futs)


class _progress:
    """A rich progress bar over jobs (or nothing)."""

    def __init__(self, show: bool, total: int) -> None:
        self.show, self.total = show, total
        self._p: Any = None

    def __enter__(self) -> Callable[[], None]:
        if not self.show or not self.total:
            return lambda: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self._p = Progress(
            "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
            TimeRemainingColumn(), console=Console(stderr=True), transient=False,
        )
        self._p.start()
        task = self._p.add_task("probing", total=self.total)
        return lambda: self._p.advance(task)

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if self._p is not None:
            if exc_type is not None and not issubclass(exc_type, KeyboardInterrupt):
                self._p.live.transient = True  # the error message is the one line left
            self._p.stop()


def summary_table(ds: Any, decoder: str | None = None) -> pd.DataFrame:
    """Features x layers: score at the first and the last checkpoint, mean over runs.

    Each run's own first and last computed checkpoint are used (runs may differ: e.g. the
    last complete checkpoint of each), then averaged over runs. For the part of a result one
    call selected, pass ``select_result(ds)``.

    The score is accuracy for categorical features and R^2 for continuous ones (from the ridge
    decoders when the table shows logistic ones, which do not apply to continuous features).

    Parameters
    ----------
    ds : xarray.Dataset
        A probe result.
    decoder : str, optional
        Default: ``logistic`` if present (the papers' decoder), else the first.

    Returns
    -------
    pandas.DataFrame
        Index: feature; columns: layer; cells ``"0.31 -> 0.87"`` (first -> last checkpoint).
    """
    import pandas as pd
    import xarray as xr

    if not isinstance(ds, xr.Dataset) or "decoder" not in ds.dims or "accuracy" not in ds:
        raise ActstoreError(
            f"summary_table takes a probe result (an xarray.Dataset with an 'accuracy' "
            f"variable over 'decoder'), not {type(ds).__name__}; e.g. the Dataset run_probes "
            "returns, or store.read_result('probes', name)"
        )
    decs = ds.decoder.values.tolist()
    decoder = decoder or ("logistic" if "logistic" in decs else decs[0])
    if decoder not in decs:
        raise ActstoreError(f"no decoder {decoder!r} in these results; decoders: {', '.join(decs)}")
    sub = ds.sel(decoder=decoder)
    dims = ("run", "checkpoint", "layer")
    cells: dict[str, dict[str, str]] = {}
    for f, kind in zip(ds.feature.values.tolist(), ds.feature_kind.values.tolist(), strict=True):
        var = sub["accuracy"] if kind == "categorical" else sub["r2"]
        if decoder == "logistic" and kind != "categorical":
            var = ds.sel(decoder=decs[0])["r2"] if decs[0] != "logistic" else var
        vals = var.sel(feature=f).transpose(*dims).values  # (run, checkpoint, layer)
        # each run's own first and last checkpoint (runs may have different steps, e.g. the
        # last complete one of each), then the mean over runs
        has = (ds["done"].transpose(*dims).values if "done" in ds
               else np.ones(vals.shape, dtype=bool)) & ~np.isnan(vals)
        any_ = has.any(axis=1)  # (run, layer)
        S = vals.shape[1]
        first = np.argmax(has, axis=1)
        last = S - 1 - np.argmax(has[:, ::-1, :], axis=1)
        v_first = np.take_along_axis(vals, first[:, None, :], axis=1)[:, 0, :]
        v_last = np.take_along_axis(vals, last[:, None, :], axis=1)[:, 0, :]
        row = {}
        for li, lay in enumerate(ds.layer.values.tolist()):
            ok = any_[:, li]
            if not ok.any():
                row[lay] = "-"
                continue
            a, b = float(v_first[ok, li].mean()), float(v_last[ok, li].mean())
            row[lay] = (f"{a:.2f}" if np.array_equal(first[ok, li], last[ok, li])
                        else f"{a:.2f} -> {b:.2f}")
        cells[f"{f} ({'acc' if kind == 'categorical' else 'R2'})"] = row
    return pd.DataFrame.from_dict(cells, orient="index")


def check_export_path(path: str) -> str:
    """The extension of an export path (``.csv``/``.parquet``) whose folder exists."""
    import os

    ext = os.path.splitext(str(path))[1].lower()
    if ext not in (".csv", ".parquet"):
        raise ActstoreError(f"--out must end in .csv or .parquet, got {path!r}")
    if "://" not in str(path):
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise ActstoreError(f"--out {path!r}: the folder {folder} does not exist")
        if os.path.isdir(path):
            raise ActstoreError(f"--out {path!r} is a folder; give a file name")
        if not os.access(folder, os.W_OK):
            raise ActstoreError(f"--out {path!r}: the folder {folder} is not writable")
    if ext == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ActstoreError(
                "writing parquet needs pyarrow; pip install pyarrow, or use --out file.csv"
            ) from None
    return ext


def export_results(ds: Any, path: str) -> pd.DataFrame:
    """Write the per-(decoder, run, checkpoint, layer, feature) scores as a tidy table.

    ``.csv`` and ``.parquet`` (needs pyarrow) are supported.

    Parameters
    ----------
    ds : xarray.Dataset
        A ``/results/probes/<name>`` result (see :func:`run_probes`).
    path : str
        Output file ending in ``.csv`` or ``.parquet``.

    Returns
    -------
    pandas.DataFrame
        One row per (decoder, run, checkpoint, layer, feature) with a score: those columns,
        the score variables present (``accuracy``, ``r2``, ...), ``logistic_converged`` (NaN
        for other decoders) and ``chance``.

    Raises
    ------
    ActstoreError
        If the suffix is not .csv or .parquet, or the folder does not exist or the path is a
        folder.
    """
    ext = check_export_path(path)
    keep = [v for v in (*RESULT_VARS, "logistic_converged") if v in ds.data_vars]
    df = ds[[*keep, "chance"]].to_dataframe().reset_index()
    df = df[df[["accuracy", "r2"]].notna().any(axis=1)]
    if "logistic_converged" in df:
        df.loc[df["decoder"] != "logistic", "logistic_converged"] = np.nan
    if ext == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    return df
