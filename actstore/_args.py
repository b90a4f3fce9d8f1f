"""Checks of public arguments: a value of the wrong kind is one :class:`ActstoreError` that
names the argument and says what to give, not an error from deep inside."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import numpy as np

from actstore._errors import ActstoreError

__all__ = [
    "as_array",
    "as_mapping",
    "as_names",
    "check_seed",
    "check_text",
    "instance_or_default",
    "whole_number",
]

T = TypeVar("T")


def _kind(value: Any) -> str:
    return type(value).__name__


def check_text(value: Any, what: str, hint: str = "") -> str:
    """``value`` if it is a str, else an error naming ``what``."""
    if not isinstance(value, str):
        raise ActstoreError(
            f"{what} must be a str, not {_kind(value)} {value!r}" + (f"; {hint}" if hint else "")
        )
    return value


def instance_or_default(value: Any, cls: type[T], what: str, example: str) -> T:
    """``value`` if it is a ``cls``, ``cls()`` for ``None``; anything else (a dict of
    settings, old keyword arguments) is an error naming ``what`` with an ``example``."""
    if value is None:
        return cls()
    if not isinstance(value, cls):
        name = cls.__name__
        article = "an" if name[0] in "AEIOU" else "a"
        raise ActstoreError(f"{what} must be {article} {name}, not {_kind(value)}; e.g. {example}")
    return value


def as_mapping(value: Any, what: str, hint: str) -> dict[Any, Any]:
    """A dict copy of a mapping; anything else is an error naming ``what``."""
    if not isinstance(value, Mapping):
        raise ActstoreError(f"{what} must be a dict, not {_kind(value)}; {hint}")
    return dict(value)


def as_names(value: Any, what: str, allow_empty: bool = False) -> list[str]:
    """A list of str from a list, tuple or 1-D array of str (one str: a list of one).

    Raises
    ------
    ActstoreError
        For another type, an item that is no str, or (without ``allow_empty``) no names.
    """
    if isinstance(value, str):
        return [value]
    if isinstance(value, np.ndarray):
        value = value.tolist() if value.ndim == 1 else None
    if not isinstance(value, (list, tuple)):
        raise ActstoreError(f"{what} must be a list of str, not {_kind(value)}")
    bad = [v for v in value if not isinstance(v, str)]
    if bad:
        raise ActstoreError(f"{what} must be a list of str; {bad[0]!r} is a {_kind(bad[0])}")
    if not value and not allow_empty:
        raise ActstoreError(f"{what} is empty; give at least one name (or None for all)")
    return list(value)


def whole_number(value: Any, what: str, minimum: int = 0) -> int:
    """An int >= ``minimum`` from an int or a numpy integer (not a bool, float or str)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < minimum:
        raise ActstoreError(f"{what} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def as_array(value: Any, what: str) -> Any:
    """Arrays (numpy, torch, cupy: anything with a ``shape``) as they are; lists and tuples
    as numpy arrays; anything else is an error naming ``what``."""
    if hasattr(value, "shape"):
        return value
    if isinstance(value, (list, tuple)):
        return np.asarray(value)
    raise ActstoreError(
        f"{what} must be an array of shape (n_samples, n_units) (numpy, torch or cupy), "
        f"not {_kind(value)}"
    )


def check_seed(seed: Any, what: str = "seed") -> int:
    """A random seed numpy can use: an int >= 0 (numpy integers too, not a bool or a float)."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ActstoreError(f"the {what} must be an integer >= 0, got {seed!r}; give e.g. 0")
    return int(seed)
