"""Decoding targets: all features of a probe set as one float64 target matrix.

Categorical features become one-hot column blocks (coded -1/+1, scikit-learn's
``RidgeClassifier`` convention; ridge predictions are affine-equivariant in the targets, so
argmax and R^2 are the same as with 0/1 coding). Continuous features become one standardised
column. One ridge solve then serves every feature at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from actstore._args import as_mapping
from actstore._errors import ActstoreError
from actstore.core._folds import label_classes
from actstore.core._reprs import short_list

__all__ = ["FeatureSpec", "Targets", "encode_targets", "infer_kind"]


@dataclass(frozen=True)
class FeatureSpec:
    """One feature's place in the target matrix.

    Attributes
    ----------
    name : str
    kind : {"categorical", "continuous"}
    start, stop : int
        Its columns ``Y[:, start:stop]`` (one per class, or one for a continuous feature).
    classes : ndarray or None
        Sorted distinct labels (categorical only).
    """

    name: str
    kind: str
    start: int
    stop: int
    classes: np.ndarray | None = None

    @property
    def n_classes(self) -> int:
        """Number of classes (0 for a continuous feature)."""
        return 0 if self.classes is None else int(self.classes.size)


#: The kinds of feature a target encodes (one column per class, or one column).
KINDS = ("categorical", "continuous")


@dataclass(frozen=True)
class Targets:
    """Targets of all features together.

    Attributes
    ----------
    Y : ndarray of shape (n_samples, n_columns), float64
        -1/+1 one-hot blocks for categorical features, z-scored columns for continuous ones.
    codes : ndarray of shape (n_samples, n_features), int64
        Class index of each sample per categorical feature (-1 for continuous features).
    features : tuple of FeatureSpec
    """

    Y: np.ndarray
    codes: np.ndarray
    features: tuple[FeatureSpec, ...]

    def __repr__(self) -> str:
        return (f"Targets(n={self.n}, columns={self.Y.shape[1]}, "
                f"features={short_list(self.names)})")

    @property
    def names(self) -> list[str]:
        """Feature names in column order."""
        return [f.name for f in self.features]

    @property
    def n(self) -> int:
        """Number of samples."""
        return int(self.Y.shape[0])

    def categorical(self) -> list[FeatureSpec]:
        """The categorical features."""
        return [f for f in self.features if f.kind == "categorical"]

    def labels(self) -> dict[str, np.ndarray]:
        """Class codes of the categorical features, keyed by name."""
        return {
            f.name: self.codes[:, j]
            for j, f in enumerate(self.features)
            if f.kind == "categorical"
        }

    def indicator(self) -> np.ndarray:
        """Column-to-feature indicator of shape (n_columns, n_features), float64."""
        E = np.zeros((self.Y.shape[1], len(self.features)))
        for j, f in enumerate(self.features):
            E[f.start : f.stop, j] = 1.0
        return E


def infer_kind(values: np.ndarray) -> str:
    """``"continuous"`` for floating-point labels, ``"categorical"`` for everything else."""
    return "continuous" if np.asarray(values).dtype.kind in "fc" else "categorical"


def encode_targets(
    labels: Mapping[str, np.ndarray], kinds: Mapping[str, str] | None = None
) -> Targets:
    """Build the joint target matrix of several features.

    Parameters
    ----------
    labels : mapping name -> array of shape (n_samples,)
        Integer/string/boolean labels are categorical, floating-point labels continuous, unless
        ``kinds`` says otherwise.
    kinds : mapping name -> {"categorical", "continuous"}, optional

    Returns
    -------
    Targets
    """
    labels = as_mapping(labels, "labels", "give a dict of feature name -> array of shape "
                        "(n_samples,)")
    kinds = dict(as_mapping(kinds, "kinds", "give a dict of feature name -> 'categorical' "
                            "or 'continuous'") if kinds is not None else {})
    if not labels:
        raise ActstoreError("no features to decode; the probe set has no label arrays")
    unknown = [name for name in kinds if name not in labels]
    if unknown:
        raise ActstoreError(
            f"kinds names feature(s) {', '.join(map(repr, unknown))} that are not among the "
            f"labels ({short_list(list(labels))}); give kinds only for decoded features"
        )
    n = None
    cols: list[np.ndarray] = []
    codes: list[np.ndarray] = []
    specs: list[FeatureSpec] = []
    start = 0
    for name, raw in labels.items():
        v = np.asarray(raw)
        if v.ndim != 1:
            raise ActstoreError(
                f"feature {name!r} must be one label per sample, got shape {v.shape}"
            )
        if n is None:
            n = v.shape[0]
        elif v.shape[0] != n:
            raise ActstoreError(f"feature {name!r} has {v.shape[0]} labels, the others {n}")
        kind = kinds.get(name, infer_kind(v))
        if kind not in KINDS:
            raise ActstoreError(f"feature kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if kind == "categorical":
            classes, code = label_classes(v, name)
            block = np.full((n, classes.size), -1.0)
            block[np.arange(n), code] = 1.0
            specs.append(FeatureSpec(name, kind, start, start + classes.size, classes))
            cols.append(block)
            codes.append(code)
            start += classes.size
        else:
            if not (np.issubdtype(v.dtype, np.number) or v.dtype == bool):
                raise ActstoreError(
                    f"continuous feature {name!r} has labels of dtype {v.dtype}; continuous "
                    "features need numbers (or declare the feature categorical)"
                )
            x = v.astype(np.float64)
            if not np.all(np.isfinite(x)):
                raise ActstoreError(f"continuous feature {name!r} has NaN or infinite labels")
            sd = x.std()
            if sd == 0:
                raise ActstoreError(f"continuous feature {name!r} is constant; nothing to decode")
            cols.append(((x - x.mean()) / sd)[:, None])
            codes.append(np.full(n, -1, dtype=np.int64))
            specs.append(FeatureSpec(name, kind, start, start + 1))
            start += 1
    return Targets(np.concatenate(cols, axis=1), np.stack(codes, axis=1), tuple(specs))
