"""Binned mutual information between the units of two networks, in nats.

10 bins per unit: the first holds the near-zero ReLU mass, the other 9 split the remaining
values into equal-mass bins.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from actstore._args import whole_number
from actstore._errors import ActstoreError
from actstore.alignment._inputs import check_bins, sample_array

__all__ = ["bin_units", "mutual_information"]


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
    bins = check_bins(bins, zero_tol)
    return _bin_units(sample_array(A, "A"), bins, zero_tol)


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
    bins = check_bins(bins, zero_tol)
    block = whole_number(block, "block", 1)
    A, B = sample_array(A, "A"), sample_array(B, "B")
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
