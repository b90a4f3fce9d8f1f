"""Representational similarity: metrics, signatures, RDMs, bootstrap, the similarity job.

The selection of representations (``select``, ``LazyRep``, ...) is the core's
(:mod:`actstore.core`): every analysis selects with it."""

from __future__ import annotations

from actstore.similarity import _signatures
from actstore.similarity._bootstrap import BootstrapResult, bootstrap_indices, bootstrap_similarity
from actstore.similarity._config import SimilarityConfig
from actstore.similarity._jobs import demo_similarity, similarity_job
from actstore.similarity._metrics import (
    METRIC_PARAMS,
    SIMILARITIES,
    SIMILARITY_METRICS,
    MetricParam,
    SimilarityMetric,
)
from actstore.similarity._parse import parse_selection, parse_selections
from actstore.similarity._plan import plan_similarity
from actstore.similarity._rdm import RDM_COMPARES, RDM_KINDS, rsa_signature
from actstore.similarity._result import SimilarityResult
from actstore.similarity._signatures import *  # noqa: F403
from actstore.similarity._similarity import similarity, similarity_matrix

__all__ = [
    "METRIC_PARAMS",
    "RDM_COMPARES",
    "RDM_KINDS",
    *_signatures.__all__,
    "SIMILARITIES",
    "SIMILARITY_METRICS",
    "BootstrapResult",
    "MetricParam",
    "SimilarityConfig",
    "SimilarityMetric",
    "SimilarityResult",
    "bootstrap_indices",
    "bootstrap_similarity",
    "demo_similarity",
    "parse_selection",
    "parse_selections",
    "plan_similarity",
    "rsa_signature",
    "similarity",
    "similarity_job",
    "similarity_matrix",
]
