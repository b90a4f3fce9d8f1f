"""Feature measures: variance explained, dictionary features (NMF), complexity, importance."""

from __future__ import annotations

from actstore.features._complexity import (
    code_targets,
    codes_as_labels,
    complexity_score,
    decodable_step,
    read_codes,
    time_to_decode,
    vinfo_of_codes,
)
from actstore.features._complexity_run import run_complexity
from actstore.features._config import ComplexityConfig, VarianceConfig
from actstore.features._importance import (
    LinearHead,
    gradient_x_activation,
    linear_importance,
    recover_linear_head,
)
from actstore.features._nmf import NMFResult, nmf, nmf_transform
from actstore.features._variance import variance_arrays, variance_explained
from actstore.features._variance_run import run_variance

__all__ = [
    "ComplexityConfig",
    "LinearHead",
    "NMFResult",
    "VarianceConfig",
    "code_targets",
    "codes_as_labels",
    "complexity_score",
    "decodable_step",
    "gradient_x_activation",
    "linear_importance",
    "nmf",
    "nmf_transform",
    "read_codes",
    "recover_linear_head",
    "run_complexity",
    "run_variance",
    "time_to_decode",
    "variance_arrays",
    "variance_explained",
    "vinfo_of_codes",
]
