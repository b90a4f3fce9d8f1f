"""The result of a probe computation: its arrays over (decoder, run, checkpoint, layer,
feature), filled job by job, continued from the stored result of the same settings, and the
part of it one call selected.

Results are one xarray Dataset at ``/results/probes/<name>``; its ``done`` variable records
finished jobs so that a re-run computes only the rest. Every job of a run decodes the same
features (those of the result it has), so ``done`` means all of them.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import asdict
from typing import Any

import numpy as np

from actstore._errors import ActstoreError
from actstore.core._plan import Job, ProbePlan, feature_kinds
from actstore.decode._config import ProbeConfig
from actstore.decode._decode import RESULT_VARS, DecodeResult
from actstore.decode._decoders import DECODERS
from actstore.decode._jobs import ANALYSIS
from actstore.store import settings_difference

__all__ = ["ResultArrays", "existing", "job_features", "select_result"]


class ResultArrays:
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
            pname = DECODERS[d].penalty
            coords[pname] = np.asarray(config.penalties(d))
            data[f"{d}_score"] = (
                ("run", "checkpoint", "layer", "feature", pname),
                np.full((R, S, L, F, len(config.penalties(d))), np.nan),
            )
        for d in dec:  # per-feature solver diagnostics (``logistic_converged``)
            for diag in DECODERS[d].diagnostics:
                data[f"{d}_{diag}"] = (main[1:], np.full((R, S, L, F), np.nan))
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
            cat = [fi[j] for j, k in enumerate(res.kinds) if k == "categorical"]
            for diag in DECODERS[d].diagnostics:
                if diag in info["extra"]:
                    ds[f"{d}_{diag}"].values[r, s, lay, cat] = info["extra"][diag]
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


def existing(
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


def job_features(
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
            feature_kinds(rd, feats, n_splits=config.n_splits, seed=config.seed,
                          split=config.split, checked=checked)
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
