"""Probe results as tables: the summary a terminal shows and the tidy export (csv, parquet)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from actstore._errors import ActstoreError
from actstore.decode._decode import RESULT_VARS
from actstore.decode._decoders import DECODERS, default_decoder, scoring_decoder

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["check_export_path", "export_results", "summary_table"]


def summary_table(ds: Any, decoder: str | None = None) -> pd.DataFrame:
    """Features x layers: score at the first and the last checkpoint, mean over runs.

    Each run's own first and last computed checkpoint are used (runs may differ: e.g. the
    last complete checkpoint of each), then averaged over runs. For the part of a result one
    call selected, pass ``select_result(ds)``.

    The score is accuracy for categorical features and R^2 for continuous ones (from the ridge
    decoders when the table shows logistic ones, which do not apply to continuous features:
    the first decoder of the result that decodes the feature's kind).

    Parameters
    ----------
    ds : xarray.Dataset
        A probe result.
    decoder : str, optional
        Default: the headline decoder of the registry if present (``logistic``, the papers'
        decoder), else the first.

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
    decoder = decoder or default_decoder(decs)
    if decoder not in decs:
        raise ActstoreError(f"no decoder {decoder!r} in these results; decoders: {', '.join(decs)}")
    dims = ("run", "checkpoint", "layer")
    cells: dict[str, dict[str, str]] = {}
    for f, kind in zip(ds.feature.values.tolist(), ds.feature_kind.values.tolist(), strict=True):
        scorer = ds.sel(decoder=scoring_decoder(decs, decoder, kind))
        var = scorer["accuracy"] if kind == "categorical" else scorer["r2"]
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
        the score variables present (``accuracy``, ``r2``, ...), the solver diagnostics
        (``logistic_converged``, NaN for other decoders) and ``chance``.

    Raises
    ------
    ActstoreError
        If the suffix is not .csv or .parquet, or the folder does not exist or the path is a
        folder.
    """
    ext = check_export_path(path)
    diagnostics = {f"{d.name}_{diag}": d.name for d in DECODERS.values()
                   for diag in d.diagnostics}
    keep = [v for v in (*RESULT_VARS, *diagnostics) if v in ds.data_vars]
    df = ds[[*keep, "chance"]].to_dataframe().reset_index()
    df = df[df[["accuracy", "r2"]].notna().any(axis=1)]
    for var, owner in diagnostics.items():
        if var in df:
            df.loc[df["decoder"] != owner, var] = np.nan
    if ext == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    return df
