"""xarray views of a store: the whole tree, or one layer across runs."""

from __future__ import annotations

from typing import Any

import numpy as np

from actstore._errors import ActstoreError
from actstore.store import _layout as L

__all__ = ["open", "open_layer"]


def open(url: str, storage_options: dict | None = None) -> Any:
    """Open a store as an :class:`xarray.DataTree` of lazy Dask arrays.

    Nothing is read beyond metadata until ``.values`` / ``.compute()``.
    """
    import xarray as xr

    from actstore.store._store import open_store

    open_store(url, mode="r", storage_options=storage_options)  # clear error if not a store
    return xr.open_datatree(
        str(url), engine="zarr", consolidated=False, chunks={}, zarr_format=3,
        storage_options=storage_options,
    )


def open_layer(
    url: str, layer: str, runs: list[str] | None = None, storage_options: dict | None = None
) -> Any:
    """One layer of many runs as a DataArray with dims (run, checkpoint, sample, unit).

    Coordinates: ``run``, ``model``/``task``/``seed``/``dataset`` per run, ``checkpoint`` (the
    steps when all runs share them; else the slot index, with a 2-D ``step`` coordinate),
    ``sample`` and the probe set's feature labels. Runs must share the layer's unit count and
    the probe set (sample ids in the same order).
    """
    import xarray as xr

    from actstore.store._store import open_store

    st = open_store(url, mode="r", storage_options=storage_options)
    ids = runs or [r for r in st.run_ids() if layer in st.reader(r).layers]
    if not ids:
        every = sorted({ly for r in st.run_ids() for ly in st.reader(r).layers})
        raise ActstoreError(
            f"no run in {url} has layer {layer!r}; layers: {', '.join(every) or 'none'}"
        )
    tree = open(url, storage_options=storage_options)
    pieces, meta, steps = [], [], []
    for r in ids:
        rd = st.reader(r)
        if layer not in rd.layers:
            raise ActstoreError(f"run {r!r} has no layer {layer!r}; layers: {', '.join(rd.layers)}")
        ds = tree[f"{L.RUNS}/{r}"].to_dataset()
        da = ds[layer]
        if da.ndim > 3:
            da = da.stack(unit=list(da.dims[2:]), create_index=False)
        else:
            da = da.rename({da.dims[2]: "unit"})
        da = da.drop_vars([c for c in da.coords if c not in ("sample",)])
        pieces.append(da.assign_coords(checkpoint=np.arange(da.sizes["checkpoint"])))
        meta.append(rd.attrs)
        steps.append(np.asarray(ds["checkpoint"].values))
    units = {p.sizes["unit"] for p in pieces}
    samples = {tuple(np.asarray(p["sample"].values)) for p in pieces}
    if len(units) > 1 or len(samples) > 1:
        raise ActstoreError(
            f"runs {ids} differ in the unit count or samples of layer {layer!r}; select runs of "
            "one architecture and probe set with runs=[...]"
        )
    out = xr.concat(pieces, dim="run", join="exact", coords="minimal", compat="override")
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
    rd0 = st.reader(ids[0])
    out = out.assign_coords({f: ("sample", v) for f, v in rd0.labels.items()})
    out.name = layer
    out.attrs = dict(rd0.layer_table.get(layer, {}))
    return out
