"""Unit alignment between networks: matching, mutual information, LASSO, clusters."""

from __future__ import annotations

from actstore.alignment._alignment import PairAlignment, align_pair
from actstore.alignment._clusters import joint_clusters, spectral_clusters
from actstore.alignment._config import AlignConfig
from actstore.alignment._correlations import UnitCorrelations, correlations_from_moments
from actstore.alignment._dataset import matched_r2, sparse_summary, summary_rows
from actstore.alignment._jobs import alignment_job
from actstore.alignment._lasso import LASSO_ALPHAS, LassoPath, lasso_gram, sparse_prediction
from actstore.alignment._matching import bipartite_matching, semi_matching
from actstore.alignment._mutual_info import bin_units, mutual_information

__all__ = [
    "LASSO_ALPHAS",
    "AlignConfig",
    "LassoPath",
    "PairAlignment",
    "UnitCorrelations",
    "align_pair",
    "alignment_job",
    "bin_units",
    "bipartite_matching",
    "correlations_from_moments",
    "joint_clusters",
    "lasso_gram",
    "matched_r2",
    "mutual_information",
    "semi_matching",
    "sparse_prediction",
    "sparse_summary",
    "spectral_clusters",
    "summary_rows",
]
