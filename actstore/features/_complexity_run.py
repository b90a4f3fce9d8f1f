"""Feature complexity over a store: one job per run, one result Dataset over runs.

Results: ``/results/complexity/<name>`` and the codes of each run as a feature set
``/results/nmf/<name>.<run>`` (docs/analyses.md). Every input is checked before anything is
computed; the results are written only once every run is done.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from actstore._errors import ActstoreError
from actstore._execution import Execution, map_jobs
from actstore.core._folds import describe_folds
from actstore.core._plan import Selection
from actstore.core._select import check_not_blank
from actstore.features._complexity import (
    ANALYSIS,
    CODES_ANALYSIS,
    complexity_score,
    decodable_step,
    time_to_decode,
)
from actstore.features._complexity_job import (
    codes_dataset,
    complexity_job,
    dictionary_layer,
    flow_layers,
    head_layer,
    probed_layers,
)
from actstore.features._config import ComplexityConfig

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["run_complexity"]


def _choose_runs(store: Any, url: str, runs: Selection) -> list[str]:
    """The runs matching ``runs`` (ids or glob patterns, comma-separated; None/"all": all)."""
    all_runs = store.run_ids()
    check_not_blank(runs, "run", all_runs)
    pats = None if runs is None else ([runs] if isinstance(runs, str) else list(runs))
    if pats is not None:
        pats = [p.strip() for x in pats for p in x.split(",") if p.strip()]
        if pats == ["all"]:
            pats = None
    chosen = [r for r in all_runs
              if pats is None or any(fnmatch.fnmatchcase(r, p) for p in pats)]
    if not chosen:
        raise ActstoreError(
            f"no run of {url} matches {runs!r}; runs: {', '.join(all_runs) or 'none'}"
        )
    return chosen


def _check_runs(store: Any, chosen: list[str], config: ComplexityConfig) -> None:
    """Refuse runs that lack the layers, label or checkpoint asked for (before computing)."""
    known: list[str] = []
    probed_of: dict[str, list[str]] = {}
    for r in chosen:
        rd = store.reader(r)
        known += [x for x in rd.layers if x not in known]
        head = head_layer(rd, config.head_layer)
        src = dictionary_layer(rd, config.layer, head)
        if config.split is not None and config.split not in rd.labels:
            raise ActstoreError(f"run {r!r} has no label {config.split!r} to split on")
        complete = rd.complete_steps
        step = config.step
        if not complete or (step is not None and step not in complete):
            raise ActstoreError(
                f"run {r!r} has no complete checkpoint"
                + (f" {step}; complete: {', '.join(map(str, complete))}"
                   if step is not None and complete else "")
            )
        flow = flow_layers(rd.layers, config.flow_layers)
        probed_of[r] = [x for x in probed_layers(rd.layers, src, head, config.layers)
                        if x not in flow]
    if config.layers == ():
        raise ActstoreError(
            "the probed layer selection is empty; give layer names or patterns, or leave it "
            f"out for every layer up to the factorised one; layers: {', '.join(known)}"
        )
    for pat in config.layers or ():
        if not any(fnmatch.fnmatchcase(x, pat) for x in known):
            raise ActstoreError(f"no layer matches {pat!r}; layers: {', '.join(known)}")
    for r, probed in probed_of.items():
        if not probed:
            raise ActstoreError(
                f"no layer of run {r!r} matches {', '.join(config.layers or ())!r}; layers: "
                f"{', '.join(store.reader(r).layers)}"
            )


def run_complexity(
    url: str,
    name: str = "default",
    *,
    runs: Selection = None,
    write: bool = True, overwrite: bool = False, execution: Execution | None = None,
    config: ComplexityConfig | None = None,
) -> xr.Dataset:
    """Dictionary features, their complexity, time-to-decode and importance for runs of a store.

    Parameters
    ----------
    url : str
        The store's path or URL (every worker of the execution must reach it).
    name : str
        Results: ``/results/complexity/<name>`` and ``/results/nmf/<name>.<run>``.
    runs : str or list of str, optional
        Run ids or glob patterns (default all).
    config : ComplexityConfig, optional
        The dictionary, the probed layers, folds, threshold, importance and NMF settings
        (default ``ComplexityConfig()``).
    write : bool
        Write the results to the store (else only return the complexity result).
    overwrite : bool
        Replace results of this name (the complexity result and the codes of each run)
        computed with other settings (else refused before anything is computed; results with
        the same settings are replaced). Once the new result is written, codes of this name
        for runs it does not hold (``/results/nmf/<name>.<run>`` of runs no longer selected)
        are removed.
    execution : Execution, optional
        Where the jobs run, one per run (default: in this process, ``Execution(workers=1)``);
        its ``progress`` hears ``("complexity", done, total)`` over runs.

    Returns
    -------
    xarray.Dataset
        Dims run, atom, layer, checkpoint, target (the feature a head reports); see
        docs/analyses.md.

    Raises
    ------
    ActstoreError
        If the name is invalid, a selected run lacks the layers or checkpoint asked for,
        negative activations are met with ``negative="error"``, or results of this name exist
        with other settings and not ``overwrite``.
    """
    from actstore.store import check_result_name, check_settings, open_store

    config = ComplexityConfig() if config is None else config
    execution = Execution(workers=1) if execution is None else Execution.of(execution)
    check_result_name(name)
    store = open_store(url, mode="a" if write else "r", storage_options=execution.options())
    chosen = _choose_runs(store, url, runs)
    _check_runs(store, chosen, config)
    # what determines the numbers (not the array backend); each written result records it
    # the runs as asked for: the same command on a store with more runs or checkpoints
    # refreshes the results
    settings = {**config.to_json(),
                "runs": runs if runs is None or isinstance(runs, str) else list(runs)}
    if write:
        check_settings(store, ANALYSIS, name, settings, overwrite)
        for r in chosen:
            check_settings(store, CODES_ANALYSIS, f"{name}.{r}", settings, overwrite)
    job_url = execution.job_url(url)
    tasks = [(job_url, r, config, execution.options()) for r in chosen]
    parts: list[Any] = [None] * len(chosen)
    for i, out in map_jobs(complexity_job, tasks, execution, url=url, stage=ANALYSIS):
        parts[i] = out
    ds = _dataset(parts, name, config, settings)
    if write:
        _write(store, name, parts, ds, settings)
    return ds


def _stack(parts: list[dict[str, Any]], config: ComplexityConfig) -> dict[str, Any]:
    """The per-run job outputs as arrays over runs (NaN where a run has no value)."""
    lays = list(dict.fromkeys(x for p in parts for x in p["probed"]))
    ckpts = sorted({int(s) for p in parts for s in p["steps"]})
    heads = list(dict.fromkeys(h for p in parts for h in p["importance"]))
    R, K, L, S, H = len(parts), config.k, len(lays), len(ckpts), len(heads)
    v_lay = np.full((R, L, K), np.nan)
    v_step = np.full((R, S, K), np.nan)
    imp = np.full((R, H, K), np.nan)
    basis = np.full((R, H), "", dtype=object)
    comp, ttd, first, mean_code = (np.full((R, K), np.nan) for _ in range(4))
    v_both = np.full((R, S, L, K), np.nan)
    flows = list(dict.fromkeys(x for p in parts for x in p.get("vinfo_flow", {})))
    v_flow = np.full((R, len(flows), K), np.nan)
    for i, p in enumerate(parts):
        for lay, v in p["vinfo_layer"].items():
            v_lay[i, lays.index(lay)] = v
        for s, v in p["vinfo_step"].items():
            v_step[i, ckpts.index(int(s))] = v
        for lay, v in p.get("vinfo_flow", {}).items():
            v_flow[i, flows.index(lay)] = v
        for s, by_lay in p.get("vinfo_layer_step", {}).items():
            for lay, v in by_lay.items():
                v_both[i, ckpts.index(int(s)), lays.index(lay)] = v
        for h, v in p["importance"].items():
            imp[i, heads.index(h)] = v
            basis[i, heads.index(h)] = p["basis"][h]
        comp[i] = complexity_score(np.stack([p["vinfo_layer"][x] for x in p["probed"]]))
        vs = np.stack([p["vinfo_step"][s] for s in p["steps"]])
        ttd[i] = time_to_decode(vs)
        first[i] = decodable_step(vs, p["steps"], config.threshold)
        mean_code[i] = p["codes"].astype(np.float64).mean(axis=0)
    return {"layer": lays, "checkpoint": ckpts, "target": heads, "vinfo_layer": v_lay,
            "vinfo_checkpoint": v_step, "importance": imp, "importance_class": basis,
            "vinfo_layer_checkpoint": v_both if config.layers_over_checkpoints else None,
            "flow_layer": flows, "vinfo_flow": v_flow,
            "complexity": comp, "time_to_decode": ttd, "decodable_step": first,
            "code_mean": mean_code}


def _dataset(parts: list[dict[str, Any]], name: str, config: ComplexityConfig,
             settings: dict[str, Any]) -> xr.Dataset:
    """The ``/results/complexity/<name>`` Dataset of the per-run job outputs."""
    import xarray as xr

    from actstore.store import settings_json

    a = _stack(parts, config)
    floats = {"nmf_error": "error", "nmf_relative_error": "relative_error",
              "clipped": "clipped", "head_residual": "head_residual"}
    return xr.Dataset(
        {
            **{key: (("run", "atom"), a[key]) for key in (
                "complexity", "time_to_decode", "decodable_step", "code_mean")},
            "vinfo_layer": (("run", "layer", "atom"), a["vinfo_layer"]),
            "vinfo_checkpoint": (("run", "checkpoint", "atom"), a["vinfo_checkpoint"]),
            **({} if a["vinfo_layer_checkpoint"] is None else {"vinfo_layer_checkpoint": (
                ("run", "checkpoint", "layer", "atom"), a["vinfo_layer_checkpoint"])}),
            **({"vinfo_flow": (("run", "flow_layer", "atom"), a["vinfo_flow"])}
               if a["flow_layer"] else {}),
            "importance": (("run", "target", "atom"), a["importance"]),
            "importance_class": (("run", "target"), a["importance_class"]),
            "source_layer": (("run",), np.asarray([p["layer"] for p in parts], dtype=object)),
            "source_checkpoint": (("run",), np.asarray([int(p["step"]) for p in parts],
                                                       dtype=np.int64)),
            **{var: (("run",), np.asarray([float(p[key]) for p in parts]))
               for var, key in floats.items()},
        },
        coords={"run": [p["run"] for p in parts], "atom": np.arange(config.k),
                "layer": a["layer"], "checkpoint": np.asarray(a["checkpoint"], dtype=np.int64),
                "target": np.asarray(a["target"], dtype=str),
                **({"flow_layer": np.asarray(a["flow_layer"], dtype=str)}
                   if a["flow_layer"] else {})},
        attrs={
            "analysis": ANALYSIS,
            "description": (
                "Dictionary features (NMF, k per run) of one layer; V-information (held-out "
                "ridge R^2 of the standardised code, clipped at 0) from every probed layer "
                "(vinfo_layer) and from the feature's layer at every checkpoint "
                "(vinfo_checkpoint), and with layers_over_checkpoints from every probed layer "
                "at every checkpoint (vinfo_layer_checkpoint), and from the flow layers "
                "(vinfo_flow: decoded, not counted in complexity); complexity = 1 - mean over "
                "layers; time_to_decode = 1 - "
                "mean over checkpoints (inferred); importance = mean gradient x activation of "
                "each input's class logit (linear head recovered from the recorded logits)."
            ),
            "folds": describe_folds(p["folds"] for p in parts),
            "threshold": float(config.threshold),
            "codes": f"results/{CODES_ANALYSIS}/{name}.<run>",
            "actstore.config": settings_json(settings),
            "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
    )


def _write(store: Any, name: str, parts: list[dict[str, Any]], ds: xr.Dataset,
           settings: dict[str, Any]) -> None:
    """Write the codes of every run, then the complexity result, then remove stale codes."""
    from actstore.store import settings_json

    for p in parts:
        codes = codes_dataset(p, name)
        codes.attrs["actstore.config"] = settings_json(settings)
        store.write_result(CODES_ANALYSIS, f"{name}.{p['run']}", codes)
    store.write_result(ANALYSIS, name, ds)
    # only now that the new result is complete: codes of this name for runs it does not
    # hold (an --overwrite with another run selection, a run removed from the store)
    # belong to no current result
    _remove_stale_codes(store, name, [p["run"] for p in parts])


def _remove_stale_codes(store: Any, name: str, runs: Sequence[str]) -> list[str]:
    """Remove ``/results/nmf/<name>.<run>`` of every run not in ``runs``.

    Only codes written for the complexity result ``name`` (their ``result`` attribute) are
    removed, not those of a result whose name merely starts with ``<name>.``.

    Returns
    -------
    list of str
        The removed result names.
    """
    keep = {f"{name}.{r}" for r in runs}
    removed = []
    for other in store.result_names(CODES_ANALYSIS):
        if not other.startswith(f"{name}.") or other in keep:
            continue
        if store.result_attrs(CODES_ANALYSIS, other).get("result") != name:
            continue
        store.remove_result(CODES_ANALYSIS, other)
        removed.append(other)
    return removed
