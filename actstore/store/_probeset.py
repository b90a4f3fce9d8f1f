"""Probe sets: the stimuli activations are recorded on, with one label array per feature.

A probe set's stimuli are one array (``inputs``, fed to the model as its one positional
argument) or several named arrays of the same first dimension (``input_ids``,
``attention_mask``, ``pixel_values``, ...), fed to the model as keyword arguments::

    ps = ProbeSet("s", labels={"y": y}, inputs=x)                       # one array
    ps = ProbeSet("s", labels={"y": y},
                  inputs={"input_ids": ids, "attention_mask": mask})    # named arrays
    ps.inputs        # the array, or a dict of name -> array (None: no stimuli stored)
    ps.is_mapping    # True for named arrays
    ps.input_names   # ("inputs",) for one array, ("input_ids", "attention_mask") for named
    ps.batch(0, 32)  # rows 0:32: an array, or a dict of name -> rows
    ps.mask          # the "attention_mask" array (n, tokens), or None

In a store, one array is ``/probe_sets/<name>/inputs``; named arrays are
``/probe_sets/<name>/inputs.<input name>``, their names in order in the attribute
``actstore.inputs`` (see docs/FORMAT.md). In an ``.npz`` file the same names are used:
``inputs``, or ``inputs.<input name>`` arrays.
"""

from __future__ import annotations

import hashlib
import json
import keyword
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from actstore._errors import ActstoreError

__all__ = ["INPUTS", "MASK", "ProbeSet", "probe_set_from_arrays", "probe_set_from_npz",
           "split_arrays"]

_RESERVED = {"sample", "inputs", "checkpoint", "status"}

#: the name of a probe set's one input array, and the prefix of its named ones
#: (``inputs.input_ids``) in a store and in an ``.npz`` file
INPUTS = "inputs"
#: the named input that marks a sequence's valid tokens (1) and its padding (0)
MASK = "attention_mask"


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


def _as_inputs(inputs: object, name: str, what: str = "inputs") -> np.ndarray:
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
            f"probe set {name!r}: {what} of type {type(inputs).__name__} do not form one "
            f"array ({why}); {fix}"
        ) from None
    if arr.dtype.kind not in "biufc":
        label = what
        kind = {"O": "Python objects (ragged or mixed items)", "U": "strings",
                "S": "bytes", "T": "strings", "M": "datetimes", "m": "timedeltas",
                "V": "structured records"}.get(arr.dtype.kind, f"dtype {arr.dtype}")
        raise ActstoreError(
            f"probe set {name!r}: {label} hold {kind} (dtype {arr.dtype}, shape {arr.shape}); "
            f"{fix}"
        )
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.ndim < 1:
        raise ActstoreError(
            f"probe set {name!r}: {what} are a single value; give an array of "
            "shape (n_samples, ...)"
        )
    return arr


def _check_input_name(key: object, name: str) -> str:
    """A named input's name: a Python identifier (it becomes a keyword argument)."""
    if not isinstance(key, str) or not key.isidentifier() or keyword.iskeyword(key):
        raise ActstoreError(
            f"probe set {name!r}: input name {key!r} is no Python identifier; name each input "
            "after the model's keyword argument it is passed as (input_ids, attention_mask, "
            "pixel_values, ...)"
        )
    return key


def _named_inputs(inputs: Mapping[Any, Any], name: str) -> dict[str, np.ndarray]:
    """Named inputs as numeric arrays of one first dimension; an ``attention_mask`` must be
    (n, tokens) of 0 and 1."""
    if not inputs:
        raise ActstoreError(
            f"probe set {name!r}: inputs is an empty dict; give at least one named array, or "
            "inputs=None for a probe set without stimuli"
        )
    out = {_check_input_name(k, name): _as_inputs(v, name, f"input {k!r}")
           for k, v in inputs.items()}
    lens = {k: len(v) for k, v in out.items()}
    if len(set(lens.values())) > 1:
        raise ActstoreError(
            f"probe set {name!r}: named inputs have different numbers of rows "
            f"({', '.join(f'{k}: {n}' for k, n in lens.items())}); give one row per sample in "
            "each"
        )
    mask = out.get(MASK)
    if mask is not None:
        if mask.ndim != 2:
            raise ActstoreError(
                f"probe set {name!r}: input {MASK!r} has shape {mask.shape}; give one row of "
                "0/1 per sample, shape (n_samples, tokens)"
            )
        if mask.dtype.kind not in "biu" or not np.isin(mask, (0, 1)).all():
            raise ActstoreError(
                f"probe set {name!r}: input {MASK!r} holds values other than 0 and 1 (dtype "
                f"{mask.dtype}); give 1 for each valid token and 0 for padding"
            )
    return out


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
    inputs : array of shape (n, ...), or dict of str to array of shape (n, ...), optional
        The stimuli themselves, fed to the model in batches along axis 0: one array as the
        model's positional argument, or named arrays (``input_ids``, ``attention_mask``,
        ...) as keyword arguments. An ``attention_mask`` must be of shape (n, tokens), 1 for
        a valid token and 0 for padding (see :attr:`mask`).
    sample : array of shape (n,), optional
        Stable sample ids (default ``arange(n)``).
    attrs : dict, optional
        JSON-serialisable description: generator name and parameters.

    Raises
    ------
    ActstoreError
        A name that is no usable store path, labels that are no dict of str to 1-D arrays of
        one length, inputs that are no numeric (or boolean) array of shape (n, ...) (ragged,
        object or string inputs), named inputs whose names are no identifiers or whose
        lengths differ, an ``attention_mask`` that is no (n, tokens) array of 0 and 1, inputs
        or sample ids that disagree with the labels, or duplicate sample ids.

    Examples
    --------
    >>> ps = ProbeSet("stim", labels={"color": [0, 1, 2, 0]})
    >>> ps.n, ps.features
    (4, ['color'])
    >>> ps = ProbeSet("text", labels={"y": [0, 1]},
    ...               inputs={"input_ids": [[5, 6, 0], [7, 8, 9]],
    ...                       "attention_mask": [[1, 1, 0], [1, 1, 1]]})
    >>> ps.input_names, ps.batch(1, 2)["input_ids"].tolist(), ps.mask.sum(axis=1).tolist()
    (('input_ids', 'attention_mask'), [[7, 8, 9]], [2, 3])
    """

    name: str
    labels: dict[str, np.ndarray]
    inputs: np.ndarray | dict[str, np.ndarray] | None = None
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
        if isinstance(self.inputs, Mapping):
            self.inputs = _named_inputs(self.inputs, self.name)
        elif self.inputs is not None:
            self.inputs = _as_inputs(self.inputs, self.name)
        if self.inputs is not None:
            n = self._rows
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
        if self.inputs is not None and self._rows != n:
            raise ActstoreError(
                f"probe set {self.name!r}: {self._rows} inputs but {n} sample ids; "
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
        if isinstance(self.inputs, dict):
            inputs = "{" + ", ".join(f"{k}: {v.dtype}{list(v.shape)}"
                                     for k, v in self.inputs.items()) + "}"
        else:
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
    def _rows(self) -> int:
        if isinstance(self.inputs, dict):
            return len(next(iter(self.inputs.values())))
        return 0 if self.inputs is None else len(self.inputs)

    @property
    def is_mapping(self) -> bool:
        """Whether the inputs are named arrays, passed to the model as keyword arguments."""
        return isinstance(self.inputs, dict)

    @property
    def input_names(self) -> tuple[str, ...]:
        """Names of the input arrays: ``("inputs",)`` for one array, the keyword names of
        named ones in order, ``()`` without stimuli."""
        if isinstance(self.inputs, dict):
            return tuple(self.inputs)
        return () if self.inputs is None else (INPUTS,)

    @property
    def input_arrays(self) -> dict[str, np.ndarray]:
        """Every input array by the name it has in a store: ``inputs``, or
        ``inputs.<name>`` for named inputs (``{}`` without stimuli)."""
        if isinstance(self.inputs, dict):
            return {f"{INPUTS}.{k}": v for k, v in self.inputs.items()}
        return {} if self.inputs is None else {INPUTS: self.inputs}

    @property
    def mask(self) -> np.ndarray | None:
        """The ``attention_mask`` input, shape (n, tokens), 1 for each valid token and 0 for
        padding; ``None`` when the probe set has none."""
        return self.inputs.get(MASK) if isinstance(self.inputs, dict) else None

    def batch(self, start: int, stop: int) -> np.ndarray | dict[str, np.ndarray]:
        """Rows ``start:stop`` of the inputs: an array, or a dict of name -> rows for named
        inputs.

        Raises
        ------
        ActstoreError
            If the probe set holds no inputs.
        """
        if self.inputs is None:
            raise ActstoreError(
                f"probe set {self.name!r} has no inputs stored; feeding a model needs the "
                "stimuli"
            )
        if isinstance(self.inputs, dict):
            return {k: v[start:stop] for k, v in self.inputs.items()}
        return self.inputs[start:stop]

    @property
    def hash(self) -> str:
        """sha256 over sample ids, labels (names, dtypes, bytes) and inputs (named ones in
        name order)."""
        h = hashlib.sha256()
        assert self.sample is not None
        for name, arr in [("sample", self.sample), *sorted(self.labels.items())]:
            h.update(name.encode())
            h.update(str(arr.dtype).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        for key, arr in sorted(self.input_arrays.items()):
            h.update(key.encode() + str(arr.dtype).encode() + str(arr.shape).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
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
            inputs=(None if self.inputs is None else
                    {k: v[index] for k, v in self.inputs.items()}
                    if isinstance(self.inputs, dict) else self.inputs[index]),
            sample=self.sample[index],
            attrs=dict(self.attrs),
        )


def _read_npz(p: Path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file; a file numpy cannot read as one (empty, truncated, not
    a zip archive, a single ``.npy`` array, object arrays) is one error naming the file."""
    fix = ("give an .npz file written by numpy.savez with 'inputs' (or named 'inputs.<name>' "
           "arrays) and one 1-D array of labels per feature")

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


def split_arrays(arrays: Mapping[str, np.ndarray]) -> tuple[
        dict[str, np.ndarray], np.ndarray | dict[str, np.ndarray] | None, np.ndarray | None]:
    """``(labels, inputs, sample)`` from arrays named as in a store or an ``.npz`` file:
    ``sample``, ``inputs`` or ``inputs.<name>`` (named inputs, in the given order), and one
    label array per feature (every other name)."""
    labels: dict[str, np.ndarray] = {}
    named: dict[str, np.ndarray] = {}
    one = None
    for k, v in arrays.items():
        if k == INPUTS:
            one = v
        elif k.startswith(INPUTS + "."):
            named[k[len(INPUTS) + 1:]] = v
        elif k != "sample":
            labels[k] = v
    inputs = named if named else one
    return labels, inputs, arrays.get("sample")


def probe_set_from_arrays(name: str, arrays: Mapping[str, np.ndarray],
                          attrs: dict[str, Any] | None = None) -> ProbeSet:
    """A probe set from arrays named as in a store (see :func:`split_arrays`)."""
    labels, inputs, sample = split_arrays(arrays)
    return ProbeSet(name=name, labels=labels, inputs=inputs, sample=sample, attrs=attrs or {})


def probe_set_from_npz(path: str | Path, name: str | None = None) -> ProbeSet:
    """A probe set from an ``.npz`` file: ``inputs`` (one array, the model's positional
    argument) or ``inputs.<name>`` arrays (named inputs, passed as keyword arguments, e.g.
    ``inputs.input_ids`` and ``inputs.attention_mask``), optional ``sample``, and one 1-D
    array per feature (every other array of length n), named after the file unless ``name``
    is given.

    Raises
    ------
    ActstoreError
        If the file is missing or is no readable ``.npz`` file of plain arrays, has neither
        ``inputs`` nor ``inputs.<name>`` arrays, or both, or its arrays do not make a probe
        set (see :class:`ProbeSet`).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "sentences.npz")
    >>> np.savez(f, **{"inputs.input_ids": np.array([[2, 5, 3], [2, 3, 0]]),
    ...                "inputs.attention_mask": np.array([[1, 1, 1], [1, 1, 0]]),
    ...                "length": np.array([1, 0])})
    >>> probe_set_from_npz(f).input_names
    ('input_ids', 'attention_mask')
    """
    p = Path(path)
    if not p.is_file():
        raise ActstoreError(f"probe set file {p} does not exist")
    arrays = _read_npz(p)
    named = [k for k in arrays if k.startswith(INPUTS + ".")]
    if INPUTS in arrays and named:
        raise ActstoreError(
            f"probe set file {p} has both an 'inputs' array and named inputs ({named}); give "
            "one array 'inputs' or named arrays 'inputs.<name>', not both"
        )
    if INPUTS not in arrays and not named:
        raise ActstoreError(
            f"probe set file {p} has no 'inputs' array and no named 'inputs.<name>' arrays "
            f"(has {list(arrays)})"
        )
    labels, inputs, sample = split_arrays(arrays)
    first = next(iter(inputs.values())) if isinstance(inputs, dict) else inputs
    assert first is not None
    n = len(first) if first.ndim else 0
    for k, v in labels.items():
        if v.ndim != 1 or len(v) != n:
            raise ActstoreError(
                f"probe set file {p}: labels {k!r} have shape {v.shape} but there are {n} "
                "inputs; give one label per input"
            )
    return ProbeSet(name=name or p.stem, labels=labels, inputs=inputs, sample=sample,
                    attrs={"generator": "npz", "source": p.name})
