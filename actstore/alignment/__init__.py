"""Unit alignment between networks: matching, mutual information, LASSO, clusters."""

from __future__ import annotations

from actstore.alignment._alignment import (
    PairAlignment,
    UnitCorrelations,
    align_pair,
    bin_units,
    bipartite_matching,
    correlations_from_moments,
    joint_clusters,
    mutual_information,
    semi_matching,
    spectral_clusters,
)
from actstore.alignment._lasso import LassoPath, lasso_gram, sparse_prediction

__all__ = [
    "LassoPath",
    "PairAlignment",
    "UnitCorrelations",
    "align_pair",
    "bin_units",
    "bipartite_matching",
    "correlations_from_moments",
    "joint_clusters",
    "lasso_gram",
    "mutual_information",
    "semi_matching",
    "sparse_prediction",
    "spectral_clusters",
]
