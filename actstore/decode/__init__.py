"""Linear decoders (probes): the decoder registry, ridge and logistic solvers, held-out metrics,
the probe driver. (The job plan, ``Job``, ``ProbePlan`` and ``ProbeWarning``, is the core's.)"""

from __future__ import annotations

from actstore.decode._config import ProbeConfig, make_folds
from actstore.decode._decode import DecodeResult, decode, probe_arrays
from actstore.decode._decoders import DECODERS, Decoder, default_decoder, scoring_decoder
from actstore.decode._engine import ProbeInterrupted, run_probes
from actstore.decode._export import check_export_path, export_results, summary_table
from actstore.decode._jobs import plan_probes
from actstore.decode._logistic import DEFAULT_CS, fit_logistic_path, logistic_cv
from actstore.decode._metrics import METRICS, HeldOutScores, select_penalty
from actstore.decode._results import select_result
from actstore.decode._ridge import DEFAULT_ALPHAS, ridge_cv

__all__ = [
    "DECODERS",
    "DEFAULT_ALPHAS",
    "DEFAULT_CS",
    "METRICS",
    "DecodeResult",
    "Decoder",
    "HeldOutScores",
    "ProbeConfig",
    "ProbeInterrupted",
    "check_export_path",
    "decode",
    "default_decoder",
    "export_results",
    "fit_logistic_path",
    "logistic_cv",
    "make_folds",
    "plan_probes",
    "probe_arrays",
    "ridge_cv",
    "run_probes",
    "scoring_decoder",
    "select_penalty",
    "select_result",
    "summary_table",
]
