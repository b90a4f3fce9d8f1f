"""Cross-validation folds for the probe engine: stratified and seeded, or given explicitly.

A :class:`Folds` object follows scikit-learn's ``PredefinedSplit`` convention: one integer per
sample, ``k >= 0`` meaning "held out in fold k" and ``-1`` meaning "always in the training set".
Stratified K-fold puts every sample in exactly one held-out fold; an explicit train/validation
split (e.g. Trifeature's held-out combinations) is one fold whose held-out rows are the
validation set.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actstore._args import whole_number
from actstore._errors import ActstoreError
from actstore.core._reprs import short_text

__all__ = ["Folds", "check_folds", "explicit_split", "label_folds", "predefined_folds",
           "stratified_folds"]


@dataclass(frozen=True)
class Folds:
    """Assignment of samples to held-out folds.

    Attributes
    ----------
    test_fold : ndarray of shape (n_samples,), int64
        ``k`` in ``0 .. n_splits-1``: the sample is held out in fold ``k`` (and trains the
        others); ``-1``: the sample is in the training set of every fold.
    n_splits : int
        Number of folds.
    description : str
        How the folds were made (recorded in result attributes).
    """

    test_fold: np.ndarray
    n_splits: int
    description: str = field(default="", compare=False)

    def __repr__(self) -> str:
        n_train = int((self.test_fold < 0).sum())
        desc = f", description={short_text(self.description)}" if self.description else ""
        return (f"Folds(n={self.n}, n_splits={self.n_splits}, always_train={n_train}{desc})")

    @staticmethod
    def check(folds: Any, what: str = "folds") -> Folds:
        """``folds`` if it is a :class:`Folds`, else one :class:`ActstoreError` saying how to
        make one."""
        if not isinstance(folds, Folds):
            raise ActstoreError(
                f"{what} must be a Folds, not {type(folds).__name__} {folds!r:.40}; make one "
                "with stratified_folds(n, n_splits), explicit_split(is_test) or "
                "predefined_folds(test_fold)"
            )
        return folds

    def __post_init__(self) -> None:
        tf = np.asarray(self.test_fold)
        if tf.ndim != 1:
            raise ActstoreError(f"test_fold must be one-dimensional, got shape {tf.shape}")
        if tf.size and (tf.min() < -1 or tf.max() >= self.n_splits):
            raise ActstoreError(
                f"test_fold values must lie in -1 .. {self.n_splits - 1}, "
                f"got {int(tf.min())} .. {int(tf.max())}"
            )
        object.__setattr__(self, "test_fold", tf.astype(np.int64, copy=False))

    @property
    def n(self) -> int:
        """Number of samples."""
        return int(self.test_fold.shape[0])

    @property
    def n_groups(self) -> int:
        """Number of disjoint sample groups: one per fold, plus one for always-train rows."""
        return self.n_splits + int(bool(np.any(self.test_fold < 0)))

    def group_of(self) -> np.ndarray:
        """Group index per sample: ``k`` for fold ``k``, ``n_splits`` for always-train rows."""
        return np.where(self.test_fold < 0, self.n_splits, self.test_fold)

    def test_mask(self, k: int) -> np.ndarray:
        """Boolean mask of the rows held out in fold ``k``, shape (n_samples,)."""
        return self.test_fold == k

    def train_mask(self, k: int) -> np.ndarray:
        """Boolean mask of the rows that train fold ``k``, shape (n_samples,)."""
        return self.test_fold != k

    def split(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(train_indices, test_indices)`` like a scikit-learn splitter."""
        idx = np.arange(self.n)
        for k in range(self.n_splits):
            yield idx[self.train_mask(k)], idx[self.test_mask(k)]

    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(n_train, n_test)``, each of shape (n_splits,)."""
        n_test = np.bincount(self.test_fold[self.test_fold >= 0], minlength=self.n_splits)
        return self.n - n_test, n_test


def label_classes(values: Any, name: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """The sorted distinct values of a label array and each sample's code (int64)."""
    v = np.asarray(values)
    try:
        classes, code = np.unique(v, return_inverse=True)
    except TypeError:  # object labels that cannot be ordered (None among strings)
        seen = sorted({type(x).__name__ for x in v.tolist()})
        raise ActstoreError(
            f"labels of feature {name!r} mix {', '.join(seen)} values; give one kind of "
            "label (e.g. all strings, with missing ones as a class name)"
        ) from None
    return classes, code.reshape(-1).astype(np.int64)


def _codes(values: np.ndarray, name: str = "labels") -> np.ndarray:
    """Integer codes of a label array (any dtype), in sorted order of the distinct values."""
    return label_classes(values, name)[1]


def stratified_folds(
    n: int,
    n_splits: int = 5,
    seed: int = 0,
    stratify: Mapping[str, np.ndarray] | np.ndarray | None = None,
) -> Folds:
    """Seeded K-fold assignment, stratified on one or several categorical labels at once.

    Samples are shuffled (seeded), sorted by the first label and then by the combination of
    the other labels (combinations in a random order; the shuffle breaks ties) and dealt to the
    folds in turn. Every joint label combination, and every class of the first label, is
    spread over the folds with counts that differ by at most one; the other labels' classes
    are spread at random (never all in one fold, as a lexicographic order would do with a
    factorial design such as Trifeature's).

    Parameters
    ----------
    n : int
        Number of samples.
    n_splits : int
        Number of folds (>= 2).
    seed : int
        Seed of the shuffle; the same seed gives the same folds.
    stratify : mapping name -> array of shape (n,), or array of shape (n,), optional
        Categorical labels to balance across folds.

    Returns
    -------
    Folds
    """
    n = whole_number(n, "n (number of samples)")
    n_splits = whole_number(n_splits, "n_splits (number of folds)")
    if n_splits < 2:
        raise ActstoreError(f"cross-validation needs at least 2 folds, got {n_splits}")
    if n < n_splits:
        raise ActstoreError(f"cannot make {n_splits} folds of {n} samples; use fewer folds")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    if stratify is None:
        order = perm
        names = "none"
    else:
        cols = list(stratify.values()) if isinstance(stratify, Mapping) else [stratify]
        names = ", ".join(stratify) if isinstance(stratify, Mapping) else "labels"
        keys = []
        label_names = list(stratify) if isinstance(stratify, Mapping) else ["labels"]
        for c, label in zip(cols, label_names, strict=True):
            c = np.asarray(c)
            if c.shape != (n,):
                raise ActstoreError(f"stratification labels must have shape ({n},), got {c.shape}")
            keys.append(_codes(c, label)[perm])
        # Sort by the first label, then by the combination of the others in a *random* order
        # of combinations (never lexicographically: in a factorial design, dealing a
        # lexicographic order in turn would send each value of the last label to one fold
        # only, and its held-out values would never be trained on). Each combination stays
        # contiguous, so joint and first-label counts differ by at most one across folds;
        # the other labels land in the folds at random. np.lexsort sorts by its last key
        # first and is stable, so the shuffle breaks the remaining ties.
        if len(keys) > 1:
            # a fresh random order of combinations within every class of the first label
            joint = np.unique(np.stack(keys, axis=1), axis=0, return_inverse=True)[1]
            joint = joint.reshape(-1)
            keys = [keys[0], rng.permutation(int(joint.max()) + 1)[joint]]
        order = perm[np.lexsort(keys[::-1])] if keys else perm
    test_fold = np.empty(n, dtype=np.int64)
    offset = int(rng.integers(n_splits))
    test_fold[order] = (np.arange(n) + offset) % n_splits
    return Folds(test_fold, n_splits, f"stratified {n_splits}-fold, seed {seed}, on {names}")


def explicit_split(is_test: np.ndarray, description: str = "explicit split") -> Folds:
    """One fold from an explicit train/validation split.

    Parameters
    ----------
    is_test : array of shape (n_samples,)
        Boolean (True = validation/held-out row), or labels among ``train``/``val``/
        ``valid``/``validation``/``test`` (strings), or 0/1 integers (1 = held out).
    description : str
        Recorded in :attr:`Folds.description`.

    Returns
    -------
    Folds
        ``n_splits=1``: the held-out rows are fold 0, the others always train (-1).

    Raises
    ------
    ActstoreError
        If the values are of none of these forms, or the split has no training or no
        held-out rows.
    """
    v = np.asarray(is_test)
    if v.dtype.kind in "USO":
        s = np.char.lower(v.astype(str))
        known = {"train", "val", "valid", "validation", "test"}
        bad = sorted(set(np.unique(s).tolist()) - known)
        if bad:
            raise ActstoreError(
                f"split labels must be train/val/valid/validation/test, found {bad[:5]}"
            )
        mask = s != "train"
    elif v.dtype.kind == "b":
        mask = v
    elif v.dtype.kind in "iu":
        vals = set(np.unique(v).tolist())
        if not vals <= {0, 1}:
            raise ActstoreError(f"an integer split must hold 0 (train) and 1 (test), found {vals}")
        mask = v.astype(bool)
    else:
        raise ActstoreError(f"a split must be boolean, 0/1 or train/test strings, got {v.dtype}")
    if mask.all() or not mask.any():
        raise ActstoreError(
            "the explicit split has no training rows or no held-out rows; "
            "check the split labels"
        )
    return Folds(np.where(mask, 0, -1), 1, description)


def predefined_folds(test_fold: np.ndarray, description: str = "predefined folds") -> Folds:
    """Folds from a scikit-learn ``PredefinedSplit``-style vector (-1 = always train).

    Parameters
    ----------
    test_fold : array of int, shape (n_samples,)
        Fold ``k`` in ``0 .. K-1`` that holds the row out, or -1 (the row always trains).
    description : str
        Recorded in :attr:`Folds.description`.

    Returns
    -------
    Folds
        ``n_splits=K``.

    Raises
    ------
    ActstoreError
        If no row is held out, the fold numbers have gaps, or no row ever trains.
    """
    raw = np.asarray(test_fold)
    if raw.ndim != 1 or raw.dtype.kind not in "iuf" or (
            raw.dtype.kind == "f" and not np.all(np.isfinite(raw) & (raw == np.round(raw)))):
        raise ActstoreError(
            f"predefined folds must be one whole number per sample (fold 0 .. K-1, or -1), got "
            f"an array of shape {raw.shape} and dtype {raw.dtype}"
            + (" with fractional or non-finite values" if raw.dtype.kind == "f" else "")
        )
    tf = raw.astype(np.int64)
    if (tf < -1).any():
        raise ActstoreError(f"fold numbers must be -1 or 0 .. K-1, got {int(tf.min())}")
    used = np.unique(tf[tf >= 0])
    if used.size == 0:
        raise ActstoreError("predefined folds hold no held-out rows (all values are -1)")
    if not np.array_equal(used, np.arange(used.size)):
        raise ActstoreError(f"fold numbers must be 0 .. K-1 without gaps, got {used.tolist()}")
    if used.size == 1 and (tf >= 0).all():
        raise ActstoreError(
            "predefined folds hold no training rows: every row is held out by fold 0; mark "
            "the training rows -1 or give two or more folds"
        )
    return Folds(tf, int(used.size), description)


def describe_folds(descriptions: Iterable[str]) -> str:
    """The fold descriptions of a result's runs, each once (``"; "``-joined): runs with
    other features (study variants) are split on other labels."""
    return "; ".join(dict.fromkeys(d for d in descriptions if d))


def check_folds(folds: Folds, categorical: Mapping[str, np.ndarray]) -> None:
    """Refuse labels that cannot be decoded with these folds, with one clear message.

    A categorical feature needs at least two classes, and, for K-fold cross-validation, at
    least ``n_splits`` samples in every class (so that each fold can see every class). With any
    folds (explicit, predefined), every class of a fold's held-out rows must occur in its
    training rows.

    Parameters
    ----------
    folds : Folds
    categorical : mapping name -> ndarray of shape (n_samples,)
        Labels of the categorical features.

    Raises
    ------
    ActstoreError
        Naming the feature, the offending class and its count.
    """
    for name, labels in categorical.items():
        lab = np.asarray(labels)
        if lab.shape != (folds.n,):
            raise ActstoreError(
                f"feature {name!r} has {lab.shape[0]} labels but the folds cover {folds.n} samples"
            )
        classes, counts = np.unique(lab, return_counts=True)
        if classes.size < 2:
            raise ActstoreError(
                f"feature {name!r} has a single class ({classes[0].item()!r}); a decoder needs "
                "two or more; leave it out with --features"
            )
        always_train = folds.test_fold < 0
        if always_train.any():
            tr_classes = np.unique(lab[always_train])
            if tr_classes.size < 2:
                raise ActstoreError(
                    f"feature {name!r} has a single class in the training rows of the split; "
                    "leave it out with --features"
                )
        else:
            small = counts < folds.n_splits
            if small.any():
                i = int(np.argmin(counts))
                raise ActstoreError(
                    f"feature {name!r}: class {classes[i].item()!r} has {int(counts[i])} "
                    f"samples, fewer than the {folds.n_splits} folds; use fewer folds (--folds) "
                    "or leave the feature out (--features)"
                )
        # a class held out but never trained on cannot be predicted: its rows would count as
        # errors whatever the activations hold
        for k, (tr, te) in enumerate(folds.split()):
            unseen = np.setdiff1d(np.unique(lab[te]), np.unique(lab[tr]))
            if unseen.size:
                where = "the split" if folds.n_splits == 1 else f"fold {k}"
                raise ActstoreError(
                    f"feature {name!r}: class {unseen[0].item()!r} is in the held-out rows of "
                    f"{where} but not in its training rows; every held-out class must be "
                    "trained on (change the split, or leave the feature out with --features)"
                )


def label_folds(
    labels: Mapping[str, np.ndarray], n_splits: int = 5, seed: int = 0,
    split: str | None = None,
) -> tuple[Folds, dict[str, np.ndarray]]:
    """Folds for a probe set, and the labels that are analysed.

    With ``split`` the named label array is the explicit split (and is not analysed);
    otherwise stratified ``n_splits``-fold on all categorical labels together, seeded.

    Parameters
    ----------
    labels : mapping name -> ndarray of shape (n_samples,)
    n_splits, seed : int
        Stratified K-fold (ignored with ``split``).
    split : str, optional
        Name of a label array holding an explicit train/validation split.

    Returns
    -------
    folds : Folds
    used : dict name -> labels
        ``labels`` without the split array.

    Raises
    ------
    ActstoreError
        If there is no label besides ``split``, ``split`` names no label array, or the split
        or folds cannot be made.
    """
    labels = dict(labels)
    if not [k for k in labels if k != split]:
        raise ActstoreError("no features to decode; give at least one label array")
    if split is not None:
        if split not in labels:
            raise ActstoreError(
                f"no label array {split!r} to split on; labels: {', '.join(labels)}"
            )
        folds = explicit_split(labels.pop(split), f"explicit split {split!r}")
        return folds, labels
    n = len(next(iter(labels.values())))
    cat = {k: v for k, v in labels.items() if np.asarray(v).dtype.kind not in "fc"}
    return stratified_folds(n, n_splits, seed, cat or None), labels
