"""``actstore ingest``: activations made elsewhere (.npy, .npz, HDF5) into a run of a store."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from actstore._errors import ActstoreError
from actstore.store._layout import DEFAULT_CODEC, canonical_name
from actstore.store._probeset import ProbeSet

__all__ = ["ingest", "read_activation_file", "read_labels_csv"]


def read_labels_csv(path: str | Path) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """Labels from a CSV with a header: one column per feature, optional ``sample`` column.

    Numeric columns become int64 (all integers) or float64; others stay strings.
    """
    p = Path(path)
    if not p.is_file():
        raise ActstoreError(f"labels file {p} does not exist")
    with p.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ActstoreError(f"labels file {p} has no rows (it needs a header and one row per "
                            "sample)")
    cols: dict[str, np.ndarray] = {}
    for key in rows[0]:
        vals = [r[key] for r in rows]
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


def read_activation_file(path: str | Path, key: str | None = None) -> dict[str, np.ndarray]:
    """Layer name -> activations (n_samples, ...) from .npy, .npz or .h5/.hdf5.

    An .npy file is one layer named after the file; every array of an .npz and every dataset
    of an HDF5 file (nested groups joined with ``_``) is a layer. ``key`` keeps one of them.
    """
    p = Path(path)
    if not p.is_file():
        raise ActstoreError(f"activation file {p} does not exist")
    out: dict[str, np.ndarray] = {}
    if p.suffix == ".npy":
        out[canonical_name(p.stem)] = np.load(p, allow_pickle=False)
    elif p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            out = {canonical_name(k): z[k] for k in z.files}
    elif p.suffix in (".h5", ".hdf5"):
        import h5py

        with h5py.File(p, "r") as f:
            def visit(name: str, obj: Any) -> None:
                if isinstance(obj, h5py.Dataset):
                    out[canonical_name(name.replace("/", "_"))] = obj[...]

            f.visititems(visit)
    else:
        raise ActstoreError(f"cannot read {p}: use .npy, .npz, .h5 or .hdf5")
    if key is not None:
        if canonical_name(key) not in out:
            raise ActstoreError(f"{p} has no array {key!r}; it has {', '.join(out)}")
        out = {canonical_name(key): out[canonical_name(key)]}
    if not out:
        raise ActstoreError(f"{p} holds no arrays")
    return out


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
    """
    from actstore.store._store import _exists, create_store, open_store, undo_additions

    sample, cols = read_labels_csv(labels)
    layers: dict[str, np.ndarray] = {}
    for f in files:
        for name, arr in read_activation_file(f).items():
            if name in layers:
                raise ActstoreError(f"layer {name!r} appears in two input files; rename one")
            layers[name] = arr
    n = len(next(iter(cols.values()))) if cols else (len(sample) if sample is not None else 0)
    for name, arr in layers.items():
        if arr.ndim < 2 or len(arr) != n:
            raise ActstoreError(
                f"layer {name!r} has shape {arr.shape}, but {labels} has {n} samples; the "
                "first axis must be the samples, in the order of the labels file"
            )
        if arr.ndim > 2:
            layers[name] = arr.reshape(n, -1)
    ps = ProbeSet(probe_set or canonical_name(Path(labels).stem), labels=cols, sample=sample,
                  attrs={"generator": "ingest", "labels": Path(labels).name})
    created = not _exists(store)
    st = create_store(store) if created else open_store(store, mode="a")
    added = st.add_probe_set(ps)
    meta = {"model": (attrs or {}).get("model", "external"), "dataset": ps.name, **(attrs or {})}
    try:
        with st.writer(run, ps.name, [step], attrs=meta, codec=codec) as w:
            wrote = w.write_slot(step, layers, dtype=dtype)
    except BaseException:
        undo_additions(store, st, created, ps.name if added else None)
        raise
    return {"run": run, "step": step, "layers": sorted(layers), "written": wrote,
            "probe_set": ps.name, "n_samples": n}
