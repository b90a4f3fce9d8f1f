"""Inputs of the similarity engine: checks of the representations given, and reading one.

Representations are arrays (numpy, torch, cupy, Dask) of shape (n_stimuli, n_units...) or
:class:`~actstore.core._select.LazyRep` read when the engine needs them; all must hold the same
stimuli, and (unless a ``device`` moves them all) come from one array library.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from actstore._errors import ActstoreError
from actstore.core._backend import get_namespace, move_to, to_numpy
from actstore.core._select import LazyRep

__all__ = [
    "array_library",
    "check_idx",
    "check_libraries",
    "check_reps",
    "device_index",
    "load_rep",
    "mixed_error",
    "shapes_of",
]


def check_reps(reps: Any, names: Sequence[str] | None) -> list[Any]:
    """``reps`` as a list of arrays (nested lists become numpy arrays), with as many
    ``names``; anything else is one :class:`ActstoreError`."""
    if hasattr(reps, "shape") and len(reps.shape) == 2:
        raise ActstoreError(
            f"reps is one array of shape {tuple(reps.shape)}; give a list of representations "
            "[X1, X2, ...], each of shape (n_stimuli, n_units)"
        )
    if isinstance(reps, (str, bytes, dict)) or not hasattr(reps, "__iter__"):
        raise ActstoreError(
            f"reps must be a list of arrays of shape (n_stimuli, n_units), not "
            f"{type(reps).__name__}"
        )
    out = [np.asarray(r) if isinstance(r, (list, tuple)) else r for r in reps]
    for i, r in enumerate(out):
        if not hasattr(r, "shape"):
            raise ActstoreError(
                f"representation #{i} is a {type(r).__name__}; give arrays of shape "
                "(n_stimuli, n_units) (numpy, torch, cupy or Dask)"
            )
    if names is not None:
        if isinstance(names, str) or len(names) != len(out):
            raise ActstoreError(
                f"names must be a list of {len(out)} str, one per representation; got "
                f"{names!r}"
            )
    return out


def shapes_of(reps: Sequence[Any], names: Sequence[str] | None) -> tuple[list, list[str]]:
    shapes, labels = [], []
    for i, r in enumerate(reps):
        shape = tuple(r.shape)
        if len(shape) < 2:
            raise ActstoreError(
                f"representation {_name(r, names, i)!r} has shape {shape}; "
                "expected (n_stimuli, n_units)"
            )
        shapes.append((int(shape[0]), int(np.prod(shape[1:]))))
        labels.append(_name(r, names, i))
    if not shapes:
        raise ActstoreError("no representations were given; select at least one")
    n0 = shapes[0][0]
    for (n, _), lab in zip(shapes, labels, strict=True):
        if n != n0:
            raise ActstoreError(
                f"representations {labels[0]!r} ({n0} stimuli) and {lab!r} ({n} stimuli) "
                "were recorded on different stimulus sets; select representations of one probe set"
            )
    return shapes, labels


#: What each array library's arrays are called in messages.
_KIND_WORDS = {"numpy": "numpy arrays", "torch": "torch tensors", "cupy": "cupy arrays"}


def array_library(x: Any) -> str | None:
    """``numpy``, ``torch`` or ``cupy`` for an array (Dask, lists: numpy), None if lazy."""
    from array_api_compat import is_cupy_array, is_torch_array

    if isinstance(x, LazyRep) or (callable(x) and not hasattr(x, "shape")):
        return None
    if is_torch_array(x):
        return "torch"
    if is_cupy_array(x):
        return "cupy"
    return "numpy"


def mixed_error(first: dict[str, int], labels: Sequence[str]) -> ActstoreError:
    def which(i: int) -> str:
        return f"#{i}" if labels[i] == f"#{i}" else f"#{i} {labels[i]!r}"

    parts = [f"{_KIND_WORDS[k]} (first: {which(i)})"
             for k, i in sorted(first.items(), key=lambda kv: kv[1])]
    return ActstoreError(
        f"the representations mix {' and '.join(parts)}; give them all as one kind "
        "(e.g. torch.as_tensor(x) or t.cpu().numpy()), or pass device='numpy', 'torch', "
        "'cuda' or 'cupy' to move them all to one backend"
    )


def check_libraries(reps: Sequence[Any], labels: Sequence[str], device: str | None) -> None:
    """Refuse representations from different array libraries (unless ``device`` moves all).

    Raises
    ------
    ActstoreError
        Naming the first representation of each library.
    """
    if device is not None:
        return
    first: dict[str, int] = {}
    for i, r in enumerate(reps):
        kind = array_library(r)
        if kind is not None:
            first.setdefault(kind, i)
    if len(first) > 1:
        raise mixed_error(first, labels)


def check_idx(idx: Any, n: int) -> np.ndarray | None:
    """A stimulus resample as a 1-D int64 array of ``n`` indices in ``[0, n)``.

    Raises
    ------
    ActstoreError
        ``idx`` that is not 1-D, not of length ``n``, not integers, or out of range.
    """
    if idx is None:
        return None
    arr = to_numpy(idx) if hasattr(idx, "shape") else np.asarray(idx)
    todo = "give one row of actstore.probes.bootstrap_indices(n_stimuli, ...)"
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ActstoreError(
            f"idx must be a 1-D array of {n} stimulus indices (one per stimulus), got shape "
            f"{tuple(arr.shape)}; {todo}"
        )
    if arr.dtype == np.bool_ or arr.dtype.kind not in "iu":
        raise ActstoreError(f"idx must hold integers, got dtype {arr.dtype}; {todo}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= n:
        bad = lo if lo < 0 else hi
        raise ActstoreError(
            f"idx holds {bad}, outside [0, {n}) for {n} stimuli (negative indices are not "
            f"counted from the end); {todo}"
        )
    return arr.astype(np.int64)


def _name(r: Any, names: Sequence[str] | None, i: int) -> str:
    if names is not None:
        return str(names[i])
    return getattr(r, "name", "") or f"#{i}"




def load_rep(rep: Any, device: str | None, idx: np.ndarray | None, name: str) -> Any:
    """Read one representation as a float64 (n, units) array of the chosen backend."""
    arr = rep.load() if isinstance(rep, LazyRep) else rep() if callable(rep) else rep
    if type(arr).__module__.split(".")[0] == "dask":
        arr = arr.compute()  # the engine holds each representation in memory anyway
    if device is not None:
        X = move_to(arr, device, dtype="float64")
    else:
        if not hasattr(arr, "__array_namespace__") and not hasattr(arr, "dtype"):
            arr = np.asarray(arr)
        xp = get_namespace(arr)
        X = xp.astype(xp.asarray(arr), xp.float64) if arr.dtype != xp.float64 else arr
    xp = get_namespace(X)
    X = xp.reshape(X, (X.shape[0], -1))
    if not bool(xp.all(xp.isfinite(X))):
        raise ActstoreError(
            f"representation {name!r} holds NaN or infinite values; "
            "check the run (diverged training?) or leave it out of the selection"
        )
    if idx is not None:
        X = xp.take(X, device_index(idx, X, xp), axis=0)
    return X


def device_index(idx: np.ndarray, like: Any, xp: Any) -> Any:
    from array_api_compat import device

    return xp.asarray(np.asarray(idx, dtype=np.int64), device=device(like))

