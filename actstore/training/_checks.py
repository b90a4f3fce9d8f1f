"""Parameter checks shared by datasets and models: one clear line per bad value."""

from __future__ import annotations

from typing import Any

import numpy as np

from actstore._errors import ActstoreError

__all__ = ["check_int", "check_prob", "check_table_keys"]


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


def check_table_keys(table: Any, valid: tuple[str, ...] | list[str], where: str) -> dict[str, Any]:
    """``table`` itself if it is a dict with no key outside ``valid``; otherwise one
    :class:`ActstoreError` naming ``where``, the unknown keys and the valid ones."""
    if not isinstance(table, dict):
        raise ActstoreError(f"{where} must be a table, got {table!r}")
    unknown = sorted(set(table) - set(valid))
    if unknown:
        raise ActstoreError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} in {where}; "
            f"valid keys: {', '.join(valid)}"
        )
    return table
