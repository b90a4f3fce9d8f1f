"""Convergent learning: align the units of networks trained from different seeds.

After Li, Yosinski, Clune, Lipson & Hopcroft (ICLR 2016). For one layer of two or more
networks, over the same stimuli (and over spatial positions for unpooled conv maps):

* unit correlations within and between networks, from streamed moments (:mod:`._moments`);
* semi-matching (each unit -> its most correlated unit of the other net, with replacement) and
  bipartite matching (the maximum-weight one-to-one assignment, Hungarian algorithm via
  :func:`scipy.optimize.linear_sum_assignment`);
* binned mutual information (10 bins per unit: the first holds the near-zero ReLU mass, the
  other 9 split the remaining values into equal-mass bins), in nats;
* sparse prediction of one net's units from the other's over a LASSO path (:mod:`._lasso`);
* spectral clustering of the joint correlation matrix of all nets; clusters holding units of
  more than one net are shared subspaces.

A unit with zero variance (a dead ReLU) has no correlation: its correlations are 0, it is
listed in ``constant`` and left out of the clustering (label -1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from actstore._errors import ActstoreError
from actstore.probes._lasso import DEFAULT_ALPHAS, LassoPath, is_constant, sparse_prediction
from actstore.probes._moments import PairMoments

__all__ = [
    "PairAlignment",
    "UnitCorrelations",
    "align_from_parts",
    "align_pair",
    "bin_units",
    "bipartite_matching",
    "correlations_from_moments",
    "joint_clusters",
    "mutual_information",
    "semi_matching",
    "spectral_clusters",
    "split_mask",
]


@dataclass
class UnitCorrelations:
    """Correlations of the units of two networks over the same samples.

    Attributes
    ----------
    within_a, within_b : ndarray of shape (da, da), (db, db)
    between : ndarray of shape (da, db)
        ``c_ij = E[(x_i - mu_i)(y_j - mu_j)] / (sigma_i sigma_j)``.
    mean_a, std_a, mean_b, std_b : ndarrays of shape (da,), (db,)
    constant_a, constant_b : ndarrays of bool
        Zero-variance units (their correlations are set to 0, including the diagonal).
    n : int
        Samples (stimuli x positions).
    """

    within_a: np.ndarray
    within_b: np.ndarray
    between: np.ndarray
    mean_a: np.ndarray
    std_a: np.ndarray
    mean_b: np.ndarray
    std_b: np.ndarray
    constant_a: np.ndarray
    constant_b: np.ndarray
    n: int

    def __repr__(self) -> str:
        da, db = self.between.shape
        return (f"UnitCorrelations(da={da}, db={db}, n={self.n}, "
                f"constant_a={int(np.sum(self.constant_a))}, "
                f"constant_b={int(np.sum(self.constant_b))})")


def correlations_from_moments(m: PairMoments) -> UnitCorrelations:
    """Within- and between-network correlation matrices from :class:`PairMoments`.

    Parameters
    ----------
    m : PairMoments
        Moments of net A (dx units) and net B (dy units) over the same samples.

    Returns
    -------
    UnitCorrelations
        float64, clipped to [-1, 1]; zero-variance units have zero correlations.
    """
    cxx, cxy, cyy = m.cov()
    sa = np.sqrt(np.clip(np.diag(cxx), 0, None))
    sb = np.sqrt(np.clip(np.diag(cyy), 0, None))
    ca, cb = is_constant(sa, m.mean_x), is_constant(sb, m.mean_y)
    ia = np.where(ca, 0.0, 1.0 / np.where(ca, 1.0, sa))
    ib = np.where(cb, 0.0, 1.0 / np.where(cb, 1.0, sb))
    clip = lambda c: np.clip(c, -1.0, 1.0)  # noqa: E731
    return UnitCorrelations(
        within_a=clip(cxx * np.outer(ia, ia)), within_b=clip(cyy * np.outer(ib, ib)),
        between=clip(cxy * np.outer(ia, ib)), mean_a=m.mean_x, std_a=sa, mean_b=m.mean_y,
        std_b=sb, constant_a=ca, constant_b=cb, n=m.n,
    )


def semi_matching(C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Match each row unit to its most similar column unit (columns may repeat).

    Parameters
    ----------
    C : ndarray of shape (da, db)
        Similarities (correlations or mutual information).

    Returns
    -------
    index : ndarray of shape (da,), int
    value : ndarray of shape (da,), float64
    """
    idx = np.argmax(C, axis=1)
    return idx, C[np.arange(len(C)), idx]


def bipartite_matching(C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching that maximises the total similarity (Hungarian algorithm).

    Parameters
    ----------
    C : ndarray of shape (da, db)

    Returns
    -------
    index : ndarray of shape (da,), int
        Matched column of each row, -1 for rows left over when ``da > db``.
    value : ndarray of shape (da,), float64
        Similarity of each match (NaN when unmatched).
    """
    rows, cols = linear_sum_assignment(C, maximize=True)
    idx = np.full(C.shape[0], -1)
    idx[rows] = cols
    val = np.full(C.shape[0], np.nan)
    val[rows] = C[rows, cols]
    return idx, val


def bin_units(A: Any, bins: int = 10, zero_tol: float = 1e-6) -> np.ndarray:
    """Discretise every unit into ``bins`` codes for mutual information.

    Code 0 holds the near-zero values (``|x| <= zero_tol * max|x|`` of the unit: the ReLU
    zeros); codes 1..bins-1 split the other values into equal-mass bins (quantiles; a value
    equal to an edge goes up). A unit without zeros leaves code 0 empty.

    Parameters
    ----------
    A : array of shape (n, d)
    bins : int
        At least 3.
    zero_tol : float
        Relative tolerance of the zero bin.

    Returns
    -------
    ndarray of shape (n, d), int16
    """
    if bins < 3:
        raise ActstoreError(f"mutual information needs at least 3 bins, got {bins}")
    A = np.asarray(A, dtype=np.float64)
    scale = np.abs(A).max(axis=0, initial=0.0)
    zero = np.abs(A) <= zero_tol * scale
    masked = np.where(zero, np.nan, A)
    levels = np.arange(1, bins - 1) / (bins - 1)
    codes = np.zeros(A.shape, dtype=np.int16)
    for j in range(A.shape[1]):
        if zero[:, j].all():
            continue
        edges = np.nanquantile(masked[:, j], levels)
        codes[:, j] = 1 + np.searchsorted(edges, A[:, j], side="right")
    codes[zero] = 0
    return codes


def mutual_information(
    A: Any, B: Any, bins: int = 10, zero_tol: float = 1e-6, block: int = 64
) -> np.ndarray:
    """Mutual information (nats) between every unit of A and every unit of B.

    ``MI = sum_kl p_kl ln(p_kl / (p_k p_l))`` from 2-D histograms of the codes of
    :func:`bin_units`; all pairs at once as one-hot matrix products.

    Parameters
    ----------
    A : array of shape (n, da)
    B : array of shape (n, db)
    bins, zero_tol
        See :func:`bin_units`.
    block : int
        Units of A per one-hot product (bounds memory at ``block * bins * db * bins``).

    Returns
    -------
    ndarray of shape (da, db), float64
    """
    ca, cb = bin_units(A, bins, zero_tol), bin_units(B, bins, zero_tol)
    n, da = ca.shape
    db = cb.shape[1]
    OB = _one_hot(cb, bins)  # (n, db * bins)
    pb = OB.sum(axis=0).reshape(db, bins) / n
    out = np.zeros((da, db))
    for s in range(0, da, block):
        OA = _one_hot(ca[:, s : s + block], bins)
        k = OA.shape[1] // bins
        P = (OA.T @ OB).reshape(k, bins, db, bins) / n  # joint histograms
        pa = OA.sum(axis=0).reshape(k, bins) / n
        denom = pa[:, :, None, None] * pb[None, None, :, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            term = np.where(P > 0, P * np.log(P / np.where(denom > 0, denom, 1.0)), 0.0)
        out[s : s + k] = term.sum(axis=(1, 3))
    return np.maximum(out, 0.0)


def _one_hot(codes: np.ndarray, bins: int) -> np.ndarray:
    n, d = codes.shape
    O = np.zeros((n, d * bins))
    O[np.repeat(np.arange(n), d), (np.arange(d) * bins + codes).reshape(-1)] = 1.0
    return O


def _kmeans(U: np.ndarray, k: int, rng: np.random.Generator, n_init: int) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding; the best of ``n_init`` starts."""
    best, best_cost = np.zeros(len(U), dtype=int), np.inf
    for _ in range(n_init):
        centres = [U[rng.integers(len(U))]]
        for _ in range(1, k):
            d2 = np.min(((U[:, None, :] - np.array(centres)[None]) ** 2).sum(-1), axis=1)
            p = d2 / d2.sum() if d2.sum() > 0 else np.full(len(U), 1 / len(U))
            centres.append(U[rng.choice(len(U), p=p)])
        Cn = np.array(centres)
        for _ in range(300):
            lab = np.argmin(((U[:, None, :] - Cn[None]) ** 2).sum(-1), axis=1)
            new = np.array([U[lab == c].mean(0) if (lab == c).any() else Cn[c] for c in range(k)])
            if np.allclose(new, Cn):
                break
            Cn = new
        cost = ((U - Cn[lab]) ** 2).sum()
        if cost < best_cost:
            best, best_cost = lab, cost
    return best


def spectral_clusters(
    affinity: np.ndarray, n_clusters: int, seed: int = 0, n_init: int = 10
) -> np.ndarray:
    """Spectral clustering of a symmetric non-negative affinity matrix.

    Normalised affinity ``D^-1/2 A D^-1/2``, its ``n_clusters`` leading eigenvectors with rows
    scaled to unit length (Ng, Jordan & Weiss 2001), then k-means. Rows without any affinity
    get label -1.

    Parameters
    ----------
    affinity : ndarray of shape (N, N)
    n_clusters : int
    seed : int
        Seed of the k-means starts.

    Returns
    -------
    ndarray of shape (N,), int
    """
    A = np.asarray(affinity, dtype=np.float64)
    deg = A.sum(axis=1)
    ok = deg > 0
    labels = np.full(len(A), -1)
    m = int(ok.sum())
    if m == 0:
        return labels
    k = max(1, min(n_clusters, m))
    Ao = A[np.ix_(ok, ok)]
    s = 1.0 / np.sqrt(deg[ok])
    L = Ao * np.outer(s, s)
    _, vecs = np.linalg.eigh((L + L.T) / 2)
    U = vecs[:, -k:]
    U = U / np.maximum(np.linalg.norm(U, axis=1, keepdims=True), 1e-300)
    labels[ok] = _kmeans(U, k, np.random.default_rng(seed), n_init)
    return labels


def joint_clusters(
    within: Sequence[np.ndarray],
    between: dict[tuple[int, int], np.ndarray],
    constant: Sequence[np.ndarray],
    n_clusters: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, dict[str, int | float]]:
    """Spectral clustering of the joint correlation matrix of several networks.

    Parameters
    ----------
    within : sequence of ndarray (d_r, d_r)
        Within-network correlations of each net.
    between : dict (r, s) -> ndarray (d_r, d_s)
        Between-network correlations for every pair ``r < s``.
    constant : sequence of ndarray (d_r,), bool
        Zero-variance units (left out, label -1).
    n_clusters : int, optional
        Default ``max(2, total_units // 8)``.

    Returns
    -------
    labels : ndarray of shape (sum d_r,), int
        Cluster of each unit, nets concatenated in order.
    summary : dict
        ``n_clusters``, ``mixed`` (clusters with units of >= 2 nets), ``units_in_mixed``
        (fraction of clustered units that sit in a mixed cluster).
    """
    sizes = [len(w) for w in within]
    off = np.cumsum([0, *sizes])
    J = np.zeros((off[-1], off[-1]))
    for r, w in enumerate(within):
        J[off[r] : off[r + 1], off[r] : off[r + 1]] = w
    for (r, s), b in between.items():
        J[off[r] : off[r + 1], off[s] : off[s + 1]] = b
        J[off[s] : off[s + 1], off[r] : off[r + 1]] = b.T
    dead = np.concatenate([np.asarray(c, dtype=bool) for c in constant])
    A = np.abs(J)
    A[dead, :] = 0.0
    A[:, dead] = 0.0
    k = n_clusters or max(2, int(off[-1]) // 8)
    labels = spectral_clusters(A, k, seed=seed)
    net = np.repeat(np.arange(len(sizes)), sizes)
    mixed = [c for c in np.unique(labels[labels >= 0]) if len(np.unique(net[labels == c])) > 1]
    clustered = labels >= 0
    in_mixed = np.isin(labels, mixed) & clustered
    return labels, {
        "n_clusters": len(np.unique(labels[clustered])),
        "mixed": len(mixed),
        "units_in_mixed": float(in_mixed.sum() / max(1, clustered.sum())),
    }


def split_mask(n_stimuli: int, test_fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    """Held-out stimuli of the sparse-prediction path (bool per stimulus, seeded)."""
    if not 0 < test_fraction < 1:
        raise ActstoreError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    rng = np.random.default_rng(seed)
    k = max(1, round(test_fraction * n_stimuli))
    mask = np.zeros(n_stimuli, dtype=bool)
    mask[rng.permutation(n_stimuli)[:k]] = True
    return mask


@dataclass
class PairAlignment:
    """Alignment of the units of net A and net B at one layer.

    Attributes
    ----------
    names : (str, str)
    corr : UnitCorrelations
    semi_ab, semi_ba : (index, value)
        Semi-matching A -> B and B -> A on correlations.
    bipartite : (index, value)
        Hungarian matching A -> B on correlations.
    mi : ndarray of shape (da, db) or None
        Mutual information (nats).
    mi_bipartite : (index, value) or None
        Hungarian matching on mutual information.
    lasso : LassoPath or None
        Sparse prediction of B's units from A's.
    """

    names: tuple[str, str]
    corr: UnitCorrelations
    semi_ab: tuple[np.ndarray, np.ndarray]
    semi_ba: tuple[np.ndarray, np.ndarray]
    bipartite: tuple[np.ndarray, np.ndarray]
    mi: np.ndarray | None = None
    mi_bipartite: tuple[np.ndarray, np.ndarray] | None = None
    lasso: LassoPath | None = None

    def __repr__(self) -> str:
        da, db = self.corr.between.shape
        matched = np.asarray(self.bipartite[1], dtype=np.float64)
        mean = float(np.mean(matched)) if matched.size else float("nan")
        extra = [what for what, v in (("mi", self.mi), ("lasso", self.lasso)) if v is not None]
        return (f"PairAlignment(names={tuple(self.names)!r}, da={da}, db={db}, "
                f"bipartite_corr_mean={mean:.3g}, with={extra})")
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Layer-level numbers: mean matched correlations, MI, LASSO losses per penalty."""
        ok_a = ~self.corr.constant_a
        out: dict[str, Any] = {
            "run_a": self.names[0],
            "run_b": self.names[1],
            "units_a": len(ok_a),
            "units_b": len(self.corr.constant_b),
            "constant_a": int(self.corr.constant_a.sum()),
            "constant_b": int(self.corr.constant_b.sum()),
            "bipartite_corr": _nanmean(self.bipartite[1][ok_a]),
            "semi_corr": _nanmean(self.semi_ab[1][ok_a]),
        }
        if self.mi is not None and self.mi_bipartite is not None:
            out["bipartite_mi"] = _nanmean(self.mi_bipartite[1])
            out["semi_mi"] = float(self.mi.max(axis=1).mean()) if self.mi.size else float("nan")
        if self.lasso is not None:
            live = ~self.lasso.constant_y
            for a, tl, nz in zip(self.lasso.alphas, self.lasso.test_loss, self.lasso.nonzero,
                                 strict=True):
                out[f"lasso_test_loss@{a:g}"] = _nanmean(tl[live])
                out[f"lasso_nonzero@{a:g}"] = _nanmean(nz[live].astype(float))
        return out


def _nanmean(v: np.ndarray) -> float:
    v = np.asarray(v, dtype=float)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")


def align_from_parts(
    names: tuple[str, str],
    full: PairMoments,
    train: PairMoments | None = None,
    test: PairMoments | None = None,
    mi: np.ndarray | None = None,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
) -> PairAlignment:
    """Assemble a :class:`PairAlignment` from streamed moments and an MI matrix."""
    corr = correlations_from_moments(full)
    C = corr.between
    mi_bip = bipartite_matching(mi) if mi is not None else None
    lasso = (
        sparse_prediction(train, test, alphas)
        if train is not None and test is not None
        else None
    )
    return PairAlignment(
        names=names, corr=corr, semi_ab=semi_matching(C), semi_ba=semi_matching(C.T),
        bipartite=bipartite_matching(C), mi=mi, mi_bipartite=mi_bip, lasso=lasso,
    )


def align_pair(
    A: Any,
    B: Any,
    *,
    names: tuple[str, str] = ("a", "b"),
    groups: Any = None,
    mutual_info: bool = True,
    bins: int = 10,
    lasso: bool = True,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    test_fraction: float = 0.2,
    seed: int = 0,
    block: int = 4096,
) -> PairAlignment:
    """Align the units of two in-memory representations of the same samples.

    Parameters
    ----------
    A : array of shape (n, da)
    B : array of shape (n, db)
        Rows are the same samples (stimuli, or stimulus x position for conv maps).
    names : (str, str)
        Labels of the two nets.
    groups : array of shape (n,), int, optional
        Stimulus of each row; the held-out split keeps all rows of a stimulus together
        (default: every row its own stimulus).
    mutual_info, lasso : bool
        Compute the binned mutual information / the sparse-prediction path.
    bins : int
        Bins per unit for mutual information.
    alphas : sequence of float
        LASSO penalty path.
    test_fraction, seed
        Held-out share of stimuli for the LASSO path, and its seed.

    Returns
    -------
    PairAlignment
    """
    A = np.asarray(A)
    B = np.asarray(B)
    if A.ndim != 2 or B.ndim != 2 or len(A) != len(B):
        raise ActstoreError(
            f"{names[0]!r} {A.shape} and {names[1]!r} {B.shape} are not two (samples, units) "
            "arrays over the same samples; select runs recorded on one probe set"
        )
    g = np.arange(len(A)) if groups is None else np.asarray(groups)
    stim = np.unique(g, return_inverse=True)[1]
    test_rows = split_mask(int(stim.max()) + 1, test_fraction, seed)[stim]
    shift_a, shift_b = A[:block].mean(axis=0), B[:block].mean(axis=0)
    train_m = PairMoments.empty(shift_a, shift_b)
    test_m = PairMoments.empty(shift_a, shift_b)
    for s in range(0, len(A), block):
        t = test_rows[s : s + block]
        a, b = A[s : s + block], B[s : s + block]
        train_m.update(a[~t], b[~t])
        test_m.update(a[t], b[t])
    mi = mutual_information(A, B, bins) if mutual_info else None
    return align_from_parts(
        names, train_m + test_m, train_m if lasso else None, test_m if lasso else None, mi,
        alphas,
    )
