"""Analyses computed from a store, under one import: decoders (probes), similarity,
alignment, feature measures and reports. Each lives in its own subpackage
(actstore.decode, .similarity, .alignment, .features, .report, .core); this module
re-exports their public names so that `actstore.probes.<name>` keeps working."""

from __future__ import annotations

import actstore.alignment as _alignment
import actstore.core as _core
import actstore.decode as _decode
import actstore.features as _features
import actstore.report as _report
import actstore.similarity as _similarity
import actstore.testing as _testing
from actstore.alignment import *  # noqa: F403
from actstore.core import *  # noqa: F403
from actstore.decode import *  # noqa: F403
from actstore.features import *  # noqa: F403
from actstore.report import *  # noqa: F403
from actstore.similarity import *  # noqa: F403
from actstore.testing import *  # noqa: F403

__all__ = [
    *_core.__all__, *_decode.__all__, *_similarity.__all__, *_alignment.__all__,
    *_features.__all__, *_report.__all__, *_testing.__all__,
]
