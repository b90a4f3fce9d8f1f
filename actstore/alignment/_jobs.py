"""The alignment job: align the units of two or more runs of a store, layer by layer.

``alignment_job`` writes ``/results/alignment/<name>.<layer>`` (see
:func:`~actstore.alignment._dataset.alignment_dataset`); each layer is one job
(:func:`align_layer`), run through :func:`~actstore._execution.map_jobs`, that re-opens the
store by URL and streams the activations block by block.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from actstore._args import as_names
from actstore._errors import ActstoreError
from actstore._execution import Execution, map_jobs
from actstore.alignment._alignment import align_from_parts, split_mask
from actstore.alignment._clusters import joint_clusters
from actstore.alignment._config import AlignConfig
from actstore.alignment._correlations import correlations_from_moments
from actstore.alignment._dataset import alignment_dataset
from actstore.alignment._mutual_info import mutual_information
from actstore.core._moments import PairMoments
from actstore.core._select import parse_checkpoints, select

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["align_layer", "alignment_job"]


def alignment_job(
    store: Any,
    runs: Sequence[str],
    *,
    layers: str | Sequence[str] | None = None,
    checkpoint: str | int = "last",
    stimuli: Any = None,
    name: str = "align",
    config: AlignConfig | None = None,
    write: bool = True, overwrite: bool = False, execution: Execution | None = None,
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
    config : AlignConfig, optional
        What is computed (default: everything, with the default penalties and clusters).
    write : bool
        Write each layer's result.
    overwrite : bool
        Replace a result of this name computed with other settings (each layer's result is
        checked before anything is computed).
    execution : Execution, optional
        Where the jobs (one per layer) run; progress goes to its callback.

    Returns
    -------
    dict of str to xarray.Dataset
        One Dataset per layer.
    """
    from actstore._dask import default_workers
    from actstore.store import check_result_name, check_settings, open_store, settings_json

    config = config or AlignConfig()
    execution = execution or Execution()
    runs = list(dict.fromkeys(as_names(runs, "runs", allow_empty=True)))
    if len(runs) < 2:
        raise ActstoreError(f"alignment needs at least two runs, got {runs}")
    check_result_name(name)
    steps_asked = parse_checkpoints(checkpoint, default="last")
    if steps_asked is None or len(steps_asked) != 1:
        raise ActstoreError(
            f"alignment compares runs at one checkpoint, not {str(checkpoint)!r}; give last, "
            "first or a training step"
        )
    st = (open_store(store, mode="a" if write else "r", storage_options=execution.options())
          if isinstance(store, str) else store)
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
    settings = {ly: {
        "runs": list(runs), "checkpoint": str(checkpoint), "layer": ly,
        "stimuli": None if stim is None else [int(i) for i in stim], **config.to_json(),
    } for ly in common}
    if write:
        for ly in common:
            check_settings(st, "alignment", f"{name}.{ly}", settings[ly], overwrite)
    job = functools.partial(
        align_layer, stimuli=stim, mutual_info=config.mutual_info, lasso=config.lasso,
        alphas=config.alphas, n_clusters=config.n_clusters, positions=config.positions,
        test_fraction=config.test_fraction, seed=config.seed,
        storage_options=getattr(st, "storage_options", None),
    )
    if not execution.in_process(st.url) and execution.scheduler is None \
            and execution.workers is None:
        # a local cluster of at most one worker per layer
        execution = execution.with_(workers=min(len(common), default_workers()))
    results: list[Any] = [None] * len(common)
    tasks = [(execution.job_url(st.url), runs, steps, ly) for ly in common]
    with contextlib.closing(map_jobs(job, tasks, execution, url=st.url, stage="align")) as done:
        for i, ds in done:
            results[i] = ds
    out = dict(zip(common, results, strict=True))
    for ly, ds in out.items():
        ds.attrs["actstore.config"] = settings_json(settings[ly])
    if write:
        for ly, ds in out.items():
            st.write_result("alignment", f"{name}.{ly}", ds)
    return out


def _is_map(info: dict[str, Any]) -> bool:
    """The store holds a conv map (channels x positions: all of them, or a grid of them) for
    this layer."""
    shape = list(info.get("output_shape", []))
    reduction = str(info.get("reduction"))
    return (reduction in ("flatten", "none") or reduction.startswith("grid:")) and len(shape) == 3


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
            f"layer {layer!r} is not stored as conv maps in every run (reduction "
            f"{[i.get('reduction') for i in infos]}); record it with --reduce flatten (or "
            "grid:S, a grid of positions), or use --positions no"
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
