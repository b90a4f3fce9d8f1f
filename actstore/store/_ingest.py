"""``actstore ingest``: activations made elsewhere (.npy, .npz, HDF5) into a run of a store."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from actstore._errors import ActstoreError, ProvenanceError
from actstore.store._layout import DEFAULT_CODEC, canonical_name
from actstore.store._probeset import ProbeSet

__all__ = ["ingest", "read_activation_file", "read_labels_csv"]


def read_labels_csv(path: str | Path) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """Labels from a CSV with a header: one column per feature, optional ``sample`` column.

    Numeric columns become int64 (all integers) or float64; others stay strings. The file is
    read as UTF-8 (a byte-order mark is allowed); every row must have one value per column.
    """
    p = Path(path)
    if not p.is_file():
        raise ActstoreError(f"labels file {p} does not exist")
    try:
        with p.open(newline="", encoding="utf-8-sig") as f:
            table = [row for row in csv.reader(f) if row]
    except UnicodeDecodeError as e:
        raise ActstoreError(
            f"labels file {p} is not UTF-8 text ({e.reason} at byte {e.start}); save it as a "
            "UTF-8 CSV"
        ) from None
    except csv.Error as e:
        raise ActstoreError(f"labels file {p} is not a readable CSV: {e}") from None
    if len(table) < 2:
        raise ActstoreError(f"labels file {p} has no rows (it needs a header and one row per "
                            "sample)")
    header = [h.strip() for h in table[0]]
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise ActstoreError(
            f"labels file {p} has the column {dup[0]!r} more than once; give each column its "
            "own name"
        )
    rows = table[1:]
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise ActstoreError(
                f"labels file {p}: data row {i + 1} has {len(row)} value(s), but the header "
                f"names {len(header)} column(s) ({', '.join(header)}); give one value per "
                "column in every row"
            )
    cols: dict[str, np.ndarray] = {}
    for j, key in enumerate(header):
        vals = [r[j] for r in rows]
        for cast in (int, float):
            try:
                cols[key] = np.asarray([cast(v) for v in vals])
                break
            except ValueError:
                continue
        else:
            cols[key] = np.asarray(vals, dtype=str)
    sample = cols.pop("sample", None)
    return sample, cols


def _load_arrays(p: Path) -> dict[str, np.ndarray]:
    """Source name -> array: the file's stem for .npy, the array names of an .npz, the dataset
    paths of an HDF5 file (``enc/layer1``)."""
    out: dict[str, np.ndarray] = {}
    if p.suffix == ".npy":
        out[p.stem] = np.load(p, allow_pickle=False)
    elif p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    else:
        import h5py

        with h5py.File(p, "r") as f:
            def visit(name: str, obj: Any) -> None:
                if isinstance(obj, h5py.Dataset):
                    out[name] = obj[...]

            f.visititems(visit)
    return out


def _layer_name(source: str) -> str:
    """The layer name of a source array (HDF5 groups joined with ``_``)."""
    return canonical_name(source.replace("/", "_"))


def read_activation_file(path: str | Path, key: str | None = None) -> dict[str, np.ndarray]:
    """Layer name -> activations (n_samples, ...) from .npy, .npz or .h5/.hdf5.

    An .npy file is one layer named after the file; every array of an .npz and every dataset
    of an HDF5 file (nested groups joined with ``_``) is a layer. ``key`` keeps one of them.

    Raises
    ------
    ActstoreError
        If the file is missing or unreadable, holds no arrays or not ``key``, or two of its
        arrays have names that map to the same layer name (``blocks.0`` and ``blocks_0``).
    """
    p = Path(path)
    if not p.is_file():
        raise ActstoreError(f"activation file {p} does not exist")
    if p.suffix not in (".npy", ".npz", ".h5", ".hdf5"):
        raise ActstoreError(f"cannot read {p}: use .npy, .npz, .h5 or .hdf5")
    try:
        raw = _load_arrays(p)
    except Exception as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        why = f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
        if "allow_pickle" in why:
            why = "it holds pickled Python objects or other data, not plain numeric arrays"
        raise ActstoreError(
            f"cannot read activation file {p} ({why}); give numeric arrays saved with "
            "numpy.save / numpy.savez or HDF5 datasets"
        ) from None
    out: dict[str, np.ndarray] = {}
    source: dict[str, str] = {}
    for src, arr in raw.items():
        name = _layer_name(src)
        if name in source:
            raise ActstoreError(
                f"{p}: arrays {source[name]!r} and {src!r} both become layer {name!r} (every "
                "character outside [A-Za-z0-9_] becomes '_'); nothing was written; rename one "
                "of them"
            )
        out[name] = arr
        source[name] = src
    if key is not None:
        if _layer_name(key) not in out:
            raise ActstoreError(f"{p} has no array {key!r}; it has {', '.join(raw)}")
        out = {_layer_name(key): out[_layer_name(key)]}
    if not out:
        raise ActstoreError(f"{p} holds no arrays")
    return out


def _run_attrs(st: Any, run: str, given: dict[str, Any], defaults: dict[str, Any]
               ) -> dict[str, Any]:
    """The attributes to write ``run`` with: for a new run, ``defaults`` fill in what is not
    given; for an existing run, what is not given keeps the run's value, and a given identity
    attribute must equal the run's (a run is one model, dataset, ...)."""
    from actstore.store._attrs import IDENTITY_KEYS, jsonable
    from actstore.store._layout import ATTR_LAYOUT_DONE, RUNS

    runs = st.root[RUNS] if RUNS in st.root else None
    old = dict(runs[run].attrs) if runs is not None and run in runs else None
    if old is None or not old.get(ATTR_LAYOUT_DONE):  # new, or never got past its creation
        return {**defaults, **given}
    for k in IDENTITY_KEYS:
        new = jsonable(given.get(k))
        if new is None or new == old.get(k):
            continue
        have = old.get(k)
        if have is None:
            was, fix = f"no {k}", f"leave out --attr {k}"
        else:
            value = have if isinstance(have, str) else json.dumps(have)
            was, fix = f"{k} {have!r}", f"give --attr {k}={value} as before (or no --attr {k})"
        raise ProvenanceError(
            f"run {run!r} in {st.url} exists with {was}, not {new!r}; nothing was changed; "
            f"{fix}, or ingest into a new --run"
        )
    return dict(given)


def ingest(
    store: str,
    run: str,
    files: Sequence[str | Path],
    labels: str | Path,
    step: int = 0,
    probe_set: str | None = None,
    attrs: dict[str, Any] | None = None,
    dtype: str = "float32",
    codec: str = DEFAULT_CODEC,
) -> dict[str, Any]:
    """Write activations made elsewhere as checkpoint ``step`` of ``run``.

    Parameters
    ----------
    store : str
        Store path or URL (created if missing).
    run : str
        Run id.
    files : list of paths
        Activation files; their layers are merged (names must not repeat).
    labels : path
        CSV of feature labels, one row per sample in the order of the activations.
    step : int
        Checkpoint step the activations belong to.
    probe_set : str, optional
        Probe-set name (default: the labels file's stem). Inputs are not stored.
    attrs : dict, optional
        Run attributes. A new run gets ``model="external"`` and ``dataset`` = the probe-set
        name unless they are given; a later checkpoint of an existing run keeps the run's
        values of what is not given, and refuses other values of its identity attributes
        (model, task, seed, dataset, variant, config).
    """
    from actstore.store._attrs import check_name
    from actstore.store._open import create_store, open_store, store_exists, undo_additions

    check_name(run)
    if dtype not in ("float32", "float16"):
        raise ActstoreError(f"storage dtype must be float32 or float16, not {dtype!r}")
    sample, cols = read_labels_csv(labels)
    layers: dict[str, np.ndarray] = {}
    origin: dict[str, str] = {}
    for f in files:
        for name, arr in read_activation_file(f).items():
            if name in layers:
                raise ActstoreError(
                    f"layer {name!r} appears in two input files ({origin[name]} and {f}); "
                    "rename one"
                )
            layers[name] = arr
            origin[name] = str(f)
    n = len(next(iter(cols.values()))) if cols else (len(sample) if sample is not None else 0)
    for name, arr in layers.items():
        where = f"layer {name!r} (from {origin[name]})"
        if arr.dtype.kind not in "biuf":
            raise ActstoreError(
                f"{where} has dtype {arr.dtype}; activations must be real numbers (integers "
                "or floats)"
            )
        if arr.ndim < 2:
            raise ActstoreError(
                f"{where} has shape {arr.shape}; give (n_samples, units), one row per sample "
                "in the order of the labels file (a single unit is shape (n_samples, 1))"
            )
        if len(arr) != n:
            raise ActstoreError(
                f"layer {name!r} has shape {arr.shape}, but {labels} has {n} samples; the "
                f"first axis of {origin[name]} must be the samples, in the order of the "
                "labels file"
            )
        if arr.size == 0:
            raise ActstoreError(f"{where} has shape {arr.shape}: no units to store")
        if arr.ndim > 2:
            layers[name] = arr.reshape(n, -1)
    ps = ProbeSet(probe_set or canonical_name(Path(labels).stem), labels=cols, sample=sample,
                  attrs={"generator": "ingest", "labels": Path(labels).name})
    created = not store_exists(store)
    st = create_store(store) if created else open_store(store, mode="a")
    added = st.add_probe_set(ps)
    try:
        meta = _run_attrs(st, run, attrs or {}, {"model": "external", "dataset": ps.name})
        with st.writer(run, ps.name, [step], attrs=meta, codec=codec) as w:
            wrote = False
            if w.is_complete(step):
                w.check_same_slot(step, layers, "a complete checkpoint is never overwritten; "
                                  "ingest these activations as another --step or into a new "
                                  "--run")
            else:
                wrote = w.write_slot(step, layers, dtype=dtype)
    except BaseException:
        undo_additions(store, st, created, ps.name if added else None)
        raise
    return {"run": run, "step": step, "layers": sorted(layers), "written": wrote,
            "probe_set": ps.name, "n_samples": n}
