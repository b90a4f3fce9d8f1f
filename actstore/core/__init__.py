"""The core every analysis shares: array backends, activations streamed in blocks (from arrays
or the store), folds, targets, streaming statistics, the plan of store-wide jobs and the
selection of representations."""

from __future__ import annotations

from actstore.core._backend import (
    BACKENDS,
    DeviceUnavailableError,
    check_device,
    cupy_available,
    device_of,
    get_namespace,
    gpu_available,
    move_to,
    to_numpy,
)
from actstore.core._blocks import ArraySource, BlockSource, CachedSource
from actstore.core._folds import (
    Folds,
    check_folds,
    explicit_split,
    label_folds,
    predefined_folds,
    stratified_folds,
)
from actstore.core._gram import GramStats, accumulate_gram
from actstore.core._moments import PairMoments
from actstore.core._options import fields_from_options
from actstore.core._plan import Job, ProbePlan, ProbeWarning, plan_jobs
from actstore.core._select import (
    LazyRep,
    RepRef,
    Selection,
    parse_checkpoints,
    select,
    select_many,
    stimulus_subset,
)
from actstore.core._source import ReaderSource
from actstore.core._stats import GroupStats, Moments, accumulate_groups, unit_scale
from actstore.core._targets import FeatureSpec, Targets, encode_targets

__all__ = [
    "BACKENDS",
    "ArraySource",
    "BlockSource",
    "CachedSource",
    "DeviceUnavailableError",
    "FeatureSpec",
    "Folds",
    "GramStats",
    "GroupStats",
    "Job",
    "LazyRep",
    "Moments",
    "PairMoments",
    "ProbePlan",
    "ProbeWarning",
    "ReaderSource",
    "RepRef",
    "Selection",
    "Targets",
    "accumulate_gram",
    "accumulate_groups",
    "check_device",
    "check_folds",
    "cupy_available",
    "device_of",
    "encode_targets",
    "explicit_split",
    "fields_from_options",
    "get_namespace",
    "gpu_available",
    "label_folds",
    "move_to",
    "parse_checkpoints",
    "plan_jobs",
    "predefined_folds",
    "select",
    "select_many",
    "stimulus_subset",
    "stratified_folds",
    "to_numpy",
    "unit_scale",
]
