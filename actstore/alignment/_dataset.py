"""Alignment results as xarray Datasets, and their summary rows."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from actstore.alignment._alignment import PairAlignment

__all__ = ["alignment_dataset", "matched_r2", "sparse_summary", "summary_rows"]


def alignment_dataset(
    layer: str,
    runs: Sequence[str],
    steps: Sequence[int],
    widths: Sequence[int],
    pairs: list[tuple[int, int]],
    results: list[PairAlignment],
    labels: np.ndarray,
    clusters: dict[str, Any],
    *,
    n_samples: int,
    positions: bool,
    alphas: Sequence[float],
) -> Any:
    """Pack the alignments of one layer into an xarray Dataset (units padded to the widest net).

    Dimensions: ``run``, ``unit``, ``pair``, ``unit_b``, ``alpha``. Padding is NaN for
    values and -1 for indices and cluster labels.
    """
    import xarray as xr

    R, P, U = len(runs), len(pairs), max(widths)
    K = len(alphas)

    off = np.cumsum([0, *widths])
    per_run = {
        "constant": np.zeros((R, U), dtype=bool),
        "mean": np.full((R, U), np.nan),
        "std": np.full((R, U), np.nan),
        "cluster": np.full((R, U), -1),
    }
    for r in range(R):
        per_run["cluster"][r, : widths[r]] = labels[off[r] : off[r + 1]]
    data: dict[str, Any] = {}
    pair_vars: dict[str, np.ndarray] = {
        "corr": np.full((P, U, U), np.nan),
        "bipartite_index": np.full((P, U), -1),
        "bipartite_corr": np.full((P, U), np.nan),
        "semi_index": np.full((P, U), -1),
        "semi_corr": np.full((P, U), np.nan),
        "semi_index_ba": np.full((P, U), -1),
        "semi_corr_ba": np.full((P, U), np.nan),
    }
    summ: dict[str, np.ndarray] = {"bipartite_corr_mean": np.full(P, np.nan),
                                   "semi_corr_mean": np.full(P, np.nan)}
    has_mi = any(res.mi is not None for res in results)
    has_lasso = any(res.lasso is not None for res in results)
    if has_mi:
        pair_vars.update({"mi": np.full((P, U, U), np.nan),
                          "mi_bipartite_index": np.full((P, U), -1),
                          "mi_bipartite": np.full((P, U), np.nan)})
        summ["bipartite_mi_mean"] = np.full(P, np.nan)
    if has_lasso:
        for k in ("lasso_test_loss", "lasso_train_loss"):
            pair_vars[k] = np.full((P, K, U), np.nan)
        pair_vars["lasso_nonzero"] = np.full((P, K, U), -1)
        summ["lasso_test_loss_mean"] = np.full((P, K), np.nan)
        summ["lasso_nonzero_mean"] = np.full((P, K), np.nan)
    for p, ((r, q), res) in enumerate(zip(pairs, results, strict=True)):
        da, db = widths[r], widths[q]
        c = res.corr
        for rr, const, mean, std in ((r, c.constant_a, c.mean_a, c.std_a),
                                     (q, c.constant_b, c.mean_b, c.std_b)):
            per_run["constant"][rr, : len(const)] = const
            per_run["mean"][rr, : len(mean)] = mean
            per_run["std"][rr, : len(std)] = std
        pair_vars["corr"][p, :da, :db] = c.between
        pair_vars["bipartite_index"][p, :da], pair_vars["bipartite_corr"][p, :da] = res.bipartite
        pair_vars["semi_index"][p, :da], pair_vars["semi_corr"][p, :da] = res.semi_ab
        pair_vars["semi_index_ba"][p, :db], pair_vars["semi_corr_ba"][p, :db] = res.semi_ba
        s = res.summary()
        summ["bipartite_corr_mean"][p] = s["bipartite_corr"]
        summ["semi_corr_mean"][p] = s["semi_corr"]
        if res.mi is not None and res.mi_bipartite is not None:
            pair_vars["mi"][p, :da, :db] = res.mi
            pair_vars["mi_bipartite_index"][p, :da] = res.mi_bipartite[0]
            pair_vars["mi_bipartite"][p, :da] = res.mi_bipartite[1]
            summ["bipartite_mi_mean"][p] = s["bipartite_mi"]
        if res.lasso is not None:
            lp = res.lasso
            pair_vars["lasso_test_loss"][p, :, :db] = lp.test_loss
            pair_vars["lasso_train_loss"][p, :, :db] = lp.train_loss
            pair_vars["lasso_nonzero"][p, :, :db] = lp.nonzero
            for i, a in enumerate(lp.alphas):
                summ["lasso_test_loss_mean"][p, i] = s[f"lasso_test_loss@{a:g}"]
                summ["lasso_nonzero_mean"][p, i] = s[f"lasso_nonzero@{a:g}"]
    dims = {"corr": ("pair", "unit", "unit_b"), "mi": ("pair", "unit", "unit_b"),
            "semi_index_ba": ("pair", "unit_b"), "semi_corr_ba": ("pair", "unit_b"),
            "lasso_test_loss": ("pair", "alpha", "unit_b"),
            "lasso_train_loss": ("pair", "alpha", "unit_b"),
            "lasso_nonzero": ("pair", "alpha", "unit_b"),
            "lasso_test_loss_mean": ("pair", "alpha"), "lasso_nonzero_mean": ("pair", "alpha")}
    for k, v in pair_vars.items():
        data[k] = (dims.get(k, ("pair", "unit")), v)
    for k, v in summ.items():
        data[k] = (dims.get(k, ("pair",)), v)
    for k, v in per_run.items():
        data[k] = (("run", "unit"), v)
    coords = {
        "run": np.asarray(list(runs)),
        "checkpoint": ("run", np.asarray(list(steps), dtype=np.int64)),
        "units": ("run", np.asarray(list(widths), dtype=np.int64)),
        "run_a": ("pair", np.asarray([runs[r] for r, _ in pairs])),
        "run_b": ("pair", np.asarray([runs[q] for _, q in pairs])),
        "alpha": np.asarray(list(alphas), dtype=float),
    }
    attrs = {"layer": layer, "n_samples": int(n_samples), "positions": bool(positions),
             "n_clusters": clusters["n_clusters"], "mixed_clusters": clusters["mixed"],
             "units_in_mixed": clusters["units_in_mixed"]}
    return xr.Dataset(data, coords=coords, attrs=attrs)


def summary_rows(datasets: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (layer, pair of runs) of alignment results, for printing."""
    rows = []
    for ly, ds in datasets.items():
        for p in range(ds.sizes["pair"]):
            row: dict[str, Any] = {"layer": ly, "run_a": str(ds["run_a"].values[p]),
                                   "run_b": str(ds["run_b"].values[p])}
            for k in ("bipartite_corr_mean", "semi_corr_mean", "bipartite_mi_mean"):
                if k in ds:
                    row[k] = float(ds[k].values[p])
            if "lasso_test_loss_mean" in ds:
                for i, a in enumerate(ds["alpha"].values):
                    row[f"loss@{a:g}"] = float(ds["lasso_test_loss_mean"].values[p, i])
                    row[f"nnz@{a:g}"] = float(ds["lasso_nonzero_mean"].values[p, i])
            row["mixed_clusters"] = int(ds.attrs.get("mixed_clusters", 0))
            row["constant_units"] = int(ds["constant"].values.sum())
            rows.append(row)
    for r in rows:
        for k, v in list(r.items()):
            if isinstance(v, float) and math.isnan(v):
                r[k] = None
    return rows


def matched_r2(ds: Any, pair: int) -> np.ndarray:
    """r^2 of every unit of a pair's second run (``unit_b``) with the unit of the first run it
    is matched to one-to-one (bipartite matching); NaN for units of the second run that are
    constant or left unmatched (a wider second net)."""
    idx = np.asarray(ds["bipartite_index"].values[pair])
    corr = np.asarray(ds["bipartite_corr"].values[pair], dtype=float)
    out = np.full(ds.sizes.get("unit_b", ds.sizes["unit"]), np.nan)
    ok = (idx >= 0) & (idx < out.size) & np.isfinite(corr)
    out[idx[ok]] = corr[ok] ** 2
    out[_constant_b(ds, pair)[: out.size]] = np.nan
    return out


def _constant_b(ds: Any, pair: int) -> np.ndarray:
    """Constant units of a pair's second run, over ``unit_b`` (padding counts as constant)."""
    runs = [str(r) for r in ds["run"].values] if "run" in ds.coords else []
    run_b = str(ds["run_b"].values[pair]) if "run_b" in ds.coords else None
    row = runs.index(run_b) if run_b in runs else 1  # a result of two runs: the second
    const = np.asarray(ds["constant"].values[row], bool)
    width = int(ds["units"].values[row]) if "units" in ds.coords else const.size
    out = np.ones(ds.sizes.get("unit_b", const.size), dtype=bool)
    n = min(width, out.size, const.size)
    out[:n] = const[:n]
    return out


def sparse_summary(ds: Any) -> dict[str, np.ndarray]:
    """How many units of one run it takes to predict a unit of another (Li et al. 2016, local
    vs distributed codes), from one layer's alignment result with sparse prediction.

    Every value is a mean over the non-constant units of each pair's second run, then over
    pairs of runs.

    Returns
    -------
    dict
        ``alpha`` (the penalties), ``r2`` (held-out R^2 = 1 - held-out loss, per penalty),
        ``nonzero`` (non-zero weights per predicted unit, per penalty), ``one_to_one`` (r^2
        from the one-to-one match: the prediction from a single unit), ``local`` (share of
        units predicted from one unit, per penalty).

    Raises
    ------
    KeyError
        If the result has no sparse prediction (aligned with ``lasso = false``).
    """
    loss = np.asarray(ds["lasso_test_loss"].values, dtype=float)  # (pair, alpha, unit_b)
    nnz = np.asarray(ds["lasso_nonzero"].values, dtype=float)
    r2, nz, one, local = [], [], [], []
    for p in range(loss.shape[0]):
        live = ~_constant_b(ds, p)[: loss.shape[2]]
        r2.append(np.nanmean(1.0 - loss[p][:, live], axis=1))
        counts = nnz[p][:, live]
        nz.append(np.mean(counts, axis=1))
        local.append(np.mean(counts == 1, axis=1))
        one.append(np.nanmean(matched_r2(ds, p)[: loss.shape[2]][live]))
    return {"alpha": np.asarray(ds["alpha"].values, dtype=float),
            "r2": np.mean(r2, axis=0), "nonzero": np.mean(nz, axis=0),
            "one_to_one": np.asarray(float(np.mean(one))), "local": np.mean(local, axis=0)}
