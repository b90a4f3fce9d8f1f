"""xarray views of a store: the whole tree, or one layer across runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from actstore._args import as_names, check_text
from actstore._errors import ActstoreError
from actstore.store import _layout as L

if TYPE_CHECKING:
    import xarray as xr

    from actstore.store._reader import RunReader

__all__ = ["open", "open_layer"]


def open(url: str, storage_options: dict | None = None) -> xr.DataTree:
    """Open a store as an :class:`xarray.DataTree` of lazy Dask arrays.

    Nothing is read beyond metadata until ``.values`` / ``.compute()``.

    Parameters
    ----------
    url : str or path
        A local path or an fsspec URL (``memory://``, ``s3://...``).
    storage_options : dict, optional
        Passed to fsspec (credentials, endpoint) for remote URLs.

    Returns
    -------
    xarray.DataTree
        The hierarchy of docs/FORMAT.md: ``tree["runs/<run>"]`` holds a run's layers
        (dims ``checkpoint, sample, <layer>_unit``), labels and slot table;
        ``tree["results/<analysis>/<name>"]`` a result; ``tree["probe_sets/<name>"]`` a
        probe set.

    Raises
    ------
    StoreError
        If ``url`` holds no actstore store (or one of a newer format).

    Examples
    --------
    >>> tree = actstore.open("demo.zarr")                       # doctest: +SKIP
    >>> tree["runs/trifeature-shape-alexnet-s0"]["fc6"]         # doctest: +SKIP
    """
    import xarray as xr

    from actstore.store._open import open_store

    open_store(url, mode="r", storage_options=storage_options)  # clear error if not a store
    return xr.open_datatree(
        str(url), engine="zarr", consolidated=False, chunks={}, zarr_format=3,
        storage_options=storage_options,
    )


def open_layer(
    url: str, layer: str, runs: str | Sequence[str] | None = None,
    storage_options: dict | None = None,
) -> xr.DataArray:
    """One layer of many runs as a lazy DataArray with dims (run, checkpoint, sample, unit).

    Parameters
    ----------
    url : str or path
        A local path or an fsspec URL of a store.
    layer : str
        A layer name, as ``actstore ls`` / :attr:`RunReader.layers` show it.
    runs : str or list of str, optional
        Run ids (one str: that run). Default: every run that has ``layer``.
    storage_options : dict, optional
        Passed to fsspec for remote URLs.

    Returns
    -------
    xarray.DataArray
        Named ``layer``, dims ``(run, checkpoint, sample, unit)``, float32 (or float16, as
        stored), backed by Dask: nothing is read until ``.values`` / ``.compute()``.
        Coordinates: ``run``, ``model``/``task``/``seed``/``dataset`` per run,
        ``checkpoint`` (the steps when all runs share them; else the slot index, with a 2-D
        ``step`` coordinate that is -1 where a run has fewer checkpoints than others, its
        activations NaN there), ``sample`` and the probe set's feature labels (dim ``sample``).
        Only complete slots show data: a slot that is being written or was interrupted
        (``status`` not 2) has NaN activations (masked lazily) and step -1, in the 2-D
        ``step`` coordinate when other runs have that step complete. Checkpoints are in step
        order (slots without data last), whatever order they were recorded in. Plain xarray
        (:func:`open`, ``xr.open_datatree``) shows the stored arrays as they are (slots in
        the order they were added); there the run's ``status`` array tells complete slots.
        A conv layer stored with its spatial dims (``flatten``) has them stacked into
        ``unit``. Attributes: the layer's entry of the run's layer table (``module``,
        ``reduction``, ``output_shape``, ``kind``, ``units``, ``dtype``).

    Raises
    ------
    ActstoreError
        An unknown layer or run (the message lists the valid ones), duplicate run ids, runs
        recorded on different probe sets (select runs of one with ``runs=[...]``), or runs
        that differ in the layer's unit count or in their samples.
    StoreError
        If ``url`` holds no actstore store.

    Examples
    --------
    >>> fc6 = actstore.open_layer("demo.zarr", "fc6")                  # doctest: +SKIP
    >>> fc6.sel(checkpoint=0).groupby("shape").mean("sample")         # doctest: +SKIP
    """
    import xarray as xr

    from actstore.store._open import open_store

    check_text(layer, "layer", "give one layer name, e.g. 'fc6'")
    wanted = None if runs is None else as_names(runs, "runs")
    if wanted is not None and len(set(wanted)) != len(wanted):
        dup = sorted({r for r in wanted if wanted.count(r) > 1})
        raise ActstoreError(f"runs lists {', '.join(map(repr, dup))} more than once; give each "
                            "run once")
    st = open_store(url, mode="r", storage_options=storage_options)
    ids = wanted or [r for r in st.run_ids() if layer in st.reader(r).layers]
    if not ids:
        every = sorted({ly for r in st.run_ids() for ly in st.reader(r).layers})
        raise ActstoreError(
            f"no run in {url} has layer {layer!r}; layers: {', '.join(every) or 'none'}"
        )
    readers = []
    for r in ids:
        rd = st.reader(r)
        if layer not in rd.layers:
            raise ActstoreError(f"run {r!r} has no layer {layer!r}; layers: {', '.join(rd.layers)}")
        readers.append(rd)
    _check_one_probe_set(readers, layer)
    tree = open(url, storage_options=storage_options)
    pieces, meta, steps = [], [], []
    for r, rd in zip(ids, readers, strict=True):
        ds = tree[f"{L.RUNS}/{r}"].to_dataset()
        da = ds[layer]
        if da.ndim > 3:
            da = da.stack(unit=list(da.dims[2:]), create_index=False)
        else:
            da = da.rename({da.dims[2]: "unit"})
        da = da.drop_vars([c for c in da.coords if c not in ("sample",)])
        # the slot table is the truth: arrays left longer by a killed writer have no extra
        # slots; a slot that is not complete (being written, or interrupted) shows no data
        run_steps, status = rd.steps, rd.status
        n = min(len(run_steps), da.sizes["checkpoint"])
        da = da.isel(checkpoint=slice(0, n))
        complete = status[:n] == L.STATUS_COMPLETE
        if not complete.all():
            da = da.where(xr.DataArray(complete, dims="checkpoint"))
        run_steps = np.where(complete, run_steps[:n], -1)
        # slots are stored in the order they were added (a later dump may add earlier steps):
        # shown in step order, slots without data last
        order = np.argsort(np.where(complete, run_steps, np.iinfo(np.int64).max),
                           kind="stable")
        if (order != np.arange(n)).any():
            da, run_steps = da.isel(checkpoint=order), run_steps[order]
        pieces.append(da.assign_coords(checkpoint=np.arange(n)))
        meta.append(rd.attrs)
        steps.append(run_steps)
    units = {p.sizes["unit"] for p in pieces}
    samples = {tuple(np.asarray(p["sample"].values)) for p in pieces}
    if len(units) > 1 or len(samples) > 1:
        raise ActstoreError(
            f"runs {ids} differ in the unit count or samples of layer {layer!r}; select runs of "
            "one architecture and probe set with runs=[...]"
        )
    # runs with fewer checkpoints than others are padded with NaN (samples and units agree)
    out = xr.concat(pieces, dim="run", join="outer", coords="minimal", compat="override")
    out = out.assign_coords(run=ids)
    for key in ("model", "task", "seed", "dataset"):
        out = out.assign_coords({key: ("run", [m.get(key) for m in meta])})
    if all(len(s) == len(steps[0]) and (s == steps[0]).all() for s in steps):
        out = out.assign_coords(checkpoint=steps[0])
    else:
        width = max(len(s) for s in steps)
        grid = np.full((len(ids), width), -1, dtype=np.int64)
        for i, s in enumerate(steps):
            grid[i, : len(s)] = s
        out = out.assign_coords(step=(("run", "checkpoint"), grid))
    rd0 = readers[0]
    out = out.assign_coords({f: ("sample", v) for f, v in rd0.labels.items()})
    out.name = layer
    out.attrs = dict(rd0.layer_table.get(layer, {}))
    return out


def _check_one_probe_set(readers: list[RunReader], layer: str) -> None:
    """Refuse runs recorded on different probe sets: their samples are other stimuli (even when
    their sample ids agree, as the default ids ``0..n-1`` of equal-sized probe sets do)."""
    groups: dict[tuple[object, object], list[str]] = {}
    for rd in readers:
        a = rd.attrs
        groups.setdefault((a.get("probe_set"), a.get("probe_set_hash")), []).append(rd.run_id)
    if len(groups) < 2:
        return
    names = [name for name, _ in groups]
    parts = []
    for (name, digest), runs in groups.items():
        what = f"probe set {name!r}"
        if names.count(name) > 1:  # one name, other contents
            what += f" (hash {str(digest)[:12]})"
        parts.append(f"{what}: {', '.join(map(repr, runs))}")
    raise ActstoreError(
        f"cannot stack layer {layer!r} of runs recorded on different probe sets "
        f"({'; '.join(parts)}); select runs of one probe set with runs=[...]"
    )
