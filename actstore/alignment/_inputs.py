"""Checks of the public arguments of the alignment functions: arrays of samples, similarity
matrices, numbers; each refusal is one :class:`ActstoreError` naming the argument."""

from __future__ import annotations

from typing import Any

import numpy as np

from actstore._args import as_array
from actstore._errors import ActstoreError
from actstore.core._backend import to_numpy

__all__ = [
    "DATA_HINT",
    "check_bins",
    "check_finite",
    "host_array",
    "sample_array",
    "similarity_input",
]


def host_array(value: Any, what: str, shape_hint: str) -> np.ndarray:
    """A numpy array of real numbers from a numpy / torch / cupy array, a list or a tuple
    (numeric dtypes are kept as they are, so valid input gives the same numbers)."""
    if value is None or isinstance(value, (str, bytes)) or not (
            hasattr(value, "shape") or isinstance(value, (list, tuple))):
        raise ActstoreError(
            f"{what} must be an array of shape {shape_hint} (numpy, torch, cupy or a nested "
            f"list), not {type(value).__name__}"
        )
    try:
        a = np.asarray(to_numpy(as_array(value, what)))
        if a.dtype.kind == "c":
            raise TypeError("complex values")
        if a.dtype.kind not in "biuf":
            a = a.astype(np.float64)
    except (TypeError, ValueError) as e:
        if isinstance(e, ActstoreError):
            raise
        raise ActstoreError(
            f"{what} must hold real numbers in an array of shape {shape_hint} ({e}); "
            "give a numeric array with rows of equal length"
        ) from None
    return a


def check_finite(a: np.ndarray, what: str, hint: str) -> None:
    """One error that counts the NaN and infinite values of ``a`` and says where the first is."""
    if a.dtype.kind != "f":
        return
    bad = ~np.isfinite(a)
    if bad.any():
        nan = int(np.isnan(a).sum())
        inf = int(bad.sum()) - nan
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ActstoreError(
            f"{what} holds {nan} NaN and {inf} infinite value(s) of {a.size} (the first at "
            f"index {first}); {hint}"
        )


DATA_HINT = (
    "drop or repair those samples or units first (a diverged run? a missing value?), "
    "e.g. keep = np.isfinite(x).all(axis=1)"
)


def sample_array(value: Any, what: str, min_rows: int = 1) -> np.ndarray:
    """A finite 2-D (n_samples, n_units) array with at least ``min_rows`` rows and one unit."""
    a = host_array(value, what, "(n_samples, n_units)")
    if a.ndim != 2:
        raise ActstoreError(
            f"{what} must be a 2-D array of shape (n_samples, n_units), got shape {a.shape}; "
            "for one unit use x[:, None], for conv maps x.reshape(len(x), -1)"
        )
    if a.shape[1] < 1:
        raise ActstoreError(f"{what} has no units (shape {a.shape}); give at least one column")
    if a.shape[0] < min_rows:
        raise ActstoreError(
            f"{what} has {a.shape[0]} sample(s) (shape {a.shape}); at least {min_rows} are "
            "needed (rows are samples, columns units)"
        )
    check_finite(a, what, DATA_HINT)
    return a


def similarity_input(C: Any, what: str) -> np.ndarray:
    """A finite, non-empty 2-D (da, db) similarity matrix."""
    a = host_array(C, what, "(da, db)")
    if a.ndim != 2:
        raise ActstoreError(
            f"{what} must be a 2-D similarity matrix of shape (da, db) (rows: units of net A, "
            f"columns: units of net B), got shape {a.shape}"
        )
    if a.size == 0:
        raise ActstoreError(
            f"{what} is empty (shape {a.shape}); both nets need at least one unit"
        )
    check_finite(a, what, "set the similarities of constant units to 0 (as "
                  "correlations_from_moments does) or leave those units out")
    return a


def _real(value: Any, what: str, minimum: float, hint: str, strict: bool = False) -> float:
    """A finite real number >= ``minimum`` (> with ``strict``)."""
    ok = not isinstance(value, (bool, np.bool_)) and isinstance(
        value, (int, float, np.integer, np.floating))
    if ok:
        v = float(value)
        ok = bool(np.isfinite(v)) and (v > minimum if strict else v >= minimum)
    if not ok:
        raise ActstoreError(
            f"{what} must be a finite number {'>' if strict else '>='} {minimum:g}, got "
            f"{value!r}; {hint}"
        )
    return float(value)


def check_bins(bins: Any, zero_tol: Any) -> int:
    if isinstance(bins, (bool, np.bool_)) or not isinstance(bins, (int, np.integer)) \
            or bins < 3:
        raise ActstoreError(
            f"bins must be a whole number >= 3 (mutual information needs at least 3 bins: the "
            f"zero bin and two or more quantile bins), got {bins!r}; the default is 10"
        )
    _real(zero_tol, "zero_tol", 0.0, "the relative tolerance of the zero bin, e.g. 1e-6")
    return int(bins)
