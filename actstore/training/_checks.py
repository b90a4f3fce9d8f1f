"""Parameter checks shared by datasets and models: one clear line per bad value."""

from __future__ import annotations

from typing import Any

import numpy as np

from actstore._errors import ActstoreError

__all__ = ["check_int", "check_prob"]


def check_int(owner: str, name: str, value: Any, lo: int, hi: int | None = None) -> int:
    """``value`` as an int in ``[lo, hi]``, else :class:`ActstoreError` naming ``owner.name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ActstoreError(f"{owner} parameter {name} must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        span = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ActstoreError(f"{owner} parameter {name}={value} must be {span}")
    return int(value)


def check_prob(owner: str, name: str, value: Any) -> float:
    """``value`` as a probability in ``[0, 1]``, else :class:`ActstoreError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not (
        0.0 <= float(value) <= 1.0
    ):
        raise ActstoreError(
            f"{owner} parameter {name}={value!r} is a probability; give a value in [0, 1]"
        )
    return float(value)
