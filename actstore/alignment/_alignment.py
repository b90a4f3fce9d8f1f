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

from actstore._args import as_array, check_text, whole_number
from actstore._errors import ActstoreError
from actstore.alignment._lasso import (
    DEFAULT_ALPHAS,
    LassoPath,
    check_alphas,
    is_constant,
    sparse_prediction,
)
from actstore.core._backend import to_numpy
from actstore.core._moments import PairMoments

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


# -- checks of public arguments ---------------------------------------------------------------


def _host(value: Any, what: str, shape_hint: str) -> np.ndarray:
    """A numpy array of real numbers from a numpy / torch / cupy array, a list or a tuple
    (numeric dtypes are kept as they are, so valid input gives the same numbers)."""
    if value is None or isinstance(value, (str, bytes)) or not (
            hasattr(value, "shape") or isinstance(value, (list, tuple))):
        raise ActstoreError(
            f"{what} must be an array of shape {shape_hint} (numpy, torch, cupy or a nested "
            f"list), not {type(value).__name__}"
        )
    try:
        a = np.asarray(to_numpy(as_array(value, what)))
        if a.dtype.kind == "c":
            raise TypeError("complex values")
        if a.dtype.kind not in "biuf":
            a = a.astype(np.float64)
    except (TypeError, ValueError) as e:
        if isinstance(e, ActstoreError):
            raise
        raise ActstoreError(
            f"{what} must hold real numbers in an array of shape {shape_hint} ({e}); "
            "give a numeric array with rows of equal length"
        ) from None
    return a


def _check_finite(a: np.ndarray, what: str, hint: str) -> None:
    """One error that counts the NaN and infinite values of ``a`` and says where the first is."""
    if a.dtype.kind != "f":
        return
    bad = ~np.isfinite(a)
    if bad.any():
        nan = int(np.isnan(a).sum())
        inf = int(bad.sum()) - nan
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ActstoreError(
            f"{what} holds {nan} NaN and {inf} infinite value(s) of {a.size} (the first at "
            f"index {first}); {hint}"
        )


_DATA_HINT = (
    "drop or repair those samples or units first (a diverged run? a missing value?), "
    "e.g. keep = np.isfinite(x).all(axis=1)"
)


def _samples(value: Any, what: str, min_rows: int = 1) -> np.ndarray:
    """A finite 2-D (n_samples, n_units) array with at least ``min_rows`` rows and one unit."""
    a = _host(value, what, "(n_samples, n_units)")
    if a.ndim != 2:
        raise ActstoreError(
            f"{what} must be a 2-D array of shape (n_samples, n_units), got shape {a.shape}; "
            "for one unit use x[:, None], for conv maps x.reshape(len(x), -1)"
        )
    if a.shape[1] < 1:
        raise ActstoreError(f"{what} has no units (shape {a.shape}); give at least one column")
    if a.shape[0] < min_rows:
        raise ActstoreError(
            f"{what} has {a.shape[0]} sample(s) (shape {a.shape}); at least {min_rows} are "
            "needed (rows are samples, columns units)"
        )
    _check_finite(a, what, _DATA_HINT)
    return a


def _similarity_matrix(C: Any, what: str) -> np.ndarray:
    """A finite, non-empty 2-D (da, db) similarity matrix."""
    a = _host(C, what, "(da, db)")
    if a.ndim != 2:
        raise ActstoreError(
            f"{what} must be a 2-D similarity matrix of shape (da, db) (rows: units of net A, "
            f"columns: units of net B), got shape {a.shape}"
        )
    if a.size == 0:
        raise ActstoreError(
            f"{what} is empty (shape {a.shape}); both nets need at least one unit"
        )
    _check_finite(a, what, "set the similarities of constant units to 0 (as "
                  "correlations_from_moments does) or leave those units out")
    return a


def _real(value: Any, what: str, minimum: float, hint: str, strict: bool = False) -> float:
    """A finite real number >= ``minimum`` (> with ``strict``)."""
    ok = not isinstance(value, (bool, np.bool_)) and isinstance(
        value, (int, float, np.integer, np.floating))
    if ok:
        v = float(value)
        ok = bool(np.isfinite(v)) and (v > minimum if strict else v >= minimum)
    if not ok:
        raise ActstoreError(
            f"{what} must be a finite number {'>' if strict else '>='} {minimum:g}, got "
            f"{value!r}; {hint}"
        )
    return float(value)


def _check_bins(bins: Any, zero_tol: Any) -> int:
    if isinstance(bins, (bool, np.bool_)) or not isinstance(bins, (int, np.integer)) \
            or bins < 3:
        raise ActstoreError(
            f"bins must be a whole number >= 3 (mutual information needs at least 3 bins: the "
            f"zero bin and two or more quantile bins), got {bins!r}; the default is 10"
        )
    _real(zero_tol, "zero_tol", 0.0, "the relative tolerance of the zero bin, e.g. 1e-6")
    return int(bins)


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
    C : array of shape (da, db)
        Similarities (correlations or mutual information), finite, at least one row and one
        column; numpy, torch, cupy or a nested list.

    Returns
    -------
    index : ndarray of shape (da,), int
    value : ndarray of shape (da,), float64

    Raises
    ------
    ActstoreError
        If ``C`` is not a non-empty 2-D array of finite numbers.
    """
    return _semi(_similarity_matrix(C, "C (the similarity matrix)"))


def _semi(C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx = np.argmax(C, axis=1)
    return idx, C[np.arange(len(C)), idx]


def bipartite_matching(C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching that maximises the total similarity (Hungarian algorithm).

    Parameters
    ----------
    C : array of shape (da, db)
        Similarities, finite, at least one row and one column; numpy, torch, cupy or a
        nested list.

    Returns
    -------
    index : ndarray of shape (da,), int
        Matched column of each row, -1 for rows left over when ``da > db``.
    value : ndarray of shape (da,), float64
        Similarity of each match (NaN when unmatched).

    Raises
    ------
    ActstoreError
        If ``C`` is not a non-empty 2-D array of finite numbers.
    """
    return _bipartite(_similarity_matrix(C, "C (the similarity matrix)"))


def _bipartite(C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
        Finite values, at least one sample and one unit.
    bins : int
        At least 3.
    zero_tol : float
        Relative tolerance of the zero bin (>= 0).

    Returns
    -------
    ndarray of shape (n, d), int16

    Raises
    ------
    ActstoreError
        For a non-2-D, empty or non-finite ``A``, or ``bins`` / ``zero_tol`` out of range.
    """
    bins = _check_bins(bins, zero_tol)
    return _bin_units(_samples(A, "A"), bins, zero_tol)


def _bin_units(A: np.ndarray, bins: int, zero_tol: float) -> np.ndarray:
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

    Raises
    ------
    ActstoreError
        For arrays that are not 2-D, empty or non-finite, that differ in their number of
        samples, or for ``bins`` / ``zero_tol`` / ``block`` out of range.
    """
    bins = _check_bins(bins, zero_tol)
    block = whole_number(block, "block", 1)
    A, B = _samples(A, "A"), _samples(B, "B")
    if len(A) != len(B):
        raise ActstoreError(
            f"A has {len(A)} samples and B has {len(B)} (shapes {A.shape}, {B.shape}); "
            "mutual information needs the two nets' activations on the same samples, row by row"
        )
    ca, cb = _bin_units(A, bins, zero_tol), _bin_units(B, bins, zero_tol)
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


def _check_n_clusters(n_clusters: Any, N: int) -> int:
    k = whole_number(n_clusters, "n_clusters", 1)
    if k > N:
        raise ActstoreError(
            f"n_clusters is {k} but there are only N = {N} units to cluster; give at most {N}"
        )
    return k


def _symmetric(a: np.ndarray) -> bool:
    scale = float(np.abs(a).max(initial=0.0))
    return bool(np.allclose(a, a.T, rtol=1e-6, atol=1e-9 * max(scale, 1.0)))


def spectral_clusters(
    affinity: Any, n_clusters: int, seed: int = 0, n_init: int = 10
) -> np.ndarray:
    """Spectral clustering of a symmetric non-negative affinity matrix.

    Normalised affinity ``D^-1/2 A D^-1/2``, its ``n_clusters`` leading eigenvectors with rows
    scaled to unit length (Ng, Jordan & Weiss 2001), then k-means. Rows without any affinity
    get label -1.

    Parameters
    ----------
    affinity : array of shape (N, N)
        Symmetric, finite and non-negative (for signed correlations pass ``np.abs(c)``, the
        affinity :func:`joint_clusters` uses); numpy, torch, cupy or a nested list.
    n_clusters : int
        ``1 <= n_clusters <= N``. When fewer than ``n_clusters`` rows have any affinity
        (the others are labelled -1), that many clusters are formed.
    seed : int
        Seed of the k-means starts (>= 0).
    n_init : int
        k-means starts (>= 1); the one of lowest cost is kept.

    Returns
    -------
    ndarray of shape (N,), int

    Raises
    ------
    ActstoreError
        For an affinity that is not square, empty, symmetric, finite or non-negative, or for
        ``n_clusters``, ``seed`` or ``n_init`` out of range.
    """
    what = "affinity"
    A = _host(affinity, what, "(N, N)")
    if A.ndim != 2 or A.shape[0] != A.shape[1] or A.size == 0:
        raise ActstoreError(
            f"{what} must be a square (N, N) matrix with N >= 1 (similarity of every unit to "
            f"every unit), got shape {A.shape}"
        )
    _check_finite(A, what, "set the affinities of constant units to 0 (their rows get "
                  "label -1) instead of NaN")
    A = np.asarray(A, dtype=np.float64)
    if (A < 0).any():
        raise ActstoreError(
            f"{what} holds {int((A < 0).sum())} negative value(s) (smallest {A.min():g}); "
            "spectral clustering needs non-negative affinities: for signed correlations pass "
            "np.abs(c) (as joint_clusters does)"
        )
    if not _symmetric(A):
        raise ActstoreError(
            f"{what} is not symmetric (largest |a_ij - a_ji| = {np.abs(A - A.T).max():g}); "
            "give a symmetric matrix, e.g. (a + a.T) / 2"
        )
    k = _check_n_clusters(n_clusters, len(A))
    seed = whole_number(seed, "seed", 0)
    n_init = whole_number(n_init, "n_init", 1)
    return _spectral(A, k, seed, n_init)


def _spectral(A: np.ndarray, n_clusters: int, seed: int, n_init: int) -> np.ndarray:
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


def _pair_key(key: Any, n_nets: int) -> tuple[int, int]:
    ok = isinstance(key, tuple) and len(key) == 2 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in key)
    if ok:
        r, s = int(key[0]), int(key[1])
        if 0 <= r < s < n_nets:
            return r, s
    raise ActstoreError(
        f"between has the key {key!r}; keys must be pairs (r, s) of net indices with "
        f"0 <= r < s < {n_nets} (the number of nets in within)"
    )


def joint_clusters(
    within: Sequence[Any],
    between: dict[tuple[int, int], Any],
    constant: Sequence[Any],
    n_clusters: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, dict[str, int | float]]:
    """Spectral clustering of the joint correlation matrix of several networks.

    The affinity is ``|c|`` of the joint correlation matrix (signed correlations: a strong
    negative correlation ties two units as much as a positive one).

    Parameters
    ----------
    within : sequence of array (d_r, d_r)
        Within-network correlations of each net (square, symmetric, finite).
    between : dict (r, s) -> array (d_r, d_s)
        Between-network correlations for every pair ``r < s`` (all of them; finite).
    constant : sequence of array (d_r,), bool
        Zero-variance units (left out, label -1); one per net.
    n_clusters : int, optional
        ``1 <= n_clusters <= sum d_r``. Default ``max(2, total_units // 8)`` (at most the
        number of units).
    seed : int
        Seed of the k-means starts (>= 0).

    Returns
    -------
    labels : ndarray of shape (sum d_r,), int
        Cluster of each unit, nets concatenated in order.
    summary : dict
        ``n_clusters``, ``mixed`` (clusters with units of >= 2 nets), ``units_in_mixed``
        (fraction of clustered units that sit in a mixed cluster).

    Raises
    ------
    ActstoreError
        For a missing, surplus or wrongly sized block, non-finite or asymmetric correlations,
        a ``constant`` mask of the wrong length, or ``n_clusters`` / ``seed`` out of range.
    """
    if isinstance(within, (str, bytes)) or not isinstance(within, Sequence) or not within:
        raise ActstoreError(
            "within must be a non-empty list of within-network correlation matrices, one per "
            f"net, not {type(within).__name__}"
        )
    blocks = []
    for r, w in enumerate(within):
        what = f"within[{r}]"
        w = _host(w, what, "(d, d)")
        if w.ndim != 2 or w.shape[0] != w.shape[1]:
            raise ActstoreError(
                f"{what} must be a square (d, d) correlation matrix of net {r}, got shape "
                f"{w.shape}"
            )
        _check_finite(w, what, "correlations of constant units are 0 "
                      "(correlations_from_moments); repair the activations of that net")
        if not _symmetric(w):
            raise ActstoreError(f"{what} is not symmetric; give the correlation matrix of net "
                                f"{r} with itself")
        blocks.append(w)
    sizes = [len(w) for w in blocks]
    if not isinstance(between, dict):
        raise ActstoreError(
            f"between must be a dict (r, s) -> correlations of nets r and s, not "
            f"{type(between).__name__}"
        )
    pairs: dict[tuple[int, int], np.ndarray] = {}
    for key, b in between.items():
        r, s = _pair_key(key, len(blocks))
        if (r, s) in pairs:
            raise ActstoreError(f"between holds the pair {(r, s)} twice")
        what = f"between[{(r, s)}]"
        b = _host(b, what, f"({sizes[r]}, {sizes[s]})")
        if b.shape != (sizes[r], sizes[s]):
            raise ActstoreError(
                f"{what} has shape {b.shape}, but nets {r} and {s} have {sizes[r]} and "
                f"{sizes[s]} units (within[{r}], within[{s}]); give the ({sizes[r]}, "
                f"{sizes[s]}) correlations of net {r}'s units with net {s}'s"
            )
        _check_finite(b, what, "correlations of constant units are 0 "
                      "(correlations_from_moments); repair the activations of those nets")
        pairs[(r, s)] = b
    missing = [(r, s) for r in range(len(blocks)) for s in range(r + 1, len(blocks))
               if (r, s) not in pairs]
    if missing:
        raise ActstoreError(
            f"between lacks the pair(s) {missing} of {len(blocks)} nets; give the "
            "between-network correlations of every pair r < s (a missing block is not zero "
            "correlation)"
        )
    if isinstance(constant, (str, bytes)) or not isinstance(constant, Sequence) \
            or len(constant) != len(blocks):
        got = len(constant) if isinstance(constant, Sequence) else type(constant).__name__
        raise ActstoreError(
            f"constant must be a list of {len(blocks)} bool masks, one per net, got {got}"
        )
    masks = []
    for r, c in enumerate(constant):
        c = _host(c, f"constant[{r}]", f"({sizes[r]},)")
        if c.shape != (sizes[r],):
            raise ActstoreError(
                f"constant[{r}] has shape {c.shape}, but net {r} has {sizes[r]} units; give "
                "one bool per unit (True for a zero-variance unit)"
            )
        masks.append(c.astype(bool))
    off = np.cumsum([0, *sizes])
    N = int(off[-1])
    if N == 0:
        raise ActstoreError("within holds no units (every matrix is empty); nothing to cluster")
    k = (min(N, max(2, N // 8)) if n_clusters is None
         else _check_n_clusters(n_clusters, N))
    seed = whole_number(seed, "seed", 0)
    J = np.zeros((N, N))
    for r, w in enumerate(blocks):
        J[off[r] : off[r + 1], off[r] : off[r + 1]] = w
    for (r, s), b in pairs.items():
        J[off[r] : off[r + 1], off[s] : off[s + 1]] = b
        J[off[s] : off[s + 1], off[r] : off[r + 1]] = b.T
    dead = np.concatenate(masks)
    A = np.abs(J)
    A[dead, :] = 0.0
    A[:, dead] = 0.0
    labels = _spectral(A, k, seed, 10)
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
    """Held-out stimuli of the sparse-prediction path (bool per stimulus, seeded).

    At least one stimulus is held out (``round(test_fraction * n_stimuli)``, at least 1).
    """
    n_stimuli = whole_number(n_stimuli, "n_stimuli", 1)
    if isinstance(test_fraction, (bool, np.bool_)) or not isinstance(
            test_fraction, (int, float, np.integer, np.floating)) or not 0 < test_fraction < 1:
        raise ActstoreError(f"test_fraction must be between 0 and 1, got {test_fraction!r}")
    seed = whole_number(seed, "seed", 0)
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
    """Assemble a :class:`PairAlignment` from streamed moments and an MI matrix.

    Raises
    ------
    ActstoreError
        If the moments hold NaN or infinite values (the activations did), if ``mi`` is not a
        finite (da, db) matrix, or for penalties that are not finite numbers >= 0.
    """
    for part, m in (("full", full), ("train", train), ("test", test)):
        if m is None:
            continue
        sums = (m.sx, m.sy, m.sxx, m.sxy, m.syy)
        if not all(np.isfinite(v).all() for v in sums):
            raise ActstoreError(
                f"the {part} moments of {names[0]!r} and {names[1]!r} hold NaN or infinite "
                "values: the activations of one of the runs do; check the run (diverged "
                "training?) or leave it out"
            )
    if train is not None and test is not None:
        check_alphas(alphas)
    corr = correlations_from_moments(full)
    C = corr.between
    if mi is not None:
        mi = _similarity_matrix(mi, "mi (the mutual information matrix)")
        if mi.shape != C.shape:
            raise ActstoreError(
                f"mi has shape {mi.shape} but the nets have {C.shape[0]} and {C.shape[1]} "
                "units; give the (da, db) mutual information of the same two nets"
            )
    mi_bip = _bipartite(mi) if mi is not None else None
    lasso = (
        sparse_prediction(train, test, alphas)
        if train is not None and test is not None
        else None
    )
    return PairAlignment(
        names=names, corr=corr, semi_ab=_semi(C), semi_ba=_semi(C.T),
        bipartite=_bipartite(C), mi=mi, mi_bipartite=mi_bip, lasso=lasso,
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
        LASSO penalty path: finite numbers >= 0 (0 is the least-squares fit).
    test_fraction, seed
        Held-out share of stimuli for the LASSO path, and its seed.
    block : int
        Rows per streamed block of the moments.

    Returns
    -------
    PairAlignment

    Raises
    ------
    ActstoreError
        For arrays that are not 2-D (n_samples, units) with the same ``n >= 2`` samples and
        at least one unit, NaN or infinite values (counted, with the first position),
        ``groups`` not of length n, penalties that are not finite numbers >= 0, ``bins``
        below 3, or a split that leaves no training stimulus for the LASSO path.
    """
    if isinstance(names, str) or not isinstance(names, (tuple, list)) or len(names) != 2:
        raise ActstoreError(f"names must be two labels (name_a, name_b), got {names!r}")
    names = (check_text(names[0], "names[0]"), check_text(names[1], "names[1]"))
    A = _samples(A, f"A ({names[0]!r})")
    B = _samples(B, f"B ({names[1]!r})")
    n = len(A)
    if n != len(B):
        raise ActstoreError(
            f"{names[0]!r} {A.shape} and {names[1]!r} {B.shape} are not two (samples, units) "
            "arrays over the same samples; select runs recorded on one probe set"
        )
    if n < 2:
        raise ActstoreError(
            f"{names[0]!r} and {names[1]!r} have {n} sample; correlations need at least 2 "
            "samples (rows)"
        )
    block = whole_number(block, "block", 1)
    seed = whole_number(seed, "seed", 0)
    if mutual_info:
        bins = _check_bins(bins, 1e-6)
    if lasso:
        check_alphas(alphas)
    if groups is None:
        g = np.arange(n)
    else:
        g = np.asarray(to_numpy(as_array(groups, "groups")))
        if g.shape != (n,):
            raise ActstoreError(
                f"groups has shape {g.shape}, but there are {n} samples; give one stimulus "
                f"label per row, shape ({n},)"
            )
        _check_finite(g, "groups", "give an integer stimulus label for every row")
    stim = np.unique(g, return_inverse=True)[1].reshape(-1)
    test_rows = split_mask(int(stim.max()) + 1, test_fraction, seed)[stim]
    if lasso and test_rows.all():
        raise ActstoreError(
            f"the held-out split of {int(stim.max()) + 1} stimulus/stimuli at test_fraction "
            f"{test_fraction} leaves no stimulus to fit the LASSO path on; give more samples "
            "or stimuli (groups), a smaller test_fraction, or lasso=False"
        )
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
