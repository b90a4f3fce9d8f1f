"""Probe sets: the stimuli activations are recorded on, with one label array per feature."""

from __future__ import annotations

import hashlib
import json
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from actstore._errors import ActstoreError

__all__ = ["ProbeSet", "probe_set_from_npz"]

_RESERVED = {"sample", "inputs", "checkpoint", "status"}


def _plain(a: object) -> np.ndarray:
    """The form an array has after a round trip through the store, so that its hash does too:
    strings as unicode of the longest item's width, numbers in native byte order."""
    arr = np.asarray(a)
    if arr.dtype.kind in "OTU":
        return np.asarray(arr.tolist(), dtype=str)
    if not arr.dtype.isnative:
        return arr.astype(arr.dtype.newbyteorder("="))
    return arr


def _labels(values: object, name: str, feature: str) -> np.ndarray:
    """One feature's labels as :func:`_plain` makes them; labels that are no numbers,
    booleans or strings (Python objects such as dicts, lists or None) are refused."""
    fix = "give one number, boolean or string per sample"
    try:
        arr = np.asarray(values)
    except ValueError:  # ragged nested sequences
        raise ActstoreError(
            f"probe set {name!r}: labels of feature {feature!r} do not form one array (their "
            f"items have different shapes); {fix}"
        ) from None
    if arr.dtype.kind == "O":
        odd = [v for v in arr.ravel() if not isinstance(v, (str, int, float, bool, np.generic))]
        if odd:
            raise ActstoreError(
                f"probe set {name!r}: labels of feature {feature!r} hold Python objects "
                f"({type(odd[0]).__name__}); {fix}"
            )
    return _plain(arr)


def _as_inputs(inputs: object, name: str) -> np.ndarray:
    """``inputs`` as a numeric (or boolean) numpy array of shape (n_samples, ...); a CPU or GPU
    torch tensor is copied to the host. Ragged, object, string and other inputs are refused
    here, before they reach the store or a model."""
    fix = ("give inputs as one numeric (or boolean) array of shape (n_samples, ...), with as "
           "many rows as there are labels (stimuli of different sizes must be resized or "
           "padded to one shape)")
    try:
        if type(inputs).__module__.split(".")[0] == "torch" and hasattr(inputs, "detach"):
            inputs = inputs.detach().cpu().numpy()
        arr = np.asarray(inputs)
    except (ValueError, TypeError, RuntimeError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "inhomogeneous" in why or "sequence" in why:
            why = "its items have different shapes"
        raise ActstoreError(
            f"probe set {name!r}: inputs of type {type(inputs).__name__} do not form one "
            f"array ({why}); {fix}"
        ) from None
    if arr.dtype.kind not in "biufc":
        what = {"O": "Python objects (ragged or mixed items)", "U": "strings",
                "S": "bytes", "T": "strings", "M": "datetimes", "m": "timedeltas",
                "V": "structured records"}.get(arr.dtype.kind, f"dtype {arr.dtype}")
        raise ActstoreError(
            f"probe set {name!r}: inputs hold {what} (dtype {arr.dtype}, shape {arr.shape}); "
            f"{fix}"
        )
    if arr.ndim < 1:
        raise ActstoreError(
            f"probe set {name!r}: inputs are a single value; give an array of "
            "shape (n_samples, ...)"
        )
    return arr


def _json_attrs(attrs: dict[str, Any], name: str) -> dict[str, Any]:
    """``attrs`` as JSON values (numpy scalars and arrays become numbers and lists), so that
    they can be stored; anything else that JSON cannot hold is refused before any write."""

    def plain(o: Any) -> Any:
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, np.generic):
            return o.item()
        raise TypeError(type(o).__name__)

    try:
        return dict(json.loads(json.dumps(attrs, default=plain)))
    except (TypeError, ValueError) as e:
        raise ActstoreError(
            f"probe set {name!r}: attrs must be JSON-serialisable (str, numbers, lists, dicts); "
            f"a value of type {e} is not"
        ) from None


@dataclass(repr=False)
class ProbeSet:
    """A named set of stimuli and their feature labels.

    Parameters
    ----------
    name : str
        Name under ``/probe_sets`` (letters, digits, ``_``, ``-``, ``.``).
    labels : dict of str to array of shape (n,)
        One label array per feature (integer classes or continuous values).
    inputs : array of shape (n, ...), optional
        The stimuli themselves, fed to the model in batches along axis 0.
    sample : array of shape (n,), optional
        Stable sample ids (default ``arange(n)``).
    attrs : dict, optional
        JSON-serialisable description: generator name and parameters.

    Raises
    ------
    ActstoreError
        A name that is no usable store path, labels that are no dict of str to 1-D arrays of
        one length, inputs that are no numeric (or boolean) array of shape (n, ...) (ragged,
        object or string inputs), inputs or sample ids that disagree with the labels, or
        duplicate sample ids.

    Examples
    --------
    >>> ps = ProbeSet("stim", labels={"color": [0, 1, 2, 0]})
    >>> ps.n, ps.features
    (4, ['color'])
    """

    name: str
    labels: dict[str, np.ndarray]
    inputs: np.ndarray | None = None
    sample: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from actstore.store._attrs import check_name

        check_name(self.name, "probe set name", "'stim'")
        if not isinstance(self.labels, Mapping):
            raise ActstoreError(
                f"probe set {self.name!r}: labels must be a dict of feature name -> array of "
                f"shape (n,), not {type(self.labels).__name__}; e.g. labels={{'color': colors}}"
            )
        bad = [k for k in self.labels if not isinstance(k, str)]
        if bad:
            raise ActstoreError(
                f"probe set {self.name!r}: feature names must be str, got {bad[0]!r}"
            )
        if not isinstance(self.attrs, dict):
            raise ActstoreError(
                f"probe set {self.name!r}: attrs must be a dict (JSON-serialisable), not "
                f"{type(self.attrs).__name__}"
            )
        self.attrs = _json_attrs(self.attrs, self.name)
        self.labels = {k: _labels(v, self.name, k) for k, v in self.labels.items()}
        n = None
        if self.inputs is not None:
            self.inputs = _as_inputs(self.inputs, self.name)
            if not self.inputs.dtype.isnative:
                self.inputs = self.inputs.astype(self.inputs.dtype.newbyteorder("="))
            n = len(self.inputs)
        if self.sample is None:
            if n is None:
                lens = {len(v) if v.ndim else -1 for v in self.labels.values()}
                n = lens.pop() if len(lens) == 1 and -1 not in lens else None
            if n is None:
                raise ActstoreError(
                    f"probe set {self.name!r}: give inputs or sample ids (the label arrays "
                    "alone do not agree on a sample count)"
                )
            self.sample = np.arange(n, dtype=np.int64)
        self.sample = _plain(self.sample)
        if self.sample.ndim != 1:
            raise ActstoreError(
                f"probe set {self.name!r}: sample ids have shape {self.sample.shape}; give one "
                "id per sample (a 1-D array)"
            )
        n = len(self.sample)
        if n == 0:
            raise ActstoreError(
                f"probe set {self.name!r} has no samples; give at least one stimulus"
            )
        if self.inputs is not None and len(self.inputs) != n:
            raise ActstoreError(
                f"probe set {self.name!r}: {len(self.inputs)} inputs but {n} sample ids; "
                "they must agree"
            )
        if len(np.unique(self.sample)) != n:
            raise ActstoreError(f"probe set {self.name!r}: sample ids are not unique")
        for k, v in self.labels.items():
            if k in _RESERVED or not k.replace("_", "").isalnum():
                raise ActstoreError(
                    f"probe set {self.name!r}: feature name {k!r} is reserved or not a plain "
                    "identifier; rename it"
                )
            if v.ndim != 1 or len(v) != n:
                raise ActstoreError(
                    f"probe set {self.name!r}: labels of feature {k!r} have shape {v.shape}, "
                    f"but there are {n} samples; give one label per sample"
                )

    def __repr__(self) -> str:
        inputs = "None" if self.inputs is None else (
            f"{self.inputs.dtype}{list(self.inputs.shape)}")
        return (f"ProbeSet({self.name!r}, n={self.n}, features={self.features}, "
                f"inputs={inputs})")

    @property
    def n(self) -> int:
        """Number of samples."""
        assert self.sample is not None
        return len(self.sample)

    @property
    def features(self) -> list[str]:
        """Feature names, in insertion order."""
        return list(self.labels)

    @property
    def hash(self) -> str:
        """sha256 over sample ids, labels (names, dtypes, bytes) and inputs."""
        h = hashlib.sha256()
        assert self.sample is not None
        for name, arr in [("sample", self.sample), *sorted(self.labels.items())]:
            h.update(name.encode())
            h.update(str(arr.dtype).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        if self.inputs is not None:
            h.update(b"inputs" + str(self.inputs.dtype).encode() + str(self.inputs.shape).encode())
            h.update(np.ascontiguousarray(self.inputs).tobytes())
        return h.hexdigest()

    def subset(self, index: np.ndarray, name: str | None = None) -> ProbeSet:
        """A new probe set of the samples at ``index`` (integer positions or a boolean mask
        of shape (n,)), named ``name`` (default: the same name).

        Raises
        ------
        ActstoreError
            If ``index`` is out of range, or a mask of another length.
        """
        assert self.sample is not None
        idx = np.asarray(index)
        if idx.dtype == bool:
            if idx.shape != (self.n,):
                raise ActstoreError(
                    f"probe set {self.name!r}: a boolean index must have shape ({self.n},), "
                    f"got {idx.shape}"
                )
        elif idx.dtype.kind not in "iu" or (idx.size and not (
                -self.n <= idx.min() and idx.max() < self.n)):
            raise ActstoreError(
                f"probe set {self.name!r}: index must be integer positions in [0, {self.n}) "
                "or a boolean mask"
            )
        index = idx
        return ProbeSet(
            name=name or self.name,
            labels={k: v[index] for k, v in self.labels.items()},
            inputs=None if self.inputs is None else self.inputs[index],
            sample=self.sample[index],
            attrs=dict(self.attrs),
        )


def _read_npz(p: Path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file; a file numpy cannot read as one (empty, truncated, not
    a zip archive, a single ``.npy`` array, object arrays) is one error naming the file."""
    fix = ("give an .npz file written by numpy.savez with 'inputs' and one 1-D array of "
           "labels per feature")

    def refuse(e: BaseException, key: str | None = None) -> ActstoreError:
        from actstore.store._store import first_line

        if isinstance(e, ValueError) and "Object arrays" in str(e):
            return ActstoreError(
                f"probe set file {p}: array {key!r} holds Python objects (dtype object), "
                "which are not loaded (that would unpickle them); save it as numbers or "
                "strings, e.g. numpy.asarray(values, dtype=str)"
            )
        what = "it is empty" if p.stat().st_size == 0 else first_line(e)
        where = f"array {key!r} of " if key is not None else ""
        return ActstoreError(f"cannot read {where}probe set file {p} ({what}); {fix}")

    unreadable = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)
    try:
        z = np.load(p, allow_pickle=False)
    except unreadable as e:
        raise refuse(e) from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ActstoreError(f"probe set file {p} holds a single array, not named arrays; {fix}")
    out: dict[str, np.ndarray] = {}
    with z:
        for key in z.files:
            try:
                out[key] = z[key]
            except unreadable as e:
                raise refuse(e, key) from None
    return out


def probe_set_from_npz(path: str | Path, name: str | None = None) -> ProbeSet:
    """A probe set from an ``.npz`` file: ``inputs``, optional ``sample``, one 1-D array per
    feature (every other array of length n), named after the file unless ``name`` is given.

    Raises
    ------
    ActstoreError
        If the file is missing or is no readable ``.npz`` file of plain arrays, has no
        ``inputs``, or its arrays do not make a probe set (see :class:`ProbeSet`).
    """
    p = Path(path)
    if not p.is_file():
        raise ActstoreError(f"probe set file {p} does not exist")
    arrays = _read_npz(p)
    if "inputs" not in arrays:
        raise ActstoreError(f"probe set file {p} has no 'inputs' array (has {list(arrays)})")
    inputs = arrays.pop("inputs")
    sample = arrays.pop("sample", None)
    n = len(inputs) if inputs.ndim else 0
    for k, v in arrays.items():
        if v.ndim != 1 or len(v) != n:
            raise ActstoreError(
                f"probe set file {p}: labels {k!r} have shape {v.shape} but there are {n} "
                "inputs; give one label per input"
            )
    return ProbeSet(name=name or p.stem, labels=arrays, inputs=inputs, sample=sample,
                    attrs={"generator": "npz", "source": p.name})
