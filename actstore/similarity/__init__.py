"""Representational similarity: metrics, signatures, RDMs, bootstrap, selections."""

from __future__ import annotations

from actstore.similarity._bootstrap import BootstrapResult, bootstrap_indices, bootstrap_similarity
from actstore.similarity._jobs import alignment_job, similarity_job, write_heatmap
from actstore.similarity._rdm import RDM_COMPARES, RDM_KINDS, rsa_signature
from actstore.similarity._select import (
    RepRef,
    Selection,
    parse_selection,
    parse_selections,
    select,
    select_many,
    stimulus_subset,
)
from actstore.similarity._signatures import (
    Signature,
    cka_signature,
    procrustes_signature,
    rbf_cka_signature,
)
from actstore.similarity._similarity import (
    SIMILARITIES,
    LazyRep,
    SimilarityResult,
    plan_similarity,
    similarity,
    similarity_matrix,
)

__all__ = [
    "RDM_COMPARES",
    "RDM_KINDS",
    "SIMILARITIES",
    "BootstrapResult",
    "LazyRep",
    "RepRef",
    "Selection",
    "Signature",
    "SimilarityResult",
    "alignment_job",
    "bootstrap_indices",
    "bootstrap_similarity",
    "cka_signature",
    "parse_selection",
    "parse_selections",
    "plan_similarity",
    "procrustes_signature",
    "rbf_cka_signature",
    "rsa_signature",
    "select",
    "select_many",
    "similarity",
    "similarity_job",
    "similarity_matrix",
    "stimulus_subset",
    "write_heatmap",
]
