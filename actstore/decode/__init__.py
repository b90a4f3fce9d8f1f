"""Linear decoders (probes): ridge and logistic solvers, held-out metrics, the probe driver."""

from __future__ import annotations

from actstore.decode._decode import (
    DECODERS,
    DecodeResult,
    ProbeConfig,
    decode,
    make_folds,
    probe_arrays,
)
from actstore.decode._engine import (
    Job,
    ProbeInterrupted,
    ProbePlan,
    ProbeWarning,
    export_results,
    plan_probes,
    run_probes,
    select_result,
    summary_table,
)
from actstore.decode._logistic import DEFAULT_CS, fit_logistic_path, logistic_cv
from actstore.decode._metrics import METRICS, HeldOutScores, select_penalty
from actstore.decode._ridge import DEFAULT_ALPHAS, ridge_cv

__all__ = [
    "DECODERS",
    "DEFAULT_ALPHAS",
    "DEFAULT_CS",
    "METRICS",
    "DecodeResult",
    "HeldOutScores",
    "Job",
    "ProbeConfig",
    "ProbeInterrupted",
    "ProbePlan",
    "ProbeWarning",
    "decode",
    "export_results",
    "fit_logistic_path",
    "logistic_cv",
    "make_folds",
    "plan_probes",
    "probe_arrays",
    "ridge_cv",
    "run_probes",
    "select_penalty",
    "select_result",
    "summary_table",
]
