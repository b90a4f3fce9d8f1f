"""The settings of a probe computation (:class:`ProbeConfig`) and the folds they make."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import numpy as np

from actstore._args import instance_or_default, whole_number
from actstore._errors import ActstoreError
from actstore.core._backend import BACKENDS
from actstore.core._folds import Folds, label_folds
from actstore.core._options import fields_from_options
from actstore.core._shifted import PRECISIONS
from actstore.decode._decoders import DECODERS

__all__ = ["SELECTIONS", "ProbeConfig", "make_folds"]

#: How penalties are chosen (:attr:`ProbeConfig.select`).
SELECTIONS = ("cv", "nested")

#: Study-file options that select what is decoded (arguments of the driver, not settings).
SELECTION = ("runs", "layers", "checkpoints", "features")


def _names(value: Any) -> Any:
    """Decoder names as a study file gives them: a list, or a comma-separated str."""
    if isinstance(value, str):
        return tuple(d.strip() for d in value.split(",") if d.strip())
    return tuple(value) if isinstance(value, list) else value


def _as_tuple(value: Any) -> Any:
    """A list of a study file (TOML arrays) as the tuple a field holds."""
    return tuple(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class ProbeConfig:
    """Settings of a probe computation (recorded with the results).

    Attributes
    ----------
    decoders : tuple of str
        Names in :data:`~actstore.decode.DECODERS`.
    alphas : tuple of float
        Ridge penalties (the grid of the ``ridge`` entry of the registry).
    Cs : tuple of float
        Logistic inverse penalties (the grid of the ``logistic`` entry).
    n_splits : int
        Folds of stratified cross-validation (ignored with ``split``).
    seed : int
        Seed of the folds.
    split : str, optional
        Name of a label array holding an explicit train/validation split (booleans, 0/1 or
        ``train``/``val``/``test`` strings); that label is then not decoded itself.
    device : {"numpy", "torch", "cuda", "cupy"}
        Where the numerical work runs.
    tol, max_iter : float, int
        Logistic convergence tolerance and iteration cap per penalty.
    logistic_dtype : {"float32", "float64"}
        Working precision of the logistic solver's iterations (about twice as fast in
        float32, on CPUs and GPUs; accuracies agree to the reported digits). Statistics and
        whitening are float64 either way.
    ridge_dtype : {"float32", "float64"}
        Precision of the ridge folds' factorisations. ``"float32"`` (default) reduces the
        Grams of 512 units or more in single precision, about twice as fast, and checks each
        fold's solutions in double precision: where the estimated relative error of the
        coefficients exceeds 1e-3 (near-singular Grams with tiny penalties) that fold is
        factorised again in float64. ``"float64"`` throughout matches scikit-learn to
        rounding.
    cache_mb : float
        Activation blocks are kept in memory up to this size so that a job reads its array
        once; larger arrays are streamed twice. Memory per job is bounded by this plus the
        statistics.
    standardize : bool
        Decoders see units z-scored with each training fold's mean and standard deviation,
        as ``make_pipeline(StandardScaler(), model)`` does (default); decodability then does
        not depend on a layer's scale. ``False`` fits the raw activations.
    select : {"cv", "nested"}
        How the penalty of a reported score is chosen. ``"cv"``: the penalty with the best
        mean held-out score, reported at that score (the usual ``*CV`` estimators; slightly
        optimistic near chance). ``"nested"``: the penalty of outer fold k is chosen by
        cross-validation on fold k's training rows only (with an explicit split: on the
        training part, in ``n_splits`` stratified inner folds), and fold k's held-out score
        is taken at it: an unbiased estimate, at about ``n_splits`` times the cost.
    permutations : int
        Label-permutation null: the decoders are also fitted, with the same folds and the same
        penalty selection, to this many random permutations of each feature's labels;
        ``null_mean``, ``null_p95`` and ``p_value`` are reported (0: none).
    extend_grid : int
        Where the chosen penalty is an end of the grid and the score still rises toward it,
        the penalties beyond that end, half a decade apart up to this many decades, are tried
        too (with ``select="cv"``), and the feature's penalty and scores are those of the
        extended grid (the ``*_score`` paths keep the base grid). 0: only record
        ``penalty_at_edge``.
    """

    decoders: tuple[str, ...] = ("ridge", "logistic")
    alphas: tuple[float, ...] = DECODERS["ridge"].default_grid
    Cs: tuple[float, ...] = DECODERS["logistic"].default_grid
    n_splits: int = 5
    seed: int = 0
    split: str | None = None
    device: str = "numpy"
    tol: float = 1e-4
    max_iter: int = 500
    logistic_dtype: str = "float32"
    ridge_dtype: str = "float32"
    cache_mb: float = 256.0
    standardize: bool = True
    select: str = "cv"
    permutations: int = 0
    extend_grid: int = 3
    #: The settings that determine the numbers (``device`` and ``cache_mb`` do not).
    RESULT_KEYS: ClassVar[tuple[str, ...]] = (
        "decoders", "alphas", "Cs", "n_splits", "seed", "split", "tol", "max_iter",
        "logistic_dtype", "ridge_dtype", "standardize", "select", "permutations", "extend_grid",
    )

    def __post_init__(self) -> None:
        if isinstance(self.decoders, str):  # one name, not its letters
            object.__setattr__(self, "decoders", (self.decoders,))
        unknown = [d for d in self.decoders if d not in DECODERS]
        if unknown or not self.decoders:
            raise ActstoreError(
                f"unknown decoder {', '.join(map(repr, unknown)) or '(none given)'}; "
                f"available: {', '.join(DECODERS)}"
            )
        for name in ("logistic_dtype", "ridge_dtype"):
            if getattr(self, name) not in PRECISIONS:
                raise ActstoreError(
                    f"{name} must be {' or '.join(PRECISIONS)}, not {getattr(self, name)!r}")
        if self.device not in BACKENDS:
            raise ActstoreError(
                f"unknown device {self.device!r}; choose one of {', '.join(BACKENDS)}"
            )
        grids = list(dict.fromkeys(d.grid for d in DECODERS.values()))
        for name in grids:
            vals = getattr(self, name)
            if not vals or any(not np.isfinite(v) or v <= 0 for v in vals):
                raise ActstoreError(f"{name} must be positive numbers, got {list(vals)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) \
                or self.seed < 0:
            raise ActstoreError(f"seed must be a non-negative integer, got {self.seed!r}")
        whole_number(self.n_splits, "n_splits (number of folds)", minimum=1)
        whole_number(self.max_iter, "max_iter", minimum=1)
        if self.split is not None and not isinstance(self.split, str):
            raise ActstoreError(
                f"split must be the name of a label array (a str), not {self.split!r}"
            )
        if not isinstance(self.standardize, (bool, np.bool_)):
            raise ActstoreError(f"standardize must be True or False, not {self.standardize!r}")
        object.__setattr__(self, "standardize", bool(self.standardize))
        if self.select not in SELECTIONS:
            raise ActstoreError(
                f"select must be one of {', '.join(SELECTIONS)}, not {self.select!r}")
        whole_number(self.permutations, "permutations", minimum=0)
        whole_number(self.extend_grid, "extend_grid (decades)", minimum=0)
        if self.extend_grid > 12:
            raise ActstoreError(f"extend_grid is at most 12 decades, got {self.extend_grid}")
        if not self.cache_mb >= 0:
            raise ActstoreError(f"cache_mb must be >= 0 (MiB), got {self.cache_mb!r}")
        for name in grids:
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        object.__setattr__(self, "decoders", tuple(self.decoders))

    @classmethod
    def of(cls, config: Any, *, keywords: bool = False) -> ProbeConfig:
        """``config`` itself, or the default settings for ``None``.

        Parameters
        ----------
        config : ProbeConfig or None
        keywords : bool
            The caller also takes the fields as keyword arguments (said in the error).

        Raises
        ------
        ActstoreError
            If ``config`` is anything else (e.g. a dict of settings).
        """
        return instance_or_default(
            config, cls, "config", "ProbeConfig(decoders=('ridge',), n_splits=5)"
            + (", or pass its fields as keywords" if keywords else ""))

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ProbeConfig:
        """The settings of a study file's ``probe`` analysis.

        Parameters
        ----------
        options : mapping
            Fields of this class by name (``folds`` for ``n_splits``; ``decoders`` may be a
            comma-separated string); the selection keys ``runs``, ``layers``,
            ``checkpoints``, ``features`` are the driver's arguments and are skipped.

        Raises
        ------
        ActstoreError
            An unknown option (the message lists the valid ones), or a value refused here.
        """
        table: dict[str, tuple[str, Any]] = {"decoders": ("decoders", _names),
                                             "folds": ("n_splits", None)}
        for f in fields(cls):
            if f.name not in ("decoders", "n_splits"):
                table[f.name] = (f.name, _as_tuple)
        return cls(**fields_from_options(options, table, "probe", SELECTION))

    def penalties(self, decoder: str) -> tuple[float, ...]:
        """The penalty sweep of a decoder (its registry entry names the field)."""
        return tuple(getattr(self, DECODERS[decoder].grid))

    def to_json(self) -> dict[str, Any]:
        """The settings as stored with a result: those that determine the numbers (device
        and cache do not)."""
        d = asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()
                if k in self.RESULT_KEYS}

    def key(self) -> str:
        """A short hash of :meth:`to_json`: results with the same key are interchangeable."""
        blob = json.dumps(self.to_json(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def make_folds(labels: Mapping[str, np.ndarray], config: ProbeConfig) -> tuple[Folds, dict]:
    """Folds for a probe set, and the labels that are decoded.

    With ``config.split`` the named label array is the explicit split (and is not decoded);
    otherwise stratified K-fold on all categorical labels together.

    Parameters
    ----------
    labels : mapping name -> ndarray of shape (n_samples,)
    config : ProbeConfig
        ``split``, ``n_splits`` and ``seed`` are used.

    Returns
    -------
    folds : Folds
    decoded : dict name -> labels
        ``labels`` without the split array.

    Raises
    ------
    ActstoreError
        If ``config.split`` names no label array, or the split or folds cannot be made.
    """
    return label_folds(labels, config.n_splits, config.seed, config.split)

