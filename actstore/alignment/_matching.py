"""Matching the units of two networks on a similarity matrix (correlations or MI).

Semi-matching (each unit -> its most similar unit of the other net, with replacement) and
bipartite matching (the maximum-weight one-to-one assignment, Hungarian algorithm via
:func:`scipy.optimize.linear_sum_assignment`).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from actstore.alignment._inputs import similarity_input

__all__ = ["bipartite_matching", "semi_matching", "unchecked_bipartite", "unchecked_semi"]


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
    return unchecked_semi(similarity_input(C, "C (the similarity matrix)"))


def unchecked_semi(C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
        As :func:`semi_matching`.
    """
    return unchecked_bipartite(similarity_input(C, "C (the similarity matrix)"))


def unchecked_bipartite(C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = linear_sum_assignment(C, maximize=True)
    idx = np.full(C.shape[0], -1)
    idx[rows] = cols
    val = np.full(C.shape[0], np.nan)
    val[rows] = C[rows, cols]
    return idx, val
