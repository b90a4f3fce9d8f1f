"""Studies: a sweep to train and the analyses to run on it, end to end, from one TOML file.

The studies shipped with actstore (``builtin_studies()``) reproduce published findings at a
``small`` scale (minutes on two CPU cores) and at the ``paper`` scale; each study's paper's
claims are measured on its results into a findings table (``actstore.studies.claims``).
"""

from __future__ import annotations

from actstore.studies._findings import (
    Claim,
    Measure,
    Results,
    Untestable,
    evaluate_claims,
    findings_dataset,
    findings_rows,
    write_findings,
)
from actstore.studies._pipeline import StudyReport, run_study
from actstore.studies._plan import describe_study, estimate_cost, study_settings
from actstore.studies._spec import SCALES, STUDY_DIR, Study, builtin_studies, load_study

__all__ = [
    "SCALES",
    "STUDY_DIR",
    "Claim",
    "Measure",
    "Results",
    "Study",
    "StudyReport",
    "Untestable",
    "builtin_studies",
    "describe_study",
    "estimate_cost",
    "evaluate_claims",
    "findings_dataset",
    "findings_rows",
    "load_study",
    "run_study",
    "study_settings",
    "write_findings",
]
