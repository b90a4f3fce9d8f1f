"""Studies: a sweep to train and the analyses to run on it, end to end, from one TOML file.

The studies shipped with actstore (``builtin_studies()``) reproduce published findings at a
``small`` scale (minutes on two CPU cores) and at the ``paper`` scale.
"""

from __future__ import annotations

from actstore.studies._pipeline import StudyReport, run_study
from actstore.studies._spec import SCALES, STUDY_DIR, Study, builtin_studies, load_study

__all__ = [
    "SCALES",
    "STUDY_DIR",
    "Study",
    "StudyReport",
    "builtin_studies",
    "load_study",
    "run_study",
]
