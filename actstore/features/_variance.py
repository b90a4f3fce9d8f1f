"""Variance of a representation explained by each feature (Lampinen, Chan & Hermann 2024).

For a representation ``phi`` (n_samples, n_units) and a feature ``f`` the representation is
regressed on the feature (one-hot columns for a categorical feature, one column for a
continuous one, plus an intercept) on the training rows of a fold, and scored on its held-out
rows, pooled over units::

    R^2_f = 1 - sum_test ||phi - phi_hat||^2 / sum_test ||phi - mean_test(phi)||^2

(scikit-learn's ``r2_score(..., multioutput="variance_weighted")`` of a ``LinearRegression``).
Over training, the explained sum of squares of checkpoint ``t`` is divided by the final
checkpoint's total sum of squares instead (``r2_final``), so that curves of one
(run, layer) share a denominator (PAPERS.md B, inferred; option ``denominator``).

This is a multi-target regression *from* labels *to* units, the reverse direction of the
decoders, so its sufficient statistics are small: per group of samples, ``F^T F`` and
``F^T phi`` (n_columns x n_units), the column sums, and the sums of squares of ``phi``. No
unit-by-unit Gram matrix is formed: one streamed float64 pass costs O(n d q) for q label
columns. Folds, the target layout and the block streaming are the probe engine's
(:class:`~actstore.probes.Folds`, :func:`~actstore.probes.encode_targets`,
:class:`~actstore.probes.CachedSource`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from actstore._errors import ActstoreError
from actstore.core._backend import float64_like, get_namespace, index_on, zeros_maker
from actstore.core._blocks import ArraySource, BlockSource, CachedSource, coalesce
from actstore.core._folds import Folds
from actstore.core._plan import META_PREFIXES
from actstore.core._stats import sum_arrays
from actstore.core._targets import Targets, encode_targets

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "DesignStats",
    "VarianceExplained",
    "accumulate_design",
    "default_features",
    "variance_arrays",
    "variance_explained",
    "variance_from_stats",
]

@dataclass
class DesignStats:
    """Per-group float64 sums for the regression of units on label columns.

    Attributes
    ----------
    count : ndarray of shape (G,)
    shift : array of shape (d,)
        Subtracted from every row before accumulating (first block's mean), for precision.
    sp : list of G arrays (d,)
        Column sums of ``phi - shift``.
    spp : list of G arrays (d,)
        Column sums of ``(phi - shift)^2``.
    fp : list of G arrays (q, d)
        ``F^T (phi - shift)``.
    ff : ndarray of shape (G, q, q)
        ``F^T F`` (host).
    sf : ndarray of shape (G, q)
        Column sums of ``F`` (host).
    """

    count: np.ndarray
    shift: Any
    sp: list[Any]
    spp: list[Any]
    fp: list[Any]
    ff: np.ndarray
    sf: np.ndarray

    def train(self, k: int) -> tuple[float, np.ndarray, Any, np.ndarray, Any]:
        """Sums over every group but ``k``: ``n, sf, sp, ff, fp``."""
        keep = [g for g in range(len(self.sp)) if g != k]
        return (
            float(self.count[keep].sum()),
            self.sf[keep].sum(axis=0),
            sum_arrays([self.sp[g] for g in keep]),
            self.ff[keep].sum(axis=0),
            sum_arrays([self.fp[g] for g in keep]),
        )


def accumulate_design(source: BlockSource, targets: Targets, folds: Folds) -> DesignStats:
    """One streamed pass over ``phi``: the statistics of every fold and feature at once.

    Parameters
    ----------
    source : BlockSource
        The representation (n_samples, n_units), any float dtype and backend.
    targets : Targets
        Label columns (from :func:`~actstore.probes.encode_targets`).
    folds : Folds

    Returns
    -------
    DesignStats
        Memory: one block plus ``n_groups * (q + 2) * d`` floats.
    """
    if targets.n != source.n or folds.n != source.n:
        raise ActstoreError(
            f"{source.name}: {source.n} activation rows but {targets.n} labels and "
            f"{folds.n} fold entries; the probe set and the run do not match"
        )
    Y = targets.Y
    group = folds.group_of()
    G = folds.n_groups
    q = Y.shape[1]
    ff = np.zeros((G, q, q))
    sf = np.zeros((G, q))
    count = np.zeros(G)
    for g in range(G):
        rows = group == g
        Fg = Y[rows]
        ff[g] = Fg.T @ Fg
        sf[g] = Fg.sum(axis=0)
        count[g] = rows.sum()
    st: DesignStats | None = None
    for a, b, block in coalesce(source.blocks(), source.d):
        xp = get_namespace(block)
        P = xp.astype(block, xp.float64)
        if st is None:
            d, zeros = P.shape[1], zeros_maker(P)
            st = DesignStats(
                count, xp.mean(P, axis=0),
                [zeros(d) for _ in range(G)],
                [zeros(d) for _ in range(G)],
                [zeros(q, d) for _ in range(G)],
                ff, sf,
            )
        P = P - st.shift
        Fb = Y[a:b]
        g_blk = group[a:b]
        for g in np.unique(g_blk):
            local = np.flatnonzero(g_blk == g)
            if local.size == b - a:
                Pg = P
            else:
                Pg = xp.take(P, index_on(local, P), axis=0)
            st.sp[g] += xp.sum(Pg, axis=0)
            st.spp[g] += xp.sum(Pg * Pg, axis=0)
            st.fp[g] += xp.matrix_transpose(float64_like(Fb[local], P)) @ Pg
    if st is None:
        raise ActstoreError(f"{source.name}: no activation rows to read")
    return st


def _pinv_psd(M: np.ndarray, rtol: float = 1e-10) -> np.ndarray:
    """Pseudo-inverse of a symmetric PSD matrix (the minimum-norm least-squares solution,
    as scikit-learn's ``LinearRegression`` gives for collinear one-hot columns)."""
    s, V = np.linalg.eigh((M + M.T) / 2)
    keep = s > max(float(s.max(initial=0.0)), 0.0) * rtol
    inv = np.where(keep, 1.0 / np.where(keep, s, 1.0), 0.0)
    return (V * inv) @ V.T


def variance_from_stats(
    stats: DesignStats, targets: Targets, folds: Folds
) -> dict[str, np.ndarray]:
    """Held-out sums of squares of every (fold, feature) from :func:`accumulate_design`.

    Returns
    -------
    dict
        ``sse`` (n_splits, n_features): residual sum of squares over held-out rows and units;
        ``sst`` (n_splits,): total sum of squares around the held-out mean;
        ``n_test`` (n_splits,); ``r2`` (n_splits, n_features) = 1 - sse / sst.
    """
    K, F = folds.n_splits, len(targets.features)
    sse = np.full((K, F), np.nan)
    sst = np.full(K, np.nan)
    n_test = np.zeros(K)
    for k in range(K):
        m = float(stats.count[k])
        n_test[k] = m
        if m == 0:
            continue
        n, sF, sP, FF, FP = stats.train(k)
        xp = get_namespace(sP)
        mF = sF / n  # (q,) host
        mv = sP / n  # (d,) device
        Cff = FF - n * np.outer(mF, mF)
        Cfp = FP - n * float64_like(mF, sP)[:, None] * mv[None, :]  # (q, d)
        tF, tv, tvv = stats.sf[k], stats.sp[k], stats.spp[k]
        TFF, TFP = stats.ff[k], stats.fp[k]
        sst[k] = float(xp.sum(tvv) - xp.sum(tv * tv) / m)
        # sum_test ||u||^2 with u = v - mv (v = phi - shift)
        uu = float(xp.sum(tvv) - 2.0 * xp.sum(mv * tv) + m * xp.sum(mv * mv))
        for j, f in enumerate(targets.features):
            c = slice(f.start, f.stop)
            B = float64_like(_pinv_psd(Cff[c, c]), sP) @ Cfp[c]  # (p, d) coefficients
            a = mF[c]
            # sum_test g^T u and g^T g, with g = f_c - a
            Sgu = (TFP[c] - float64_like(tF[c], tv)[:, None] * mv[None, :]
                   - float64_like(a, tv)[:, None] * tv[None, :]
                   + m * float64_like(a, tv)[:, None] * mv[None, :])
            Sgg = TFF[c, c] - np.outer(tF[c], a) - np.outer(a, tF[c]) + m * np.outer(a, a)
            sse[k, j] = uu - 2.0 * float(xp.sum(B * Sgu)) + float(
                xp.sum(B * (float64_like(Sgg, B) @ B)))
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = 1.0 - sse / sst[:, None]
    return {"sse": sse, "sst": sst, "n_test": n_test, "r2": r2}


def default_features(labels: Mapping[str, Any] | Sequence[str], split: str | None = None
                     ) -> list[str]:
    """Label names that are stimulus features (not the ``heldout_*`` split design)."""
    return [k for k in labels if k != split and not k.startswith(META_PREFIXES)]


class VarianceExplained(TypedDict):
    """What :func:`variance_explained` returns (float64 arrays)."""

    features: list[str]
    r2: np.ndarray
    r2_folds: np.ndarray
    sse: np.ndarray
    sst: np.ndarray
    n_test: np.ndarray


def variance_explained(
    source: BlockSource | Any,
    labels: Mapping[str, np.ndarray],
    folds: Folds,
    kinds: Mapping[str, str] | None = None,
    backend: str | None = None,
) -> VarianceExplained:
    """Variance of a representation explained by each feature, held out, pooled over units.

    Parameters
    ----------
    source : BlockSource or array of shape (n_samples, n_units)
        The representation (streamed in blocks of rows if a source).
    labels : mapping name -> array of shape (n_samples,)
        Features: integer/string labels are categorical (one-hot), float labels continuous.
    folds : Folds
        Training/held-out assignment (K-fold or an explicit split).
    kinds : mapping name -> {"categorical", "continuous"}, optional
    backend : str, optional
        Move blocks to ``"torch"``, ``"cuda"`` or ``"cupy"`` for the arithmetic.

    Returns
    -------
    VarianceExplained
        A dict: ``features`` (list of str); ``r2`` (n_features,): mean over folds of the
        held-out R^2; ``r2_folds``, ``sse`` (n_splits, n_features); ``sst``, ``n_test``
        (n_splits,); arrays float64 numpy.
    """
    Folds.check(folds)
    if not hasattr(source, "blocks"):
        source = ArraySource(source)
    targets = encode_targets(labels, kinds)
    src = CachedSource(source, backend=backend, cache_bytes=0)
    stats = accumulate_design(src, targets, folds)
    out = variance_from_stats(stats, targets, folds)
    return {
        "features": targets.names,
        "r2": np.nanmean(out["r2"], axis=0),
        "r2_folds": out["r2"],
        "sse": out["sse"],
        "sst": out["sst"],
        "n_test": out["n_test"],
    }


def variance_arrays(
    X: Any,
    labels: Mapping[str, np.ndarray],
    folds: Folds | None = None,
    n_splits: int = 5,
    seed: int = 0,
) -> xr.Dataset:
    """:func:`variance_explained` of an in-memory array, as an xarray Dataset over features.

    Parameters
    ----------
    X, labels
        Activations and labels, as in :func:`actstore.decode.probe_arrays`.
    folds : Folds, optional
        Default: stratified ``n_splits``-fold on the categorical labels, seeded.

    Returns
    -------
    xarray.Dataset
        ``r2`` (feature), ``r2_folds`` (fold, feature), ``sst`` (fold).
    """
    import xarray as xr

    from actstore.core._folds import stratified_folds

    if folds is None:
        n = int(X.shape[0])
        cat = {k: v for k, v in labels.items() if np.asarray(v).dtype.kind not in "fc"}
        folds = stratified_folds(n, n_splits, seed, cat or None)
    res = variance_explained(X, labels, folds)
    return xr.Dataset(
        {
            "r2": ("feature", res["r2"]),
            "r2_folds": (("fold", "feature"), res["r2_folds"]),
            "sst": ("fold", res["sst"]),
        },
        coords={"feature": res["features"]},
        attrs={"folds": folds.description},
    )
