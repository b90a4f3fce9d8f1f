"""The core every analysis shares: array backends, folds, targets, streaming statistics."""

from __future__ import annotations

from actstore.core._blocks import ArraySource, CachedSource
from actstore.core._folds import (
    Folds,
    check_folds,
    explicit_split,
    predefined_folds,
    stratified_folds,
)
from actstore.core._gram import accumulate_gram
from actstore.core._moments import PairMoments
from actstore.core._source import ReaderSource
from actstore.core._stats import accumulate_groups
from actstore.core._targets import Targets, encode_targets

__all__ = [
    "ArraySource",
    "CachedSource",
    "Folds",
    "PairMoments",
    "ReaderSource",
    "Targets",
    "accumulate_gram",
    "accumulate_groups",
    "check_folds",
    "encode_targets",
    "explicit_split",
    "predefined_folds",
    "stratified_folds",
]
