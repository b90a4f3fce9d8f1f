"""The core every analysis shares: array backends, folds, targets, streaming statistics."""

from __future__ import annotations

from actstore.core._folds import (
    Folds,
    check_folds,
    explicit_split,
    predefined_folds,
    stratified_folds,
)
from actstore.core._moments import PairMoments
from actstore.core._stats import ArraySource, CachedSource, accumulate_gram, accumulate_groups
from actstore.core._targets import Targets, encode_targets

__all__ = [
    "ArraySource",
    "CachedSource",
    "Folds",
    "PairMoments",
    "Targets",
    "accumulate_gram",
    "accumulate_groups",
    "check_folds",
    "encode_targets",
    "explicit_split",
    "predefined_folds",
    "stratified_folds",
]
