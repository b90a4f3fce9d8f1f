"""Spectral clustering of the joint correlation matrix of several networks.

Clusters holding units of more than one net are shared subspaces; units without variation
are left out (label -1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from actstore._args import whole_number
from actstore._errors import ActstoreError
from actstore.alignment._inputs import check_finite, host_array

__all__ = ["joint_clusters", "spectral_clusters"]


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
    A = host_array(affinity, what, "(N, N)")
    if A.ndim != 2 or A.shape[0] != A.shape[1] or A.size == 0:
        raise ActstoreError(
            f"{what} must be a square (N, N) matrix with N >= 1 (similarity of every unit to "
            f"every unit), got shape {A.shape}"
        )
    check_finite(A, what, "set the affinities of constant units to 0 (their rows get "
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
        w = host_array(w, what, "(d, d)")
        if w.ndim != 2 or w.shape[0] != w.shape[1]:
            raise ActstoreError(
                f"{what} must be a square (d, d) correlation matrix of net {r}, got shape "
                f"{w.shape}"
            )
        check_finite(w, what, "correlations of constant units are 0 "
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
        b = host_array(b, what, f"({sizes[r]}, {sizes[s]})")
        if b.shape != (sizes[r], sizes[s]):
            raise ActstoreError(
                f"{what} has shape {b.shape}, but nets {r} and {s} have {sizes[r]} and "
                f"{sizes[s]} units (within[{r}], within[{s}]); give the ({sizes[r]}, "
                f"{sizes[s]}) correlations of net {r}'s units with net {s}'s"
            )
        check_finite(b, what, "correlations of constant units are 0 "
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
        c = host_array(c, f"constant[{r}]", f"({sizes[r]},)")
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
