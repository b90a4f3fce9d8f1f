"""Analyses computed from a store: decoders (probes), similarity, alignment, complexity."""

from __future__ import annotations

# Decoders (probe engine).
from actstore.probes._decode import (
    DECODERS,
    DecodeResult,
    ProbeConfig,
    decode,
    make_folds,
    probe_arrays,
)
from actstore.probes._engine import (
    Job,
    ProbePlan,
    ProbeWarning,
    export_results,
    plan_probes,
    run_probes,
    summary_table,
)
from actstore.probes._folds import (
    Folds,
    check_folds,
    explicit_split,
    predefined_folds,
    stratified_folds,
)
from actstore.probes._logistic import DEFAULT_CS, fit_logistic_path, logistic_cv
from actstore.probes._metrics import METRICS, HeldOutScores, select_penalty
from actstore.probes._ridge import DEFAULT_ALPHAS, ridge_cv
from actstore.probes._stats import ArraySource, CachedSource, accumulate_gram, accumulate_groups
from actstore.probes._synthetic import write_synthetic_store
from actstore.probes._targets import Targets, encode_targets

__all__ = [
    "DECODERS",
    "DEFAULT_ALPHAS",
    "DEFAULT_CS",
    "METRICS",
    "ArraySource",
    "CachedSource",
    "DecodeResult",
    "Folds",
    "HeldOutScores",
    "Job",
    "ProbeConfig",
    "ProbePlan",
    "ProbeWarning",
    "Targets",
    "accumulate_gram",
    "accumulate_groups",
    "check_folds",
    "decode",
    "encode_targets",
    "explicit_split",
    "export_results",
    "fit_logistic_path",
    "logistic_cv",
    "make_folds",
    "plan_probes",
    "predefined_folds",
    "probe_arrays",
    "ridge_cv",
    "run_probes",
    "select_penalty",
    "stratified_folds",
    "summary_table",
    "write_synthetic_store",
]
